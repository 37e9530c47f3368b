"""Train and evaluate an interpretable (or ordinary) CNN on CUB-format data.

`train_and_evaluate(config)` is what `examples/train_cub.py` runs; it is a
plain function of a `TrainConfig`, so tests and notebooks call it directly.
It reads a CUB_200_2011-format folder (the embedded synthetic part dataset
by default), builds the paper's model with `models.build_part_classifier`,
trains it under the chosen `tf.distribute` strategy with TensorBoard logging
and epoch checkpoints it can resume from, then reports accuracy, the filter
loss and location instability, and saves the image-only model as `.keras`.

Safety: training stops with `callbacks.NonFiniteLossError` when a loss term
turns non-finite (no model is saved); a rerun never replaces a trained
model with an untrained one (a finished run is reported, and a run killed
after training is evaluated on its backed-up weights); `model.keras` and
`results.json` are renamed into place, `results.json` last.

TensorFlow backend only (tf.data, tf.distribute, tf.summary).
"""

import dataclasses
import json
import math
import os
import shlex
import shutil
import time
from typing import Optional
from typing import Sequence

import keras
import numpy as np

from keras_interp import callbacks as callbacks_lib
from keras_interp import data as data_lib
from keras_interp import diagnostics
from keras_interp import evaluate as evaluate_lib
from keras_interp import models
from keras_interp import trainers
from keras_interp.evaluation import CUB_EVAL_PARTS  # noqa: F401 (re-export)
from keras_interp.evaluation import TOP_K  # noqa: F401 (re-export)
from keras_interp.evaluation import landmark_ids

TASKS = ("multi", "single")
STRATEGIES = ("default", "mirrored", "multi_worker")
LR_SCHEDULES = ("constant", "cosine", "paper")
PRECISIONS = (None, "mixed_float16", "mixed_bfloat16")
# `CUB_EVAL_PARTS` and `TOP_K` are defined once in `keras_interp.evaluation`
# (imported above) and re-exported here for compatibility.
MODEL_FILE = "model.keras"
RESULTS_FILE = "results.json"
BACKUP_WEIGHTS_FILE = "latest.weights.h5"  # keras.callbacks.BackupAndRestore
# Settings that do not change what a run computes: a rerun that differs
# only in these (e.g. a run folder that was moved) finds its results.
_PRESENTATION_SETTINGS = ("verbose", "resume", "model_dir", "logdir")
# Settings a backup may be resumed (or re-evaluated) with other values of:
# the presentation, the evaluation and the number of epochs (to extend).
_RESUMABLE_SETTINGS = _PRESENTATION_SETTINGS + ("parts", "eval_map", "epochs")
BACKUP_CONFIG_FILE = "run_config.json"
# The authors' single-category schedule: lr falls 10x, log-linearly, over the
# first 10 epochs, then stays (`network_init.m`: logspace(-4, -5, 10)).
PAPER_DECAY_EPOCHS = 10


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a run; `examples/train_cub.py` maps flags onto it.

    Attributes:
        data_dir: extracted `CUB_200_2011` folder (or its parent), or a TFDS
            data dir with `data_source="tfds"`. None: the embedded synthetic
            part dataset, generated into the cache on first use.
        embedded_dataset: the embedded dataset that `data_dir=None` uses:
            `"parts"` (objects filling most of the image) or `"scenes"`
            (smaller objects anywhere over real photos, 300 test images per
            class; use with `crop_to_box=False`). See
            `keras_interp.data.synthetic`.
        data_source: `"cub"` (a CUB-format folder) or `"tfds"` (an already
            prepared `caltech_birds2011`; it has no part landmarks).
        task: `"multi"`: classify the classes; `"single"`: the paper's
            single-category task, objects vs. background images from
            `negatives_dir`.
        negatives_dir: folder of background images for `task="single"`;
            default `<data_dir>/negatives`.
        backbone: a `models.BACKBONES` name.
        weights: backbone weights: None (random), `"imagenet"` (Keras'
            official file, downloaded once into the Keras cache) or a local
            file, e.g. from `keras_interp.models.convert_lpips_vgg16`; the
            preprocessing follows the file.
        trainable_from: the first trainable backbone layer (e.g.
            `"block5_conv1"`: only VGG16's top block is fine-tuned); None:
            the whole backbone trains.
        image_size: square input size.
        crop_to_box: crop objects to their bounding box (the paper does).
        batch_size: global batch size.
        epochs: number of epochs.
        steps_per_epoch: training steps per epoch; None: one pass.
        learning_rate: initial SGD learning rate.
        lr_schedule: `"cosine"`, `"constant"` or `"paper"` (10x log-linear
            decay over 10 epochs, then constant).
        momentum: SGD momentum (the authors: 0.9).
        interpretable: build the interpretable model, or the ordinary one.
        category_aware: pass the labels to the interpretable layers (the
            category-aware loss) or not (the label-free Eq. 1).
        loss, loss_weight, loss_weight_decay, normalization, beta, center,
            apply_mask: the
            interpretable layers' arguments.
        strategy: `"default"`, `"mirrored"` or `"multi_worker"` (a custom
            loop; needs `TF_CONFIG`).
        mixed_precision: None, `"mixed_float16"` or `"mixed_bfloat16"`.
        model_dir: where checkpoints, the final `model.keras` and
            `results.json` go.
        logdir: TensorBoard directory; default `<model_dir>/logs`.
        resume: continue from the backup in `<model_dir>/backup`, if any.
            A run that already finished with the same settings is
            reported, not redone; one whose training finished but whose
            evaluation did not is evaluated on the backup's weights.
            False: discard the backup and train from scratch.
        parts: landmark names for location instability; default: the
            authors' back/forehead/tail when present, else every part.
        eval_map: `"masked"` (paper) or `"raw"` (authors' code).
        cache_dir: where the synthetic dataset is generated.
        seed: seed of initialisation, shuffling and augmentation.
        verbose: Keras verbosity.
    """

    data_dir: Optional[str] = None
    embedded_dataset: str = "parts"
    data_source: str = "cub"
    task: str = "multi"
    negatives_dir: Optional[str] = None
    backbone: str = "tiny_vgg"
    weights: Optional[str] = None
    trainable_from: Optional[str] = None
    image_size: int = 64
    crop_to_box: bool = True
    batch_size: int = 16
    epochs: int = 30
    steps_per_epoch: Optional[int] = None
    learning_rate: float = 0.05
    lr_schedule: str = "cosine"
    momentum: float = 0.9
    interpretable: bool = True
    category_aware: bool = True
    loss: str = "mutual_information"
    loss_weight: Optional[float] = None
    loss_weight_decay: Optional[str] = None
    normalization: Optional[str] = "mean_max"
    beta: float = 4.0
    # Measured best here (experiments/RESULTS.md, README "Measured
    # results"); the layers keep the paper's argmax default.
    center: str = "centroid"
    apply_mask: bool = True
    strategy: str = "default"
    mixed_precision: Optional[str] = None
    model_dir: str = "runs/train_cub"
    logdir: Optional[str] = None
    resume: bool = True
    parts: Optional[Sequence[str]] = None
    eval_map: str = "masked"
    cache_dir: Optional[str] = None
    seed: int = 0
    verbose: int = 1

    def validate(self):
        """Raises a ValueError naming the first bad setting."""
        choices = {
            "task": TASKS,
            "strategy": STRATEGIES,
            "lr_schedule": LR_SCHEDULES,
            "mixed_precision": PRECISIONS,
            "data_source": ("cub", "tfds"),
            "embedded_dataset": data_lib.synthetic.VARIANTS,
            "eval_map": ("masked", "raw"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"`{name}` must be one of {allowed}. Received: "
                    f"{name}={getattr(self, name)!r}."
                )
        if self.data_dir and self.embedded_dataset != "parts":
            raise ValueError(
                "`embedded_dataset` picks the dataset used when `data_dir` "
                "is None. Received: embedded_dataset="
                f"{self.embedded_dataset!r} with data_dir={self.data_dir!r}. "
                "Unset one of them."
            )
        for name in ("image_size", "batch_size", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"`{name}` must be a positive int. Received: "
                    f"{name}={value!r}."
                )
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(
                "`steps_per_epoch` must be a positive int or None. Received: "
                f"{self.steps_per_epoch!r}."
            )
        if not self.learning_rate > 0:
            raise ValueError(
                "`learning_rate` must be positive. Received: "
                f"{self.learning_rate!r}."
            )
        return self


@keras.saving.register_keras_serializable(package="keras_interp")
class LogLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate falling log-linearly by `factor`, then constant.

    `lr(step) = initial * factor ** min(step / decay_steps, 1)`; with
    `factor=0.1` over 10 epochs this is the authors' `logspace(-4, -5, 10)`
    shape (`network_init.m`).
    """

    def __init__(self, initial_learning_rate, decay_steps, factor=0.1):
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = int(decay_steps)
        self.factor = float(factor)

    def __call__(self, step):
        progress = keras.ops.minimum(
            keras.ops.cast(step, "float32") / self.decay_steps, 1.0
        )
        return self.initial_learning_rate * keras.ops.power(
            self.factor, progress
        )

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "factor": self.factor,
        }


def make_strategy(name):
    """The `tf.distribute` strategy called `name`."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if "TF_CONFIG" not in os.environ:
        raise ValueError(
            "`strategy='multi_worker'` needs the TF_CONFIG environment "
            "variable describing the cluster and this worker's task. See "
            "README, 'Scaling out'."
        )
    return tf.distribute.MultiWorkerMirroredStrategy()


def _learning_rate(config, steps_per_epoch):
    total = config.epochs * steps_per_epoch
    if config.lr_schedule == "constant":
        return config.learning_rate
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=max(total, 1)
        )
    return LogLinearDecay(
        config.learning_rate, PAPER_DECAY_EPOCHS * steps_per_epoch
    )


def _load_data(config):
    """The train/test source: an index (CUB format) or a TFDS loader."""
    if config.data_source == "tfds":
        if not config.data_dir:
            raise ValueError(
                "`data_source='tfds'` needs `data_dir`: the TFDS data dir "
                "that holds a prepared caltech_birds2011."
            )
        return None, config.data_dir, None
    data_dir = config.data_dir or data_lib.default_data_dir(
        config.cache_dir, variant=config.embedded_dataset
    )
    index = data_lib.read_cub(data_dir)
    negatives = None
    if config.task == "single":
        folder = config.negatives_dir or os.path.join(
            index.data_dir, "negatives"
        )
        if not os.path.isdir(folder):
            raise ValueError(
                "`task='single'` needs background images: pass "
                "`negatives_dir` (a folder of .jpg/.png images). "
                f"Not found: {folder!r}."
            )
        negatives = data_lib.read_negatives(folder)
    return index, data_dir, negatives


def _dataset(config, source, split, *, training, seed=0, parts=True):
    index, data_dir, negatives = source
    kwargs = dict(
        split=split,
        image_size=config.image_size,
        batch_size=config.batch_size,
        crop_to_box=config.crop_to_box,
        augment=training,
        shuffle=training,
        seed=seed,
        drop_remainder=training,
    )
    if index is None:
        return data_lib.load_tfds_cub(data_dir, include_parts=False, **kwargs)
    return data_lib.make_dataset(
        index, negatives=negatives, include_parts=parts, **kwargs
    )


def _to_inputs(batch):
    return {"image": batch["image"], "label": batch["label"]}, batch["label"]


def _epoch_dataset(config, source, epoch, steps_per_epoch):
    """Epoch `epoch`'s batches, always the same: seeded by (seed, epoch).

    This makes a resumed run identical to an uninterrupted one: the
    checkpoint restores the weights at the end of an epoch, and the data
    restart at the next epoch's own shuffle and flips.
    """
    seed = config.seed * 100_003 + epoch
    ds = _dataset(config, source, "train", training=True, seed=seed)
    return ds.map(_to_inputs).repeat().take(steps_per_epoch)


def _training_stream(config, source, initial_epoch, steps_per_epoch):
    """The epochs `initial_epoch..epochs-1` one after another (for `fit`)."""
    stream = None
    for epoch in range(initial_epoch, config.epochs):
        ds = _epoch_dataset(config, source, epoch, steps_per_epoch)
        stream = ds if stream is None else stream.concatenate(ds)
    return stream


class _SeedStateBackup(keras.callbacks.Callback):
    """Saves and restores the random-seed states that `save_weights` skips.

    Keras' `BackupAndRestore` restores weights and optimizer, but not the
    `SeedGenerator` states of layers such as Dropout, so a resumed run would
    draw other dropout masks. They are written per epoch, next to the
    backup, and restored for the epoch the backup restores.
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
                raise _backup_error(path, self.backup_dir, error) from error
            for variable, state in zip(self._states(), states):
                variable.assign(state)

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.backup_dir, exist_ok=True)
        np.savez(
            self._path(epoch + 1),
            **{f"s{i}": v.numpy() for i, v in enumerate(self._states())},
        )


class _BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose restore errors name the file and the fix.

    A backup truncated by a kill mid-write (or written by another model)
    otherwise fails with h5py's bare `OSError`, which names no file.
    """

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError, KeyError) as error:
            raise _backup_error(
                self._weights_path, self.backup_dir, error
            ) from error


def _backup_error(path, backup_dir, error):
    return ValueError(
        f"Cannot resume from the training backup {path!r}: "
        f"{type(error).__name__}: {error}. The file is truncated or corrupt "
        "(e.g. the run was killed while writing it), or was written by a "
        "model with other settings. Start over with `--noresume` "
        "(`TrainConfig(resume=False)`), which discards the backup, or "
        f"delete {backup_dir!r}."
    )


def _resume_epoch(backup_dir):
    """The number of epochs the backup in `backup_dir` holds (0: none)."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.isfile(path):
        return 0
    try:
        with open(path) as f:
            return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _backup_error(path, backup_dir, error) from error


def _restore_backup(model, backup_dir):
    """Loads the backup's weights (and optimizer state) into `model`."""
    path = os.path.join(backup_dir, BACKUP_WEIGHTS_FILE)
    try:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path!r} is missing")
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as error:
        raise _backup_error(path, backup_dir, error) from error


def _comparable(config):
    """A config dict as JSON would round-trip it, without presentation."""
    config = {
        k: v for k, v in dict(config).items() if k not in _PRESENTATION_SETTINGS
    }
    return json.loads(json.dumps(config, default=str))


def _check_backup_config(config, backup_dir, initial_epoch):
    """Refuses to resume a backup trained with other settings.

    A run that starts training writes its settings next to the backup; a
    later run that would resume (or re-evaluate) the backup must agree on
    everything but `_RESUMABLE_SETTINGS`, so that results are never
    labelled with settings the weights were not trained with.
    """
    path = os.path.join(backup_dir, BACKUP_CONFIG_FILE)
    current = {
        k: v
        for k, v in _comparable(dataclasses.asdict(config)).items()
        if k not in _RESUMABLE_SETTINGS
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
        raise _backup_error(path, backup_dir, error) from error
    changed = [
        f"{name}={saved.get(name)!r} (now {current.get(name)!r})"
        for name in sorted(set(saved) | set(current))
        if saved.get(name) != current.get(name)
    ]
    if changed:
        raise ValueError(
            f"The backup in {backup_dir!r} was trained with other settings: "
            f"{', '.join(changed)}. Resume it with its own settings (only "
            f"{', '.join(_RESUMABLE_SETTINGS)} may differ), pass "
            "`--noresume` to train from scratch, or use another `model_dir`."
        )


def _finished_results(config):
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
    if _comparable(saved["config"]) != _comparable(dataclasses.asdict(config)):
        return None
    return saved


def _check_labels(index, num_classes):
    """Refuses class labels outside [0, num_classes) before any training.

    Out-of-range ids would become all-zero one-hot rows in the filter loss
    and a silently wrong cross-entropy, so they are caught here.
    """
    labels = np.asarray(index.labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"The class labels of {index.data_dir!r} must be integers. "
            f"Received dtype {labels.dtype}."
        )
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(
            f"The class labels of {index.data_dir!r} must lie in "
            f"[0, {num_classes}) (class ids 1..{num_classes} of classes.txt). "
            f"Received label {int(labels[first])} for image id "
            f"{int(index.image_ids[first])} ({index.image_paths[first]}), "
            f"and {int(bad.sum())} out-of-range label(s) in all."
        )


def _eval_parts(index, names):
    """Indices of the landmarks used for location instability."""
    if index is None or not index.has_parts:
        return None
    return landmark_ids(index.part_names, names)


def evaluate_model(
    model, dataset, *, parts=None, eval_map="masked", part_names=None
):
    """Accuracy, and location instability of the "part_conv" filters.

    A thin view of `keras_interp.evaluate.evaluate_dataset`, the one
    evaluation implementation (also behind `python -m
    keras_interp.evaluate`).

    Args:
        model: the image-only model (`PartClassifier.inference`).
        dataset: batched dicts with `image`, `label` and, for the
            instability, `parts` and `part_visible`.
        parts: landmark indices to evaluate, or None to skip instability.
        eval_map: `"masked"` or `"raw"` (see `evaluation.collect_peaks`).
        part_names: the dataset's landmark names in part-id order, to name
            the per-landmark entries (default `part_<k>`).

    Returns:
        `keras_interp.evaluate.training_results(summary)`: `accuracy`,
        `num_images`, `location_instability` (NaN if it could not be
        computed) with its `location_instability_reason` (None when
        computed), its reference values, per-landmark values and top-k
        counts, `num_filters_evaluated` and `dead_maps`.
    """
    summary = evaluate_lib.evaluate_dataset(
        model,
        dataset,
        parts=parts,
        part_names=part_names,
        layer=models.PART_CONV,
        map=eval_map,
    )
    results = evaluate_lib.training_results(summary)
    reasons = _reasons(summary)
    for metric in ("accuracy", "location_instability"):
        if metric in results and reasons.get(metric):
            results[f"{metric}_reason"] = reasons[metric]
    return results


def _reasons(summary):
    """{metric: reason} from an evaluation summary.

    Accepts both shapes: flat `<metric>_reason` entries and a `reasons`
    dict.
    """
    reasons = {
        key[: -len("_reason")]: value
        for key, value in summary.items()
        if key.endswith("_reason") and value
    }
    if isinstance(summary.get("reasons"), dict):
        reasons.update({k: v for k, v in summary["reasons"].items() if v})
    return reasons


def _is_number(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


def _print_summary(results, model_dir, logdir):
    """The one-line results, the reasons, and where everything is."""
    summary = {
        key: results[key]
        for key in (
            "accuracy",
            "location_instability",
            "location_instability_fixed_cell",
            "location_instability_shuffled_landmarks",
            "num_images",
        )
        if key in results
    }
    summary.update(
        {
            key: value
            for key, value in results.get("final_train_logs", {}).items()
            if key.endswith("filter_loss")
        }
    )
    print("results: " + json.dumps(summary))
    for key, value in sorted(results.items()):
        if not key.endswith("_reason") or not value:
            continue
        metric = key[: -len("_reason")]
        if isinstance(value, dict):  # Per landmark.
            for name, reason in value.items():
                if reason:
                    print(f"  {metric}[{name}]: not computed: {reason}")
        elif _is_number(results.get(metric)):
            print(f"  {metric}: {value}")
        else:
            print(f"  {metric}: not computed: {value}")
    model_path = os.path.join(model_dir, MODEL_FILE)
    print(f"model:   {os.path.abspath(model_path)}")
    print(f"results: {os.path.abspath(os.path.join(model_dir, RESULTS_FILE))}")
    print(f"logs:    {os.path.abspath(logdir)}")
    print(f"view the logs with: tensorboard --logdir {shlex.quote(logdir)}")


def _save_atomically(write, path, suffix):
    """Writes via `write(tmp)` then renames: a kill leaves no torn file."""
    partial = path[: -len(suffix)] + ".partial" + suffix
    write(partial)
    os.replace(partial, path)


def train_and_evaluate(config: TrainConfig) -> dict:
    """Runs one experiment end to end; returns (and saves) its results.

    Args:
        config: a `TrainConfig`.

    Returns:
        A dict with the dataset sizes, final training metrics, the test
        accuracy, the filter losses and (with landmarks) the location
        instability. It is also written to `<model_dir>/results.json`.
    """
    config.validate()
    start = time.perf_counter()
    logdir = config.logdir or os.path.join(config.model_dir, "logs")
    if config.resume:
        finished = _finished_results(config)
        if finished is not None:
            print(
                f"run complete: {config.model_dir} already holds the model "
                f"and results of these settings ({config.epochs} epochs); "
                "nothing to do. Pass --noresume (resume=False) to train "
                "again, or another --model_dir."
            )
            _print_summary(finished, config.model_dir, logdir)
            return finished
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.config.set_dtype_policy(config.mixed_precision)
    strategy = make_strategy(config.strategy)
    source = _load_data(config)
    index, data_dir, negatives = source
    if index is None:
        num_classes = 200  # caltech_birds2011
        sizes = {"train": "tfds", "test": "tfds"}
    else:
        _check_labels(index, index.num_classes)
        num_classes = 2 if config.task == "single" else index.num_classes
        sizes = {
            split: data_lib.dataset_sizes(
                index, split=split, negatives=negatives
            )["examples"]
            for split in ("train", "test")
        }
    steps = config.steps_per_epoch
    if steps is None:
        if index is None:
            raise ValueError("Pass `steps_per_epoch` with TFDS data.")
        steps = max(sizes["train"] // config.batch_size, 1)
    print(
        f"data: {data_dir} ({config.task}-category, {num_classes} classes); "
        f"train {sizes['train']} / test {sizes['test']} images"
    )
    with strategy.scope():
        built = models.build_part_classifier(
            config.backbone,
            num_classes=num_classes,
            image_size=config.image_size,
            weights=config.weights,
            trainable_from=config.trainable_from,
            interpretable=config.interpretable,
            category_aware=config.category_aware,
            background_class=0 if config.task == "single" else None,
            loss=config.loss,
            loss_weight=config.loss_weight,
            loss_weight_decay=config.loss_weight_decay,
            beta=config.beta,
            center=config.center,
            apply_mask=config.apply_mask,
            normalization=config.normalization,
            seed=config.seed,
        )
        optimizer = keras.optimizers.SGD(
            _learning_rate(config, steps), momentum=config.momentum
        )
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kind = "interpretable" if config.interpretable else "ordinary"
    print(
        f"model: {config.backbone} ({kind}), "
        f"{built.inference.count_params():,} parameters, input "
        f"{config.image_size}px; strategy: {config.strategy} "
        f"({strategy.num_replicas_in_sync} replica(s)); precision: "
        f"{config.mixed_precision or 'float32'}"
    )
    os.makedirs(config.model_dir, exist_ok=True)
    backup_dir = os.path.join(config.model_dir, "backup")
    checkpoint_dir = os.path.join(config.model_dir, "checkpoints")
    if not config.resume:
        for folder in (backup_dir, checkpoint_dir):
            if os.path.isdir(folder):
                print(f"--noresume: discarding the old backup {folder}")
                shutil.rmtree(folder, ignore_errors=True)
    initial_epoch = 0
    if config.strategy != "multi_worker":
        initial_epoch = _resume_epoch(backup_dir)
    if initial_epoch > config.epochs:
        raise ValueError(
            f"The backup in {backup_dir!r} holds {initial_epoch} epochs, "
            f"more than `epochs`={config.epochs}. Pass epochs>="
            f"{initial_epoch} to continue it, `--noresume` to start over, "
            "or another `model_dir`."
        )
    if config.strategy != "multi_worker":
        _check_backup_config(config, backup_dir, initial_epoch)
    if initial_epoch:
        print(f"resuming from the end of epoch {initial_epoch}")
    probe = next(
        iter(_dataset(config, source, "test", training=False, parts=False))
    )["image"][:4]
    callbacks = [
        # First: it must raise before a checkpoint saves diverged weights.
        callbacks_lib.StopOnNonFinite(
            hint=(
                f"Settings: loss_weight={config.loss_weight} (None: the "
                f"layer default), learning_rate={config.learning_rate}, "
                f"batch_size={config.batch_size}. No model was saved; "
                "rerun with other settings and --noresume."
            )
        ),
        callbacks_lib.FilterLossEpoch(),
        # Before the logger: it keeps epoch-end summaries recorded.
        callbacks_lib.TensorBoard(
            logdir, update_freq=max(1, steps // 4), write_graph=False
        ),
        callbacks_lib.InterpretabilityLogger(
            os.path.join(logdir, "interpretability"),
            built.inference,
            probe.numpy(),
        ),
    ]
    if config.interpretable:
        # Before TensorBoard: it adds `<layer>_grad_ratio` to the epoch logs
        # (keras_interp.diagnostics), on a fixed batch of training images.
        ratio_batch = next(
            iter(_dataset(config, source, "train", training=False, parts=False))
        )
        tensorboard = next(
            i
            for i, callback in enumerate(callbacks)
            if isinstance(callback, keras.callbacks.TensorBoard)
        )
        callbacks.insert(
            tensorboard,
            diagnostics.GradientRatioLogger(*_to_inputs(ratio_batch)),
        )
    history = {}
    if config.strategy == "multi_worker":
        with strategy.scope():
            built.training.compile(optimizer, loss=loss)
        trainer = trainers.DistributedTrainer(
            built.training, optimizer, loss, strategy=strategy
        )
        history = trainer.fit(
            lambda epoch: _epoch_dataset(config, source, epoch, steps),
            epochs=config.epochs,
            steps_per_epoch=steps,
            callbacks=callbacks,
            checkpoint_dir=checkpoint_dir,
            verbose=config.verbose,
        ).history
    elif initial_epoch == config.epochs:
        # Finished training, unfinished evaluation (e.g. killed during it,
        # or results.json deleted): evaluate the trained weights.
        with strategy.scope():
            built.training.compile(optimizer, loss=loss, metrics=["accuracy"])
            optimizer.build(built.training.trainable_variables)
        print(
            f"training already finished ({initial_epoch} epochs): restoring "
            f"the trained weights from {backup_dir} to evaluate them"
        )
        _restore_backup(built.training, backup_dir)
    else:
        with strategy.scope():
            built.training.compile(optimizer, loss=loss, metrics=["accuracy"])
            optimizer.build(built.training.trainable_variables)
        # Seed states are written before the backup marks the epoch done.
        callbacks.append(_SeedStateBackup(backup_dir, initial_epoch))
        callbacks.append(_BackupAndRestore(backup_dir, delete_checkpoint=False))
        stream = _training_stream(config, source, initial_epoch, steps)
        history = built.training.fit(
            stream,
            epochs=config.epochs,
            steps_per_epoch=steps,
            callbacks=callbacks,
            shuffle=False,  # The stream is already shuffled, per epoch.
            verbose=config.verbose,
        ).history
    test = _dataset(config, source, "test", training=False)
    parts = _eval_parts(index, config.parts)
    results = {
        "config": dataclasses.asdict(config),
        "dataset_sizes": sizes,
        "final_train_logs": {k: float(v[-1]) for k, v in history.items()},
    }
    results.update(
        evaluate_model(
            built.inference,
            test,
            parts=parts,
            eval_map=config.eval_map,
            part_names=None if index is None else list(index.part_names),
        )
    )
    # model.keras first, results.json last: results.json marks the run
    # finished (see `_finished_results`); both are renamed into place.
    model_path = os.path.join(config.model_dir, MODEL_FILE)
    results_path = os.path.join(config.model_dir, RESULTS_FILE)
    _save_atomically(built.inference.save, model_path, ".keras")
    results["model_path"] = model_path
    results["logdir"] = logdir
    results["seconds"] = round(time.perf_counter() - start, 1)

    def write_results(path):
        with open(path, "w") as f:
            json.dump(results, f, indent=2, default=str)

    _save_atomically(write_results, results_path, ".json")
    _print_summary(results, config.model_dir, logdir)
    return results
