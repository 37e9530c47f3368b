"""The default filter loss is scale-free on every path.

`loss(c x) = loss(x)` for every `c > 0`, and `c dloss/dx (c x) =
dloss/dx (x)`: rescaling a filter's activations can neither lower the loss
nor change the direction it pushes. Checked for the pure functions
(label-free, category-aware, the authors' surrogate) and for the layers in
every TensorFlow execution mode, including the layer's own forward-pass
gradient taken a group of filters at a time. The distributed path is in
tests/test_distribute.py, JAX and torch in their backend tests.
"""

import functools

import keras
import numpy as np
import pytest
from keras import ops

import keras_interp
from keras_interp.layers import _tf_gradients

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TF gradient tape"
)

SCALES = (1e-3, 0.37, 25.0, 4e3)
LAYER_SCALES = (1e-3, 4e3)
PAPER = {"normalization": None}
POSITIVES = np.array(
    [[1, 0, 1, 0], [0, 1, 1, 0], [1, 1, 0, 1], [0, 0, 1, 1], [1, 0, 0, 1]]
)


def maps(shape=(5, 4, 5, 4), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.01, 2.0, shape).astype("float32")
    x[rng.uniform(size=shape) < 0.2] = 0.0
    return x


def value_and_grad(fn, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = tf.reduce_sum(fn(x))
    return float(value), tape.gradient(value, x).numpy()


def assert_scale_free(value, grad, value_c, grad_c, c):
    np.testing.assert_allclose(value_c, value, rtol=2e-5, atol=1e-9)
    atol = 1e-4 * np.max(np.abs(grad))
    np.testing.assert_allclose(grad_c * c, grad, rtol=1e-3, atol=atol)


FUNCTIONS = {
    "label_free": lambda x: keras_interp.mutual_information(x),
    "label_free_tau_alpha_beta": lambda x: keras_interp.mutual_information(
        x, tau=0.2, alpha=0.3, beta=tf.constant([2.0, 3.0, 4.0, 5.0])
    ),
    "category_aware": lambda x: keras_interp.category_mutual_information(
        x, POSITIVES
    ),
    "category_aware_centroid": lambda x: (
        keras_interp.category_mutual_information(
            x, POSITIVES, center="centroid"
        )
    ),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_exact_loss_functions_are_scale_free(name):
    x = maps()
    value, grad = value_and_grad(FUNCTIONS[name], x)
    assert abs(value) > 1e-4 and np.max(np.abs(grad)) > 1e-6  # not vacuous
    for c in SCALES:
        value_c, grad_c = value_and_grad(FUNCTIONS[name], x * np.float32(c))
        assert_scale_free(value, grad, value_c, grad_c, c)
    # Orthogonal to x, filter by filter: no push along the scale direction.
    along = np.sum(grad * x, axis=(0, 1, 2))
    assert np.all(np.abs(along) <= 1e-5 * np.sum(np.abs(grad * x))), along


def test_paper_literal_option_is_not_scale_free():
    x = maps()
    paper = [
        float(ops.sum(keras_interp.mutual_information(x * c, **PAPER)))
        for c in (1.0, 10.0)
    ]
    assert abs(np.log(paper[1] / paper[0])) > 1.0


@pytest.mark.parametrize("center", ["centroid", "argmax"])
def test_authors_surrogate_is_scale_free(center):
    x = maps()
    grad = ops.convert_to_numpy(
        keras_interp.authors_filter_gradient(x, POSITIVES, center=center)
    )
    assert np.max(np.abs(grad)) > 0
    for c in SCALES:
        grad_c = ops.convert_to_numpy(
            keras_interp.authors_filter_gradient(
                x * np.float32(c), POSITIVES, center=center
            )
        )
        np.testing.assert_allclose(
            grad_c * c, grad, rtol=1e-3, atol=1e-4 * np.max(np.abs(grad))
        )
    along = np.sum(grad * x, axis=(0, 1, 2))
    assert np.all(np.abs(along) <= 1e-5 * np.sum(np.abs(grad * x))), along


def layer_value_and_grad(layer, x, mode, labels=None):
    kwargs = {} if labels is None else {"labels": tf.constant(labels)}

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            layer(x, training=True, **kwargs)
            value = layer.losses[0]
        return value, tape.gradient(value, x)

    if mode != "eager":
        step = tf.function(step, jit_compile=mode == "xla_step")
    value, grad = step(tf.constant(x))
    return float(value), grad.numpy()


@pytest.mark.parametrize(
    "mode,chunk", [("eager", 64), ("function", 2), ("xla_step", 64)]
)
@pytest.mark.parametrize("loss", ["mutual_information", "authors"])
@pytest.mark.parametrize("use_labels", [False, True])
def test_layer_loss_is_scale_free(mode, chunk, loss, use_labels):
    # `chunk=2`: the layer takes the exact loss's gradient 2 filters at a
    # time (m_f is per filter, so the groups are independent).
    x = maps(seed=3) + 0.01  # > 0: the layer's ReLU is the identity
    labels = np.array([0, 1, 2, 1, 2]) if use_labels else None
    results = []
    for c in (1.0,) + LAYER_SCALES:
        layer = keras_interp.InterpretableMask(
            loss=loss,
            loss_weight=0.5,
            num_classes=3 if use_labels else None,
            jit_compile=mode != "eager",
            center="centroid" if loss == "authors" else "argmax",
        )
        layer._value_and_gradient = functools.partial(
            _tf_gradients.value_and_gradient, filter_chunk=chunk
        )
        results.append(
            layer_value_and_grad(layer, x * np.float32(c), mode, labels)
        )
    value, grad = results[0]
    assert abs(value) > 1e-5 and np.max(np.abs(grad)) > 0
    for c, (value_c, grad_c) in zip(LAYER_SCALES, results[1:]):
        assert_scale_free(value, grad, value_c, grad_c, c)


def test_conv_layer_loss_is_scale_free():
    # Zero bias: scaling the input scales the conv's post-ReLU map.
    x = maps((4, 6, 6, 2), seed=4)
    losses = []
    for c in (1.0, 50.0):
        layer = keras_interp.InterpretableConv2D(
            4, 3, padding="same", kernel_initializer="ones"
        )
        layer(x * np.float32(c), training=True)
        losses.append(float(layer.losses[0]))
    np.testing.assert_allclose(losses[1], losses[0], rtol=2e-5)


@pytest.mark.parametrize("loss", ["mutual_information", "authors"])
def test_dead_filter_gets_zero_loss_and_gradient(loss):
    x = maps(seed=5) + 0.01
    x[..., 2] = 0.0  # filter 2 is dead on the whole batch
    layer = keras_interp.InterpretableMask(loss=loss, loss_weight=1.0)
    value, grad = layer_value_and_grad(layer, x, "function")
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert np.all(grad[..., 2] == 0.0)
    assert np.max(np.abs(grad[..., [0, 1, 3]])) > 0
    per_filter = ops.convert_to_numpy(keras_interp.mutual_information(x))
    assert per_filter[2] == 0.0
