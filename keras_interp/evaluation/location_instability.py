"""Location instability of filters (paper Section 5.2.2).

Zhang, Wu, Zhu, "Interpretable Convolutional Neural Networks", CVPR 2018,
Section 5.2.2; authors' code `computeStability.m`, `getDistSqrtVar.m`,
`step_computeStability*.m` (`docs/method_notes.md`). A filter that consistently
represents one part fires at a fixed distance from that part's landmarks:

```
p(mu)     = RF centre of the map's highest cell mu (back-projected)
d_I(k)    = || p_k - p(mu) || / sqrt(W^2 + H^2)           (image diagonal)
D_{f,k}   = std_I d_I(k), over the top-`top_k` images by peak value
            among those where landmark k is visible
D_f       = mean_k D_{f,k};  instability = mean_f D_f     (lower is better)
```

Points use the pixel convention of `receptive_field`: pixel `k` covers
`[k, k + 1)`. Landmarks are `[x, y]`, peak indices `(row, col)`.

Choices this module makes where the paper is silent (each documented at
`location_instability`):

* **Per-landmark visibility.** Each landmark is scored on the images where
  it is visible; `D_f` averages the landmarks visible in at least
  `MIN_IMAGES` images (of the filter's category, for multi-category
  models). A landmark that no category shows twice is left out, not the
  whole filter, so classes with different landmark sets (faces with eyes,
  animals with paws) are scored.
* **Dead maps.** A map whose peak is `<= 0` is blank (all zero after
  ReLU, or after ReLU and mask for the masked map): its
  "highest cell" is a tie broken by position, not a location. Such
  (image, filter) pairs are dropped from the top-k selection
  (`drop_dead_maps=True`, default; `False` is the paper-literal rule).
* **Reference values** (`location_instability_report`): the same rule
  applied to a filter stuck at its best fixed cell, and to the same filters
  with the landmarks shuffled across images, so a number can be read
  against what no localisation (fixed cell) and no relation to the part
  (shuffled) give on the same data.
"""

import warnings
from typing import Any
from typing import Callable
from typing import NamedTuple

import keras
import numpy as np

from keras_interp.evaluation import feature_maps as probes
from keras_interp.evaluation.receptive_field import check_receptive_field

# Paper §5.2.2: "we used the top-100 images" per filter and landmark
# (authors' `step_computeStability*.m` keeps the first 100 after sorting).
# The one definition: `train`, `evaluate` and the benchmarks import it.
TOP_K = 100
# Fewer valid images than this leave the std undefined; the authors then
# mark the filter NaN and drop it (`computeStability.m`).
MIN_IMAGES = 2
# Authors' MATLAB `std` divides by N - 1.
STD_DDOF = 1
# Multi-category filter -> category choice (docs/method_notes.md, item 15):
# the paper keeps the category with the lowest deviation, the authors' code
# (`step_computeStability_multiClass.m`) the highest mean activation.
CATEGORY_RULES = ("deviation", "activation")
# A map whose peak is at most this is all <= 0: blank ("dead").
DEAD_PEAK = 0.0
# Seed of the landmark permutation of the "shuffled landmarks" reference.
SHUFFLE_SEED = 0


class Peaks(NamedTuple):
    """Per-image, per-filter peaks collected by `collect_peaks`.

    Attributes:
        index: `(N, F, 2)` int64 `(row, col)` of each map's highest cell.
        value: `(N, F)` float32, that cell's value.
        landmarks: `(N, P, 2)` float32 `[x, y]` part points in input-image
            pixels, or None when the dataset has none.
        visible: `(N, P)` bool, or None.
        labels: `(N,)` class labels, or None.
        image_size: `(H, W)` of the images fed to the model.
        map_size: `(h, w)` of the feature map.
    """

    index: np.ndarray
    value: np.ndarray
    landmarks: Any
    visible: Any
    labels: Any
    image_size: tuple
    map_size: tuple


def peaks_from_maps(
    feature_maps: Any, *, data_format: str = "channels_last"
) -> tuple:
    """Highest cell and its value for every map of a batch.

    Args:
        feature_maps: `(N, h, w, F)` array (or `(N, F, h, w)` with
            `data_format="channels_first"`).
        data_format: `"channels_last"` (default) or `"channels_first"`.

    Returns:
        `(index, value)`: `index` `(N, F, 2)` int64 `(row, col)`, `value`
        `(N, F)`. Ties go to the first cell in row-major order (numpy
        `argmax`; MATLAB's `max` would scan column-major).

    Raises:
        ValueError: if `feature_maps` is not rank 4 or holds a NaN or an
            infinity (a diverged model).

    Example:

    >>> maps = np.zeros((1, 3, 4, 1)); maps[0, 2, 1, 0] = 5.0
    >>> index, value = peaks_from_maps(maps)
    >>> index.tolist(), value.tolist()
    ([[[2, 1]]], [[5.0]])
    """
    maps = np.asarray(feature_maps)
    if maps.ndim != 4:
        raise ValueError(
            "`feature_maps` must be rank 4, (batch, height, width, filters) "
            f"(or channels first). Received shape {maps.shape}."
        )
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            "`data_format` must be 'channels_last' or 'channels_first'. "
            f"Received: data_format={data_format!r}."
        )
    maps = probes.to_channels_last(maps, data_format)
    probes.check_finite(
        maps,
        "`feature_maps`",
        "Non-finite maps come from a diverged model (NaN or infinite "
        "weights) or bad inputs; their peaks would be arbitrary cells. "
        "Evaluate a model with finite weights.",
    )
    n, h, w, f = maps.shape
    flat = maps.reshape(n, h * w, f)
    arg = np.argmax(flat, axis=1)  # (N, F)
    value = np.take_along_axis(flat, arg[:, None, :], axis=1)[:, 0, :]
    index = np.stack([arg // w, arg % w], axis=-1).astype("int64")
    return index, value


def _batch_field(batch: dict, key: Any) -> Any:
    if key is None or key not in batch:
        return None
    return np.asarray(batch[key])


def collect_peaks(
    model: keras.Model,
    layer_name: str,
    dataset: Any,
    *,
    map: str = "masked",
    image_key: str = "image",
    parts_key: str = "parts",
    visible_key: str = "part_visible",
    label_key: str = "label",
    preprocess: Callable = None,
) -> Peaks:
    """Runs `model` over a dataset and keeps each map's peak, batch by batch.

    Only the peaks (and the batch's landmarks) are kept, never the maps, so
    memory grows with `N x F`, not `N x h x w x F`.

    Args:
        model: the trained `keras.Model`.
        layer_name: the evaluated layer (nested layers included).
        dataset: a `tf.data.Dataset` (or iterable) of batched dicts with
            `image` `(B, S, S, 3)` float32 0..255, and optionally `parts`
            `(B, P, 2)` `[x, y]` pixels of the image, `part_visible`
            `(B, P)` and `label`, as yielded by the project's data pipeline.
        map: `"masked"` (default): the layer output, after ReLU and mask for
            the interpretable layers, as the paper states (footnote 1).
            `"raw"`: the pre-activation, pre-mask map the authors' code
            evaluates (`docs/method_notes.md`). See `feature_map_model`.
        image_key, parts_key, visible_key, label_key: dict keys; missing
            optional keys give None fields.
        preprocess: optional function applied to each image batch before
            the model (e.g. `keras.applications.vgg16.preprocess_input`);
            it must not resize, since landmarks are in image pixels.

    Returns:
        A `Peaks` tuple; `image_size` is the size of the dataset images.

    Raises:
        ValueError: for an empty dataset, a batch without `image_key`, or
            the errors of `feature_map_model`.
    """
    probe = probes.feature_map_model(model, layer_name, map)
    data_format = probes.layer_data_format(model, layer_name)
    fields = {"index": [], "value": [], "landmarks": [], "visible": []}
    fields["labels"] = []
    image_size = map_size = None
    for batch in probes.iterate_batches(dataset):
        if image_key not in batch:
            raise ValueError(
                f"Dataset batches must contain '{image_key}' (image_key). "
                f"Received keys {sorted(batch)}."
            )
        images = np.asarray(batch[image_key])
        image_size = tuple(int(s) for s in images.shape[1:3])
        inputs = images if preprocess is None else preprocess(images)
        maps = np.asarray(probe.predict_on_batch(inputs))
        maps = probes.to_channels_last(maps, data_format)
        map_size = tuple(int(s) for s in maps.shape[1:3])
        index, value = peaks_from_maps(maps)
        fields["index"].append(index)
        fields["value"].append(value.astype("float32"))
        fields["landmarks"].append(_batch_field(batch, parts_key))
        fields["visible"].append(_batch_field(batch, visible_key))
        fields["labels"].append(_batch_field(batch, label_key))
    if image_size is None:
        raise ValueError("`dataset` yielded no batches.")

    def gather(name, dtype=None):
        items = fields[name]
        if any(item is None for item in items):
            return None
        array = np.concatenate(items, axis=0)
        return array if dtype is None else array.astype(dtype)

    return Peaks(
        index=gather("index"),
        value=gather("value"),
        landmarks=gather("landmarks", "float32"),
        visible=gather("visible", "bool"),
        labels=gather("labels"),
        image_size=image_size,
        map_size=map_size,
    )


def _check_inputs(peak_index, peak_value, landmarks, visible, map_shape):
    value = np.asarray(peak_value, dtype="float64")
    if value.ndim != 2:
        raise ValueError(
            "`peak_value` must have shape (num_images, num_filters). "
            f"Received shape {value.shape}."
        )
    probes.check_finite(
        value,
        "`peak_value`",
        "Non-finite peaks come from a diverged model (NaN or infinite "
        "weights); evaluate a model with finite weights.",
    )
    n, f = value.shape
    index = np.asarray(peak_index)
    if index.shape == (n, f):
        if map_shape is None:
            raise ValueError(
                "`peak_index` is flat (num_images, num_filters), so "
                "`map_shape=(h, w)` is needed to split it into (row, col). "
                "Pass map_shape, or pass (row, col) indices of shape "
                f"({n}, {f}, 2)."
            )
        width = int(map_shape[1])
        index = np.stack([index // width, index % width], axis=-1)
    if index.shape != (n, f, 2):
        raise ValueError(
            f"`peak_index` must have shape ({n}, {f}, 2) (row, col) or "
            f"({n}, {f}) (flat), matching `peak_value`. Received shape "
            f"{index.shape}."
        )
    points = np.asarray(landmarks, dtype="float64")
    if points.ndim != 3 or points.shape[0] != n or points.shape[2] != 2:
        raise ValueError(
            f"`landmarks` must have shape ({n}, num_landmarks, 2), [x, y] "
            f"pixels per image. Received shape {points.shape}."
        )
    seen = np.asarray(visible)
    if seen.shape != points.shape[:2]:
        raise ValueError(
            f"`visible` must have shape {points.shape[:2]} (num_images, "
            f"num_landmarks), matching `landmarks`. Received shape "
            f"{seen.shape}."
        )
    seen = seen.astype(bool)
    probes.check_finite(
        points[seen],
        "`landmarks` (where `visible`)",
        "Mark unannotated landmarks as not visible.",
    )
    return index, value, points, seen


def _check_options(top_k, category_rule, labels, n) -> Any:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        top_k = -1
    if top_k < MIN_IMAGES:
        raise ValueError(
            f"`top_k` must be an int >= {MIN_IMAGES} (a std needs two "
            f"images; the paper uses {TOP_K}). Received: top_k={top_k!r}."
        )
    if category_rule not in CATEGORY_RULES:
        raise ValueError(
            f"`category_rule` must be one of {CATEGORY_RULES}: 'deviation' "
            "(paper) or 'activation' (authors' code). Received: "
            f"category_rule={category_rule!r}."
        )
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(
            f"`labels` must have shape ({n},), one category per image. "
            f"Received shape {labels.shape}."
        )
    return labels


def _check_map_shape(map_shape, index) -> tuple:
    shape = tuple(map_shape) if isinstance(map_shape, (tuple, list)) else ()
    if len(shape) != 2 or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0
        for s in shape
    ):
        raise ValueError(
            "`map_shape` must be the (height, width) of the feature map, "
            f"e.g. (14, 14) (`Peaks.map_size`). Received: "
            f"map_shape={map_shape!r}."
        )
    if index.size and (
        index.min() < 0 or (index.max(axis=(0, 1)) >= np.array(shape)).any()
    ):
        raise ValueError(
            f"`peak_index` has cells outside the map of shape {shape} "
            f"(`map_shape`): rows/cols range over [{index.min()}, "
            f"{index.max()}]. Pass the map's own (height, width)."
        )
    return tuple(int(s) for s in shape)


def _image_diagonal(image_size: Any) -> float:
    size = (image_size, image_size) if np.isscalar(image_size) else image_size
    size = tuple(size)
    if len(size) != 2 or not all(
        isinstance(s, (int, np.integer)) and s > 0 for s in size
    ):
        raise ValueError(
            "`image_size` must be a positive int or an (height, width) pair "
            "of the network input image, e.g. 224. Received: "
            f"image_size={image_size!r}."
        )
    return float(np.hypot(*size))


def _top_k(value, live, top_k) -> tuple:
    """Each filter's top-`top_k` rows by peak value: `(order, valid)`.

    `order` `(m, F)` indexes the rows of `value` `(n, F)`, highest peak
    first (a stable sort: ties keep the earlier image); dead pairs
    (`live` False) sort last and are marked invalid in `valid` `(m, F)`.
    """
    key = np.where(live, value, -np.inf)
    order = np.argsort(-key, axis=0, kind="stable")[:top_k]
    return order, np.take_along_axis(live, order, axis=0)


def _std(samples, valid) -> np.ndarray:
    """Per-column std (`N - 1`) of the `valid` entries of `samples` `(m, F)`.

    NaN where fewer than `MIN_IMAGES` entries are valid.
    """
    count = valid.sum(axis=0)
    mean = np.where(valid, samples, 0.0).sum(axis=0) / np.maximum(count, 1)
    squares = np.where(valid, (samples - mean) ** 2, 0.0).sum(axis=0)
    std = np.sqrt(squares / np.maximum(count - STD_DDOF, 1))
    return np.where(count >= MIN_IMAGES, std, np.nan)


def _weighted_std(weights, samples) -> np.ndarray:
    """std (`N - 1`) of `samples` `(n, U)` over each row set of `weights`.

    `weights` `(F, n)` is 0/1: filter `f` uses the images where it is 1.
    Returns `(F, U)`; NaN for filters with fewer than `MIN_IMAGES` images.
    """
    count = weights.sum(axis=1, keepdims=True)
    first = weights @ samples
    second = weights @ np.square(samples)
    squares = second - np.square(first) / np.maximum(count, 1)
    std = np.sqrt(np.maximum(squares, 0.0) / np.maximum(count - STD_DDOF, 1))
    return np.where(count >= MIN_IMAGES, std, np.nan)


class _Group(NamedTuple):
    """One category's (or all images') deviations; see `_group`."""

    deviation: np.ndarray  # (F, K) D_{f,k}; NaN: landmark not scored here
    per_filter: np.ndarray  # (F,) mean over the scored landmarks
    used: np.ndarray  # (F, K) images in each top-k after dropping dead maps
    pool: np.ndarray  # (K,) images with the landmark visible
    fixed: Any  # (F,) best-fixed-cell deviation, or None
    fixed_landmarks: Any  # (F, K) its D_{f,k} at that cell, or None


def _group(distance, value, live, points, seen, top_k, cells) -> _Group:
    """`D_{f,k}` of one group of images (a category, or all of them).

    Landmark `k` is scored when it is visible in at least `MIN_IMAGES`
    images of the group; `D_f` is the mean over the scored landmarks, NaN
    when none is, or when a scored landmark leaves the filter fewer than
    `MIN_IMAGES` live images (the authors drop such filters).

    `cells` is None, or the `(y, x)` RF centres `(U,)` of every map cell,
    in diagonal units: then `fixed` is each filter's best-fixed-cell
    deviation over the same selected images (see
    `location_instability_report`), and `fixed_landmarks` its per-landmark
    terms at that cell.
    """
    n, f, k = distance.shape
    deviation = np.full((f, k), np.nan)
    used = np.zeros((f, k), "int64")
    pool = seen.sum(axis=0)
    scored = np.flatnonzero(pool >= MIN_IMAGES)
    fixed = None if cells is None else np.zeros((f, len(cells[0])))
    fixed_landmarks = None if cells is None else np.full((f, k), np.nan)
    terms = {}
    filters = np.arange(f)
    for part in scored:
        rows = np.flatnonzero(seen[:, part])
        order, valid = _top_k(value[rows], live[rows], top_k)
        chosen = distance[rows[order], filters, part]  # (m, F)
        deviation[:, part] = _std(chosen, valid)
        used[:, part] = valid.sum(axis=0)
        if fixed is not None:
            weights = np.zeros((f, len(rows)))
            weights[filters, order] = valid
            y, x = points[rows, part, 1], points[rows, part, 0]
            samples = np.hypot(
                y[:, None] - cells[0][None, :], x[:, None] - cells[1][None, :]
            )
            terms[part] = _weighted_std(weights, samples)  # (F, U)
            fixed += terms[part]
    if len(scored):
        per_filter = deviation[:, scored].mean(axis=1)
        if fixed is not None:
            best = np.argmin(np.nan_to_num(fixed, nan=np.inf), axis=1)
            fixed = (fixed / len(scored))[filters, best]
            for part, term in terms.items():
                fixed_landmarks[:, part] = term[filters, best]
    else:
        per_filter = np.full(f, np.nan)
        fixed = None if fixed is None else np.full(f, np.nan)
    return _Group(deviation, per_filter, used, pool, fixed, fixed_landmarks)


def _pick(deviation, activation, has_landmarks, rule) -> np.ndarray:
    """Each filter's category `(F,)` from per-category values `(C, F)`."""
    if rule == "deviation":
        return np.argmin(np.where(np.isnan(deviation), np.inf, deviation), 0)
    return np.argmax(np.where(has_landmarks[:, None], activation, -np.inf), 0)


class _Scores(NamedTuple):
    per_filter: np.ndarray  # (F,)
    per_landmark: np.ndarray  # (F, K)
    fixed: Any  # (F,) or None
    fixed_landmarks: Any  # (F, K) or None
    used: np.ndarray  # (F, K), in each filter's category
    pool: np.ndarray  # (C, K)
    dropped: float  # fraction of the plain top-k selections dropped
    reason: Any


def _groups(labels, n) -> list:
    if labels is None:
        return [np.arange(n)]
    return [np.flatnonzero(labels == c) for c in np.unique(labels)]


def _scores(
    index, value, points, seen, labels, rf, diagonal, top_k, rule, drop, cells
) -> _Scores:
    """The metric's every number, for `location_instability*`."""
    n, f = value.shape
    y, x = rf.centers(index[..., 0], index[..., 1])  # (N, F)
    dx = points[:, None, :, 0] - x[:, :, None]
    dy = points[:, None, :, 1] - y[:, :, None]
    distance = np.hypot(dx, dy) / diagonal  # (N, F, K)
    live = value > DEAD_PEAK if drop else np.ones(value.shape, bool)
    groups = _groups(labels, n)
    results = [
        _group(
            distance[rows],
            value[rows],
            live[rows],
            points[rows] / diagonal,
            seen[rows],
            top_k,
            cells,
        )
        for rows in groups
    ]
    per_group = np.stack([r.per_filter for r in results])  # (C, F)
    pool = np.stack([r.pool for r in results])  # (C, K)
    activation = np.stack([value[rows].mean(axis=0) for rows in groups])
    has_landmarks = (pool >= MIN_IMAGES).any(axis=1)
    pick = _pick(per_group, activation, has_landmarks, rule)
    filters = np.arange(f)
    fixed = fixed_landmarks = None
    if cells is not None:
        fixed_group = np.stack([r.fixed for r in results])
        fixed_pick = (
            _pick(fixed_group, activation, has_landmarks, rule)
            if rule == "deviation"
            else pick
        )
        fixed = fixed_group[fixed_pick, filters]
        fixed_landmarks = np.stack([r.fixed_landmarks for r in results])[
            fixed_pick, filters
        ]
    used = np.stack([r.used for r in results])  # (C, F, K)
    plain = np.where(pool >= MIN_IMAGES, np.minimum(pool, top_k), 0)
    selections = f * plain.sum()
    dropped = (
        float((plain[:, None, :] - used).sum() / selections)
        if selections
        else float("nan")
    )
    per_filter = per_group[pick, filters]
    reason = None
    if not np.isfinite(per_filter).any():
        where = "" if labels is None else " of one category"
        reason = (
            f"no landmark is visible in at least {MIN_IMAGES} images{where}"
            if not has_landmarks.any()
            else (
                f"no filter has a live map (peak > {DEAD_PEAK:g}) on at "
                f"least {MIN_IMAGES} of the images where each landmark"
                f"{'' if labels is None else ' of its category'} is visible"
            )
        )
    return _Scores(
        per_filter=per_filter,
        per_landmark=np.stack([r.deviation for r in results])[pick, filters],
        fixed=fixed,
        fixed_landmarks=fixed_landmarks,
        used=used[pick, filters],
        pool=pool,
        dropped=dropped,
        reason=reason,
    )


def _mean(per_filter) -> float:
    valid = np.isfinite(per_filter)
    return float(per_filter[valid].mean()) if valid.any() else float("nan")


def location_instability(
    peak_index: Any,
    peak_value: Any,
    landmarks: Any,
    visible: Any,
    *,
    image_size: Any,
    receptive_field: Any,
    top_k: int = TOP_K,
    return_per_filter: bool = False,
    map_shape: Any = None,
    labels: Any = None,
    category_rule: str = "deviation",
    drop_dead_maps: bool = True,
) -> Any:
    """Location instability of filters (paper §5.2.2; lower is better).

    For each filter `f` and landmark `k`: among the images where `k` is
    visible, keep the `top_k` with the highest peak value of `f`; the
    inferred location is the receptive-field centre of each image's peak
    cell, `p = offset + (row, col) * stride`; `d = ||p_k - p|| / sqrt(W^2 +
    H^2)`; `D_{f,k}` is the standard deviation of `d` over those images,
    with the `N - 1` normaliser of the authors' MATLAB `std`. (The authors
    divide the mean pixel std by the diagonal at the end; the std is
    linear, so this is the same number.)

    Landmarks: each is scored on the images where it is visible. `D_f` is
    the mean of `D_{f,k}` over the landmarks visible in at least 2 images
    (of the filter's category, below); a landmark visible in fewer is left
    out (with every landmark visible, this is the paper's mean over
    `k = 1..K`). As in the authors' `computeStability.m`, a filter with
    fewer than 2 usable images for one of those landmarks is NaN and
    dropped; the result is the mean over the remaining filters.

    Dead maps (`drop_dead_maps=True`, default): an (image, filter) pair
    whose peak is `<= 0` has a blank map (the masked map: all zero after
    ReLU and mask; the raw map: all zero after ReLU), so its "highest
    cell" is a tie broken by position (cell `(0, 0)` of the masked map) or
    the least negative value, not an inferred location. Such pairs are
    left out of the top `top_k`, which then holds only live maps (fewer
    than `top_k` when fewer are live).
    `drop_dead_maps=False` is the paper's rule: dead maps rank last and
    enter the top `top_k` when fewer images activate the filter.

    The authors keep only images with exactly one annotated point per
    landmark; here an object crop has one point, marked by `visible`.

    Multi-category models (`labels` given): `D_f` is computed per category
    on its own images and landmarks, and each filter keeps one category:
    the paper keeps the one with the lowest deviation
    (`category_rule="deviation"`, default); the authors'
    `step_computeStability_multiClass.m` keeps the one with the highest
    mean peak value (`"activation"`), here among the categories with a
    scored landmark (a background class without landmarks has none).

    Args:
        peak_index: `(N, F, 2)` int `(row, col)` of each map's highest cell,
            or `(N, F)` flat indices with `map_shape`.
        peak_value: `(N, F)` the peak values (activation scores); finite.
        landmarks: `(N, K, 2)` `[x, y]` points in input-image pixels
            (pixel `k` covers `[k, k + 1)`).
        visible: `(N, K)` bool; invisible landmarks are ignored.
        image_size: int or `(H, W)` of the network input image, for the
            diagonal.
        receptive_field: the layer's `ReceptiveField` (see
            `receptive_field`); only `stride` and `offset` are used.
        top_k: images per filter and landmark, by peak value. Default
            `TOP_K` = 100 (paper). Ties at the cut keep the earlier images.
        return_per_filter: also return the per-filter and per-landmark
            values.
        map_shape: `(h, w)`, needed only for flat `peak_index`.
        labels: optional `(N,)` category labels (multi-category).
        category_rule: `"deviation"` (paper, default) or `"activation"`
            (authors' code); used only with `labels`.
        drop_dead_maps: leave pairs with a peak `<= 0` out of the top
            `top_k` (default True; False: the paper's rule).

    Returns:
        The instability (float; NaN, with a warning giving the reason, if
        no filter can be scored). With `return_per_filter`, `(instability,
        per_filter (F,), per_landmark (F, K))`: NaN for dropped filters and
        for landmarks not scored in the filter's category.

    Raises:
        ValueError: for inconsistent shapes, non-finite peaks, `top_k < 2`,
            a bad `image_size`, `receptive_field` or `category_rule`.

    Example:

    >>> rf = ReceptiveField(stride=(16, 16), offset=(8.0, 8.0), size=(196, 196))
    >>> index = np.array([[[0, 0]], [[0, 0]], [[0, 0]]])  # (N=3, F=1, 2)
    >>> value = np.array([[3.0], [2.0], [1.0]])
    >>> points = np.array([[[8.0, 8.0]], [[8.0, 11.0]], [[8.0, 5.0]]])
    >>> location_instability(index, value, points, np.ones((3, 1), bool),
    ...                      image_size=224, receptive_field=rf)
    0.00546...

    (distances 0, 3, 3 px from the centre (8, 8): std sqrt(3), over
    the diagonal 224 sqrt(2)).
    """
    index, value, points, seen = _check_inputs(
        peak_index, peak_value, landmarks, visible, map_shape
    )
    labels = _check_options(top_k, category_rule, labels, value.shape[0])
    rf = check_receptive_field(receptive_field)
    diagonal = _image_diagonal(image_size)
    scores = _scores(
        index,
        value,
        points,
        seen,
        labels,
        rf,
        diagonal,
        top_k,
        category_rule,
        bool(drop_dead_maps),
        None,
    )
    if scores.reason is not None:
        warnings.warn(
            f"location_instability: {scores.reason}; returning NaN.",
            RuntimeWarning,
            stacklevel=2,
        )
    score = _mean(scores.per_filter)
    if return_per_filter:
        return score, scores.per_filter, scores.per_landmark
    return score


class InstabilityReport(NamedTuple):
    """Location instability with its reference values and selection counts.

    Returned by `location_instability_report`; see there for the
    definitions. Undefined values are NaN.

    Attributes:
        value: the location instability (`location_instability`).
        per_filter: `(F,)` `D_f`, NaN for dropped filters.
        per_landmark: `(F, K)` `D_{f,k}` in each filter's category, NaN for
            landmarks not scored there.
        fixed_cell: the "fixed cell" reference: mean over the filters of
            `fixed_cell_per_filter`.
        fixed_cell_per_filter: `(F,)` each filter's best-fixed-cell value.
        fixed_cell_per_landmark: `(F, K)` its per-landmark terms (at the
            same cell), NaN where the landmark is not scored.
        shuffled: the "shuffled landmarks" reference.
        shuffled_per_filter: `(F,)` `D_f` with the shuffled landmarks.
        shuffled_per_landmark: `(F, K)` `D_{f,k}` with them.
        pool_images: `(K,)` int, the largest number of images with landmark
            `k` visible in one category (all images without `labels`):
            the most the top-k can choose from. Pools at or below `top_k`
            mean the top-k keeps every image it is offered.
        selected_images: `(F, K)` int, the images each filter's top-k
            actually used for each landmark, in the filter's category
            (0 where the landmark is not scored).
        dead_dropped_fraction: of the (image, filter) pairs the paper's
            top-k rule selects, over every category, filter and scored
            landmark, the fraction with a dead map (peak `<= 0`), dropped
            here (0 with `drop_dead_maps=False`).
        reason: why `value` is NaN, or None.
    """

    value: float
    per_filter: np.ndarray
    per_landmark: np.ndarray
    fixed_cell: float
    fixed_cell_per_filter: np.ndarray
    fixed_cell_per_landmark: np.ndarray
    shuffled: float
    shuffled_per_filter: np.ndarray
    shuffled_per_landmark: np.ndarray
    pool_images: np.ndarray
    selected_images: np.ndarray
    dead_dropped_fraction: float
    reason: Any


def shuffle_landmarks(
    landmarks: Any, visible: Any, *, labels: Any = None, seed: int = 0
) -> tuple:
    """Landmarks reassigned across images by a seeded permutation.

    Image `i` gets the landmarks (points and visibility together) of image
    `perm[i]`, with `perm` a permutation drawn by
    `np.random.default_rng(seed)`; with `labels`, images are permuted
    within their own category, so each category keeps its landmark set and
    its visibility counts.

    Args:
        landmarks: `(N, K, 2)` points.
        visible: `(N, K)` bool.
        labels: optional `(N,)` categories.
        seed: permutation seed.

    Returns:
        `(landmarks, visible)`, permuted along the images.

    Example:

    >>> points = np.arange(8.0).reshape(4, 1, 2)
    >>> shuffled, _ = shuffle_landmarks(points, np.ones((4, 1), bool),
    ...                                 labels=[0, 0, 1, 1], seed=0)
    >>> sorted(shuffled[2:, 0, 0].tolist())  # category 1 keeps its points
    [4.0, 6.0]
    """
    points = np.asarray(landmarks)
    seen = np.asarray(visible)
    n = points.shape[0]
    labels = None if labels is None else np.asarray(labels).reshape(n)
    rng = np.random.default_rng(seed)
    order = np.arange(n)
    for rows in _groups(labels, n):
        order[rows] = rows[rng.permutation(len(rows))]
    return points[order], seen[order]


def location_instability_report(
    peak_index: Any,
    peak_value: Any,
    landmarks: Any,
    visible: Any,
    *,
    image_size: Any,
    receptive_field: Any,
    map_shape: Any,
    top_k: int = TOP_K,
    labels: Any = None,
    category_rule: str = "deviation",
    drop_dead_maps: bool = True,
    shuffle_seed: int = SHUFFLE_SEED,
) -> InstabilityReport:
    """`location_instability` with two reference values and its counts.

    The instability alone cannot say whether a filter localises a part: on
    box-cropped objects a filter that always fires at the same place is
    already fairly stable, and a top-k drawn from a small split keeps every
    image. Two references, computed with the same images, categories and
    rules, bracket the value:

    * **fixed cell** (no localisation): for each filter `f`, the
      instability of an imaginary filter that always peaks at one cell
      `u` of the map, chosen per filter as the cell with the lowest value:

      ```
      D^fix_f = min_u mean_k std_{I in S_{f,k}} ||p_k(I) - p(u)|| / diag
      ```

      where `S_{f,k}` is the top-k image set that `f` itself selected for
      landmark `k` (its highest live peaks among the images where `k` is
      visible, in its category), and `u` ranges over every cell of the
      `map_shape` grid, one cell for all landmarks. So the comparison
      differs from `D_f` only in the peak location: the real one, or the
      best single fixed one. (A constant filter has no peak values to rank
      images by; borrowing `f`'s ranking keeps the selection rule. When the
      pools do not exceed `top_k` and no map is dead, `S_{f,k}` is every
      image with `k` visible, and this is the best fixed cell over all of
      them.) With `labels`, each category is scored apart and the category
      is chosen by `category_rule` as for `D_f` (lowest `D^fix`, or the
      filter's highest-activation category). `fixed_cell` is the mean over
      the filters that `value` averages. The cell is chosen on the very
      images it is scored on, so with few images per filter this
      reference is optimistic (low): a filter must beat it clearly.
    * **shuffled landmarks** (no relation to the part): the instability of
      the same filters, peaks and rules after `shuffle_landmarks(seed=
      shuffle_seed)` reassigns each image's landmarks to another image (of
      the same category with `labels`). The top-k is re-selected among the
      images that now show the landmark.

    A filter that follows its part scores below both; one that does not
    scores near "shuffled"; one stuck at a place scores near "fixed cell".

    Args:
        peak_index, peak_value, landmarks, visible, image_size,
            receptive_field, top_k, labels, category_rule, drop_dead_maps:
            as in `location_instability`.
        map_shape: `(h, w)` of the feature map (`Peaks.map_size`): the
            cells of the fixed-cell reference.
        shuffle_seed: seed of the landmark permutation (default 0).

    Returns:
        An `InstabilityReport`.

    Raises:
        ValueError: as `location_instability`, or for a `map_shape` that
            is not a positive `(h, w)` containing every peak.

    Example:

    >>> rf = ReceptiveField(stride=(16, 16), offset=(8.0, 8.0), size=(196, 196))
    >>> index = np.array([[[0, 0]], [[0, 1]], [[0, 2]]])  # follows the part
    >>> points = np.array([[[8.0, 8.0]], [[24.0, 8.0]], [[40.0, 8.0]]])
    >>> report = location_instability_report(
    ...     index, np.ones((3, 1)), points, np.ones((3, 1), bool),
    ...     image_size=48, receptive_field=rf, map_shape=(1, 3))
    >>> report.value, round(report.fixed_cell * 48 * 2**0.5, 6)
    (0.0, 9.237604)

    (the landmark moves 16 px per image along the one row of 3 cells; the
    best fixed cell, the middle one, is 16, 0, 16 px away: std 9.24 px.)

    Note that `D_{f,k}` is a spread of distances, not of positions: a cell
    far from every landmark, whose distances are all large but similar,
    can beat the cells near them. The fixed-cell reference takes that into
    account, since it minimises over every cell of the map.
    """
    index, value, points, seen = _check_inputs(
        peak_index, peak_value, landmarks, visible, map_shape
    )
    labels = _check_options(top_k, category_rule, labels, value.shape[0])
    shape = _check_map_shape(map_shape, index)
    rf = check_receptive_field(receptive_field)
    diagonal = _image_diagonal(image_size)
    rows, cols = np.unravel_index(np.arange(shape[0] * shape[1]), shape)
    cells = tuple(c / diagonal for c in rf.centers(rows, cols))
    common = (labels, rf, diagonal, top_k, category_rule, bool(drop_dead_maps))
    scores = _scores(index, value, points, seen, *common, cells)
    shuffled_points, shuffled_seen = shuffle_landmarks(
        points, seen, labels=labels, seed=shuffle_seed
    )
    shuffled = _scores(
        index, value, shuffled_points, shuffled_seen, *common, None
    )
    fixed = np.where(np.isfinite(scores.per_filter), scores.fixed, np.nan)
    return InstabilityReport(
        value=_mean(scores.per_filter),
        per_filter=scores.per_filter,
        per_landmark=scores.per_landmark,
        fixed_cell=_mean(fixed),
        fixed_cell_per_filter=scores.fixed,
        fixed_cell_per_landmark=scores.fixed_landmarks,
        shuffled=_mean(shuffled.per_filter),
        shuffled_per_filter=shuffled.per_filter,
        shuffled_per_landmark=shuffled.per_landmark,
        pool_images=scores.pool.max(axis=0),
        selected_images=scores.used,
        dead_dropped_fraction=scores.dropped,
        reason=scores.reason,
    )


class DeadMaps(NamedTuple):
    """Dead-map fractions of a layer (`dead_map_fractions`).

    Attributes:
        map_fraction: fraction of the (image, filter) maps whose peak is
            `<= 0` (blank).
        filter_fraction: fraction of the filters dead on every image.
    """

    map_fraction: float
    filter_fraction: float


def dead_map_fractions(peak_value: Any) -> DeadMaps:
    """How much of a layer is silent: maps and filters with peak `<= 0`.

    A raw map whose highest value is `<= 0` is blank after ReLU: the
    filter does not fire on that image at all. A masked map can also be
    blank where the raw map is not: the mask is `<= 0` away from its
    centre, so a filter firing only away from the centre (e.g. a
    centroid between two blobs) is silenced. The fractions therefore
    belong to the map they were computed on (`masked` or `raw`). Training
    that leaves most maps dead has not fit; compare arms on this before
    comparing their instability.

    Args:
        peak_value: `(N, F)` peaks (e.g. `Peaks.value`) of the masked or
            the raw map.

    Returns:
        A `DeadMaps` tuple.

    Raises:
        ValueError: for a `peak_value` that is not a finite, non-empty
            `(N, F)` array.

    Example:

    >>> dead_map_fractions(np.array([[0.0, 2.0], [0.0, -1.0]]))
    DeadMaps(map_fraction=0.75, filter_fraction=0.5)
    """
    value = np.asarray(peak_value, dtype="float64")
    if value.ndim != 2 or value.size == 0:
        raise ValueError(
            "`peak_value` must have shape (num_images, num_filters) with at "
            f"least one image and filter. Received shape {value.shape}."
        )
    probes.check_finite(
        value,
        "`peak_value`",
        "Evaluate a model with finite weights.",
    )
    dead = value <= DEAD_PEAK
    return DeadMaps(
        map_fraction=float(dead.mean()),
        filter_fraction=float(dead.all(axis=0).mean()),
    )
