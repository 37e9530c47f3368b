"""Each feature map's peak: the cell where evaluation reads a location.

The peak of a map is its highest cell, `argmax_ij x_ij`, and that cell's
value. This is the paper's inferred part location (Section 3, "the
strongest activation") and the location the evaluation metrics read
(Section 5.2.2). It is a definition of the metrics, not a setting: the
layers' `center="centroid"` (the authors' training-time centre) does not
change where the evaluation reads a filter's location.

`peaks_from_maps` is the one implementation: it reads the cell from the
layers' own `templates.part_centers(center="argmax")`, so an argmax layer's
mask and the evaluation pick the same cell, on ties (the first in
row-major order) and on blank maps (`(0, 0)`) too. `collect_peaks` streams
it over a dataset; `dead_map_fractions` counts the blank maps (peak `<= 0`).
"""

from typing import Any
from typing import Callable
from typing import NamedTuple

import keras
import numpy as np

from keras_interp import templates
from keras_interp.evaluation import feature_maps as probes

# A map whose peak is at most this is all <= 0: blank ("dead").
DEAD_PEAK = 0.0
# The evaluated location is the map's highest cell (paper §3 and §5.2.2),
# whatever centre the layers were trained with.
PEAK_CENTER = "argmax"
_NON_FINITE_OUTPUTS = (
    "Non-finite outputs come from a diverged model (NaN or infinite "
    "weights) or bad inputs, so check the images (finite, 0..255) and the "
    "model's numerics (e.g. float16 overflow); its argmax classes and peak "
    "cells would be arbitrary. Evaluate a model with finite weights."
)


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
        outputs: `(N, ...)` the model's output (e.g. the logits) from the
            same forward pass, with `collect_peaks(return_outputs=True)`;
            else None.
    """

    index: np.ndarray
    value: np.ndarray
    landmarks: Any
    visible: Any
    labels: Any
    image_size: tuple
    map_size: tuple
    outputs: Any = None


def peaks_from_maps(
    feature_maps: Any, *, data_format: str = "channels_last"
) -> tuple:
    """Highest cell and its value for every map of a batch.

    The cell is `templates.part_centers(maps, center="argmax")`, the
    layers' own argmax (computed in float32, the layers' precision); the
    value is read from `feature_maps` at that cell, in its dtype. This
    numpy-in, numpy-out form is what the streaming evaluation calls batch
    by batch.

    Args:
        feature_maps: `(N, h, w, F)` array (or `(N, F, h, w)` with
            `data_format="channels_first"`).
        data_format: `"channels_last"` (default) or `"channels_first"`.

    Returns:
        `(index, value)`: `index` `(N, F, 2)` int64 `(row, col)`, `value`
        `(N, F)`. Ties go to the first cell in row-major order (MATLAB's
        `max` would scan column-major); a blank (constant) map peaks at
        `(0, 0)`.

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
    n, _, _, f = maps.shape
    centers = templates.part_centers(maps, center=PEAK_CENTER)
    index = keras.ops.convert_to_numpy(centers).astype("int64")
    images = np.arange(n)[:, None]
    value = maps[images, index[..., 0], index[..., 1], np.arange(f)[None, :]]
    return index, value


def _batch_field(batch: dict, key: Any) -> Any:
    if key is None or key not in batch:
        return None
    return np.asarray(batch[key])


def _predictor(model: keras.Model, probe: keras.Model, outputs: bool):
    """`inputs -> (maps, model outputs or None)`, in one forward pass
    where the map is a tensor of `model`'s own graph."""
    if not outputs:
        return lambda inputs: (probe.predict_on_batch(inputs), None)
    if len(model.outputs) != 1:
        raise ValueError(
            "`return_outputs=True` needs a model with one output (e.g. the "
            f"logits). Received a model with {len(model.outputs)} outputs; "
            "pass return_outputs=False, or a model with one output."
        )
    try:
        joint = keras.Model(probe.inputs, [probe.output, model.outputs[0]])
    except (ValueError, TypeError, AttributeError):
        # A nested layer's map is not a tensor of `model`'s graph.
        return lambda inputs: (
            probe.predict_on_batch(inputs),
            model.predict_on_batch(inputs),
        )
    return lambda inputs: tuple(joint.predict_on_batch(inputs))


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
    return_outputs: bool = False,
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
        return_outputs: also keep the model's output (its one output,
            e.g. the logits) of every image in `Peaks.outputs`, from the
            same forward pass where the layer is not nested (e.g. for the
            accuracy); checked finite before the maps.

    Returns:
        A `Peaks` tuple; `image_size` is the size of the dataset images.

    Raises:
        ValueError: for an empty dataset, a batch without `image_key`,
            non-finite outputs or maps, `return_outputs` with a model of
            several outputs, or the errors of `feature_map_model`.
    """
    probe = probes.feature_map_model(model, layer_name, map)
    data_format = probes.layer_data_format(model, layer_name)
    predict = _predictor(model, probe, return_outputs)
    fields = {"index": [], "value": [], "landmarks": [], "visible": []}
    fields.update(labels=[], outputs=[])
    image_size = map_size = None
    num_images = 0
    for batch in probes.iterate_batches(dataset):
        if image_key not in batch:
            raise ValueError(
                f"Dataset batches must contain '{image_key}' (image_key). "
                f"Received keys {sorted(batch)}."
            )
        images = np.asarray(batch[image_key])
        image_size = tuple(int(s) for s in images.shape[1:3])
        inputs = images if preprocess is None else preprocess(images)
        maps, outputs = predict(inputs)
        if return_outputs:
            fields["outputs"].append(
                probes.check_finite(
                    outputs,
                    f"The model's outputs (images {num_images} to "
                    f"{num_images + len(images) - 1} of the dataset)",
                    _NON_FINITE_OUTPUTS,
                )
            )
        num_images += len(images)
        maps = probes.to_channels_last(np.asarray(maps), data_format)
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
        outputs=gather("outputs") if return_outputs else None,
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
