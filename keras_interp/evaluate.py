r"""Evaluate a trained (interpretable or ordinary) CNN on CUB-format data.

One implementation of the paper's evaluation (Zhang, Wu, Zhu, CVPR 2018,
§5.2; `docs/method_notes.md` §3), used by `train.evaluate_model` at the end of
training and by this module's command line on a saved model:

* **accuracy**: argmax of the logits against the labels;
* **location instability** (§5.2.2; lower is better) of the filters of one
  layer, against the landmarks `parts` (CUB: the authors' back, forehead,
  tail), on the `map` chosen (`"masked"`: paper; `"raw"`: authors' code),
  per category with each filter's lowest-deviation category (the paper's
  multi-category rule; a single category reduces to the plain metric);
  each landmark scored on the images where it is visible, (image,
  filter) pairs with a dead map (peak <= 0) left out of the top-k, and
  two reference values beside it: a filter stuck at its best fixed cell,
  and the same filters with the landmarks shuffled across images
  (`evaluation.location_instability_report`);
* **dead maps**: the fraction of the layer's (image, filter) maps with
  peak <= 0, and of its filters dead on every image;
* **part interpretability** (§5.2.1; higher is better) against the
  dataset's part masks (`part_segmentations/`), always on the masked map,
  the post-ReLU/mask map the paper defines it on;
* optionally, per-filter PNG grids of each chosen filter's top images
  with its map laid over them, and `summary.json`.

The model runs once over the dataset for accuracy and every map's peak
(`N x F` numbers are kept, never the maps); part interpretability streams
twice more (`evaluation.collect_part_interpretability`); the figures read
back only the `num_figure_filters x top_k_images` images they show.

A metric that cannot be computed is None with a `*_reason`. A model with
non-finite outputs (NaN or infinite logits or maps, e.g. diverged in
training) is refused with a `ValueError`.

Command line (prints the JSON summary to stdout and a short digest,
`format_summary`, to stderr; exit status 2 with a one-line message on
stderr for bad inputs, a diverged model included):

    python -m keras_interp.evaluate --model runs/train_cub/model.keras \
        [--data_dir CUB_200_2011] [--parts back,forehead,tail] [--out DIR] \
        [--split test] [--map masked|raw] [--batch_size 32] \
        [--negatives DIR] [--layer part_conv] [--no_crop]

TensorFlow backend (the `tf.data` pipeline of `keras_interp.data`).
"""

import argparse
import json
import math
import os
import sys
import warnings
from typing import Any
from typing import Optional
from typing import Sequence

import keras
import numpy as np

from keras_interp import data as data_lib
from keras_interp import evaluation
from keras_interp import models
from keras_interp.evaluation import feature_maps
from keras_interp.evaluation.location_instability import MIN_IMAGES
from keras_interp.evaluation.location_instability import SHUFFLE_SEED
from keras_interp.layers import InterpretableMixin

# Part interpretability is defined on the map after ReLU and mask (paper
# §5.2.1, after Network Dissection); `map` only switches the instability.
PART_INTERPRETABILITY_MAP = "masked"
# Location instability leaves (image, filter) pairs whose map peak is <= 0
# out of the top-k: a blank map has no location (see
# `evaluation.location_instability`).
DROP_DEAD_MAPS = True
# Written next to the figures when `out_dir` is given.
SUMMARY_FILENAME = "summary.json"
# `results.json` that `train.train_and_evaluate` writes next to the model.
RESULTS_FILENAME = "results.json"
# Exit status of the command line for bad inputs (as argparse uses).
USAGE_ERROR = 2
# Figures show the most stable filters first (lowest location instability),
# then the most active (highest mean peak).
FIGURE_SELECTION = (
    "lowest location instability first, then highest mean peak activation"
)
_CONV_LIKE = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    InterpretableMixin,
)
_PATH_SEPARATOR = "/"


def _finite_or_none(value: Any) -> Optional[float]:
    value = float(value)
    return value if math.isfinite(value) else None


def _check_count(name: str, value: Any, minimum: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        raise ValueError(
            f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}."
        )
    return int(value)


def _layer_paths(model: keras.Model, prefix: str = "") -> list:
    """`(path, layer)` of every layer, nested models entered."""
    found = []
    for layer in model.layers:
        path = prefix + layer.name
        found.append((path, layer))
        if isinstance(layer, keras.Model):
            found.extend(_layer_paths(layer, path + _PATH_SEPARATOR))
    return found


def conv_layer_names(model: keras.Model) -> list:
    """Names of the layers of `model` with a per-filter feature map.

    Convolutions (`Conv2D`, `DepthwiseConv2D`, `SeparableConv2D`, including
    `InterpretableConv2D`) and `InterpretableMask` layers, nested ones as
    `"outer/inner"` paths, in model order.

    Args:
        model: a `keras.Model`.

    Returns:
        A list of layer names (paths).

    Example:

    >>> built = models.build_part_classifier(
    ...     "tiny_vgg", num_classes=3, image_size=32, filters=8)
    >>> conv_layer_names(built.inference)[-2:]  # doctest: +SKIP
    ['top_mask', 'part_conv']
    """
    return [
        path
        for path, layer in _layer_paths(model)
        if isinstance(layer, _CONV_LIKE)
    ]


def _check_layer(model: keras.Model, layer: Any) -> str:
    paths = [path for path, _ in _layer_paths(model)]
    found = isinstance(layer, str) and any(
        path == layer or path.endswith(_PATH_SEPARATOR + layer)
        for path in paths
    )
    if not found:
        raise ValueError(
            f"`layer` must name a layer of model '{model.name}'. Received: "
            f"layer={layer!r}. Layers with a feature map: "
            f"{conv_layer_names(model)}. Pass one of them (the "
            f"interpretable models' evaluated layer is '{models.PART_CONV}')."
        )
    return layer


def _logits_model(model: keras.Model) -> None:
    if len(model.outputs) != 1:
        raise ValueError(
            "`model` must have one output, the class logits (the image-only "
            "`PartClassifier.inference` model). Received a model with "
            f"{len(model.outputs)} outputs."
        )


def _joint_model(model: keras.Model, probe: keras.Model) -> Any:
    """One model giving `[map, logits]`, so a single forward pass serves.

    The probe's map is a tensor of `model`'s own graph when the layer is
    not nested; otherwise (or when Keras refuses) None, and the caller runs
    the two models separately.
    """
    try:
        return keras.Model(probe.inputs, [probe.output, model.outputs[0]])
    except (ValueError, TypeError, AttributeError):
        return None


class _Stream:
    """What one pass over the dataset keeps: `N x F` peaks and counts."""

    def __init__(self, model: keras.Model, with_landmarks: bool):
        self.model = model
        self.with_landmarks = with_landmarks
        self.correct = 0
        self.index, self.value = [], []
        self.landmarks, self.visible, self.labels = [], [], []
        self.image_size = self.map_size = None

    @property
    def num_images(self) -> int:
        return sum(len(v) for v in self.value)

    def update(self, batch: dict, maps: np.ndarray, logits: Any) -> None:
        logits = np.asarray(logits)
        labels = np.asarray(batch["label"])
        if logits.ndim != 2 or len(logits) != len(labels):
            raise ValueError(
                "`model` must output logits of shape (batch, classes). "
                f"Received shape {logits.shape} for {len(labels)} images."
            )
        first = self.num_images
        for name, values in (("logits", logits), ("feature maps", maps)):
            if not np.all(np.isfinite(values)):
                feature_maps.check_finite(
                    values,
                    f"The model's {name} (images {first} to "
                    f"{first + len(labels) - 1} of the dataset)",
                    _diverged_fix(self.model),
                )
        self.correct += int(np.sum(np.argmax(logits, axis=-1) == labels))
        self.labels.append(labels)
        self.image_size = tuple(int(s) for s in batch["image"].shape[1:3])
        self.map_size = tuple(int(s) for s in maps.shape[1:3])
        index, value = evaluation.peaks_from_maps(maps)
        self.index.append(index)
        self.value.append(value.astype("float32"))
        if self.with_landmarks:
            self.landmarks.append(np.asarray(batch["parts"], "float32"))
            self.visible.append(np.asarray(batch["part_visible"], bool))


def _non_finite_weights(model: keras.Model) -> list:
    return [
        weight.path
        for weight in model.weights
        if not bool(keras.ops.all(keras.ops.isfinite(weight)))
    ]


_RETRAIN = (
    "Its argmax classes and peak cells would be arbitrary (argmax of NaN is "
    "index 0), so it is not evaluated. Retrain it (e.g. with a smaller "
    "learning rate or loss_weight) and evaluate a model with finite weights."
)


def _check_weights(model: keras.Model) -> None:
    bad = _non_finite_weights(model)
    if bad:
        raise ValueError(
            f"`model` has non-finite weights: {len(bad)} of its "
            f"{len(model.weights)} weight tensors hold NaN or infinity "
            f"(e.g. {', '.join(bad[:3])}): it diverged in training. " + _RETRAIN
        )


def _diverged_fix(model: keras.Model) -> str:
    """What to tell the user about a model with non-finite outputs."""
    bad = _non_finite_weights(model)
    if bad:
        return (
            f"{len(bad)} weight tensors hold NaN or infinity (e.g. "
            f"{', '.join(bad[:3])}): the model diverged. " + _RETRAIN
        )
    return (
        "Every weight is finite, so check the images (finite, 0..255) and "
        "the model's numerics (e.g. float16 overflow). " + _RETRAIN
    )


def _check_batch(batch: dict, with_landmarks: bool) -> None:
    needed = ("image", "label") + (
        ("parts", "part_visible") if with_landmarks else ()
    )
    missing = [key for key in needed if key not in batch]
    if missing:
        raise ValueError(
            f"`dataset` batches must contain {list(needed)} (the "
            "`keras_interp.data.make_dataset` schema; `parts` and "
            "`part_visible` only when `parts` are evaluated). Missing "
            f"{missing}; received keys {sorted(batch)}."
        )


def _stream(model, probe, data_format, dataset, with_landmarks) -> _Stream:
    joint = _joint_model(model, probe)
    state = _Stream(model, with_landmarks)
    for batch in feature_maps.iterate_batches(dataset):
        _check_batch(batch, with_landmarks)
        images = np.asarray(batch["image"])
        if joint is not None:
            maps, logits = joint.predict_on_batch(images)
        else:
            maps = probe.predict_on_batch(images)
            logits = model.predict_on_batch(images)
        maps = feature_maps.to_channels_last(np.asarray(maps), data_format)
        state.update(batch, maps, logits)
    if not state.value:
        raise ValueError("`dataset` yielded no batches.")
    return state


def _mean_or_none(values: np.ndarray) -> Optional[float]:
    values = values[np.isfinite(values)]
    return _finite_or_none(values.mean()) if values.size else None


def _location_instability(state, parts, part_names, rf) -> dict:
    """`location_instability_report` on the streamed peaks, as JSON parts."""
    names = [str(part_names[p]) for p in parts]
    landmarks = np.concatenate(state.landmarks)[:, parts]
    visible = np.concatenate(state.visible)[:, parts]
    report = evaluation.location_instability_report(
        np.concatenate(state.index),
        np.concatenate(state.value),
        landmarks,
        visible,
        image_size=state.image_size,
        receptive_field=rf,
        map_shape=state.map_size,
        top_k=evaluation.TOP_K,
        # Per category, keeping each filter's best (paper §5.2.2 for
        # multi-category models): a filter that is silent on other
        # classes is not judged on their images, and each class is scored
        # on its own landmarks.
        labels=np.concatenate(state.labels),
        category_rule="deviation",
        drop_dead_maps=DROP_DEAD_MAPS,
        shuffle_seed=SHUFFLE_SEED,
    )
    counts = {name: int(visible[:, k].sum()) for k, name in enumerate(names)}
    valid = np.isfinite(report.per_filter)
    reason = None
    if report.reason is not None:
        reason = (
            f"{report.reason} (images with each landmark visible: {counts}); "
            "use a larger split or other `parts`"
        )
    per_part, per_part_reason, selected = {}, {}, {}
    shuffled_valid = np.isfinite(report.shuffled_per_filter)
    per_part_fixed = {
        name: _mean_or_none(report.fixed_cell_per_landmark[valid, k])
        for k, name in enumerate(names)
    }
    per_part_shuffled = {
        name: _mean_or_none(report.shuffled_per_landmark[shuffled_valid, k])
        for k, name in enumerate(names)
    }
    for k, name in enumerate(names):
        values = report.per_landmark[valid, k]
        scored = np.isfinite(values)
        per_part[name] = _mean_or_none(values)
        selected[name] = (
            float(report.selected_images[valid, k][scored].mean())
            if scored.any()
            else None
        )
        if scored.any():
            per_part_reason[name] = None
        elif report.pool_images[k] < MIN_IMAGES:
            per_part_reason[name] = (
                f"visible in fewer than {MIN_IMAGES} images of every "
                f"category ({counts[name]} in all)"
            )
        elif not valid.any():
            per_part_reason[name] = "no filter could be evaluated"
        else:
            per_part_reason[name] = (
                "no evaluated filter's category shows it in at least "
                f"{MIN_IMAGES} images"
            )
    return {
        "value": None if reason else _finite_or_none(report.value),
        "reason": reason,
        "fixed_cell": _finite_or_none(report.fixed_cell),
        "shuffled": _finite_or_none(report.shuffled),
        "per_filter": report.per_filter,
        "per_part": per_part,
        "per_part_reason": per_part_reason,
        "per_part_fixed_cell": per_part_fixed,
        "per_part_shuffled": per_part_shuffled,
        "selection": {
            "top_k": evaluation.TOP_K,
            "pool_images": {
                name: int(report.pool_images[k]) for k, name in enumerate(names)
            },
            "mean_selected_images": selected,
            "drop_dead_maps": DROP_DEAD_MAPS,
            "dead_dropped_fraction": _finite_or_none(
                report.dead_dropped_fraction
            ),
            "shuffle_seed": SHUFFLE_SEED,
        },
        "visible": counts,
        "parts": names,
    }


def _part_interpretability(
    model, layer, dataset, part_names, num_images, rf, map_size
) -> dict:
    part_ids = (
        None
        if part_names is None
        else np.arange(1, len(part_names) + 1)  # Mask id k is part k.
    )
    parts = None if part_names is None else list(part_names)
    if num_images is None:
        num_images = sum(
            len(batch["image"])
            for batch in feature_maps.iterate_batches(dataset)
        )
    cells = num_images * map_size[0] * map_size[1]
    reason = evaluation.too_few_cells_reason(cells)
    if reason is not None:
        # Two model passes saved: the score would be 0 whatever the maps.
        return {
            "value": None,
            "reason": (
                f"{reason} ({num_images} images x {map_size[0]} x "
                f"{map_size[1]} cells)"
            ),
            "num_filters": 0,
            "parts": parts,
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value, per_filter, _ = evaluation.collect_part_interpretability(
            model,
            layer,
            dataset,
            map=PART_INTERPRETABILITY_MAP,
            part_ids=part_ids,
            return_per_filter=True,
            num_images=num_images,
            receptive_field=rf,
        )
    value = _finite_or_none(value)
    return {
        "value": value,
        "reason": (
            None
            if value is not None
            else "no evaluated image contains any part of the part masks"
        ),
        "num_filters": int(np.sum(np.isfinite(per_filter))),
        "parts": parts,
    }


def _figure_filters(state, per_filter, count) -> list:
    """The `count` filters to draw (see `FIGURE_SELECTION`)."""
    mean_peak = np.concatenate(state.value).mean(axis=0)
    filters = len(mean_peak)
    instability = (
        np.full(filters, np.inf)
        if per_filter is None
        else np.where(np.isfinite(per_filter), per_filter, np.inf)
    )
    order = np.lexsort((np.arange(filters), -mean_peak, instability))
    return [int(f) for f in order[:count]]


def _figures(probe, data_format, dataset, state, filters, top_k, rf, out):
    """Plots `filters`, reading back only their top `top_k` images."""
    values = np.concatenate(state.value)
    wanted = set()
    for f in filters:
        order = np.argsort(-values[:, f], kind="stable")[:top_k]
        wanted.update(int(i) for i in order)
    images, maps, start = [], [], 0
    for batch in feature_maps.iterate_batches(dataset):
        batch_images = np.asarray(batch["image"])
        rows = [
            i - start
            for i in sorted(wanted)
            if 0 <= i - start < len(batch_images)
        ]
        start += len(batch_images)
        if not rows:
            continue
        batch_maps = np.asarray(probe.predict_on_batch(batch_images))
        batch_maps = feature_maps.to_channels_last(batch_maps, data_format)
        images.append(batch_images[rows])
        maps.append(batch_maps[rows])
    return evaluation.plot_top_images(
        np.concatenate(images),
        np.concatenate(maps),
        filters,
        out,
        top_k=top_k,
        receptive_field=rf,
    )


def _check_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "`out_dir` needs matplotlib for the figures: pip install "
            "matplotlib, or pass out_dir=None."
        ) from error


def evaluate_dataset(
    model: keras.Model,
    dataset: Any,
    *,
    parts: Optional[Sequence[int]] = None,
    part_names: Optional[Sequence[str]] = None,
    layer: str = models.PART_CONV,
    map: str = "masked",
    part_mask_dataset: Any = None,
    part_mask_images: Optional[int] = None,
    out_dir: Optional[str] = None,
    num_figure_filters: int = 8,
    top_k_images: int = 8,
    metadata: Optional[dict] = None,
) -> dict:
    """Accuracy, location instability and part interpretability of a layer.

    The shared implementation behind `evaluate` (which builds the datasets
    from a `CubIndex`) and `train.evaluate_model`. See the module docstring
    for what is computed on which map.

    Args:
        model: an image-only `keras.Model` with one output, the logits
            (e.g. `PartClassifier.inference`, or a loaded `.keras` file).
        dataset: a re-iterable `tf.data.Dataset` (or list) of batched dicts
            with `image` `(B, S, S, 3)` in 0..255, `label` `(B,)` and, with
            `parts`, `parts` `(B, P, 2)` and `part_visible` `(B, P)`, as
            `data.make_dataset` yields them, not shuffled.
        parts: landmark indices (into the `P` of `parts`) for location
            instability, or None to skip it.
        part_names: the names of all `P` parts, in part-id order (mask id
            `k` is `part_names[k - 1]`); default `"part_<k>"` names and,
            for part interpretability, every mask id present.
        layer: the evaluated layer (default "part_conv").
        map: `"masked"` (paper) or `"raw"` (authors' code): the map whose
            peaks give the location instability and the figures.
        part_mask_dataset: batches with `image` and `part_mask` `(B, S, S)`
            part ids (0 background) of the images to score part
            interpretability on (objects only: background images would
            lower the thresholds), or None to skip it.
        part_mask_images: number of images in `part_mask_dataset`, if
            known (saves a counting pass).
        out_dir: if given, the `filter_XXXX.png` grids are written there
            (`evaluate` also writes `summary.json`).
        num_figure_filters: filters to draw (see `FIGURE_SELECTION`).
        top_k_images: images per filter grid.
        metadata: extra JSON-serialisable entries for the summary.

    Returns:
        A JSON-serialisable dict (undefined numbers are None, never NaN):

        * `accuracy`;
        * `location_instability` and `part_interpretability`, each None
          with a `*_reason` string when it cannot be computed (the reason
          is None otherwise);
        * `location_instability_fixed_cell` and
          `location_instability_shuffled_landmarks`: the reference values of
          `evaluation.location_instability_report` (same filters, images
          and rules; a filter stuck at its best fixed cell, and the
          landmarks shuffled across images of the same category);
        * `location_instability_per_part` (landmark -> mean `D_{f,k}` over
          the evaluated filters) and `location_instability_per_part_reason`
          (landmark -> None, or why it was not scored), with the same
          references per landmark:
          `location_instability_per_part_fixed_cell` (the terms of each
          filter's best fixed cell) and
          `location_instability_per_part_shuffled_landmarks`;
        * `location_instability_selection`: `top_k`, `pool_images`
          (landmark -> the most images with it visible in one category:
          what the top-k chooses from), `mean_selected_images` (landmark
          -> images the evaluated filters' top-k used, on average),
          `drop_dead_maps`, `dead_dropped_fraction` (of the pairs the
          paper's top-k would select, the fraction with a dead map,
          dropped) and `shuffle_seed`;
        * `dead_maps`: `map` (the map they are counted on, `map`),
          `map_fraction` (of the (image, filter) maps of `layer`, over
          every image, those with peak <= 0) and `filter_fraction`
          (filters dead on every image);
        * `layer`, `map`, `part_interpretability_map`, `parts`,
          `part_interpretability_parts`, `top_k`, `receptive_field`;
        * `counts`: `num_images`, `num_filters`, `num_filters_evaluated`,
          `visible_images` per landmark, `part_interpretability_images`,
          `part_interpretability_filters`;
        * with `out_dir`, `figures` (`filters`, `paths`, `selection`);
          plus `metadata`.

        The location-instability entries other than the reason are None
        when `parts` is None.

    Raises:
        ValueError: for a bad `layer`, `map`, count, a model without one
            logits output, batches missing a key, or a diverged model:
            non-finite weights, logits or maps (the message names the
            non-finite weights).
        ImportError: if `out_dir` is given and matplotlib is missing.

    Example:

    >>> summary = evaluate_dataset(model, data.make_dataset(
    ...     index, split="test", image_size=64, drop_remainder=False),
    ...     parts=[0, 1])  # doctest: +SKIP
    >>> sorted(summary["counts"])  # doctest: +SKIP
    ['num_filters', 'num_filters_evaluated', 'num_images', ...]
    """
    _logits_model(model)
    _check_weights(model)
    layer = _check_layer(model, layer)
    feature_maps.check_map(map)
    num_figure_filters = _check_count(
        "num_figure_filters", num_figure_filters, 0
    )
    top_k_images = _check_count("top_k_images", top_k_images, 1)
    if out_dir is not None:
        _check_matplotlib()
    parts = None if parts is None else [int(p) for p in parts]
    if parts is not None and not parts:
        parts = None
    probe = evaluation.feature_map_model(model, layer, map)
    data_format = feature_maps.layer_data_format(model, layer)
    state = _stream(model, probe, data_format, dataset, parts is not None)
    num_filters = int(state.value[0].shape[1])
    needs_rf = (
        parts is not None
        or part_mask_dataset is not None
        or (out_dir is not None and num_figure_filters)
    )
    rf = evaluation.receptive_field(model, layer) if needs_rf else None

    num_parts = int(state.landmarks[0].shape[1]) if parts is not None else None
    names = part_names
    if names is None and num_parts is not None:
        names = [f"part_{k + 1}" for k in range(num_parts)]
    if parts is not None:
        bad = [p for p in parts if not 0 <= p < num_parts]
        if bad:
            raise ValueError(
                f"`parts` must be landmark indices in [0, {num_parts}). "
                f"Received: parts={parts!r}."
            )
        stability = _location_instability(state, parts, names, rf)
    else:
        stability = {
            "value": None,
            "reason": "no landmarks: the dataset has no part annotations",
            "fixed_cell": None,
            "shuffled": None,
            "per_filter": None,
            "per_part": None,
            "per_part_reason": None,
            "per_part_fixed_cell": None,
            "per_part_shuffled": None,
            "selection": None,
            "visible": None,
            "parts": None,
        }
    if part_mask_dataset is not None:
        interpretability = _part_interpretability(
            model,
            layer,
            part_mask_dataset,
            None if part_names is None else [str(n) for n in part_names],
            part_mask_images,
            rf,
            state.map_size,
        )
    else:
        interpretability = {
            "value": None,
            "reason": "no part masks were given (part_mask_dataset=None)",
            "num_filters": None,
            "parts": None,
        }
    per_filter = stability["per_filter"]
    dead = evaluation.dead_map_fractions(np.concatenate(state.value))
    summary = {
        "accuracy": state.correct / state.num_images,
        "location_instability": stability["value"],
        "location_instability_reason": stability["reason"],
        "location_instability_fixed_cell": stability["fixed_cell"],
        "location_instability_shuffled_landmarks": stability["shuffled"],
        "part_interpretability": interpretability["value"],
        "part_interpretability_reason": interpretability["reason"],
        "layer": layer,
        "map": map,
        "part_interpretability_map": PART_INTERPRETABILITY_MAP,
        "parts": stability["parts"],
        "part_interpretability_parts": interpretability["parts"],
        "location_instability_per_part": stability["per_part"],
        "location_instability_per_part_reason": stability["per_part_reason"],
        "location_instability_per_part_fixed_cell": stability[
            "per_part_fixed_cell"
        ],
        "location_instability_per_part_shuffled_landmarks": stability[
            "per_part_shuffled"
        ],
        "location_instability_selection": stability["selection"],
        "dead_maps": {
            "map": map,
            "map_fraction": dead.map_fraction,
            "filter_fraction": dead.filter_fraction,
        },
        "top_k": evaluation.TOP_K,
        "receptive_field": None
        if rf is None
        else {
            "stride": [int(s) for s in rf.stride],
            "offset": [float(c) for c in rf.offset],
            "size": [int(s) for s in rf.size],
        },
        "counts": {
            "num_images": state.num_images,
            "num_filters": num_filters,
            "num_filters_evaluated": (
                0
                if per_filter is None
                else int(np.sum(np.isfinite(per_filter)))
            ),
            "visible_images": stability["visible"],
            "part_interpretability_images": (
                None if part_mask_dataset is None else part_mask_images
            ),
            "part_interpretability_filters": interpretability["num_filters"],
        },
    }
    summary.update(metadata or {})
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        filters = _figure_filters(
            state, per_filter, min(num_figure_filters, num_filters)
        )
        paths = (
            _figures(
                probe,
                data_format,
                dataset,
                state,
                filters,
                top_k_images,
                rf,
                out_dir,
            )
            if filters
            else []
        )
        summary["figures"] = {
            "filters": filters,
            "paths": [os.path.abspath(p) for p in paths],
            "selection": FIGURE_SELECTION,
        }
    return summary


# `evaluate_dataset` entries that `training_results` copies as they are.
_TRAINING_RESULTS = (
    "location_instability_reason",
    "location_instability_fixed_cell",
    "location_instability_shuffled_landmarks",
    "location_instability_per_part",
    "location_instability_per_part_reason",
    "location_instability_per_part_fixed_cell",
    "location_instability_per_part_shuffled_landmarks",
    "location_instability_selection",
    "dead_maps",
)


def training_results(summary: dict) -> dict:
    """The entries of an `evaluate_dataset` summary kept in `results.json`.

    `train.evaluate_model` returns these, so a metric added to the summary
    reaches `results.json` by being listed here.

    Args:
        summary: an `evaluate_dataset` summary.

    Returns:
        A dict: `accuracy`, `num_images`, `location_instability` (NaN when
        not computed, as `results.json` has always written it),
        `num_filters_evaluated`, and the summary's
        `location_instability_reason`, `location_instability_fixed_cell`,
        `location_instability_shuffled_landmarks`,
        `location_instability_per_part`,
        `location_instability_per_part_reason`,
        `location_instability_per_part_fixed_cell`,
        `location_instability_per_part_shuffled_landmarks`,
        `location_instability_selection` and `dead_maps` (None where the
        summary lacks them).
    """
    value = summary["location_instability"]
    results = {
        "accuracy": summary["accuracy"],
        "num_images": summary["counts"]["num_images"],
        "location_instability": float("nan") if value is None else value,
        "num_filters_evaluated": summary["counts"]["num_filters_evaluated"],
    }
    for key in _TRAINING_RESULTS:
        results[key] = summary.get(key)
    return results


def _number(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_summary(summary: dict) -> str:
    """A few human-readable lines of an `evaluate_dataset` summary.

    The command line prints them to stderr (stdout stays the JSON). Every
    location-instability value comes with its two reference values, and a
    metric that was not computed with its reason:

    ```
    accuracy: 0.4792 (240 images)
    location instability: 0.0412 (lower is better; fixed cell 0.0660,
        shuffled landmarks 0.0905; 120 of 128 filters; masked map of
        part_conv; landmarks back, forehead, tail)
    top-k: 100 images per filter and landmark, of at most 48 (back),
        ...; on average 47.2 used; 3.1% of the maps it would select were
        dead (peak <= 0) and dropped
    dead maps (masked map, peak <= 0): 12.5% of (image, filter) maps,
        6.3% of filters on every image
    part interpretability: not computed: <reason>
    ```

    (each entry is one line).

    Args:
        summary: an `evaluate_dataset` (or `evaluate`) summary.

    Returns:
        The lines, joined by newlines.
    """
    counts = summary["counts"]
    lines = [
        f"accuracy: {_number(summary['accuracy'])} "
        f"({counts['num_images']} images)"
    ]
    value = summary["location_instability"]
    if value is None:
        lines.append(
            "location instability: not computed: "
            f"{summary['location_instability_reason']}"
        )
    else:
        lines.append(
            f"location instability: {_number(value)} (lower is better; "
            "fixed cell "
            f"{_number(summary['location_instability_fixed_cell'])}, "
            "shuffled landmarks "
            f"{_number(summary['location_instability_shuffled_landmarks'])};"
            f" {counts['num_filters_evaluated']} of {counts['num_filters']} "
            f"filters; {summary['map']} map of {summary['layer']}; "
            f"landmarks {', '.join(summary['parts'])})"
        )
    selection = summary.get("location_instability_selection")
    if selection is not None:
        pools = ", ".join(
            f"{n} ({name})" for name, n in selection["pool_images"].items()
        )
        used = [v for v in selection["mean_selected_images"].values() if v]
        dropped = selection["dead_dropped_fraction"]
        lines.append(
            f"top-k: {selection['top_k']} images per filter and landmark, "
            f"of at most {pools} per category"
            + (f"; on average {np.mean(used):.1f} used" if used else "")
            + (
                f"; {dropped:.1%} of the maps it would select were dead "
                "(peak <= 0) and dropped"
                if dropped is not None
                else ""
            )
        )
    dead = summary["dead_maps"]
    lines.append(
        f"dead maps ({dead['map']} map, peak <= 0): "
        f"{dead['map_fraction']:.1%} of (image, filter) maps, "
        f"{dead['filter_fraction']:.1%} of filters on every image"
    )
    value = summary["part_interpretability"]
    lines.append(
        f"part interpretability: {_number(value)} (higher is better)"
        if value is not None
        else "part interpretability: not computed: "
        f"{summary['part_interpretability_reason']}"
    )
    return "\n".join(lines)


def write_summary(summary: dict, out_dir: str) -> str:
    """Writes `summary` as strict JSON to `<out_dir>/summary.json`.

    Args:
        summary: a dict from `evaluate` (no NaN: undefined values are None).
        out_dir: the output folder (created if needed).

    Returns:
        The path written.

    Raises:
        ValueError: if `summary` holds a NaN or infinity.
    """
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, SUMMARY_FILENAME)
    with open(path, "w") as f:
        json.dump(summary, f, indent=2, allow_nan=False)
        f.write("\n")
    return path


def _model_image_size(model: keras.Model, image_size: Any) -> int:
    shape = tuple(model.inputs[0].shape) if model.inputs else ()
    fixed = (
        shape[1]
        if len(shape) == 4 and shape[1] is not None and shape[1] == shape[2]
        else None
    )
    if image_size is None:
        if fixed is None:
            raise ValueError(
                "`image_size` is needed: the model's input shape "
                f"{shape} has no fixed square size. Pass image_size=224 "
                "(the size it was trained at)."
            )
        return int(fixed)
    image_size = _check_count("image_size", image_size, 1)
    if fixed is not None and image_size != fixed:
        raise ValueError(
            f"`image_size` must match the model's input size {fixed}. "
            f"Received: image_size={image_size}. Pass image_size=None."
        )
    return image_size


def _check_classes(model, index, negatives) -> None:
    outputs = model.outputs[0].shape[-1]
    expected = 2 if negatives is not None else index.num_classes
    if outputs is not None and outputs != expected:
        if negatives is None:
            fix = (
                "A single-category model (2 outputs: background, object) "
                "needs `negatives`, a folder of background images; "
                "otherwise evaluate on the dataset it was trained on."
            )
        else:
            fix = (
                "With `negatives` the task is objects vs background (2 "
                "classes); pass negatives=None for a multi-class model."
            )
        raise ValueError(
            f"`model` has {outputs} outputs but the evaluation data has "
            f"{expected} classes ({index.data_dir!r}, negatives="
            f"{'given' if negatives is not None else 'None'}). {fix}"
        )


def _part_names_arg(parts: Any) -> Any:
    if isinstance(parts, str):
        parts = [p.strip() for p in parts.split(",") if p.strip()]
    return list(parts) if parts else None


def evaluate(
    model: keras.Model,
    index: data_lib.CubIndex,
    *,
    split: str = "test",
    image_size: Optional[int] = None,
    batch_size: int = 32,
    crop_to_box: bool = True,
    parts: Optional[Sequence[str]] = None,
    layer: str = models.PART_CONV,
    eval_map: str = "masked",
    negatives: Any = None,
    part_interpretability: bool = True,
    out_dir: Optional[str] = None,
    num_figure_filters: int = 8,
    top_k_images: int = 8,
) -> dict:
    """Evaluates a model on one split of a CUB-format dataset.

    Builds the (unshuffled, unaugmented, every image) datasets with
    `data.make_dataset` and runs `evaluate_dataset`. Location instability
    uses the model's `eval_map`; part interpretability (when the dataset
    has `part_segmentations/` and `part_interpretability`) uses the masked
    map of the objects only, never the background images.

    Args:
        model: the image-only model (`PartClassifier.inference`, or a
            loaded `model.keras`): RGB 0..255 in, logits out.
        index: the dataset, from `data.read_cub`.
        split: `"test"` (default), `"train"` or `"all"`.
        image_size: image side; default the model's input size.
        batch_size: images per batch (memory only).
        crop_to_box: crop objects to their box, as in training.
        parts: landmark names for location instability (a list, or a
            comma-separated string); default: the authors' CUB landmarks
            `evaluation.CUB_EVAL_PARTS` when present, else every part.
        layer: the evaluated layer (default "part_conv").
        eval_map: `"masked"` (default; paper: after ReLU and mask) or
            `"raw"` (authors' code: before them), for location instability
            and the figures.
        negatives: background images (a folder or paths) for a
            single-category model: objects are label 1, background 0, and
            the test split is their second half. None for multi-class.
        part_interpretability: score part interpretability when the
            dataset has part masks.
        out_dir: if given, per-filter PNG grids and `summary.json` go here.
        num_figure_filters: filters to draw (`FIGURE_SELECTION`).
        top_k_images: images per filter grid.

    Returns:
        The `evaluate_dataset` summary, plus `split`, `image_size`,
        `crop_to_box`, `data_dir`, and `num_objects` / `num_negatives` in
        `counts`.

    Raises:
        ValueError: for unknown `parts` (listing the available ones),
            `parts` on a dataset without landmarks, a bad `layer` (listing
            the layers with feature maps), a class count that does not
            match the model, a bad `split`, size or `eval_map`.
        FileNotFoundError: if the `negatives` folder does not exist.

    Example:

    >>> import keras_interp
    >>> model = keras.models.load_model("runs/train_cub/model.keras")
    ... # doctest: +SKIP
    >>> summary = evaluate(model, data.read_cub("CUB_200_2011"))
    ... # doctest: +SKIP
    >>> summary["parts"]  # doctest: +SKIP
    ['back', 'forehead', 'tail']
    """
    _logits_model(model)
    layer = _check_layer(model, layer)
    feature_maps.check_map(eval_map)
    image_size = _model_image_size(model, image_size)
    names = _part_names_arg(parts)
    if names and not index.has_parts:
        raise ValueError(
            f"`parts` {names} were requested, but the dataset at "
            f"{index.data_dir!r} has no part annotations (parts/). Pass "
            "parts=None."
        )
    part_ids = (
        evaluation.landmark_ids(index.part_names, names)
        if index.has_parts
        else None
    )
    _check_classes(model, index, negatives)
    sizes = data_lib.dataset_sizes(index, split=split, negatives=negatives)
    common = dict(
        split=split,
        image_size=image_size,
        batch_size=batch_size,
        crop_to_box=crop_to_box,
        drop_remainder=False,
    )
    dataset = data_lib.make_dataset(
        index,
        include_parts=part_ids is not None,
        negatives=negatives,
        **common,
    )
    has_masks = index.part_mask_paths is not None
    mask_dataset = None
    if part_interpretability and has_masks:
        mask_dataset = data_lib.make_dataset(
            index, include_parts=False, include_part_masks=True, **common
        )
    summary = evaluate_dataset(
        model,
        dataset,
        parts=part_ids,
        part_names=[str(n) for n in index.part_names],
        layer=layer,
        map=eval_map,
        part_mask_dataset=mask_dataset,
        part_mask_images=sizes["objects"],
        out_dir=out_dir,
        num_figure_filters=num_figure_filters,
        top_k_images=top_k_images,
        metadata={
            "split": split,
            "image_size": image_size,
            "crop_to_box": bool(crop_to_box),
            "data_dir": index.data_dir,
        },
    )
    if mask_dataset is None:
        summary["part_interpretability_reason"] = (
            "disabled (part_interpretability=False)"
            if has_masks
            else "the dataset has no part masks (part_segmentations/)"
        )
    summary["counts"]["num_objects"] = sizes["objects"]
    summary["counts"]["num_negatives"] = sizes["negatives"]
    if out_dir is not None:
        write_summary(summary, out_dir)
    return summary


# --- Command line -----------------------------------------------------------


def _run_config(model_path: str) -> dict:
    """The training config in `results.json` next to the model, if any."""
    path = os.path.join(os.path.dirname(model_path), RESULTS_FILENAME)
    try:
        with open(path) as f:
            config = json.load(f).get("config")
    except (OSError, ValueError, AttributeError):
        return {}
    return config if isinstance(config, dict) else {}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m keras_interp.evaluate",
        description=(
            "Evaluate a saved model (accuracy, location instability, part "
            "interpretability) on a CUB-format folder and print a JSON "
            "summary."
        ),
    )
    parser.add_argument(
        "--model", required=True, help="Saved image-only model (.keras)."
    )
    parser.add_argument(
        "--data_dir",
        default=None,
        help="CUB_200_2011-format folder (or its parent); default: the "
        "embedded synthetic part dataset.",
    )
    parser.add_argument(
        "--parts",
        default=None,
        help="Comma-separated landmarks for location instability; default: "
        "back,forehead,tail when present, else every part.",
    )
    parser.add_argument(
        "--out", default=None, help="Folder for PNG grids and summary.json."
    )
    parser.add_argument(
        "--split", default="test", choices=("train", "test", "all")
    )
    parser.add_argument(
        "--map",
        default="masked",
        choices=feature_maps.MAPS,
        help="Map for location instability and figures: masked (paper, "
        "after ReLU and mask) or raw (authors' code). Part "
        "interpretability always uses the masked map.",
    )
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument(
        "--negatives",
        default=None,
        help="Background images for a single-category model; default "
        "<data_dir>/negatives when results.json says task=single.",
    )
    parser.add_argument("--layer", default=models.PART_CONV)
    parser.add_argument(
        "--no_crop",
        action="store_true",
        help="Use whole images, not bounding-box crops (default: as in "
        "training per results.json, else crop).",
    )
    parser.add_argument("--num_figure_filters", type=int, default=8)
    parser.add_argument("--top_k_images", type=int, default=8)
    parser.add_argument(
        "--no_part_interpretability",
        action="store_true",
        help="Skip part interpretability (two extra passes).",
    )
    return parser


def _negatives(args, config: dict, data_dir: str) -> Any:
    if args.negatives:
        return args.negatives
    if config.get("task") != "single":
        return None
    folder = os.path.join(data_dir, "negatives")
    if not os.path.isdir(folder):
        raise ValueError(
            "The model was trained for the single-category task "
            f"(results.json: task='single'), but {folder!r} does not exist. "
            "Pass --negatives DIR, a folder of background images."
        )
    return folder


def run(args: argparse.Namespace) -> dict:
    """Runs the command line's evaluation; returns the summary.

    Args:
        args: parsed `_parser()` arguments.

    Returns:
        The `evaluate` summary, with `model` (its path) added.

    Raises:
        ValueError, FileNotFoundError: for bad inputs (see `evaluate`).
    """
    if not os.path.isfile(args.model):
        raise FileNotFoundError(
            f"--model: no such file: {args.model!r}. Pass a saved .keras "
            "model, e.g. runs/train_cub/model.keras."
        )
    config = _run_config(args.model)
    data_dir = args.data_dir or data_lib.default_data_dir(
        variant=config.get("embedded_dataset", "parts")
    )
    index = data_lib.read_cub(data_dir)
    try:
        model = keras.models.load_model(args.model)
    except (ValueError, OSError, TypeError) as error:
        raise ValueError(
            f"--model: cannot load {args.model!r} as a Keras model: {error}"
        ) from error
    summary = evaluate(
        model,
        index,
        split=args.split,
        batch_size=args.batch_size,
        crop_to_box=not args.no_crop and config.get("crop_to_box", True),
        parts=args.parts,
        layer=args.layer,
        eval_map=args.map,
        negatives=_negatives(args, config, index.data_dir),
        part_interpretability=not args.no_part_interpretability,
        out_dir=args.out,
        num_figure_filters=args.num_figure_filters,
        top_k_images=args.top_k_images,
    )
    summary["model"] = os.path.abspath(args.model)
    if args.out is not None:
        write_summary(summary, args.out)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        summary = run(args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    print(json.dumps(summary, indent=2, allow_nan=False))
    print(format_summary(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
