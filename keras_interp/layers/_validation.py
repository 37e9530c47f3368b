"""Argument and label checks shared by the interpretable layers.

Each raises a `ValueError` that names the argument, the value received and
what is valid.
"""

import math

import keras
import numpy as np
from keras import ops


def _check_float(name, value, low=None, high=None, low_open=False):
    """`value` as a float; it must be finite and within the bounds given."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        rule = []
        if low is not None:
            rule.append(f"{'>' if low_open else '>='} {low}")
        if high is not None:
            rule.append(f"<= {high}")
        raise ValueError(
            f"`{name}` must be a finite number {' and '.join(rule)}. "
            f"Received: {name}={value!r}."
        )
    return float(value)


def _check_choice(name, value, choices):
    """`value`; it must be one of `choices`."""
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {choices}. Received: {name}={value!r}."
        )
    return value


def _concrete(value):
    """`value` as a numpy array if its values are known now, else None.

    Known: Python and numpy values, and eager tensors. Unknown: symbolic
    tensors (Keras functional construction, `tf.function`/XLA graphs, JAX
    tracers, `torch.compile`).
    """
    if isinstance(value, (np.ndarray, np.generic, list, tuple, int, float)):
        return np.asarray(value)
    if isinstance(value, keras.KerasTensor):
        return None
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.is_tensor(value) and not tf.is_symbolic_tensor(value):
            return value.numpy()
        return None
    if backend == "jax":
        import jax

        if isinstance(value, jax.core.Tracer):
            return None
        return np.asarray(value)
    if backend == "torch":
        import torch

        if torch.compiler.is_compiling():
            return None
        return keras.ops.convert_to_numpy(value)
    return np.asarray(value)


def _check_labels(labels, batch, num_classes, layer_name):
    """Checks `labels` against the batch and the classes, where it can.

    Shapes are checked whenever they are known (static shapes, eager
    calls); values only when they are known (`_concrete`). Raises a
    ValueError naming `labels`, what was received and what is valid.
    """
    values = _concrete(labels)
    shape = tuple(values.shape if values is not None else labels.shape)
    one_hot = len(shape) == 2 and shape[-1] == num_classes and num_classes > 1
    ids = len(shape) == 1 or (len(shape) == 2 and shape[-1] == 1)
    if not (one_hot or ids):
        raise ValueError(
            "`labels` must be class ids of shape (batch,) or (batch, 1), or "
            f"one-hot of shape (batch, {num_classes}). Received shape "
            f"{shape}."
        )
    if shape[0] is not None and batch is not None and shape[0] != batch:
        raise ValueError(
            f"`labels` has {shape[0]} entries but layer '{layer_name}' "
            f"received a batch of {batch} feature maps. Pass one label per "
            "image."
        )
    if values is None:
        return
    if values.dtype == bool:
        values = values.astype("int32")
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(
            "`labels` must be numeric class ids or one-hot rows. Received "
            f"dtype {values.dtype}."
        )
    values = values.astype("float64")
    bad = ~np.isfinite(values)
    if one_hot:
        rows = values.sum(axis=-1)
        bad_rows = np.any(bad | (values < 0), axis=-1) | ~(rows > 0)
        if np.any(bad_rows):
            row = int(np.flatnonzero(bad_rows)[0])
            raise ValueError(
                f"`labels` one-hot rows must be finite, non-negative and not "
                f"all zero (layer '{layer_name}', num_classes={num_classes}). "
                f"Received {values[row].tolist()} at position {row}."
            )
        return
    values = values.reshape(-1)
    invalid = (
        bad
        | (values != np.round(values))
        | (values < 0)
        | (values >= num_classes)
    )
    if np.any(invalid):
        index = int(np.flatnonzero(invalid)[0])
        raise ValueError(
            f"`labels` must be integer class ids in [0, {num_classes}) "
            f"(num_classes={num_classes} of layer '{layer_name}'). Received "
            f"{values[index]:g} at position {index}. Use ids 0 to "
            f"{num_classes - 1}, or raise num_classes."
        )


def _labels_to_ids(labels, num_classes):
    """Class ids `[batch]` from ids `[batch]`/`[batch, 1]` or one-hot."""
    if (
        len(labels.shape) == 2
        and labels.shape[-1] == num_classes
        and (num_classes > 1)
    ):
        return ops.cast(ops.argmax(labels, axis=-1), "int32")
    if len(labels.shape) == 2 and labels.shape[-1] == 1:
        labels = labels[:, 0]
    if len(labels.shape) != 1:
        raise ValueError(
            "`labels` must be class ids of shape (batch,) or (batch, 1), or "
            f"one-hot of shape (batch, {num_classes}). Received shape "
            f"{tuple(labels.shape)}."
        )
    return ops.cast(labels, "int32")
