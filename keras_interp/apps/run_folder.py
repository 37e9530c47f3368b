"""What a training run leaves in its `model_dir`, and how a rerun uses it.

A run folder holds:

* `config.json` (`CONFIG_FILE`): the run's `TrainConfig`, written before
  training starts;
* `backup/` (`BACKUP_DIR`): Keras' `BackupAndRestore` files (weights,
  optimizer, `training_metadata.json` with the epochs done), the random
  seed states of each epoch, and `run_config.json` (`BACKUP_CONFIG_FILE`),
  the settings the backup was trained with;
* `model.keras` and `results.json` (`MODEL_FILE`, `RESULTS_FILE`), renamed
  into place when the run finishes, `results.json` last.

A rerun reports a finished run (`finished_results`), continues a backup
only when it was trained with the same settings (`check_backup_config`),
and names the file and the fix when a backup cannot be read
(`backup_error`).
"""

import dataclasses
import json
import os

import keras
import numpy as np

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
RESULTS_FILE = "results.json"
BACKUP_DIR = "backup"
BACKUP_WEIGHTS_FILE = "latest.weights.h5"  # keras.callbacks.BackupAndRestore
BACKUP_METADATA_FILE = "training_metadata.json"  # Idem.
BACKUP_CONFIG_FILE = "run_config.json"
# Settings that do not change what a run computes: a rerun that differs
# only in these (e.g. a run folder that was moved) finds its results.
PRESENTATION_SETTINGS = ("verbose", "resume", "model_dir", "logdir")
# Settings a backup may be resumed (or re-evaluated) with other values of:
# the presentation, the evaluation and the number of epochs (to extend).
RESUMABLE_SETTINGS = PRESENTATION_SETTINGS + ("parts", "eval_map", "epochs")


def save_atomically(write, path, suffix):
    """Writes via `write(tmp)` then renames: a kill leaves no torn file.

    Args:
        write: a function writing a file at the path it is given.
        path: the final path; it must end with `suffix`.
        suffix: the extension to keep on the temporary file (Keras picks
            the format of `.keras` and `.weights.h5` files from it).
    """
    partial = path[: -len(suffix)] + ".partial" + suffix
    write(partial)
    os.replace(partial, path)


def write_json(value, path):
    """Writes `value` as indented JSON to `path`, atomically."""

    def write(partial):
        with open(partial, "w") as f:
            json.dump(value, f, indent=2, default=str)

    save_atomically(write, path, ".json")


def write_config(config):
    """Writes `config` (a `TrainConfig`) to `<model_dir>/config.json`.

    Returns:
        The path written.
    """
    os.makedirs(config.model_dir, exist_ok=True)
    path = os.path.join(config.model_dir, CONFIG_FILE)
    write_json(dataclasses.asdict(config), path)
    return path


def comparable(config):
    """A config dict as JSON would round-trip it, without presentation."""
    config = {
        k: v for k, v in dict(config).items() if k not in PRESENTATION_SETTINGS
    }
    return json.loads(json.dumps(config, default=str))


def finished_results(config):
    """The saved results of this very run if it already finished, else None.

    A run is finished when `model.keras` and `results.json` (written last)
    exist and the results were produced with the same settings.
    """
    model_path = os.path.join(config.model_dir, MODEL_FILE)
    results_path = os.path.join(config.model_dir, RESULTS_FILE)
    if not (os.path.isfile(model_path) and os.path.isfile(results_path)):
        return None
    try:
        with open(results_path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None  # Half-written: evaluate again.
    if not isinstance(saved, dict) or "config" not in saved:
        return None
    if comparable(saved["config"]) != comparable(dataclasses.asdict(config)):
        return None
    return saved


def backup_error(path, backup_dir, error):
    """The ValueError for a backup file that cannot be read: file and fix."""
    return ValueError(
        f"Cannot resume from the training backup {path!r}: "
        f"{type(error).__name__}: {error}. The file is truncated or corrupt "
        "(e.g. the run was killed while writing it), or was written by a "
        "model with other settings. Start over with `--noresume` "
        "(`TrainConfig(resume=False)`), which discards the backup, or "
        f"delete {backup_dir!r}."
    )


def resume_epoch(backup_dir):
    """The number of epochs the backup in `backup_dir` holds (0: none)."""
    path = os.path.join(backup_dir, BACKUP_METADATA_FILE)
    if not os.path.isfile(path):
        return 0
    try:
        with open(path) as f:
            return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise backup_error(path, backup_dir, error) from error


def restore_backup(model, backup_dir):
    """Loads the backup's weights (and optimizer state) into `model`."""
    path = os.path.join(backup_dir, BACKUP_WEIGHTS_FILE)
    try:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path!r} is missing")
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as error:
        raise backup_error(path, backup_dir, error) from error


def check_backup_config(config, backup_dir, initial_epoch):
    """Refuses to resume a backup trained with other settings.

    A run that starts training writes its settings next to the backup; a
    later run that would resume (or re-evaluate) the backup must agree on
    everything but `RESUMABLE_SETTINGS`, so that results are never
    labelled with settings the weights were not trained with.
    """
    path = os.path.join(backup_dir, BACKUP_CONFIG_FILE)
    current = {
        k: v
        for k, v in comparable(dataclasses.asdict(config)).items()
        if k not in RESUMABLE_SETTINGS
    }
    if not initial_epoch or not os.path.isfile(path):
        os.makedirs(backup_dir, exist_ok=True)
        with open(path, "w") as f:
            json.dump(current, f, indent=2)
        return
    try:
        with open(path) as f:
            saved = dict(json.load(f))
    except (OSError, ValueError, TypeError) as error:
        raise backup_error(path, backup_dir, error) from error
    changed = [
        f"{name}={saved.get(name)!r} (now {current.get(name)!r})"
        for name in sorted(set(saved) | set(current))
        if saved.get(name) != current.get(name)
    ]
    if changed:
        raise ValueError(
            f"The backup in {backup_dir!r} was trained with other settings: "
            f"{', '.join(changed)}. Resume it with its own settings (only "
            f"{', '.join(RESUMABLE_SETTINGS)} may differ), pass "
            "`--noresume` to train from scratch, or use another `model_dir`."
        )


class SeedStateBackup(keras.callbacks.Callback):
    """Saves and restores the random-seed states that `save_weights` skips.

    Keras' `BackupAndRestore` restores weights and optimizer, but not the
    `SeedGenerator` states of layers such as Dropout, so a resumed run would
    draw other dropout masks. They are written per epoch, next to the
    backup, and restored for the epoch the backup restores.

    Args:
        backup_dir: the backup folder.
        initial_epoch: the epoch the run resumes at (0: a fresh run).
    """

    def __init__(self, backup_dir, initial_epoch):
        super().__init__()
        self.backup_dir = backup_dir
        self.initial_epoch = initial_epoch

    def _states(self):
        return [
            v for v in self.model.variables if v.name == "seed_generator_state"
        ]

    def _path(self, epoch):
        return os.path.join(self.backup_dir, f"seed_states_{epoch}.npz")

    def on_train_begin(self, logs=None):
        path = self._path(self.initial_epoch)
        if self.initial_epoch and os.path.isfile(path):
            try:
                with np.load(path) as saved:
                    states = [saved[f"s{i}"] for i in range(len(saved.files))]
            except (OSError, ValueError, KeyError) as error:
                raise backup_error(path, self.backup_dir, error) from error
            for variable, state in zip(self._states(), states):
                variable.assign(state)

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.backup_dir, exist_ok=True)
        np.savez(
            self._path(epoch + 1),
            **{f"s{i}": v.numpy() for i, v in enumerate(self._states())},
        )


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose restore errors name the file and the fix.

    A backup truncated by a kill mid-write (or written by another model)
    otherwise fails with h5py's bare `OSError`, which names no file.
    """

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError, KeyError) as error:
            raise backup_error(
                self._weights_path, self.backup_dir, error
            ) from error
