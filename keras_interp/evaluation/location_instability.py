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

`mu` is the map's highest cell, the paper's definition, whatever `center`
the layers trained with (`peaks.peaks_from_maps`). Points use the pixel
convention of `receptive_field`: pixel `k` covers `[k, k + 1)`. Landmarks
are `[x, y]`, peak indices `(row, col)`.

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

Reference values to read a number against (a filter stuck at its best
fixed cell; the landmarks shuffled across images) are in `references`
(`location_instability_report`).
"""

import warnings
from typing import Any
from typing import NamedTuple

import numpy as np

from keras_interp.evaluation import feature_maps as probes
from keras_interp.evaluation.peaks import DEAD_PEAK
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
# Seed of the landmark permutation of the "shuffled landmarks" reference.
SHUFFLE_SEED = 0


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
