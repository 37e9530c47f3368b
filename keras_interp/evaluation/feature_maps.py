"""A probe model that outputs one layer's feature map, masked or raw."""

from typing import Any
from typing import Iterator

import keras
import numpy as np
from keras import ops

from keras_interp.evaluation import _graph

# "masked": the layer's output (for the interpretable layers: after ReLU and
# the mask, paper footnote 1). "raw": before any activation or mask (the
# authors' evaluation code reads the raw conv6 output, docs/method_notes.md).
MAPS = ("masked", "raw")


def check_map(map: str) -> str:
    if map not in MAPS:
        raise ValueError(
            f"`map` must be one of {MAPS}: 'masked' (the layer output; "
            "post-ReLU and mask for the interpretable layers, as in the "
            "paper) or 'raw' (pre-activation, pre-mask, as in the authors' "
            f"code). Received: map={map!r}."
        )
    return map


class _PreActivation(keras.layers.Layer):
    """A conv layer's `conv(x) + bias`, before its activation and mask."""

    def __init__(self, conv, **kwargs):
        super().__init__(dtype=conv.dtype_policy, **kwargs)
        self.conv = conv

    def call(self, inputs):
        conv = self.conv
        outputs = conv.convolution_op(inputs, conv.kernel)
        if conv.use_bias:
            if conv.data_format == "channels_last":
                shape = (1,) * (len(outputs.shape) - 1) + (conv.filters,)
            else:
                shape = (1, conv.filters) + (1,) * (len(outputs.shape) - 2)
            outputs = ops.add(outputs, ops.reshape(conv.bias, shape))
        return outputs

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)


def _raw_tensor(layer: Any, node: Any) -> Any:
    from keras_interp.layers import InterpretableMask

    inputs = _graph.first_argument(node)
    if isinstance(layer, InterpretableMask):
        # Its input is the map before its ReLU and mask.
        return inputs
    if isinstance(layer, keras.layers.Conv2D):
        return _PreActivation(layer)(inputs)
    raise ValueError(
        f"map='raw' is defined for Conv2D layers (including "
        "InterpretableConv2D: conv + bias before ReLU and mask) and for "
        f"InterpretableMask (its input). Layer '{layer.name}' is a "
        f"{type(layer).__name__}; use map='masked' for its output."
    )


def _probe(container: Any, path: list, layer: Any, map: str) -> Any:
    """Symbolic map tensor in `container`'s graph (inputs: its inputs)."""
    child = path[0] if path else layer
    node = _graph.node_in(container, child)
    if child is layer:
        if map == "raw":
            return _raw_tensor(layer, node)
        if len(node.output_tensors) != 1:
            raise ValueError(
                f"Layer '{layer.name}' has {len(node.output_tensors)} "
                "outputs; pick a layer with a single feature map."
            )
        return node.output_tensors[0]
    inner = _graph.graph_of(child)
    inner_map = _probe(child, path[1:], layer, map)
    sub_model = keras.Model(inner.inputs, inner_map)
    outer = [o for _, o in _graph.nested_input_pairs(child, node)]
    return sub_model(outer if len(outer) > 1 else outer[0])


def feature_map_model(
    model: keras.Model, layer_name: str, map: str = "masked"
) -> keras.Model:
    """A model from `model`'s inputs to one layer's feature map.

    The probe shares the layers (and weights) of `model`; nested models are
    entered, so `layer_name` may name a layer inside a backbone used as a
    layer.

    Args:
        model: a Functional or built Sequential `keras.Model`.
        layer_name: the layer whose map to read (nested layers included, or
            an `"outer/inner"` path).
        map: `"masked"` (default): the layer's output; for
            `InterpretableConv2D` / `InterpretableMask` that is the map
            after ReLU and the mask (paper footnote 1). `"raw"`: the map
            before any activation and mask: `conv(x) + bias` for a
            `Conv2D` or `InterpretableConv2D` (built on the layer's own
            `convolution_op` and weights), the input of an
            `InterpretableMask`. The authors' location-instability code
            reads the raw conv6 map (`docs/method_notes.md`, item 15).

    Returns:
        A `keras.Model` with the inputs of `model` and one output, the
        feature map, in the layer's data format.

    Raises:
        ValueError: for an unknown or ambiguous `layer_name`, a layer
            called several times, or `map="raw"` on a layer other than
            `Conv2D`, `InterpretableConv2D` or `InterpretableMask`.

    Example:

    >>> inputs = keras.Input((16, 16, 3))
    >>> x = keras_interp.InterpretableConv2D(4, 3, name="conv6")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Flatten()(x))
    >>> probe = feature_map_model(model, "conv6", map="raw")
    >>> tuple(probe.output.shape)
    (None, 14, 14, 4)
    """
    check_map(map)
    containers, layer = _graph.find_layer(model, layer_name)
    output = _probe(model, list(containers[1:]), layer, map)
    top = _graph.graph_of(model)
    return keras.Model(top.inputs, output, name=f"{layer.name}_{map}_map")


def iterate_batches(dataset: Any) -> Iterator[dict]:
    """Batches of a `tf.data.Dataset` (or any iterable) as numpy dicts."""
    if hasattr(dataset, "as_numpy_iterator"):
        return iter(dataset.as_numpy_iterator())
    return iter(dataset)


def check_finite(array: Any, name: str, fix: str) -> np.ndarray:
    """`array` as numpy; a `ValueError` naming `name` if any value is NaN/inf.

    A diverged model (e.g. NaN weights) gives NaN maps and logits, whose
    argmax is an arbitrary cell or class: every metric computed from them
    would look plausible and mean nothing, so they are refused.

    Args:
        array: the values to check.
        name: what they are, for the message (e.g. "`feature_maps`").
        fix: what to do about it, appended to the message.

    Returns:
        `array` as a numpy array.

    Raises:
        ValueError: if `array` holds a NaN or an infinity.
    """
    array = np.asarray(array)
    finite = np.isfinite(array)
    if not finite.all():
        nan = int(np.isnan(array).sum())
        raise ValueError(
            f"{name} must be finite, but {array.size - int(finite.sum())} of "
            f"its {array.size} values are not ({nan} NaN, "
            f"{array.size - int(finite.sum()) - nan} infinite). {fix}"
        )
    return array


def to_channels_last(maps: np.ndarray, layer_data_format: str) -> np.ndarray:
    if layer_data_format == "channels_first":
        return np.moveaxis(maps, 1, -1)
    return maps


def layer_data_format(model: keras.Model, layer_name: str) -> str:
    _, layer = _graph.find_layer(model, layer_name)
    return getattr(layer, "data_format", None) or (
        keras.config.image_data_format()
    )
