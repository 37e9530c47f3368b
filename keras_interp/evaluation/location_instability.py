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
DEFAULT_TOP_K = 100
# Fewer valid images than this leave the std undefined; the authors then
# mark the filter NaN and drop it (`computeStability.m`).
MIN_IMAGES = 2
# Authors' MATLAB `std` divides by N - 1.
STD_DDOF = 1
# Multi-category filter -> category choice (docs/method_notes.md, item 15):
# the paper keeps the category with the lowest deviation, the authors' code
# (`step_computeStability_multiClass.m`) the highest mean activation.
CATEGORY_RULES = ("deviation", "activation")


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
        ValueError: if `feature_maps` is not rank 4.

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
    return index, value, points, seen.astype(bool)


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


def _deviations(distance, value, visible, top_k) -> np.ndarray:
    """`D_{f,k}` `(F, K)` from distances `(N, F, K)` and peaks `(N, F)`."""
    n, f, k = distance.shape
    result = np.full((f, k), np.nan)
    for part in range(k):
        rows = np.flatnonzero(visible[:, part])
        if len(rows) < MIN_IMAGES:
            continue
        # Highest peaks first; a stable sort keeps ties in image order.
        order = np.argsort(-value[rows], axis=0, kind="stable")[:top_k]
        chosen = distance[rows[order], np.arange(f)[None, :], part]
        if chosen.shape[0] >= MIN_IMAGES:
            result[:, part] = np.std(chosen, axis=0, ddof=STD_DDOF)
    return result


def location_instability(
    peak_index: Any,
    peak_value: Any,
    landmarks: Any,
    visible: Any,
    *,
    image_size: Any,
    receptive_field: Any,
    top_k: int = DEFAULT_TOP_K,
    return_per_filter: bool = False,
    map_shape: Any = None,
    labels: Any = None,
    category_rule: str = "deviation",
) -> Any:
    """Location instability of filters (paper §5.2.2; lower is better).

    For each filter `f` and landmark `k`: among the images where `k` is
    visible, keep the `top_k` with the highest peak value of `f`; the
    inferred location is the receptive-field centre of each image's peak
    cell, `p = offset + (row, col) * stride`; `d = ||p_k - p|| / sqrt(W^2 +
    H^2)`; `D_{f,k}` is the standard deviation of `d` over those images,
    with the `N - 1` normaliser of the authors' MATLAB `std`. A filter's
    value is the mean of `D_{f,k}` over landmarks. As in the authors'
    `computeStability.m`, a filter with fewer than 2 valid images for some
    landmark is NaN and dropped; the result is the mean over the remaining
    filters. (The authors divide the mean pixel std by the diagonal at the
    end; the std is linear, so this is the same number.)

    The authors keep only images with exactly one annotated point per
    landmark; here an object crop has one point, marked by `visible`. With
    the masked (post-ReLU) maps a filter silent on an image peaks at 0 in
    cell `(0, 0)`; such images rank last and enter the top `top_k` only
    when fewer images activate the filter.

    Multi-category models (`labels` given): `D_f` is computed per category
    on its own images, and each filter keeps one category: the paper keeps
    the one with the lowest deviation (`category_rule="deviation"`,
    default); the authors' `step_computeStability_multiClass.m` keeps the
    one with the highest mean peak value (`"activation"`).

    Args:
        peak_index: `(N, F, 2)` int `(row, col)` of each map's highest cell,
            or `(N, F)` flat indices with `map_shape`.
        peak_value: `(N, F)` the peak values (activation scores).
        landmarks: `(N, K, 2)` `[x, y]` points in input-image pixels
            (pixel `k` covers `[k, k + 1)`).
        visible: `(N, K)` bool; invisible landmarks are ignored.
        image_size: int or `(H, W)` of the network input image, for the
            diagonal.
        receptive_field: the layer's `ReceptiveField` (see
            `receptive_field`); only `stride` and `offset` are used.
        top_k: images per filter and landmark, by peak value. Default 100
            (paper). Ties at the cut keep the earlier images.
        return_per_filter: also return the per-filter and per-landmark
            values.
        map_shape: `(h, w)`, needed only for flat `peak_index`.
        labels: optional `(N,)` category labels (multi-category).
        category_rule: `"deviation"` (paper, default) or `"activation"`
            (authors' code); used only with `labels`.

    Returns:
        The instability (float; NaN, with a warning, if no filter has
        2 valid images for every landmark). With `return_per_filter`,
        `(instability, per_filter (F,), per_landmark (F, K))`, NaN for
        dropped filters.

    Raises:
        ValueError: for inconsistent shapes, `top_k < 2`, a bad
            `image_size`, `receptive_field` or `category_rule`.

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
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        top_k = -1
    if top_k < MIN_IMAGES:
        raise ValueError(
            f"`top_k` must be an int >= {MIN_IMAGES} (a std needs two "
            f"images; the paper uses {DEFAULT_TOP_K}). Received: "
            f"top_k={top_k!r}."
        )
    if category_rule not in CATEGORY_RULES:
        raise ValueError(
            f"`category_rule` must be one of {CATEGORY_RULES}: 'deviation' "
            "(paper) or 'activation' (authors' code). Received: "
            f"category_rule={category_rule!r}."
        )
    rf = check_receptive_field(receptive_field)
    diagonal = _image_diagonal(image_size)
    y, x = rf.centers(index[..., 0], index[..., 1])  # (N, F)
    dx = points[:, None, :, 0] - x[:, :, None]
    dy = points[:, None, :, 1] - y[:, :, None]
    distance = np.hypot(dx, dy) / diagonal  # (N, F, K)
    n = value.shape[0]
    if labels is None:
        per_landmark = _deviations(distance, value, seen, top_k)
    else:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(
                f"`labels` must have shape ({n},), one category per image. "
                f"Received shape {labels.shape}."
            )
        categories = np.unique(labels)
        candidates, scores = [], []
        for category in categories:
            rows = labels == category
            candidates.append(
                _deviations(distance[rows], value[rows], seen[rows], top_k)
            )
            scores.append(value[rows].mean(axis=0))
        candidates = np.stack(candidates)  # (C, F, K)
        per_category = candidates.mean(axis=2)  # (C, F)
        if category_rule == "deviation":
            masked = np.where(np.isnan(per_category), np.inf, per_category)
            pick = np.argmin(masked, axis=0)
        else:
            pick = np.argmax(np.stack(scores), axis=0)
        per_landmark = candidates[pick, np.arange(value.shape[1])]
    per_filter = per_landmark.mean(axis=1)
    valid = ~np.isnan(per_filter)
    if not valid.any():
        warnings.warn(
            "location_instability: no filter has at least "
            f"{MIN_IMAGES} images with each landmark visible; returning NaN.",
            RuntimeWarning,
            stacklevel=2,
        )
        score = float("nan")
    else:
        score = float(per_filter[valid].mean())
    if return_per_filter:
        return score, per_filter, per_landmark
    return score
