"""Receptive-field geometry of a layer, read from the model's own graph.

Coordinates, used by every function in `keras_interp.evaluation`: an image
pixel `k` (0-based) covers the interval `[k, k + 1)`, so its centre is
`k + 0.5`; points are continuous `(y, x)` positions in the network input
image (landmarks are stored as `[x, y]` in the same pixels). In this
convention output cell `(i, j)` (0-based) is centred on

```
p = offset + (i, j) * stride
```

and its theoretical receptive field (RF) is the `size`-pixel interval
centred there. The authors' `getConvNetPara.m` uses 1-based pixel centres
and `c + (idx - 1) * s`: their `c` is our `offset + 0.5` (VGG-16 conv6 at
224: `c = 8.5`, `offset = 8.0`, stride 16, `docs/method_notes.md`).
"""

import math
from typing import Any
from typing import NamedTuple
from typing import Sequence

import keras
import numpy as np

from keras_interp.evaluation import _graph

# Pixel k covers [k, k + 1): the centre of input pixel 0 (see module doc).
PIXEL_CENTER = 0.5

_CONV_LAYERS = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
)
_POOL_LAYERS = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
_GLOBAL_LAYERS = (
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
)
# Layers that act per position (elementwise, per-pixel normalisation or
# channel mixing, merges of same-size maps): they leave the geometry as is.
_IDENTITY_LAYERS = (
    keras.layers.Identity,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.UnitNormalization,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Rescaling,
    keras.layers.Normalization,
    keras.layers.Dense,
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Concatenate,
)
# `keras.ops` calls made directly on symbolic tensors (e.g. `x + y`,
# `ops.relu(x)`) appear as operations of these classes; all elementwise.
_IDENTITY_OPS = frozenset(
    {
        "Abs",
        "Absolute",
        "Add",
        "Cast",
        "Clip",
        "Divide",
        "Elu",
        "Exp",
        "Gelu",
        "HardSigmoid",
        "HardSilu",
        "LeakyRelu",
        "Log",
        "Maximum",
        "Minimum",
        "Multiply",
        "Negative",
        "Power",
        "Relu",
        "Relu6",
        "Sigmoid",
        "Silu",
        "Sqrt",
        "Square",
        "Subtract",
        "Tanh",
        "TrueDivide",
    }
)
# Per-position helper layers of `keras.applications` (ConvNeXt), matched by
# class name because they are not public API.
_IDENTITY_CLASS_NAMES = frozenset({"LayerScale", "StochasticDepth"})
# Marks a tensor with no spatial layout left (after global pooling): it is
# broadcast over the map it is merged with and does not move the RF.
_GLOBAL = "global"


class ReceptiveField(NamedTuple):
    """Where the cells of a feature map sit in the input image.

    Cell `(i, j)` of the map (0-based) is centred on the input-image point
    `(offset[0] + i * stride[0], offset[1] + j * stride[1])`, in the pixel
    convention of this module (pixel `k` covers `[k, k + 1)`), and its
    theoretical receptive field spans `size` pixels around that centre
    (padding included, so it may extend past the image border).

    Attributes:
        stride: `(sy, sx)` ints, input pixels between neighbouring cells.
        offset: `(cy, cx)` floats, centre of cell `(0, 0)`.
        size: `(ry, rx)` ints, theoretical receptive-field extent.
    """

    stride: tuple
    offset: tuple
    size: tuple

    def centers(self, rows: Any, cols: Any) -> tuple:
        """RF centres `(y, x)` of cells `(rows, cols)` (arrays broadcast)."""
        rows = np.asarray(rows, dtype="float64")
        cols = np.asarray(cols, dtype="float64")
        return (
            self.offset[0] + rows * self.stride[0],
            self.offset[1] + cols * self.stride[1],
        )


def check_receptive_field(receptive_field: Any) -> ReceptiveField:
    """Validates a `ReceptiveField` (or `(stride, offset, size)` tuple)."""
    try:
        rf = ReceptiveField(*receptive_field)
        stride = tuple(int(s) for s in rf.stride)
        offset = tuple(float(c) for c in rf.offset)
        size = tuple(int(r) for r in rf.size)
    except (TypeError, ValueError):
        stride = offset = size = ()
    if (
        len(stride) != 2
        or len(offset) != 2
        or len(size) != 2
        or min(stride) < 1
        or min(size) < 1
        or not all(math.isfinite(c) for c in offset)
    ):
        raise ValueError(
            "`receptive_field` must be a ReceptiveField(stride=(sy, sx), "
            "offset=(cy, cx), size=(ry, rx)) with positive integer strides "
            "and sizes, e.g. from receptive_field(model, layer_name). "
            f"Received: receptive_field={receptive_field!r}."
        )
    return ReceptiveField(stride, offset, size)


def _identity() -> tuple:
    """Per-axis geometry `(stride, offset, size)` of the input itself."""
    return ((1, PIXEL_CENTER, 1), (1, PIXEL_CENTER, 1))


def _compose(outer: tuple, local: tuple) -> tuple:
    """Geometry of `local` (in its input's pixels) applied after `outer`.

    With `local` cell 0 centred at `c2` of its input, whose pixel `u` sits
    at `c1 + u * s1` with extent `r1`, the composite is
    stride `s1 s2`, offset `c1 + (c2 - 1/2) s1`, size `r1 + (r2 - 1) s1`.
    """
    axes = []
    for (s1, c1, r1), (s2, c2, r2) in zip(outer, local):
        axes.append(
            (s1 * s2, c1 + (c2 - PIXEL_CENTER) * s1, r1 + (r2 - 1) * s1)
        )
    return tuple(axes)


def _spatial_shape(tensor: Any, data_format: str) -> tuple:
    shape = tuple(tensor.shape)
    if len(shape) != 4:
        return None
    if data_format == "channels_first":
        return shape[2], shape[3]
    return shape[1], shape[2]


def _window(layer, node, kernel, strides, dilation, padding) -> tuple:
    """Local geometry of a sliding window (conv or pool) per axis."""
    data_format = getattr(layer, "data_format", None) or (
        keras.config.image_data_format()
    )
    sizes = _spatial_shape(_map_inputs(layer, node)[0], data_format)
    axes = []
    for axis in range(2):
        k_eff = dilation[axis] * (kernel[axis] - 1) + 1
        stride = strides[axis]
        pad = 0
        if padding == "same":
            size = None if sizes is None else sizes[axis]
            if stride == 1:
                # out == in, so the TF rule below gives k_eff - 1 in total.
                pad = (k_eff - 1) // 2
            elif size is None:
                raise ValueError(
                    f"Layer '{layer.name}' uses padding='same' with stride "
                    f"{stride}; its padding depends on the input size, "
                    "which is not static. Give the model a fixed input "
                    "size, e.g. keras.Input((224, 224, 3))."
                )
            else:
                # TensorFlow's SAME rule: out = ceil(in / s), the total pad
                # is split with the extra pixel after.
                out = -(-size // stride)
                pad = max((out - 1) * stride + k_eff - size, 0) // 2
        elif padding != "valid":
            raise ValueError(
                f"Layer '{layer.name}' has padding={padding!r}; only "
                "'valid' and 'same' are supported."
            )
        axes.append((stride, k_eff / 2.0 - pad, k_eff))
    return tuple(axes)


def _pairs(value: Any) -> tuple:
    return tuple(tuple(int(v) for v in pair) for pair in value)


def _check_same_grid(layer: Any, node: Any) -> None:
    """Identity layers must keep the spatial size of their map inputs."""
    data_format = getattr(layer, "data_format", None) or (
        keras.config.image_data_format()
    )
    outputs = [_spatial_shape(t, data_format) for t in node.output_tensors]
    for tensor in _map_inputs(layer, node):
        size = _spatial_shape(tensor, data_format)
        if size is None or size == (1, 1):
            continue
        for out in outputs:
            if out is None or (out != size and None not in out + size):
                raise ValueError(
                    f"Layer '{layer.name}' ({type(layer).__name__}) changes "
                    f"the spatial map from {size} to {out}, so it cannot be "
                    "treated as a per-position layer. The receptive field "
                    "through it is undefined here."
                )


def _merge(layer: Any, geometries: list) -> Any:
    """Merge of several branches: their RFs' union, on a common stride."""
    spatial = [g for g in geometries if g is not _GLOBAL]
    if not spatial:
        return _GLOBAL
    if len(spatial) == 1:
        return spatial[0]
    strides = {tuple(axis[0] for axis in g) for g in spatial}
    if len(strides) > 1:
        raise ValueError(
            f"Layer '{layer.name}' merges maps with different strides "
            f"{sorted(strides)}: their cells do not line up, so there is no "
            "single receptive field."
        )
    axes = []
    for axis in range(2):
        low = min(g[axis][1] - g[axis][2] / 2.0 for g in spatial)
        high = max(g[axis][1] + g[axis][2] / 2.0 for g in spatial)
        axes.append((spatial[0][axis][0], (low + high) / 2.0, high - low))
    return tuple(axes)


def _project_identity_types() -> tuple:
    """This library's per-position layers, imported lazily (no cycles)."""
    from keras_interp.layers import InterpretableMask

    types = [InterpretableMask]
    try:
        from keras_interp.models.backbones import BackbonePreprocessing

        types.append(BackbonePreprocessing)
    except ImportError:  # pragma: no cover - models package not installed
        pass
    return tuple(types)


def _is_identity(layer: Any, identity_layers: Sequence) -> bool:
    if isinstance(layer, _IDENTITY_LAYERS + _project_identity_types()):
        return True
    if type(layer).__name__ in _IDENTITY_CLASS_NAMES:
        return True
    if not isinstance(layer, keras.layers.Layer):
        if type(layer).__name__ in _IDENTITY_OPS:
            return True
    for item in identity_layers:
        if isinstance(item, str):
            if item in (layer.name, type(layer).__name__):
                return True
        elif isinstance(item, type) and isinstance(layer, item):
            return True
    return False


_WINDOW_LAYERS = _CONV_LAYERS + _POOL_LAYERS + _GLOBAL_LAYERS
_SHIFT_LAYERS = (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)


def _map_inputs(operation: Any, node: Any) -> list:
    """The node inputs that carry the feature map.

    Keyword arguments (e.g. the `labels=` of the interpretable layers) never
    do; single-map layers read only their first positional argument.
    """
    if not node.arguments.args:
        return []
    single = _WINDOW_LAYERS + _SHIFT_LAYERS + _project_identity_types()
    args = (
        node.arguments.args[:1]
        if isinstance(operation, single)
        else (node.arguments.args)
    )
    return [t for t in keras.tree.flatten(args) if _is_keras_tensor(t)]


def _is_keras_tensor(value: Any) -> bool:
    return isinstance(value, keras.KerasTensor)


def _local_geometry(layer, node, inputs, identity_layers) -> Any:
    """Geometry of one node's output given its inputs' geometries."""
    if all(g is _GLOBAL for g in inputs):
        return _GLOBAL
    if isinstance(layer, _CONV_LAYERS):
        local = _window(
            layer,
            node,
            layer.kernel_size,
            layer.strides,
            layer.dilation_rate,
            layer.padding,
        )
        return _compose(inputs[0], local)
    if isinstance(layer, _POOL_LAYERS):
        local = _window(
            layer, node, layer.pool_size, layer.strides, (1, 1), layer.padding
        )
        return _compose(inputs[0], local)
    if isinstance(layer, keras.layers.ZeroPadding2D):
        (top, _), (left, _) = _pairs(layer.padding)
        local = ((1, PIXEL_CENTER - top, 1), (1, PIXEL_CENTER - left, 1))
        return _compose(inputs[0], local)
    if isinstance(layer, keras.layers.Cropping2D):
        (top, _), (left, _) = _pairs(layer.cropping)
        local = ((1, PIXEL_CENTER + top, 1), (1, PIXEL_CENTER + left, 1))
        return _compose(inputs[0], local)
    if isinstance(layer, _GLOBAL_LAYERS):
        return _GLOBAL
    if _is_identity(layer, identity_layers):
        _check_same_grid(layer, node)
        return _merge(layer, inputs)
    raise ValueError(
        f"receptive_field does not know how layer '{layer.name}' "
        f"({type(layer).__name__}) maps positions. Supported: Conv2D, "
        "DepthwiseConv2D, SeparableConv2D (and subclasses), Max/Average "
        "pooling 2D, ZeroPadding2D, Cropping2D, global pooling, nested "
        "Functional/Sequential models and per-position layers (activations, "
        "normalisation, dropout, Dense, merges). If this layer acts on each "
        f"position separately, pass identity_layers=['{layer.name}'] (or its "
        "class); otherwise compute the geometry by hand."
    )


def _tensor_geometry(tensor, seeds, identity_layers) -> Any:
    """Geometry of `tensor`, walking its graph back to the `seeds`."""
    memo = dict(seeds)
    stack = [tensor]
    while stack:
        current = stack[-1]
        if id(current) in memo:
            stack.pop()
            continue
        history = getattr(current, "_keras_history", None)
        operation = None if history is None else history.operation
        if operation is None or isinstance(operation, keras.layers.InputLayer):
            raise ValueError(
                f"Tensor {current.name} is not connected to the model inputs "
                "through its graph."
            )
        node = operation._inbound_nodes[history.node_index]
        map_inputs = _map_inputs(operation, node)
        pending = [t for t in map_inputs if id(t) not in memo]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        inputs = [memo[id(t)] for t in map_inputs]
        if _graph.is_nested_model(operation):
            inner = _graph.graph_of(operation)
            inner_seeds = {
                id(inner_t): memo[id(outer_t)]
                for inner_t, outer_t in _graph.nested_input_pairs(
                    operation, node
                )
            }
            memo[id(current)] = _tensor_geometry(
                inner.outputs[history.tensor_index],
                inner_seeds,
                identity_layers,
            )
        else:
            memo[id(current)] = _local_geometry(
                operation, node, inputs, identity_layers
            )
    return memo[id(tensor)]


def receptive_field(
    model: keras.Model,
    layer_name: str,
    *,
    identity_layers: Sequence = (),
) -> ReceptiveField:
    """Stride, centre offset and size of a layer's cells in the input image.

    Walks the model's own Functional graph from its input(s) to the output
    of `layer_name`, including through nested models (a
    `keras.applications` backbone used as a layer, or a model built from a
    backbone's tensors), and composes the geometry of every layer:

    * `Conv2D`, `DepthwiseConv2D`, `SeparableConv2D` (and subclasses such as
      `InterpretableConv2D`), `MaxPooling2D`, `AveragePooling2D`: kernel
      `k`, stride `s`, dilation `d` (`k_eff = d (k - 1) + 1`) and padding:
      `"valid"` pads nothing; `"same"` follows TensorFlow's rule
      `pad_before = max((out - 1) s + k_eff - in, 0) // 2` with
      `out = ceil(in / s)`, using the static input size;
    * `ZeroPadding2D` / `Cropping2D` shift the grid by the top/left amount;
    * per-position layers (activations, normalisation, dropout, `Dense`,
      `InterpretableMask`, `BackbonePreprocessing`, ConvNeXt's
      `LayerScale`/`StochasticDepth`, elementwise `keras.ops`) are the
      identity; keyword arguments such as the interpretable layers'
      `labels=` are not part of the map;
    * merges (`Add`, `Concatenate`, ...) need the same stride on every
      branch; the merged cell's RF is the union (hull) of the branch RFs,
      i.e. the largest RF when the branch centres agree. Branches that went
      through global pooling (squeeze-excitation) carry no position and are
      ignored; strictly such a unit also sees the whole image.

    Per axis, a layer with local stride `s2`, cell-0 centre `c2` and extent
    `r2` (in its input's pixels) after a map with `(s1, c1, r1)` gives
    stride `s1 s2`, offset `c1 + (c2 - 1/2) s1` and size `r1 + (r2 - 1) s1`.

    Args:
        model: a Functional or built Sequential `keras.Model` with a fixed
            input size where `"same"` padding meets a stride > 1.
        layer_name: name of the layer, anywhere in the model (nested models
            included), or an unambiguous `"outer/inner"` path.
        identity_layers: extra layers to treat as per-position: layer names,
            class names or classes (e.g. a custom elementwise layer).

    Returns:
        `ReceptiveField(stride=(sy, sx), offset=(cy, cx), size=(ry, rx))`:
        cell `(i, j)` is centred on input point
        `(cy + i sy, cx + j sx)` with pixel `k` covering `[k, k + 1)`; the
        authors' 1-based `getConvNetPara` centre is `offset + 0.5`.

    Raises:
        ValueError: for an unknown layer type (add it to `identity_layers`
            if it acts per position), a missing or ambiguous layer name, a
            merge of maps with different strides, a layer without a spatial
            map (after global pooling), or `"same"` padding with a stride
            on an input of unknown size.

    Example:

    >>> inputs = keras.Input((224, 224, 3))
    >>> x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    >>> x = keras.layers.MaxPooling2D()(x)
    >>> x = keras.layers.Conv2D(8, 3, name="top")(x)
    >>> receptive_field(keras.Model(inputs, x), "top")
    ReceptiveField(stride=(2, 2), offset=(3.0, 3.0), size=(8, 8))
    """
    containers, layer = _graph.find_layer(model, layer_name)
    identity_layers = tuple(identity_layers)
    top = _graph.graph_of(model)
    seeds = {id(t): _identity() for t in top.inputs}
    geometry = None
    for depth, container in enumerate(containers):
        child = containers[depth + 1] if depth + 1 < len(containers) else layer
        node = _graph.node_in(container, child)
        if child is layer:
            if len(node.output_tensors) != 1:
                raise ValueError(
                    f"Layer '{layer.name}' has {len(node.output_tensors)} "
                    "outputs; receptive_field needs a single feature map."
                )
            geometry = _tensor_geometry(
                node.output_tensors[0], seeds, identity_layers
            )
        else:
            seeds = {
                id(inner_t): _tensor_geometry(outer_t, seeds, identity_layers)
                for inner_t, outer_t in _graph.nested_input_pairs(child, node)
            }
    if geometry is _GLOBAL:
        raise ValueError(
            f"Layer '{layer.name}' comes after global pooling: its output "
            "has no spatial map, so it has no receptive-field position."
        )
    (sy, cy, ry), (sx, cx, rx) = geometry
    return ReceptiveField(
        stride=(int(sy), int(sx)),
        offset=(float(cy), float(cx)),
        size=(int(round(ry)), int(round(rx))),
    )
