"""Eager, tf.function and XLA paths; gradients; XLA inside the layer."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_interp

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TF execution modes"
)

MODES = ["eager", "function", "xla"]


def run(mode, fn, *args):
    if mode == "eager":
        return fn(*args)
    return tf.function(fn, jit_compile=mode == "xla", autograph=False)(*args)


def maps(shape, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, scale, shape).astype("float32")
    x[rng.uniform(size=shape) < 0.2] = 0
    return tf.constant(x)


POSITIVES = tf.constant(np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]]))
FUNCTIONS = {
    "templates": lambda x: keras_interp.part_templates(4, 5, beta=3.0),
    "templates_per_filter": lambda x: keras_interp.part_templates(
        4, 5, beta=tf.constant([2.0, 3.0, 4.0])
    ),
    "mask_argmax": lambda x: keras_interp.part_mask(x, center="argmax"),
    "mask_centroid": lambda x: keras_interp.part_mask(x, center="centroid"),
    "mi": lambda x: keras_interp.mutual_information(x, tau=0.05),
    "mi_per_filter": lambda x: keras_interp.mutual_information(
        x, beta=tf.constant([2.0, 3.0, 4.0])
    ),
    "category_mi": lambda x: keras_interp.category_mutual_information(
        x, POSITIVES, tau=0.05
    ),
    "authors": lambda x: keras_interp.authors_filter_gradient(x, POSITIVES),
    "beta_target": lambda x: keras_interp.learned_beta_target(
        x, POSITIVES, beta=4.0
    ),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("mode", ["function", "xla"])
def test_pure_functions_agree_across_modes(name, mode):
    x = maps((4, 4, 5, 3))
    expected = ops.convert_to_numpy(FUNCTIONS[name](x))
    got = ops.convert_to_numpy(run(mode, FUNCTIONS[name], x))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("mode", MODES)
def test_layer_runs_in_every_mode(mode):
    layer = keras_interp.InterpretableConv2D(
        3, 3, padding="same", tau=0.05, num_classes=2, beta="learned"
    )
    x = maps((4, 5, 5, 2))
    labels = tf.constant([0, 1, 1, 0])
    layer.build(x.shape)

    def step(x):
        y = layer(x, labels=labels, training=True)
        return y, layer.losses[0]

    # The reference is the un-jitted math of a twin layer in eager mode.
    twin = keras_interp.InterpretableConv2D.from_config(
        {**layer.get_config(), "jit_compile": False}
    )
    twin.build(x.shape)
    twin.set_weights(layer.get_weights())
    y_ref = twin(x, labels=labels, training=True)
    y, loss = run(mode, step, x)
    np.testing.assert_allclose(y.numpy(), y_ref.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(loss.numpy(), twin.losses[0].numpy(), rtol=1e-4)
    np.testing.assert_allclose(
        layer.class_activation.numpy(), twin.class_activation.numpy(), 1e-5
    )
    np.testing.assert_allclose(
        layer.beta_variable.numpy(), twin.beta_variable.numpy(), 1e-5
    )


def _xla_calls(graph, seen=None):
    """The must-compile (XLA) function-call ops reachable from graph."""
    seen = set() if seen is None else seen
    found = []
    for op in graph.get_operations():
        try:
            must = op.get_attr("_XlaMustCompile")
        except ValueError:
            must = False
        if must:
            found.append(op)
    for name, function in getattr(graph, "_functions", {}).items():
        if name not in seen:
            seen.add(name)
            found += _xla_calls(function.graph, seen)
    return found


def test_layer_math_is_xla_compiled_inside_an_unjitted_step():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras_interp.InterpretableConv2D(3, 3, padding="same"),
            keras_interp.InterpretableMask(),
        ]
    )

    @tf.function(jit_compile=False)
    def train_step(x):
        with tf.GradientTape() as tape:
            model(x, training=True)
            loss = tf.add_n(model.losses)
        return tape.gradient(loss, model.trainable_variables)

    graph = train_step.get_concrete_function(maps((2, 6, 6, 2))).graph
    # One compiled block per interpretable layer.
    assert len(_xla_calls(graph)) >= 2
    # Turning the option off removes them.
    plain = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras_interp.InterpretableConv2D(
                3, 3, padding="same", jit_compile=False
            ),
        ]
    )
    graph = (
        tf.function(lambda x: plain(x, training=True))
        .get_concrete_function(maps((2, 6, 6, 2)))
        .graph
    )
    assert _xla_calls(graph) == []


def test_nothing_is_differentiated_through_the_compiled_block():
    # TensorFlow differentiates a nested function from outside by making it
    # return what its backward pass needs. The layers' block must need
    # nothing: it returns the mask, the loss, the loss's gradient (one map
    # each) and the state, and no [batch, filters, H*W + 1] loss tensor.
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras_interp.InterpretableConv2D(
                8, 3, padding="same", num_classes=3, beta="learned"
            ),
        ]
    )
    labels = tf.constant([0, 1, 2, 1])

    @tf.function(jit_compile=False)
    def train_step(x):
        with tf.GradientTape() as tape:
            y = model(x, labels=labels, training=True)
            loss = tf.reduce_sum(y) + tf.add_n(model.losses)
        return tape.gradient(loss, model.trainable_variables)

    graph = train_step.get_concrete_function(maps((4, 6, 6, 2))).graph
    calls = _xla_calls(graph)
    assert len(calls) == 1  # a forward call, and no backward call for it
    shapes = [tuple(t.shape) for t in calls[0].outputs]
    assert shapes.count((4, 6, 6, 8)) == 2, shapes  # mask, loss gradient
    assert not [s for s in shapes if s[-1:] == (37,)], shapes  # H*W + 1
    assert len(shapes) <= 5, shapes


def test_xla_under_a_strategy_where_keras_turns_jit_off():
    strategy = tf.distribute.MirroredStrategy(["CPU:0"])
    with strategy.scope():
        model = keras.Sequential(
            [
                keras.Input((6, 6, 2)),
                keras_interp.InterpretableConv2D(3, 3, padding="same"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(2),
            ]
        )
        model.compile("sgd", loss="mse")
    x = maps((8, 6, 6, 2))
    history = model.fit(x, np.zeros((8, 2)), epochs=1, batch_size=4, verbose=0)
    assert model.jit_compile is False  # Keras' "auto" under a strategy.
    assert np.isfinite(history.history["loss"][0])

    @tf.function
    def replica_step(x):
        return strategy.run(lambda x: model(x, training=True), args=(x,))

    graph = replica_step.get_concrete_function(x).graph
    assert len(_xla_calls(graph)) >= 1


def test_fit_with_jit_compile_true():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras_interp.InterpretableConv2D(3, 3, padding="same"),
            keras_interp.InterpretableMask(center="centroid", beta="learned"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    model.compile("sgd", loss="mse", jit_compile=True)
    assert model.jit_compile is True
    history = model.fit(
        maps((8, 6, 6, 2)), np.zeros((8, 2)), epochs=2, verbose=0
    )
    assert np.all(np.isfinite(history.history["loss"]))


# --- Gradients ---------------------------------------------------------------


def numeric_gradient(fn, x, eps=1e-2):
    x = np.array(x, dtype="float64")
    grad = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[index] += eps
        down[index] -= eps
        f_up = float(np.sum(ops.convert_to_numpy(fn(up.astype("float32")))))
        f_down = float(np.sum(ops.convert_to_numpy(fn(down.astype("float32")))))
        grad[index] = (f_up - f_down) / (2 * eps)
    return grad


def analytic_gradient(fn, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = tf.reduce_sum(fn(x))
    return tape.gradient(value, x).numpy()


def peaked(x, margin=0.5):
    """Each map's maximum raised `margin` above the rest: the scale m_f of
    the default loss is then smooth under the finite-difference steps."""
    x = np.array(x)
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    top = np.argmax(flat, axis=1)
    for b in range(x.shape[0]):
        for c in range(x.shape[-1]):
            flat[b, top[b, c], c] += margin
    return flat.reshape(x.shape)


PAPER = dict(normalization=None)


@pytest.mark.parametrize(
    "shape,kwargs",
    [
        ((4, 3, 3, 2), dict(tau=0.3, **PAPER)),
        ((3, 2, 4, 1), dict(tau=0.5, beta=2.0, **PAPER)),
        ((5, 1, 1, 2), dict(**PAPER)),
        ((3, 3, 3, 2), dict(tau=0.3, alpha=0.5, beta=[2.0, 5.0], **PAPER)),
        # The default, scale-free loss: the gradient flows through m_f.
        ((4, 3, 3, 2), dict()),
        ((3, 3, 3, 2), dict(tau=0.3, alpha=0.5, beta=[2.0, 5.0])),
    ],
)
def test_mutual_information_gradient_matches_finite_differences(shape, kwargs):
    if isinstance(kwargs.get("beta"), list):
        kwargs = {**kwargs, "beta": tf.constant(kwargs["beta"])}
    x = maps(shape, seed=11).numpy()
    if "normalization" not in kwargs:
        x = peaked(x)

    def fn(v):
        return keras_interp.mutual_information(v, **kwargs)

    analytic = analytic_gradient(fn, x)
    numeric = numeric_gradient(fn, x)
    assert np.max(np.abs(analytic)) > 1e-4  # a real, non-trivial gradient
    np.testing.assert_allclose(
        analytic, numeric, rtol=2e-2, atol=2e-3 * np.max(np.abs(numeric))
    )


@pytest.mark.parametrize("normalization", [None, "mean_max"])
def test_category_mutual_information_gradient_matches_finite_differences(
    normalization,
):
    # One clear peak per map, so the small steps never move the argmax.
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 0.5, (4, 3, 3, 2)).astype("float32")
    for b in range(4):
        for c in range(2):
            x[b, rng.integers(3), rng.integers(3), c] = 3.0
    positives = tf.constant([[1, 0], [1, 1], [0, 1], [0, 0]])

    def fn(v):
        return keras_interp.category_mutual_information(
            v, positives, tau=0.3, normalization=normalization
        )

    analytic = analytic_gradient(fn, x)
    numeric = numeric_gradient(fn, x)
    assert np.max(np.abs(analytic)) > 1e-4
    np.testing.assert_allclose(
        analytic, numeric, rtol=2e-2, atol=2e-3 * np.max(np.abs(numeric))
    )
