"""Private helpers to find a layer, possibly nested, in a Keras model graph.

Keras 3 Functional models record a DAG of `Node`s: each `KerasTensor` has a
`_keras_history` `(operation, node_index, tensor_index)` that names the node
which produced it (`keras/src/ops/node.py`), and each Functional model keeps
the keys of its own nodes in `_nodes` (`keras/src/ops/function.py`). A model
used as a layer inside another model is one node of the outer graph; its own
layers keep the nodes of the inner graph.
"""

from typing import Any

import keras

PATH_SEPARATOR = "/"


def graph_of(model: Any) -> Any:
    """The Functional graph of a Functional or built Sequential model."""
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise ValueError(
                f"Sequential model '{model.name}' has no graph yet. Build it "
                "with an input shape first, e.g. start it with "
                "keras.Input((224, 224, 3))."
            )
        return graph
    if not hasattr(model, "_nodes") or not hasattr(model, "_inputs"):
        raise ValueError(
            f"`model` must be a Functional or Sequential keras.Model, whose "
            f"layer graph can be read. Received {type(model).__name__} "
            f"'{getattr(model, 'name', model)}'. Rebuild a subclassed model "
            "functionally, e.g. keras.Model(inputs, outputs)."
        )
    return model


def is_nested_model(operation: Any) -> bool:
    return isinstance(operation, keras.Model) and (
        isinstance(operation, keras.Sequential) or hasattr(operation, "_nodes")
    )


def _operations(model: Any) -> list:
    return list(graph_of(model).operations)


def _all_paths(model: Any, prefix: tuple = ()) -> list:
    """Every (path of models, operation) reachable from `model`."""
    found = []
    for op in _operations(model):
        if isinstance(op, keras.layers.InputLayer):
            continue
        found.append((prefix + (model,), op))
        if is_nested_model(op):
            found.extend(_all_paths(op, prefix + (model,)))
    return found


def layer_paths(model: Any) -> list:
    """`(path, layer)` of every layer of `model`, nested models entered.

    `path` is the `"outer/inner"` name that `find_layer` accepts; graph
    order, input layers left out.
    """
    return [
        (PATH_SEPARATOR.join([c.name for c in containers[1:]] + [op.name]), op)
        for containers, op in _all_paths(model)
    ]


def find_layer(model: Any, layer_name: str) -> tuple:
    """Returns `(containers, layer)`: the models from `model` down to `layer`.

    `layer_name` is a layer name anywhere in the model, including inside
    nested models, or an unambiguous path `"outer/inner"` of names.

    Raises:
        ValueError: if no layer, or more than one, has that name.
    """
    if not isinstance(layer_name, str) or not layer_name:
        raise ValueError(
            "`layer_name` must be a non-empty layer name. Received: "
            f"layer_name={layer_name!r}."
        )
    graph_of(model)
    parts = layer_name.split(PATH_SEPARATOR)
    candidates = _all_paths(model)
    matches = []
    for containers, op in candidates:
        names = [c.name for c in containers[1:]] + [op.name]
        if names[-len(parts) :] == parts:
            matches.append((containers, op))
    if not matches:
        names = sorted(
            PATH_SEPARATOR.join([c.name for c in cs[1:]] + [op.name])
            for cs, op in candidates
        )
        shown = ", ".join(names[:40]) + (", ..." if len(names) > 40 else "")
        raise ValueError(
            f"No layer named '{layer_name}' in model '{model.name}'. "
            f"Layers (nested ones as 'model/layer'): {shown}."
        )
    if len(matches) > 1:
        paths = [
            PATH_SEPARATOR.join([c.name for c in cs[1:]] + [op.name])
            for cs, op in matches
        ]
        raise ValueError(
            f"Layer name '{layer_name}' is ambiguous in model "
            f"'{model.name}': {paths}. Pass one of these paths instead."
        )
    return matches[0]


def node_in(container: Any, operation: Any) -> Any:
    """The unique node of `operation` that belongs to `container`'s graph."""
    graph = graph_of(container)
    own = graph._nodes
    nodes = [
        node
        for index, node in enumerate(operation._inbound_nodes)
        if f"{id(operation)}_ib-{index}" in own
    ]
    if len(nodes) != 1:
        raise ValueError(
            f"Layer '{operation.name}' is called {len(nodes)} times in model "
            f"'{container.name}'; the feature map to analyse is ambiguous. "
            "Evaluate a model in which the layer is called once."
        )
    return nodes[0]


def nested_input_pairs(model: Any, node: Any) -> list:
    """Pairs (inner input tensor, outer argument tensor) of a nested call."""
    inner = list(graph_of(model).inputs)
    if not node.arguments.args:
        raise ValueError(
            f"Nested model '{model.name}' was called without positional "
            "inputs; call it as model(inputs)."
        )
    outer = keras.tree.flatten(node.arguments.args[0])
    if len(outer) != len(inner):
        raise ValueError(
            f"Nested model '{model.name}' has {len(inner)} inputs but was "
            f"called on {len(outer)} tensors."
        )
    return list(zip(inner, outer))


def first_argument(node: Any) -> Any:
    """The first positional argument of a layer call (its main input)."""
    if not node.arguments.args:
        raise ValueError(
            f"Layer '{node.operation.name}' was called without a positional "
            "input tensor."
        )
    return node.arguments.args[0]
