"""The input checks of `evaluation.report`.

`check_model` refuses what the report cannot evaluate: a model without a
single logits output, non-finite weights (a model diverged in training),
a `layer` that names no layer (the message lists those with a feature map,
`conv_layer_names`).
"""

from typing import Any

import keras
import numpy as np

from keras_interp import models
from keras_interp.evaluation import _graph
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
