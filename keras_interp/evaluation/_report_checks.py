"""The model side of `evaluation.report`: input checks and its one pass.

`check_model` refuses what the report cannot evaluate (no single logits
output, an unknown layer, non-finite weights); `collect_report_peaks` runs
the model once over the dataset for the accuracy and every map's peak.
"""

from typing import Any
from typing import NamedTuple

import keras
import numpy as np

from keras_interp import evaluation
from keras_interp import models
from keras_interp.evaluation import _graph
from keras_interp.evaluation import feature_maps
from keras_interp.layers import InterpretableMixin

# Layers with a per-filter feature map, for `conv_layer_names`.
_CONV_LIKE = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    InterpretableMixin,
)
_RETRAIN = (
    "Its argmax classes and peak cells would be arbitrary (argmax of NaN is "
    "index 0), so it is not evaluated. Retrain it (e.g. with a smaller "
    "learning rate or loss_weight) and evaluate a model with finite weights."
)


def check_count(name: str, value: Any, minimum: int) -> int:
    """`value` as an int; a `ValueError` naming `name` unless >= `minimum`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        raise ValueError(
            f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}."
        )
    return int(value)


def conv_layer_names(model: keras.Model) -> list:
    """Names of the layers of `model` with a per-filter feature map.

    Convolutions (`Conv2D`, `DepthwiseConv2D`, `SeparableConv2D`, including
    `InterpretableConv2D`) and `InterpretableMask` layers, nested ones as
    `"outer/inner"` paths, in model order.

    Args:
        model: a Functional or built Sequential `keras.Model`.

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
        for path, layer in _graph.layer_paths(model)
        if isinstance(layer, _CONV_LIKE)
    ]


def check_layer(model: keras.Model, layer: Any) -> str:
    """`layer` if it names one layer of `model`, else a `ValueError`."""
    try:
        _graph.find_layer(model, layer)
    except ValueError as error:
        raise ValueError(
            f"`layer` must name one layer of model '{model.name}'. Received: "
            f"layer={layer!r} ({error}) Layers with a feature map: "
            f"{conv_layer_names(model)}. Pass one of them (the "
            f"interpretable models' evaluated layer is '{models.PART_CONV}')."
        ) from error
    return layer


def _non_finite_weights(model: keras.Model) -> list:
    return [
        weight.path
        for weight in model.weights
        if not bool(keras.ops.all(keras.ops.isfinite(weight)))
    ]


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


def check_model(model: keras.Model, layer: Any, *, weights: bool = True) -> str:
    """Checks that `model` has one output (the logits), that its weights
    are finite (if `weights`) and that `layer` names one of its layers.

    Returns:
        `layer`.
    """
    if len(model.outputs) != 1:
        raise ValueError(
            "`model` must have one output, the class logits (the image-only "
            "`PartClassifier.inference` model). Received a model with "
            f"{len(model.outputs)} outputs."
        )
    bad = _non_finite_weights(model) if weights else []
    if bad:
        raise ValueError(
            f"`model` has non-finite weights: {len(bad)} of its "
            f"{len(model.weights)} weight tensors hold NaN or infinity "
            f"(e.g. {', '.join(bad[:3])}): it diverged in training. " + _RETRAIN
        )
    return check_layer(model, layer)


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


def _check_outputs(model, maps, logits, labels, first) -> None:
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(
            "`model` must output logits of shape (batch, classes). "
            f"Received shape {logits.shape} for {len(labels)} images."
        )
    for name, values in (("logits", logits), ("feature maps", maps)):
        if not np.all(np.isfinite(values)):
            feature_maps.check_finite(
                values,
                f"The model's {name} (images {first} to "
                f"{first + len(labels) - 1} of the dataset)",
                _diverged_fix(model),
            )


class ReportPeaks(NamedTuple):
    """What `collect_report_peaks` keeps: `N x F` peaks and the hits.

    Attributes:
        peaks: an `evaluation.Peaks` (landmark fields None without them).
        correct: images whose logits' argmax is their label.
    """

    peaks: Any
    correct: int


def collect_report_peaks(
    model: keras.Model,
    probe: keras.Model,
    data_format: str,
    dataset: Any,
    with_landmarks: bool,
) -> ReportPeaks:
    """One pass: each map's peak (as `evaluation.collect_peaks` keeps it,
    with `evaluation.peaks_from_maps`) and the accuracy's hits.

    Not `evaluation.collect_peaks` itself: that runs the probe alone, and
    the report also needs the logits of the same forward pass (accuracy,
    and the finiteness check whose message names the non-finite weights),
    so calling it would run the model over the data twice.
    """
    joint = _joint_model(model, probe)
    fields = {"index": [], "value": [], "labels": []}
    fields.update(landmarks=[], visible=[])
    correct = num_images = 0
    image_size = map_size = None
    for batch in feature_maps.iterate_batches(dataset):
        _check_batch(batch, with_landmarks)
        images = np.asarray(batch["image"])
        if joint is not None:
            maps, logits = joint.predict_on_batch(images)
        else:
            maps = probe.predict_on_batch(images)
            logits = model.predict_on_batch(images)
        maps = feature_maps.to_channels_last(np.asarray(maps), data_format)
        logits, labels = np.asarray(logits), np.asarray(batch["label"])
        _check_outputs(model, maps, logits, labels, num_images)
        num_images += len(labels)
        correct += int(np.sum(np.argmax(logits, axis=-1) == labels))
        image_size = tuple(int(s) for s in images.shape[1:3])
        map_size = tuple(int(s) for s in maps.shape[1:3])
        index, value = evaluation.peaks_from_maps(maps)
        fields["index"].append(index)
        fields["value"].append(value.astype("float32"))
        fields["labels"].append(labels)
        if with_landmarks:
            fields["landmarks"].append(np.asarray(batch["parts"], "float32"))
            fields["visible"].append(np.asarray(batch["part_visible"], bool))
    if image_size is None:
        raise ValueError("`dataset` yielded no batches.")
    arrays = {k: np.concatenate(v) if v else None for k, v in fields.items()}
    peaks = evaluation.Peaks(image_size=image_size, map_size=map_size, **arrays)
    return ReportPeaks(peaks=peaks, correct=correct)
