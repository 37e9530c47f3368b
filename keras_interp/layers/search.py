"""Finding the interpretable layers of a model."""

import keras

from keras_interp.layers.base_interpretable import InterpretableMixin


def interpretable_layers(model):
    """All interpretable layers of `model`, nested models included.

    Walks `layers` recursively (a layer that has `layers`, e.g. a nested
    `keras.Model` or `keras.Sequential`, is entered), depth first in layer
    order, and lists each interpretable layer once, even if it is shared
    by several nested models. Only public Keras API is used, so the
    sublayers of a custom layer that is not a model (which Keras lists
    only privately) are not searched.

    Args:
        model: a `keras.Model`, or any layer (an interpretable layer gives
            itself).

    Returns:
        A list of `InterpretableMask` and `InterpretableConv2D` layers (any
        `InterpretableMixin`).
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            "`model` must be a Keras model or layer. Received: "
            f"model={model!r} of type {type(model).__name__}."
        )
    found, seen = [], set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, InterpretableMixin):
            found.append(layer)
        for child in getattr(layer, "layers", None) or ():
            visit(child)

    visit(model)
    return found
