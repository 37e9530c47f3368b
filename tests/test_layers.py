"""The layer battery for InterpretableConv2D and InterpretableMask."""

import functools
import os
import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_interp
from keras_interp.layers import _tf_gradients

RNG = np.random.default_rng(1234)


def maps(shape, scale=2.0, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, scale, size=shape).astype("float32")
    x[rng.uniform(size=shape) < 0.2] = 0.0
    return x


def filter_loss(layer, x, **kwargs):
    layer(x, training=True, **kwargs)
    assert len(layer.losses) == 1
    return float(ops.convert_to_numpy(layer.losses[0]))


def tiny_model(**layer_kwargs):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras_interp.InterpretableMask(name="top_mask")(x)
    x = keras_interp.InterpretableConv2D(
        4, 3, padding="same", name="interp", **layer_kwargs
    )(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3)(x)
    return keras.Model(inputs, outputs)


# --- Construction, config and serialization ---------------------------------


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (keras_interp.InterpretableConv2D, dict(filters=4, kernel_size=3)),
        (
            keras_interp.InterpretableConv2D,
            dict(
                filters=4,
                kernel_size=(3, 2),
                strides=2,
                padding="same",
                loss="authors",
                beta="learned",
                center="centroid",
                num_classes=3,
                background_class=0,
                kernel_regularizer="l2",
                mask_at_inference=False,
            ),
        ),
        (keras_interp.InterpretableMask, dict()),
        (
            keras_interp.InterpretableMask,
            dict(beta=[3.0, 4.0, 5.0, 6.0], loss_weight_decay="inverse_epoch"),
        ),
        (keras_interp.InterpretableMask, dict(normalization=None)),
        (keras_interp.InterpretableMask, dict(apply_mask=False)),
    ],
)
def test_config_round_trip(cls, kwargs):
    layer = cls(**kwargs)
    config = layer.get_config()
    revived = cls.from_config(config)
    assert revived.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == f"keras_interp>{cls.__name__}"
    again = keras.saving.deserialize_keras_object(serialized)
    assert type(again) is cls and again.get_config() == config
    assert config["normalization"] == kwargs.get("normalization", "mean_max")


def test_default_loss_weights_per_variant():
    mask = keras_interp.InterpretableMask
    assert mask().loss_weight == 0.002
    assert mask(loss="authors").loss_weight == 0.02
    assert mask(normalization=None).loss_weight == 0.02
    assert mask(loss="authors", normalization=None).loss_weight == 1.0
    assert mask(loss=None).loss_weight == 0.0
    assert mask(loss_weight=3).loss_weight == 3.0


def test_symbolic_call_with_none_batch():
    inputs = keras.Input((9, 9, 3))
    conv = keras_interp.InterpretableConv2D(5, 3, strides=2)
    outputs = conv(inputs)
    assert tuple(outputs.shape) == (None, 4, 4, 5)
    masked = keras_interp.InterpretableMask()(outputs)
    assert tuple(masked.shape) == (None, 4, 4, 5)
    # Building records the state but constructing a model adds no loss.
    assert len(conv.losses) == 0
    assert [w.name for w in conv.weights] == ["kernel", "bias", "epoch"]


def test_weights_created_in_build():
    layer = keras_interp.InterpretableConv2D(
        4, 3, beta="learned", num_classes=5
    )
    layer.build((None, 7, 7, 2))
    names = {w.name: tuple(w.shape) for w in layer.weights}
    assert names == {
        "kernel": (3, 3, 2, 4),
        "bias": (4,),
        "beta": (4,),
        "class_activation": (5, 4),
        "epoch": (),
    }
    assert len(layer.trainable_weights) == 2


def test_save_and_load_without_custom_objects(tmp_path):
    model = tiny_model(beta="learned", center="centroid")
    model.compile(keras.optimizers.SGD(0.01), loss="mse")
    x = maps((8, 8, 8, 3))
    y = RNG.normal(size=(8, 3)).astype("float32")
    start = model.get_layer("interp").beta_variable.numpy().copy()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(
        model.predict(x, verbose=0), restored.predict(x, verbose=0)
    )
    for a, b in zip(model.weights, restored.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # The learned beta moved during training and was restored.
    beta = restored.get_layer("interp").beta_variable.numpy()
    assert not np.allclose(beta, start)
    assert model.get_layer("top_mask").beta_variable is None  # fixed beta


def test_category_state_survives_save_load(tmp_path):
    images = keras.Input((6, 6, 2))
    labels = keras.Input((), dtype="int32")
    layer = keras_interp.InterpretableMask(num_classes=3, name="mask")
    out = keras.layers.Dense(3)(
        keras.layers.GlobalAveragePooling2D()(layer(images, labels=labels))
    )
    model = keras.Model([images, labels], out)
    model.compile("sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
    x = maps((12, 6, 6, 2))
    y = np.arange(12) % 3
    model.fit([x, y], y, epochs=1, batch_size=12, verbose=0)
    stats = layer.class_activation.numpy()
    assert np.all(stats > 0)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    restored = keras.models.load_model(path).get_layer("mask")
    np.testing.assert_array_equal(restored.class_activation.numpy(), stats)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(restored.filter_assignment()),
        ops.convert_to_numpy(layer.filter_assignment()),
    )


# --- Behaviour --------------------------------------------------------------


def test_loss_only_in_training_and_output_is_masked():
    layer = keras_interp.InterpretableMask(center="argmax")
    x = maps((3, 5, 5, 2))
    y = layer(x)
    assert len(layer.losses) == 0
    expected = x * ops.convert_to_numpy(
        keras_interp.part_mask(x, center="argmax")
    )
    np.testing.assert_allclose(ops.convert_to_numpy(y), expected, rtol=1e-6)
    assert filter_loss(layer, x) < 0


def test_mask_at_inference_false_passes_maps_through():
    layer = keras_interp.InterpretableMask(mask_at_inference=False)
    x = maps((2, 4, 4, 3))
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), x)
    masked = ops.convert_to_numpy(layer(x, training=True))
    assert not np.allclose(masked, x)


def test_apply_mask_false_keeps_the_loss_without_the_mask():
    layer = keras_interp.InterpretableMask(apply_mask=False)
    x = maps((4, 4, 4, 3))
    for training in (False, True):
        y = ops.convert_to_numpy(layer(x, training=training))
        np.testing.assert_allclose(y, x)
    # The filter loss is the masked layer's, unchanged.
    masked = keras_interp.InterpretableMask()
    np.testing.assert_allclose(
        filter_loss(layer, x), filter_loss(masked, x), rtol=1e-6
    )
    assert filter_loss(layer, x) < 0


def test_apply_mask_must_be_a_bool():
    with pytest.raises(ValueError, match="apply_mask.*Received: apply_mask=1"):
        keras_interp.InterpretableMask(apply_mask=1)


@pytest.mark.parametrize("center", ["argmax", "centroid"])
def test_mask_rectifies_its_input(center):
    layer = keras_interp.InterpretableMask(center=center)
    x = RNG.normal(size=(2, 4, 4, 3)).astype("float32")
    y = ops.convert_to_numpy(layer(x))
    assert np.all(y >= 0)
    relu = np.maximum(x, 0)
    mask = keras_interp.part_mask(relu, center=center)
    np.testing.assert_allclose(y, relu * ops.convert_to_numpy(mask))


def test_default_center_and_beta_are_the_templates_defaults():
    from keras_interp import templates

    for layer in (
        keras_interp.InterpretableMask(),
        keras_interp.InterpretableConv2D(2, 3),
    ):
        assert layer.center == templates.DEFAULT_CENTER
        assert layer.beta == templates.DEFAULT_BETA
        assert layer.current_beta() == templates.DEFAULT_BETA
        assert layer.get_config()["center"] == templates.DEFAULT_CENTER


def test_loss_value_is_weighted_sum_of_negative_mi():
    layer = keras_interp.InterpretableMask(loss_weight=0.5, tau=0.05)
    x = maps((6, 4, 5, 3))
    mi = ops.convert_to_numpy(keras_interp.mutual_information(x, tau=0.05))
    np.testing.assert_allclose(filter_loss(layer, x), -0.5 * mi.sum(), 1e-5)


def test_conv_layer_equals_conv_then_mask():
    conv = keras_interp.InterpretableConv2D(3, 3, padding="same", tau=0.1)
    x = maps((4, 6, 6, 2))
    y = ops.convert_to_numpy(conv(x, training=True))
    plain = keras.layers.Conv2D(3, 3, padding="same", activation="relu")
    plain.build(x.shape)
    plain.set_weights(conv.get_weights()[:2])
    mask = keras_interp.InterpretableMask(tau=0.1)
    expected = ops.convert_to_numpy(mask(plain(x), training=True))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        ops.convert_to_numpy(conv.losses[0]),
        ops.convert_to_numpy(mask.losses[0]),
        rtol=1e-5,
    )


def test_inverse_epoch_decay_uses_epoch_variable():
    layer = keras_interp.InterpretableMask(
        loss_weight_decay="inverse_epoch", tau=0.05
    )
    x = maps((4, 3, 3, 2))
    first = filter_loss(layer, x)
    layer.epoch.assign(4.0)
    np.testing.assert_allclose(filter_loss(layer, x), first / 4.0, rtol=1e-5)


def test_filter_loss_epoch_callback_sets_epoch():
    model = tiny_model(loss_weight_decay="inverse_epoch")
    model.compile("sgd", loss="mse")
    x = maps((4, 8, 8, 3))
    y = np.zeros((4, 3), "float32")
    model.fit(
        x,
        y,
        epochs=3,
        verbose=0,
        callbacks=[keras_interp.FilterLossEpoch()],
    )
    for layer in keras_interp.interpretable_layers(model):
        assert float(layer.epoch.numpy()) == 3.0
    assert len(keras_interp.interpretable_layers(model)) == 2


def test_interpretable_layers_finds_nested_and_shared_layers_once():
    shared = keras_interp.InterpretableMask(name="shared")
    inner = keras.Sequential(
        [
            keras.Input((6, 6, 4)),
            keras_interp.InterpretableConv2D(4, 3, padding="same", name="c"),
            shared,
        ],
        name="inner",
    )
    images = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(4, 1, name="plain")(images)
    x = inner(keras_interp.InterpretableMask(name="outer_mask")(x))
    x = shared(x)  # The same layer again, outside the nested model.
    outer = keras.Model(images, keras.layers.GlobalAveragePooling2D()(x))
    wrapper = keras.Sequential([outer], name="wrapper")

    names = [layer.name for layer in keras_interp.interpretable_layers(outer)]
    assert names == ["outer_mask", "c", "shared"]
    found = keras_interp.interpretable_layers(wrapper)
    assert [layer.name for layer in found] == names
    assert keras_interp.interpretable_layers(shared) == [shared]
    assert (
        keras_interp.interpretable_layers(
            keras.Sequential([keras.layers.Dense(2)])
        )
        == []
    )
    with pytest.raises(ValueError, match="`model` must be a Keras model"):
        keras_interp.interpretable_layers([shared])


def test_current_beta_is_the_fixed_or_learned_value():
    assert keras_interp.InterpretableMask(beta=3.0).current_beta() == 3.0
    per_filter = keras_interp.InterpretableMask(beta=[3.0, 5.0])
    np.testing.assert_array_equal(
        ops.convert_to_numpy(per_filter.current_beta()), [3.0, 5.0]
    )
    learned = keras_interp.InterpretableMask(beta="learned")
    with pytest.raises(ValueError, match="learns beta.*built"):
        learned.current_beta()
    learned.build((None, 4, 4, 2))
    learned.beta_variable.assign([1.5, 2.5])
    beta = learned.current_beta()
    learned.beta_variable.assign([7.0, 7.0])  # A copy, not the variable.
    np.testing.assert_array_equal(ops.convert_to_numpy(beta), [1.5, 2.5])


def test_model_saved_before_the_engine_split_still_loads():
    # tests/data/pre_refactor_layers.keras was saved by the layers as they
    # were before the engine moved to base_interpretable.py (commit
    # 5a2e887): both layers, category statistics and a learned beta,
    # trained for 2 epochs. Registered names and variable paths must keep
    # loading it, with the same outputs.
    data = os.path.join(os.path.dirname(__file__), "data")
    model = keras.models.load_model(
        os.path.join(data, "pre_refactor_layers.keras")
    )
    expected = np.load(os.path.join(data, "pre_refactor_layers.npz"))
    interp = model.get_layer("interp")
    mask = model.get_layer("top_mask")
    assert type(interp) is keras_interp.InterpretableConv2D
    assert type(mask) is keras_interp.InterpretableMask
    # Saved with an explicit centre each: a changed default does not apply.
    assert (interp.center, mask.center) == ("centroid", "argmax")
    np.testing.assert_array_equal(
        interp.beta_variable.numpy(), expected["interp_beta"]
    )
    np.testing.assert_array_equal(
        mask.class_activation.numpy(), expected["mask_class_activation"]
    )
    assert float(mask.epoch.numpy()) == 2.0
    outputs = model.predict([expected["images"], expected["labels"]], verbose=0)
    np.testing.assert_allclose(outputs, expected["outputs"], rtol=1e-5)


def test_fit_logs_filter_loss_per_layer():
    model = tiny_model()
    model.compile("sgd", loss="mse")
    x = maps((8, 8, 8, 3))
    history = model.fit(
        x, np.zeros((8, 3), "float32"), epochs=1, batch_size=4, verbose=0
    )
    assert "interp_filter_loss" in history.history
    assert "top_mask_filter_loss" in history.history
    assert history.history["interp_filter_loss"][0] < 0


def test_one_step_fit_lowers_filter_loss():
    inputs = keras.Input((6, 6, 3))
    layer = keras_interp.InterpretableConv2D(
        4, 3, padding="same", loss_weight=1.0, kernel_initializer="he_normal"
    )
    model = keras.Model(inputs, layer(inputs))
    model.compile(keras.optimizers.SGD(1.0))  # the filter loss only
    x = maps((8, 6, 6, 3), scale=3.0, seed=5)
    before = filter_loss(layer, x)
    model.fit(x, epochs=1, batch_size=8, verbose=0, shuffle=False)
    after = filter_loss(layer, x)
    assert after < before


def test_labels_make_the_loss_category_aware():
    layer = keras_interp.InterpretableMask(
        num_classes=3, background_class=0, tau=0.1
    )
    x = maps((6, 5, 5, 4), seed=3)
    labels = np.array([0, 1, 2, 1, 2, 0])
    loss = filter_loss(layer, x, labels=labels)
    # First update: the statistics are the per-class means of mean activation.
    activation = x.mean(axis=(1, 2))
    expected_stats = np.stack(
        [activation[labels == c].mean(axis=0) for c in range(3)]
    )
    np.testing.assert_allclose(
        layer.class_activation.numpy(), expected_stats, rtol=1e-5
    )
    assignment = 1 + np.argmax(expected_stats[1:], axis=0)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer.filter_assignment()), assignment
    )
    positives = labels[:, None] == assignment[None, :]
    cmi = keras_interp.category_mutual_information(x, positives, tau=0.1)
    np.testing.assert_allclose(
        loss, -layer.loss_weight * ops.convert_to_numpy(cmi).sum(), rtol=1e-5
    )
    plain = keras_interp.InterpretableMask(tau=0.1)
    assert not np.isclose(loss, filter_loss(plain, x))


def test_class_statistics_are_a_moving_average():
    layer = keras_interp.InterpretableMask(
        num_classes=2, assignment_momentum=0.75
    )
    x1, x2 = maps((4, 3, 3, 2), seed=1), maps((4, 3, 3, 2), seed=2)
    labels = np.array([0, 1, 0, 1])
    layer(x1, labels=labels, training=True)
    first = layer.class_activation.numpy().copy()
    layer(x2, labels=np.array([0, 0, 0, 0]), training=True)
    m2 = x2.mean(axis=(1, 2)).mean(axis=0)
    expected = first.copy()
    expected[0] = 0.75 * first[0] + 0.25 * m2
    np.testing.assert_allclose(
        layer.class_activation.numpy(), expected, rtol=1e-5
    )


def test_one_hot_labels_equal_class_ids():
    x = maps((4, 4, 4, 3))
    ids = np.array([0, 1, 1, 0])
    a = keras_interp.InterpretableMask(num_classes=2)
    b = keras_interp.InterpretableMask(num_classes=2)
    np.testing.assert_allclose(
        filter_loss(a, x, labels=ids),
        filter_loss(b, x, labels=np.eye(2, dtype="float32")[ids]),
        rtol=1e-6,
    )


def test_learned_beta_moves_toward_target():
    layer = keras_interp.InterpretableMask(beta="learned", beta_rate=0.5)
    x = maps((5, 6, 6, 3), seed=7)
    layer.build(x.shape)
    start = layer.beta_variable.numpy().copy()
    target = ops.convert_to_numpy(
        keras_interp.learned_beta_target(
            x, np.ones((5, 3)), beta=start, center="argmax"
        )
    )
    layer(x, training=True)
    np.testing.assert_allclose(
        layer.beta_variable.numpy(), start + 0.5 * (target - start), rtol=1e-5
    )


def test_authors_loss_injects_the_authors_gradient():
    import tensorflow as tf

    weight, epoch = 3.0, 2.0
    layer = keras_interp.InterpretableMask(
        loss="authors", loss_weight=weight, center="centroid"
    )
    x = tf.constant(maps((5, 4, 4, 3), seed=9) + 0.01)  # > 0: ReLU is identity
    layer.build(x.shape)
    layer.epoch.assign(epoch)
    with tf.GradientTape() as tape:
        tape.watch(x)
        layer(x, training=True)
        loss = layer.losses[0]
    grad = tape.gradient(loss, x).numpy()
    expected = keras_interp.authors_filter_gradient(
        x, np.ones((5, 3)), center="centroid", epoch=epoch
    )
    expected = weight * ops.convert_to_numpy(expected) / 5
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-12)
    # The forward value is still the exact -MI, for logging.
    mi = ops.convert_to_numpy(keras_interp.mutual_information(x)).sum()
    np.testing.assert_allclose(float(loss), -weight * mi, rtol=1e-4)


@pytest.mark.parametrize(
    "mode,chunk,beta",
    [
        ("eager", 64, 4.0),
        ("function", 64, 4.0),
        ("xla_step", 64, 4.0),
        ("eager", 2, 4.0),  # filters in groups of 2
        ("xla_step", 2, 4.0),
        ("function", 2, [3.0, 4.0, 5.0, 6.0]),  # one beta per filter
        ("function", 3, 4.0),  # 3 does not divide 4: groups of 2
    ],
)
@pytest.mark.parametrize("use_labels", [False, True])
def test_exact_loss_gradient_is_autodiff_of_the_loss(
    mode, chunk, beta, use_labels
):
    # On TensorFlow the layer takes the exact loss's gradient in its forward
    # pass, a group of filters at a time, and injects it; it must equal
    # plain autodiff of the loss function, times the upstream gradient.
    import tensorflow as tf

    weight, upstream = 0.7, 3.0
    x = tf.constant(maps((6, 5, 5, 4), seed=11) + 0.01)  # > 0: ReLU identity
    labels = tf.constant([0, 1, 2, 1, 2, 0])
    assigned = np.array([1, 2, 1, 2])
    layer = keras_interp.InterpretableMask(
        loss_weight=weight,
        beta=beta,
        num_classes=3,
        background_class=0,
        center="argmax",
        jit_compile=mode != "eager",
    )
    layer._value_and_gradient = functools.partial(
        _tf_gradients.value_and_gradient, filter_chunk=chunk
    )
    layer.build(x.shape)
    # Large statistics: the moving average keeps this assignment.
    layer.class_activation.assign(1e3 * np.eye(3)[assigned].T)
    kwargs = {"labels": labels} if use_labels else {}

    def layer_step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            layer(x, training=True, **kwargs)
            value = upstream * layer.losses[0]
        return value, tape.gradient(value, x)

    if mode != "eager":
        layer_step = tf.function(layer_step, jit_compile=mode == "xla_step")
    value, grad = layer_step(x)

    beta_tensor = tf.constant(beta, "float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        if use_labels:
            positives = (labels.numpy()[:, None] == assigned[None, :]) & (
                labels.numpy()[:, None] != 0
            )
            mi = keras_interp.category_mutual_information(
                x, positives, beta=beta_tensor, center="argmax"
            )
        else:
            mi = keras_interp.mutual_information(x, beta=beta_tensor)
        expected_value = -upstream * weight * ops.sum(mi)
    expected_grad = tape.gradient(expected_value, x).numpy()
    assert np.max(np.abs(expected_grad)) > 1e-7  # a real gradient
    np.testing.assert_allclose(float(value), float(expected_value), rtol=1e-5)
    # Float32 round-off differs between the two graphs where terms cancel.
    atol = 1e-5 * np.max(np.abs(expected_grad))
    np.testing.assert_allclose(
        grad.numpy(), expected_grad, rtol=1e-4, atol=atol
    )


def test_channels_first_matches_channels_last():
    x = maps((3, 5, 4, 2))
    last = keras_interp.InterpretableMask(tau=0.1)
    first = keras_interp.InterpretableMask(
        tau=0.1, data_format="channels_first"
    )
    y_last = ops.convert_to_numpy(last(x, training=True))
    y_first = first(np.transpose(x, (0, 3, 1, 2)), training=True)
    np.testing.assert_allclose(
        np.transpose(ops.convert_to_numpy(y_first), (0, 2, 3, 1)), y_last
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(first.losses[0]),
        ops.convert_to_numpy(last.losses[0]),
        rtol=1e-6,
    )


# --- Mixed precision and degenerate inputs ------------------------------------


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    x = maps((4, 6, 6, 3), scale=4.0)
    reference = keras_interp.InterpretableConv2D(4, 3, padding="same", tau=0.1)
    ref_out = reference(x, training=True)
    ref_loss = float(ops.convert_to_numpy(reference.losses[0]))
    keras.config.set_dtype_policy(policy)
    try:
        layer = keras_interp.InterpretableConv2D(4, 3, padding="same", tau=0.1)
        layer.build(x.shape)
        layer.set_weights(reference.get_weights())
        out = layer(x, training=True)
        loss = layer.losses[0]
    finally:
        keras.config.set_dtype_policy("float32")
    assert out.dtype == policy.split("_")[1]
    assert loss.dtype == "float32"
    assert np.isfinite(float(loss))
    assert np.all(np.isfinite(ops.convert_to_numpy(ops.cast(out, "float32"))))
    # Only the conv runs in low precision; the loss follows it closely.
    np.testing.assert_allclose(float(loss), ref_loss, rtol=5e-2)
    np.testing.assert_allclose(
        ops.convert_to_numpy(ops.cast(out, "float32")),
        ops.convert_to_numpy(ref_out),
        atol=0.1,
    )


@pytest.mark.parametrize(
    "name,x",
    [
        ("batch_of_one", maps((1, 5, 5, 3))),
        ("all_zero", np.zeros((4, 5, 5, 3), "float32")),
        ("one_by_one", maps((4, 1, 1, 3))),
        ("huge", maps((4, 5, 5, 3)) * 1e4),
    ],
)
@pytest.mark.parametrize("loss", ["mutual_information", "authors"])
def test_degenerate_inputs_give_finite_loss_and_gradient(name, x, loss):
    import tensorflow as tf

    layer = keras_interp.InterpretableMask(
        loss=loss, beta="learned", num_classes=2
    )
    x = tf.constant(x)
    labels = np.arange(x.shape[0]) % 2
    with tf.GradientTape() as tape, warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        tape.watch(x)
        y = layer(x, labels=labels, training=True)
        value = layer.losses[0]
    warned = [str(m.message) for m in w if "batch of 1" in str(m.message)]
    assert len(warned) == (name == "batch_of_one")
    grad = tape.gradient(value, x)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(grad.numpy()))
    assert np.all(np.isfinite(y.numpy()))
    assert np.all(np.isfinite(layer.beta_variable.numpy()))
    if name == "batch_of_one" and loss == "mutual_information":
        assert float(value) == 0.0


# --- Bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(filters=0, kernel_size=3), r"`filters`.*Received: filters=0"),
        (dict(filters=2.5, kernel_size=3), r"`filters`.*filters=2.5"),
        (dict(filters=-1, kernel_size=3), r"`filters`.*filters=-1"),
        (dict(filters=2, kernel_size=0), r"kernel_size.*Received kernel_size"),
        (dict(filters=2, kernel_size=(3, 3, 3)), r"kernel_size"),
        (
            dict(filters=2, kernel_size=3, activation="tanh"),
            r"no `activation`.*activation='tanh'",
        ),
        (dict(filters=2, kernel_size=3, loss="mse"), r"`loss`.*'mse'"),
        (dict(filters=2, kernel_size=3, center="mean"), r"`center`.*'mean'"),
        (dict(filters=2, kernel_size=3, beta=-1.0), r"`beta`.*positive"),
        (dict(filters=2, kernel_size=3, beta="auto"), r"`beta`.*'auto'"),
        (dict(filters=2, kernel_size=3, loss_weight=-1), r"`loss_weight`"),
        (
            dict(filters=2, kernel_size=3, loss_weight=float("inf")),
            r"`loss_weight` must be a finite number.*loss_weight=inf",
        ),
        (
            dict(filters=2, kernel_size=3, loss_weight=float("nan")),
            r"`loss_weight` must be a finite number.*loss_weight=nan",
        ),
        (
            dict(filters=2, kernel_size=3, tau=float("inf")),
            r"`tau` must be a finite number > 0.*tau=inf",
        ),
        (
            dict(filters=2, kernel_size=3, tau=float("nan")),
            r"`tau` must be a finite number.*tau=nan",
        ),
        (
            dict(filters=2, kernel_size=3, alpha=float("nan")),
            r"`alpha`.*alpha=nan",
        ),
        (
            dict(filters=2, kernel_size=3, assignment_momentum=float("nan")),
            r"`assignment_momentum`.*nan",
        ),
        (
            dict(filters=2, kernel_size=3, normalization="l2"),
            r"`normalization`.*'mean_max'.*None.*normalization='l2'",
        ),
        (dict(filters=2, kernel_size=3, alpha=1.0), r"`alpha`.*\(0, 1\)"),
        (dict(filters=2, kernel_size=3, tau=0.0), r"`tau`.*tau=0.0"),
        (
            dict(filters=2, kernel_size=3, loss_weight_decay="cosine"),
            r"`loss_weight_decay`.*'cosine'",
        ),
        (
            dict(
                filters=2,
                kernel_size=3,
                loss="authors",
                loss_weight_decay="inverse_epoch",
            ),
            r"already scales.*1/epoch",
        ),
        (
            dict(filters=2, kernel_size=3, num_classes=0),
            r"`num_classes`.*num_classes=0",
        ),
        (
            dict(filters=2, kernel_size=3, background_class=1),
            r"`background_class`.*needs `num_classes`",
        ),
        (
            dict(filters=2, kernel_size=3, data_format="nchw"),
            r"`data_format`.*nchw",
        ),
    ],
)
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        keras_interp.InterpretableConv2D(**kwargs)


def test_rank_other_than_four_is_rejected():
    with pytest.raises(ValueError, match=r"rank-4.*\(None, 8, 3\)"):
        keras_interp.InterpretableMask().build((None, 8, 3))
    with pytest.raises(ValueError, match=r"rank-4.*\(None, 8, 3\) \(rank 3\)"):
        keras_interp.InterpretableConv2D(2, 3)(keras.Input((8, 3)))
    layer = keras_interp.InterpretableConv2D(2, 3)
    layer(keras.Input((8, 8, 3)))
    with pytest.raises(ValueError, match=r"expected ndim=4"):
        layer(keras.Input((8, 8, 3, 1)))


def test_unknown_spatial_dims_are_rejected():
    with pytest.raises(ValueError, match=r"static spatial.*keras.Input"):
        keras_interp.InterpretableConv2D(2, 3)(keras.Input((None, None, 3)))
    with pytest.raises(
        ValueError, match=r"static spatial.*\(None, None, 4, 3\)"
    ):
        keras_interp.InterpretableMask().build((None, None, 4, 3))


def test_per_filter_beta_must_match_channels():
    with pytest.raises(ValueError, match=r"`beta` has 2 values.*3 channels"):
        keras_interp.InterpretableMask(beta=[4.0, 5.0]).build((None, 4, 4, 3))


def test_labels_need_num_classes():
    layer = keras_interp.InterpretableMask()
    with pytest.raises(ValueError, match=r"`labels`.*num_classes"):
        layer(maps((2, 3, 3, 2)), labels=np.array([0, 1]), training=True)


def test_labels_of_wrong_rank_are_rejected():
    layer = keras_interp.InterpretableMask(num_classes=2)
    with pytest.raises(ValueError, match=r"`labels`.*\(2, 1, 1\)"):
        layer(maps((2, 3, 3, 2)), labels=np.zeros((2, 1, 1)), training=True)


@pytest.mark.parametrize(
    "labels,pattern",
    [
        (
            [0, 1, 99, 0],
            r"`labels` must be integer class ids in \[0, 3\).*Received 99 at "
            r"position 2",
        ),
        ([0, -1, 1, 0], r"`labels`.*\[0, 3\).*Received -1 at position 1"),
        (
            np.array([0.0, 1.5, 2.0, 0.0], "float32"),
            r"`labels` must be integer.*Received 1.5 at position 1",
        ),
        (
            np.array([0.0, np.nan, 2.0, 0.0], "float32"),
            r"`labels`.*Received nan at position 1",
        ),
        ([0, 1, 2], r"`labels` has 3 entries.*batch of 4"),
        (
            np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 1]], "float32"),
            r"`labels` one-hot rows.*not all zero.*\[0.0, 0.0, 0.0\] at "
            r"position 1",
        ),
    ],
)
@pytest.mark.parametrize("kind", ["numpy", "eager_tensor"])
@pytest.mark.parametrize("training", [True, False])
def test_invalid_labels_are_rejected_in_eager_calls(
    labels, pattern, kind, training
):
    layer = keras_interp.InterpretableMask(num_classes=3)
    if kind == "eager_tensor":
        labels = ops.convert_to_tensor(np.asarray(labels))
    with pytest.raises(ValueError, match=pattern):
        layer(maps((4, 3, 3, 2)), labels=labels, training=training)


def test_valid_labels_are_accepted():
    x = maps((4, 3, 3, 2))
    ids = np.array([0, 1, 2, 0])
    layer = keras_interp.InterpretableMask(num_classes=3)
    reference = filter_loss(layer, x, labels=ids)
    for labels in (
        [0, 1, 2, 0],
        ids.astype("float32"),  # integral floats are fine
        ids[:, None],
        np.eye(3, dtype="float32")[ids],
        ops.convert_to_tensor(ids),
    ):
        layer = keras_interp.InterpretableMask(num_classes=3)
        np.testing.assert_allclose(
            filter_loss(layer, x, labels=labels), reference, rtol=1e-6
        )


def test_label_batch_mismatch_is_caught_in_a_graph_with_static_shapes():
    import tensorflow as tf

    layer = keras_interp.InterpretableMask(num_classes=3)

    @tf.function
    def step(x, labels):
        return layer(x, labels=labels, training=True)

    with pytest.raises(ValueError, match=r"`labels` has 3 entries.*batch of 4"):
        step(tf.constant(maps((4, 3, 3, 2))), tf.constant([0, 1, 2]))


def test_out_of_range_labels_inside_a_graph_are_negatives():
    # Values cannot be checked inside a compiled graph; as documented, an id
    # outside [0, num_classes) is then an image of no class: it updates no
    # class statistics and is a negative for every assigned filter.
    import tensorflow as tf

    x = maps((4, 3, 3, 3), seed=2)
    assigned = np.array([1, 2, 1])
    stats = 1e3 * np.eye(3)[assigned].T  # filter -> class, kept by the EMA

    layer = keras_interp.InterpretableMask(
        num_classes=3, tau=0.1, loss_weight=0.5
    )
    layer.build(x.shape)
    layer.class_activation.assign(stats)

    @tf.function
    def step(labels):
        layer(tf.constant(x), labels=labels, training=True)
        return layer.losses[0]

    loss = float(step(tf.constant([1, 2, 99, 1])))
    new_stats = layer.class_activation.numpy()
    positives = np.array([1, 2, -1, 1])[:, None] == assigned[None, :]
    cmi = keras_interp.category_mutual_information(x, positives, tau=0.1)
    np.testing.assert_allclose(loss, -0.5 * float(ops.sum(cmi)), rtol=1e-5)
    # Image 2 changed no class statistics (class 0 saw no image).
    np.testing.assert_array_equal(new_stats[0], stats[0])


def test_symbolic_labels_are_not_value_checked():
    images = keras.Input((4, 4, 2))
    labels = keras.Input((), dtype="int32")
    out = keras_interp.InterpretableMask(num_classes=3)(images, labels=labels)
    assert tuple(out.shape) == (None, 4, 4, 2)


def test_batch_of_one_warns_once_per_layer():
    layer = keras_interp.InterpretableMask()
    with pytest.warns(UserWarning, match=r"batch of 1.*identically 0") as rec:
        layer(maps((1, 3, 3, 2)), training=True)
        layer(maps((1, 3, 3, 2)), training=True)
    assert len([w for w in rec if "batch of 1" in str(w.message)]) == 1
    other = keras_interp.InterpretableMask(loss="authors", name="other")
    with pytest.warns(UserWarning, match=r"'other'.*batch of 1"):
        other(maps((1, 3, 3, 2)), training=True)


def test_no_batch_of_one_warning_otherwise():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        layer = keras_interp.InterpretableMask()
        layer(maps((2, 3, 3, 2)), training=True)
        layer(maps((1, 3, 3, 2)))  # inference: no loss
        keras_interp.InterpretableMask(loss=None)(
            maps((1, 3, 3, 2)), training=True
        )
