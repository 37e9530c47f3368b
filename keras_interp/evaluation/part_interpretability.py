"""Part interpretability of filters (paper Section 5.2.1).

Network Dissection (Bau et al., CVPR 2017) with the stricter IoU threshold
of Zhang, Wu, Zhu, CVPR 2018 §5.2.1 (docs/method_notes.md; the authors released
no code for it):

1. `T_f`: the activation threshold with `p(x > T_f) = 0.005` over all
   positions of all maps of filter `f`;
2. every cell with `x > T_f` gets a round receptive field (a disc around its
   RF centre in the image); the discs are OR-ed into the region `S_f^I`;
3. `IoU_{f,k}^I = |S_f^I & S_k^I| / |S_f^I | S_k^I|` with the ground-truth
   mask `S_k^I` of part `k`;
4. `P_{f,k}` = fraction of the images containing part `k` with
   `IoU > 0.2`; `P_f = max_k P_{f,k}`; the score is the mean of `P_f`.

With fewer than `1 / 0.005 = 200` map cells per filter in all (`N h w`),
step 1 leaves no cell above `T_f`, so every filter would score 0 whatever
it detects: the score is then undefined (NaN, `too_few_cells_reason`).

The paper does not give the disc radius. The default, `radius="cell"`, is
half the diagonal of one cell (`stride / sqrt(2)`), the smallest disc that
leaves no gap when every cell fires, close to what Network Dissection's
upsample-then-threshold gives one isolated cell. `"receptive_field"` (half
the theoretical RF size) and a radius in pixels are available.

Pixels use the convention of `receptive_field`: pixel `k` covers `[k, k+1)`,
and a pixel belongs to a disc when its centre does (boundary included).
"""

import math
import warnings
from typing import Any
from typing import Callable

import keras
import numpy as np

from keras_interp import class_statistics
from keras_interp.evaluation import feature_maps as probes
from keras_interp.evaluation._regions import EPSILON as _EPSILON
from keras_interp.evaluation._regions import RADII  # noqa: F401 (public)
from keras_interp.evaluation._regions import Regions
from keras_interp.evaluation._regions import ious
from keras_interp.evaluation._regions import radii
from keras_interp.evaluation.receptive_field import check_receptive_field

# Paper §5.2.1, after Bau et al.: the top 0.5% of activations are "valid".
DEFAULT_QUANTILE = 0.005
# Paper §5.2.1: a filter matches a part when IoU > 0.2 (Bau et al.: 0.04).
DEFAULT_IOU_THRESHOLD = 0.2
# Part id 0 in the part masks is background.
BACKGROUND_ID = 0
_DIVERGED = (
    "Non-finite maps come from a diverged model (NaN or infinite weights); "
    "evaluate a model with finite weights."
)


def _check_quantile(quantile: Any) -> float:
    if (
        isinstance(quantile, bool)
        or not isinstance(quantile, (int, float))
        or not 0.0 < quantile < 1.0
    ):
        raise ValueError(
            "`quantile` must be in (0, 1): the fraction of activations above "
            f"the threshold (paper: {DEFAULT_QUANTILE}). Received: "
            f"quantile={quantile!r}."
        )
    return float(quantile)


def _num_above(quantile: float, count: int) -> int:
    """m = floor(q n): how many values may lie strictly above `T_f`."""
    return int(math.floor(quantile * count + _EPSILON))


def too_few_cells_reason(
    num_cells: int, quantile: float = DEFAULT_QUANTILE
) -> Any:
    """Why part interpretability is undefined for `num_cells`, or None.

    `T_f` leaves `m = floor(quantile * N h w)` activations of each filter
    above it. With `m = 0` (fewer than `1 / quantile` map cells in all,
    e.g. 200 at the paper's 0.005) no cell is ever active: every filter
    would score 0 whatever it detects, so the metric is undefined.

    Args:
        num_cells: `N h w`, the map cells of one filter over the images.
        quantile: as in `part_interpretability`.

    Returns:
        A reason (str) when `m = 0`, else None.

    Example:

    >>> too_few_cells_reason(200) is None  # 12 x 4 x 4 = 192 would be too few
    True
    """
    quantile = _check_quantile(quantile)
    if _num_above(quantile, num_cells) >= 1:
        return None
    needed = math.ceil((1.0 - _EPSILON) / quantile)
    return (
        f"too few map cells: {num_cells} per filter, and the top "
        f"{quantile:g} of {num_cells} activations is 0 cells, so no cell can "
        f"exceed the threshold T_f; use at least {needed} cells (more "
        "images, a larger image size, or a larger quantile)"
    )


class _TopValues:
    """Keeps each filter's `m + 1` largest values, batch by batch."""

    def __init__(self, keep: int):
        self.keep = keep
        self.values = None

    def update(self, maps: np.ndarray) -> None:
        batch = np.moveaxis(maps, -1, 0).reshape(maps.shape[-1], -1)
        values = (
            batch
            if self.values is None
            else np.concatenate([self.values, batch], axis=1)
        )
        if values.shape[1] > self.keep:
            kth = values.shape[1] - self.keep
            values = np.partition(values, kth, axis=1)[:, kth:]
        self.values = values

    def thresholds(self) -> np.ndarray:
        if self.values is None or self.values.shape[1] < self.keep:
            raise ValueError(
                "Fewer activations were seen than `num_images` implies; "
                "pass the true number of images (or None to count them)."
            )
        return self.values.min(axis=1)


def _maps4(maps: Any, name: str = "maps") -> np.ndarray:
    maps = np.asarray(maps)
    if maps.ndim != 4:
        raise ValueError(
            f"`{name}` must have shape (num_images, height, width, filters). "
            f"Received shape {maps.shape}."
        )
    return probes.check_finite(maps, f"`{name}`", _DIVERGED)


def activation_thresholds(
    maps: Any, *, quantile: float = DEFAULT_QUANTILE
) -> np.ndarray:
    """Per-filter thresholds `T_f` with `p(x > T_f) = quantile`.

    `T_f` is the `(m + 1)`-th largest value of filter `f` over all positions
    of all maps, `m = floor(quantile * N h w)`, so at most `m` values (and
    exactly `m` without ties) lie strictly above it.

    Args:
        maps: `(N, h, w, F)` feature maps.
        quantile: fraction above the threshold; 0.005 (paper, Bau et al.).

    Returns:
        `(F,)` thresholds.

    Raises:
        ValueError: for a non rank-4 or non-finite `maps`, or `quantile`
            outside (0, 1).

    Example:

    >>> maps = np.arange(400.0).reshape(4, 10, 10, 1)
    >>> activation_thresholds(maps, quantile=0.01)  # m = 4: 399..396 above
    array([395.])
    """
    maps = _maps4(maps)
    quantile = _check_quantile(quantile)
    n, h, w, _ = maps.shape
    top = _TopValues(_num_above(quantile, n * h * w) + 1)
    top.update(maps)
    return top.thresholds()


class _Tally:
    """Accumulates `1[IoU > threshold]` over the images containing a part."""

    def __init__(self, filters, parts, threshold):
        self.hits = np.zeros((filters, parts))
        self.images = np.zeros((filters, parts))
        self.threshold = threshold

    def update(self, iou, present, in_category) -> None:
        counted = present[:, None, :] & in_category[:, :, None]
        self.hits += ((iou > self.threshold) & counted).sum(axis=0)
        self.images += counted.sum(axis=0)

    def result(self, return_per_filter):
        with np.errstate(invalid="ignore", divide="ignore"):
            per_part = np.where(
                self.images > 0, self.hits / self.images, np.nan
            )
        has_part = ~np.all(np.isnan(per_part), axis=1)
        per_filter = np.full(per_part.shape[0], np.nan)
        per_filter[has_part] = np.nanmax(per_part[has_part], axis=1)
        if not has_part.any():
            warnings.warn(
                "part_interpretability: no image contains any of the parts; "
                "returning NaN.",
                RuntimeWarning,
                stacklevel=3,
            )
            score = float("nan")
        else:
            score = float(per_filter[has_part].mean())
        if return_per_filter:
            return score, per_filter, per_part
        return score


def _undefined(reason, filters, parts, return_per_filter):
    """NaN results, with a warning giving `reason`."""
    warnings.warn(
        f"part_interpretability: {reason}; returning NaN.",
        RuntimeWarning,
        stacklevel=3,
    )
    if return_per_filter:
        return (
            float("nan"),
            np.full(filters, np.nan),
            np.full((filters, parts), np.nan),
        )
    return float("nan")


def _check_masks(part_masks, maps) -> np.ndarray:
    masks = np.asarray(part_masks)
    if masks.ndim != 3 or masks.shape[0] != maps.shape[0]:
        raise ValueError(
            f"`part_masks` must have shape ({maps.shape[0]}, height, width): "
            "one part-id image per map, at the network input resolution. "
            f"Received shape {masks.shape}."
        )
    return masks


def _part_ids(part_ids, masks) -> np.ndarray:
    if part_ids is None:
        ids = np.unique(masks)
        return ids[ids != BACKGROUND_ID]
    ids = np.asarray(part_ids).reshape(-1)
    if ids.size == 0:
        raise ValueError(
            "`part_ids` must list at least one part id. Received: "
            f"part_ids={part_ids!r}."
        )
    return ids


def filter_categories(labels: Any, activation_sums: Any) -> np.ndarray:
    """Each filter's category, `c_f = argmax_c mean_{I in c} sum_ij x`.

    Paper §5.2.1 (multi-category): filter `f` is evaluated on the images of
    the category whose images activate it the most on average. The rule is
    the layers' `class_statistics.assign_filters`, applied to each
    filter's ranks of the per-category means (1 for the lowest; equal means
    share a rank): the argmax is unchanged, and every filter gets a
    category. Ranks are small integers, exact in float32, so two means that
    differ by less than float32's resolution are still told apart (an
    additive shift would lose them on backends that compute in float32,
    e.g. JAX). (`assign_filters`' -1,
    "no positive statistic yet", is a training-time state; here a silent
    filter, or a raw map whose means are negative on every category, is
    still scored on its argmax category.) Ties, and a filter equally
    (in)active on every category, go to the first category in sorted
    order.

    Args:
        labels: `(N,)` category labels.
        activation_sums: `(N, F)` each map's sum `sum_ij x`.

    Returns:
        `(F,)` the label of each filter's category.

    Example:

    >>> filter_categories([3, 3, 7], [[1.0, 0.0], [1.0, 0.0], [0.5, 2.0]])
    array([3, 7])
    """
    labels = np.asarray(labels)
    sums = np.asarray(activation_sums, "float64")
    classes, ids = np.unique(labels, return_inverse=True)
    class_sums = np.zeros((len(classes), sums.shape[1]))
    np.add.at(class_sums, ids, sums)
    counts = np.bincount(ids, minlength=len(classes))
    mean = class_sums / np.maximum(counts, 1)[:, None]
    # ranks[c, f] = 1 + the number of categories with a lower mean.
    ranks = 1 + (mean[None, :, :] < mean[:, None, :]).sum(axis=1)
    assigned = class_statistics.assign_filters(ranks.astype("float32"))
    return classes[keras.ops.convert_to_numpy(assigned)]


def part_interpretability(
    maps: Any,
    part_masks: Any,
    receptive_field: Any,
    *,
    part_ids: Any = None,
    labels: Any = None,
    radius: Any = "cell",
    quantile: float = DEFAULT_QUANTILE,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    return_per_filter: bool = False,
    batch_size: int = 16,
) -> Any:
    """Part interpretability of filters (paper §5.2.1; higher is better).

    See the module docstring for the definition. Images without part `k`
    do not count for `P_{f,k}`; a filter whose images contain no part is
    NaN and dropped from the mean.

    Multi-category (`labels` given): each filter is first assigned to the
    category `argmax_c mean_{I in c} sum_ij x` (paper §5.2.1) and evaluated
    on that category's images only.

    Args:
        maps: `(N, h, w, F)` feature maps, after ReLU and mask (paper).
        part_masks: `(N, H, W)` integer part ids per pixel of the network
            input image (0 is background), e.g. VOC-Part merged masks.
        receptive_field: the layer's `ReceptiveField`.
        part_ids: the parts to score; default every non-zero id present.
        labels: optional `(N,)` category labels (multi-category).
        radius: disc radius: `"cell"` (default, `stride / sqrt(2)`),
            `"receptive_field"` (half the theoretical RF size; slow for
            large RFs, and usually covering most of the image), or pixels.
        quantile: fraction of activations above `T_f` (0.005).
        iou_threshold: IoU above which a filter matches a part (0.2).
        return_per_filter: also return `P_f` `(F,)` and `P_{f,k}` `(F, K)`.
        batch_size: images per vectorised block (memory only).

    Returns:
        The mean of `P_f` (float), or `(score, per_filter, per_part)`; NaN,
        with a warning giving the reason, when no image contains a part or
        when the maps have fewer than `1 / quantile` cells in all
        (`too_few_cells_reason`: no cell could exceed `T_f`).

    Raises:
        ValueError: for inconsistent shapes, non-finite maps or bad
            arguments.

    Example:

    >>> rf = ReceptiveField(stride=(4, 4), offset=(2.0, 2.0), size=(6, 6))
    >>> maps = np.zeros((1, 2, 2, 1)); maps[0, 0, 0, 0] = 1.0
    >>> masks = np.zeros((1, 8, 8), "uint8"); masks[0, :4, :4] = 1
    >>> part_interpretability(maps, masks, rf, quantile=0.25, radius=2.0)
    1.0
    """
    maps = _maps4(maps)
    masks = _check_masks(part_masks, maps)
    rf = check_receptive_field(receptive_field)
    quantile = _check_quantile(quantile)
    ids = _part_ids(part_ids, masks)
    radii(rf, radius)  # Validated before any early return.
    n, h, w, filters = maps.shape
    reason = too_few_cells_reason(n * h * w, quantile)
    if reason is not None:
        return _undefined(reason, filters, len(ids), return_per_filter)
    thresholds = activation_thresholds(maps, quantile=quantile)
    category = _categories(labels, maps.sum(axis=(1, 2)), n)
    regions = Regions(rf, masks.shape[1:], maps.shape[1:3], radius)
    tally = _Tally(filters, len(ids), iou_threshold)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        iou, present = ious(
            maps[start:stop], masks[start:stop], thresholds, regions, ids
        )
        tally.update(iou, present, category[start:stop])
    return tally.result(return_per_filter)


def _categories(labels, activation_sums, n) -> np.ndarray:
    """`(N, F)` bool: image counts for the filter (its category's images)."""
    filters = activation_sums.shape[1]
    if labels is None:
        return np.ones((n, filters), bool)
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(
            f"`labels` must have shape ({n},), one category per image. "
            f"Received shape {labels.shape}."
        )
    assigned = filter_categories(labels, activation_sums)
    return labels[:, None] == assigned[None, :]


def collect_part_interpretability(
    model: keras.Model,
    layer_name: str,
    dataset: Any,
    *,
    map: str = "masked",
    image_key: str = "image",
    mask_key: str = "part_mask",
    label_key: Any = None,
    preprocess: Callable = None,
    part_ids: Any = None,
    radius: Any = "cell",
    quantile: float = DEFAULT_QUANTILE,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    return_per_filter: bool = False,
    num_images: Any = None,
    receptive_field: Any = None,
) -> Any:
    """`part_interpretability` over a dataset, in bounded memory.

    Exact, not approximate: the threshold only needs each filter's
    `floor(q N h w) + 1` largest values, which a first model pass keeps
    (with the per-category activation sums for `label_key`); a second pass
    scores the IoUs batch by batch. The number of images `N` must be known
    up front, so without `num_images` the dataset is first iterated once
    without the model to count it. `dataset` must therefore be re-iterable
    (a `tf.data.Dataset` is).

    Args:
        model: the trained `keras.Model`.
        layer_name: the evaluated layer (nested layers included).
        dataset: batched dicts with `image_key` `(B, S, S, 3)` and
            `mask_key` `(B, S, S)` part ids (0 background).
        map: `"masked"` (default, paper) or `"raw"`; see
            `feature_map_model`.
        image_key, mask_key: dict keys.
        label_key: key of category labels for the multi-category rule, or
            None.
        preprocess: optional function applied to images before the model.
        part_ids, radius, quantile, iou_threshold, return_per_filter: as in
            `part_interpretability`.
        num_images: number of images in `dataset`, to skip the counting
            pass.
        receptive_field: the layer's `ReceptiveField`; default computed
            with `receptive_field(model, layer_name)`.

    Returns:
        As `part_interpretability` (NaN, with the reason in a warning, when
        it is undefined).

    Raises:
        ValueError: for a one-shot iterator, missing keys, an empty
            dataset, non-finite maps, or the errors of
            `part_interpretability`.
    """
    from keras_interp.evaluation.receptive_field import (
        receptive_field as compute_rf,
    )

    if iter(dataset) is dataset:
        raise ValueError(
            "`dataset` is a one-shot iterator, but this metric reads it "
            "twice (threshold, then IoU). Pass a tf.data.Dataset or a list."
        )
    quantile = _check_quantile(quantile)
    rf = check_receptive_field(
        receptive_field
        if receptive_field is not None
        else compute_rf(model, layer_name)
    )
    radii(rf, radius)  # Validated before any early return.
    probe = probes.feature_map_model(model, layer_name, map)
    data_format = probes.layer_data_format(model, layer_name)

    def batches():
        for batch in probes.iterate_batches(dataset):
            for key in (image_key, mask_key) + (
                (label_key,) if label_key else ()
            ):
                if key not in batch:
                    raise ValueError(
                        f"Dataset batches must contain '{key}'. Received "
                        f"keys {sorted(batch)}."
                    )
            images = np.asarray(batch[image_key])
            inputs = images if preprocess is None else preprocess(images)
            maps = np.asarray(probe.predict_on_batch(inputs))
            maps = probes.check_finite(maps, "The feature maps", _DIVERGED)
            yield batch, probes.to_channels_last(maps, data_format)

    if num_images is None:
        num_images = sum(
            len(batch[image_key]) for batch in probes.iterate_batches(dataset)
        )
    if num_images < 1:
        raise ValueError("`dataset` yielded no images.")
    top = None
    seen_ids, label_values, sums, map_shape = set(), [], [], None
    for batch, maps in batches():
        if top is None:
            map_shape = maps.shape[1:3]
            count = num_images * maps.shape[1] * maps.shape[2]
            top = _TopValues(_num_above(quantile, count) + 1)
        top.update(maps)
        if part_ids is None:
            seen_ids.update(np.unique(np.asarray(batch[mask_key])).tolist())
        if label_key:
            label_values.append(np.asarray(batch[label_key]))
            sums.append(maps.sum(axis=(1, 2)))
    thresholds = top.thresholds()
    if part_ids is None:
        ids = np.array(sorted(seen_ids - {BACKGROUND_ID}))
    else:
        ids = _part_ids(part_ids, None)
    cells = num_images * map_shape[0] * map_shape[1]
    reason = too_few_cells_reason(cells, quantile)
    if reason is not None:
        return _undefined(reason, len(thresholds), len(ids), return_per_filter)
    assigned = None
    if label_key:
        assigned = filter_categories(
            np.concatenate(label_values), np.concatenate(sums)
        )
    regions = tally = None
    for batch, maps in batches():
        masks = np.asarray(batch[mask_key])
        if regions is None:
            regions = Regions(rf, masks.shape[1:], map_shape, radius)
            tally = _Tally(maps.shape[-1], len(ids), iou_threshold)
        if assigned is None:
            category = np.ones((len(maps), maps.shape[-1]), bool)
        else:
            batch_labels = np.asarray(batch[label_key])
            category = batch_labels[:, None] == assigned[None, :]
        iou, present = ious(maps, masks, thresholds, regions, ids)
        tally.update(iou, present, category)
    return tally.result(return_per_filter)
