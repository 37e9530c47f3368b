r"""The evaluation report: every metric of a layer, as one JSON summary.

One implementation of the paper's evaluation (Zhang, Wu, Zhu, CVPR 2018,
§5.2; `docs/method_notes.md` §3). `evaluate_dataset` takes a model and
batched datasets (any source: `keras_interp.apps.evaluate` builds them from
a CUB-format folder, `keras_interp.apps.train` from its test split) and
reports:

* **accuracy**: argmax of the logits against the labels;
* **location instability** (§5.2.2; lower is better) of the filters of one
  layer, against the landmark indices `parts`, on the `map` chosen
  (`"masked"`: paper; `"raw"`: authors' code), per category with each
  filter's lowest-deviation category (the paper's multi-category rule; a
  single category reduces to the plain metric); each landmark scored on
  the images where it is visible, (image, filter) pairs with a dead map
  (peak <= 0) left out of the top-k, and two reference values beside it:
  a filter stuck at its best fixed cell, and the same filters with the
  landmarks shuffled across images
  (`evaluation.location_instability_report`);
* **dead maps**: the fraction of the layer's (image, filter) maps with
  peak <= 0, and of its filters dead on every image;
* **part interpretability** (§5.2.1; higher is better) against part masks,
  always on the masked map, the post-ReLU/mask map the paper defines it
  on;
* optionally, per-filter PNG grids of each chosen filter's top images
  with its map laid over them.

The model runs once over the dataset for accuracy and every map's peak
(`evaluation.collect_peaks(..., return_outputs=True)`: `N x F` peaks and
`N x classes` logits are kept, never the maps); part interpretability streams
twice more (`evaluation.collect_part_interpretability`); the figures read
back only the `num_figure_filters x top_k_images` images they show.

A metric that cannot be computed is None with a `*_reason`. A model with
non-finite outputs (NaN or infinite logits or maps, e.g. diverged in
training) is refused with a `ValueError`.

A new metric is added here (computed in `evaluate_dataset`, documented in
its Returns) and, to reach `results.json` and the printed digest, in
`evaluation.summary` (`training_results`, `format_summary`), which this
module re-exports.
"""

import math
import os
import warnings
from typing import Any
from typing import Optional
from typing import Sequence

import keras
import numpy as np

from keras_interp import evaluation
from keras_interp import models
from keras_interp.evaluation import feature_maps
from keras_interp.evaluation._report_checks import check_count
from keras_interp.evaluation._report_checks import check_layer
from keras_interp.evaluation._report_checks import check_model
from keras_interp.evaluation._report_checks import conv_layer_names
from keras_interp.evaluation.summary import SUMMARY_FILENAME
from keras_interp.evaluation.summary import format_summary
from keras_interp.evaluation.summary import training_results
from keras_interp.evaluation.summary import write_summary

__all__ = [
    "DROP_DEAD_MAPS",
    "FIGURE_SELECTION",
    "PART_INTERPRETABILITY_MAP",
    "SUMMARY_FILENAME",
    "check_count",
    "check_layer",
    "check_model",
    "conv_layer_names",
    "evaluate_dataset",
    "format_summary",
    "training_results",
    "write_summary",
]

# Part interpretability is defined on the map after ReLU and mask (paper
# §5.2.1, after Network Dissection); `map` only switches the instability.
PART_INTERPRETABILITY_MAP = "masked"
# Location instability leaves (image, filter) pairs whose map peak is <= 0
# out of the top-k: a blank map has no location (see
# `evaluation.location_instability`).
DROP_DEAD_MAPS = True
# Figures show the most stable filters first (lowest location instability),
# then the most active (highest mean peak).
FIGURE_SELECTION = (
    "lowest location instability first, then highest mean peak activation"
)


def _hits(peaks: Any, with_landmarks: bool) -> int:
    """Images whose logits' argmax is their label (`peaks.outputs`)."""
    needed = {"label": peaks.labels}
    if with_landmarks:
        needed.update(parts=peaks.landmarks, part_visible=peaks.visible)
    missing = [key for key, field in needed.items() if field is None]
    if missing:
        raise ValueError(
            f"`dataset` batches must contain {['image', *needed]} (the "
            "`keras_interp.data.make_dataset` schema; `parts` and "
            "`part_visible` only when `parts` are evaluated). Missing "
            f"{missing} in at least one batch."
        )
    logits = peaks.outputs
    if logits.ndim != 2 or len(logits) != len(peaks.labels):
        raise ValueError(
            "`model` must output logits of shape (batch, classes). "
            f"Received shape {logits.shape} for {len(peaks.labels)} images."
        )
    return int(np.sum(np.argmax(logits, axis=-1) == peaks.labels))


def _finite_or_none(value: Any) -> Optional[float]:
    value = float(value)
    return value if math.isfinite(value) else None


def _mean_or_none(values: np.ndarray) -> Optional[float]:
    values = values[np.isfinite(values)]
    return _finite_or_none(values.mean()) if values.size else None


def _location_instability(peaks, parts, part_names, rf) -> dict:
    """`location_instability_report` on the streamed peaks, as JSON parts."""
    names = [str(part_names[p]) for p in parts]
    min_images = evaluation.MIN_IMAGES
    landmarks = peaks.landmarks[:, parts]
    visible = peaks.visible[:, parts]
    report = evaluation.location_instability_report(
        peaks.index,
        peaks.value,
        landmarks,
        visible,
        image_size=peaks.image_size,
        receptive_field=rf,
        map_shape=peaks.map_size,
        top_k=evaluation.TOP_K,
        # Per category, keeping each filter's best (paper §5.2.2 for
        # multi-category models): a filter that is silent on other
        # classes is not judged on their images, and each class is scored
        # on its own landmarks.
        labels=peaks.labels,
        category_rule="deviation",
        drop_dead_maps=DROP_DEAD_MAPS,
        shuffle_seed=evaluation.SHUFFLE_SEED,
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
        elif report.pool_images[k] < min_images:
            per_part_reason[name] = (
                f"visible in fewer than {min_images} images of every "
                f"category ({counts[name]} in all)"
            )
        elif not valid.any():
            per_part_reason[name] = "no filter could be evaluated"
        else:
            per_part_reason[name] = (
                "no evaluated filter's category shows it in at least "
                f"{min_images} images"
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
            "shuffle_seed": evaluation.SHUFFLE_SEED,
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


def _figure_filters(peak_value, per_filter, count) -> list:
    """The `count` filters to draw (see `FIGURE_SELECTION`)."""
    mean_peak = peak_value.mean(axis=0)
    filters = len(mean_peak)
    instability = (
        np.full(filters, np.inf)
        if per_filter is None
        else np.where(np.isfinite(per_filter), per_filter, np.inf)
    )
    order = np.lexsort((np.arange(filters), -mean_peak, instability))
    return [int(f) for f in order[:count]]


def _figures(model, layer, map, dataset, values, filters, top_k, rf, out):
    """Plots `filters`, reading back only their top `top_k` images."""
    probe = evaluation.feature_map_model(model, layer, map)
    data_format = feature_maps.layer_data_format(model, layer)
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

    The shared implementation behind `keras_interp.apps.evaluate.evaluate`
    (which builds the datasets from a CUB-format folder) and the training
    driver's final evaluation (`training_results` of this summary). See
    the module docstring for what is computed on which map.

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
            (`apps.evaluate.evaluate` also writes `summary.json` there,
            with `write_summary`).
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
    layer = check_model(model, layer)
    feature_maps.check_map(map)
    num_figure_filters = check_count(
        "num_figure_filters", num_figure_filters, 0
    )
    top_k_images = check_count("top_k_images", top_k_images, 1)
    if out_dir is not None:
        _check_matplotlib()
    parts = None if parts is None else [int(p) for p in parts]
    if parts is not None and not parts:
        parts = None
    # One forward pass: the logits and every map's peak (never the maps).
    peaks = evaluation.collect_peaks(
        model, layer, dataset, map=map, return_outputs=True
    )
    correct = _hits(peaks, parts is not None)
    num_images, num_filters = peaks.value.shape
    needs_rf = (
        parts is not None
        or part_mask_dataset is not None
        or (out_dir is not None and num_figure_filters)
    )
    rf = evaluation.receptive_field(model, layer) if needs_rf else None

    num_parts = peaks.landmarks.shape[1] if parts is not None else None
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
        stability = _location_instability(peaks, parts, names, rf)
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
            peaks.map_size,
        )
    else:
        interpretability = {
            "value": None,
            "reason": "no part masks were given (part_mask_dataset=None)",
            "num_filters": None,
            "parts": None,
        }
    per_filter = stability["per_filter"]
    dead = evaluation.dead_map_fractions(peaks.value)
    summary = {
        "accuracy": correct / num_images,
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
            "num_images": num_images,
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
            peaks.value, per_filter, min(num_figure_filters, num_filters)
        )
        paths = (
            _figures(
                model,
                layer,
                map,
                dataset,
                peaks.value,
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
