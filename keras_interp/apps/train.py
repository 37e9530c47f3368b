"""Train and evaluate an interpretable (or ordinary) CNN on CUB-format data.

`train_and_evaluate(config)` is what `examples/train_cub.py` runs; it is a
plain function of a `TrainConfig` (`keras_interp.apps.config`), so tests
and notebooks call it directly. It reads a CUB_200_2011-format folder (the
embedded synthetic part dataset by default), builds the paper's model with
`models.build_part_classifier`, writes the config to
`<model_dir>/config.json`, trains under the chosen `tf.distribute`
strategy with TensorBoard logging and epoch backups it can resume from,
then reports accuracy, the filter loss and location instability, and saves
the image-only model as `.keras`.

Beside it: `apps.config` (the settings), `apps.train_flags` (the flags
generated from them), `apps.schedules` (learning rates),
`apps.strategies` (`tf.distribute` by name) and `apps.run_folder` (what a
run folder holds, backups and resumption).

Safety: training stops with `callbacks.NonFiniteLossError` when a loss term
turns non-finite (no model is saved); a rerun never replaces a trained
model with an untrained one (a finished run is reported, and a run killed
after training is evaluated on its backed-up weights); `config.json`,
`model.keras` and `results.json` are renamed into place, `results.json`
last.

TensorFlow backend only (tf.data, tf.distribute, tf.summary).
"""

import dataclasses
import json
import math
import os
import shlex
import shutil
import time

import keras
import numpy as np

from keras_interp import callbacks as callbacks_lib
from keras_interp import data as data_lib
from keras_interp import diagnostics
from keras_interp import models
from keras_interp import trainers
from keras_interp.apps import run_folder
from keras_interp.apps import schedules
from keras_interp.apps.config import TASKS  # noqa: F401 (public)
from keras_interp.apps.config import TrainConfig
from keras_interp.apps.run_folder import MODEL_FILE
from keras_interp.apps.run_folder import RESULTS_FILE
from keras_interp.apps.strategies import make_strategy
from keras_interp.data import NEGATIVES_DIR
from keras_interp.evaluation import CUB_EVAL_PARTS  # noqa: F401 (re-export)
from keras_interp.evaluation import TOP_K  # noqa: F401 (re-export)
from keras_interp.evaluation import landmark_ids
from keras_interp.evaluation import report as report_lib

# caltech_birds2011 (data_source="tfds") has 200 classes.
TFDS_NUM_CLASSES = 200


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
            index.data_dir, NEGATIVES_DIR
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

    A thin view of `keras_interp.evaluation.report.evaluate_dataset`, the
    one evaluation implementation (also behind `python -m
    keras_interp.apps.evaluate`).

    Args:
        model: the image-only model (`PartClassifier.inference`).
        dataset: batched dicts with `image`, `label` and, for the
            instability, `parts` and `part_visible`.
        parts: landmark indices to evaluate, or None to skip instability.
        eval_map: `"masked"` or `"raw"` (see `evaluation.collect_peaks`).
        part_names: the dataset's landmark names in part-id order, to name
            the per-landmark entries (default `part_<k>`).

    Returns:
        `evaluation.report.training_results(summary)`: `accuracy`,
        `num_images`, `location_instability` (NaN if it could not be
        computed) with its `location_instability_reason` (None when
        computed), its reference values, per-landmark values and top-k
        counts, `num_filters_evaluated` and `dead_maps`.
    """
    summary = report_lib.evaluate_dataset(
        model,
        dataset,
        parts=parts,
        part_names=part_names,
        layer=models.PART_CONV,
        map=eval_map,
    )
    results = report_lib.training_results(summary)
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


def _callbacks(config, built, source, steps, logdir):
    """The callbacks of every strategy, in the order they must run."""
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
    ]
    if config.interpretable:
        # Before TensorBoard: it adds `<layer>_grad_ratio` to the epoch logs
        # (keras_interp.diagnostics), on a fixed batch of training images.
        ratio_batch = next(
            iter(_dataset(config, source, "train", training=False, parts=False))
        )
        callbacks.append(
            diagnostics.GradientRatioLogger(*_to_inputs(ratio_batch))
        )
    callbacks += [
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
    return callbacks


def _build(config, strategy, num_classes, steps):
    """The model pair, optimizer and task loss, built in `strategy`'s scope."""
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
        rate = schedules.learning_rate(
            config.lr_schedule,
            initial=config.learning_rate,
            epochs=config.epochs,
            steps_per_epoch=steps,
        )
        optimizer = keras.optimizers.SGD(rate, momentum=config.momentum)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return built, optimizer, loss


def _prepare_backup(config, backup_dir, checkpoint_dir):
    """The epoch to resume at, after refusing backups that do not fit."""
    if not config.resume:
        for folder in (backup_dir, checkpoint_dir):
            if os.path.isdir(folder):
                print(f"--noresume: discarding the old backup {folder}")
                shutil.rmtree(folder, ignore_errors=True)
    if config.strategy == "multi_worker":
        return 0  # DistributedTrainer resumes from `checkpoint_dir` itself.
    initial_epoch = run_folder.resume_epoch(backup_dir)
    if initial_epoch > config.epochs:
        raise ValueError(
            f"The backup in {backup_dir!r} holds {initial_epoch} epochs, "
            f"more than `epochs`={config.epochs}. Pass epochs>="
            f"{initial_epoch} to continue it, `--noresume` to start over, "
            "or another `model_dir`."
        )
    run_folder.check_backup_config(config, backup_dir, initial_epoch)
    return initial_epoch


def train_and_evaluate(config: TrainConfig) -> dict:
    """Runs one experiment end to end; returns (and saves) its results.

    Writes `<model_dir>/config.json` (the `TrainConfig`) before training
    starts, and `model.keras` and `results.json` (whose `"config"` is the
    same dict) when the run finishes.

    Args:
        config: a `TrainConfig`.

    Returns:
        A dict with the config, the dataset sizes, final training metrics,
        the test accuracy, the filter losses and (with landmarks) the
        location instability. It is also written to
        `<model_dir>/results.json`.
    """
    config.validate()
    start = time.perf_counter()
    logdir = config.logdir or os.path.join(config.model_dir, "logs")
    if config.resume:
        finished = run_folder.finished_results(config)
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
        num_classes = TFDS_NUM_CLASSES
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
            raise ValueError(
                "Pass `steps_per_epoch` with `data_source='tfds'`: the "
                "size of a TFDS split is not read in advance. Received: "
                "steps_per_epoch=None."
            )
        steps = max(sizes["train"] // config.batch_size, 1)
    print(
        f"data: {data_dir} ({config.task}-category, {num_classes} classes); "
        f"train {sizes['train']} / test {sizes['test']} images"
    )
    built, optimizer, loss = _build(config, strategy, num_classes, steps)
    kind = "interpretable" if config.interpretable else "ordinary"
    print(
        f"model: {config.backbone} ({kind}), "
        f"{built.inference.count_params():,} parameters, input "
        f"{config.image_size}px; strategy: {config.strategy} "
        f"({strategy.num_replicas_in_sync} replica(s)); precision: "
        f"{config.mixed_precision or 'float32'}"
    )
    os.makedirs(config.model_dir, exist_ok=True)
    backup_dir = os.path.join(config.model_dir, run_folder.BACKUP_DIR)
    checkpoint_dir = os.path.join(config.model_dir, "checkpoints")
    initial_epoch = _prepare_backup(config, backup_dir, checkpoint_dir)
    # The settings of the weights about to be trained (or evaluated).
    run_folder.write_config(config)
    if initial_epoch:
        print(f"resuming from the end of epoch {initial_epoch}")
    callbacks = _callbacks(config, built, source, steps, logdir)
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
        run_folder.restore_backup(built.training, backup_dir)
    else:
        with strategy.scope():
            built.training.compile(optimizer, loss=loss, metrics=["accuracy"])
            optimizer.build(built.training.trainable_variables)
        # Seed states are written before the backup marks the epoch done.
        callbacks.append(run_folder.SeedStateBackup(backup_dir, initial_epoch))
        callbacks.append(
            run_folder.BackupAndRestore(backup_dir, delete_checkpoint=False)
        )
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
    results = {
        "config": dataclasses.asdict(config),
        "dataset_sizes": sizes,
        "final_train_logs": {k: float(v[-1]) for k, v in history.items()},
    }
    results.update(
        evaluate_model(
            built.inference,
            test,
            parts=_eval_parts(index, config.parts),
            eval_map=config.eval_map,
            part_names=None if index is None else list(index.part_names),
        )
    )
    # model.keras first, results.json last: results.json marks the run
    # finished (see `run_folder.finished_results`); both are renamed into
    # place.
    model_path = os.path.join(config.model_dir, MODEL_FILE)
    run_folder.save_atomically(built.inference.save, model_path, ".keras")
    results["model_path"] = model_path
    results["logdir"] = logdir
    results["seconds"] = round(time.perf_counter() - start, 1)
    run_folder.write_json(results, os.path.join(config.model_dir, RESULTS_FILE))
    _print_summary(results, config.model_dir, logdir)
    return results
