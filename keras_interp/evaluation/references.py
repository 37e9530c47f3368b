"""Reference values of the location instability (paper Section 5.2.2).

The instability of `location_instability` alone cannot say whether a filter
localises a part: on box-cropped objects a filter that always fires at the
same place is already fairly stable. `location_instability_report` scores
the same filters, images and rules twice more, as references:

* **fixed cell** (no localisation): a filter stuck at its best fixed cell;
* **shuffled landmarks** (no relation to the part): the landmarks
  reassigned across images by `shuffle_landmarks`.

A filter that follows its part scores below both.
"""

from typing import Any
from typing import NamedTuple

import numpy as np

from keras_interp.evaluation.location_instability import SHUFFLE_SEED
from keras_interp.evaluation.location_instability import TOP_K
from keras_interp.evaluation.location_instability import _check_inputs
from keras_interp.evaluation.location_instability import _check_options
from keras_interp.evaluation.location_instability import _groups
from keras_interp.evaluation.location_instability import _image_diagonal
from keras_interp.evaluation.location_instability import _mean
from keras_interp.evaluation.location_instability import _scores
from keras_interp.evaluation.receptive_field import check_receptive_field


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
