"""The filter loss under tf.distribute is the exact global-batch loss."""

import keras
import numpy as np
import pytest

import keras_interp

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow"
    or len(tf.config.list_logical_devices("CPU")) < 2,
    reason="needs the TF backend and two logical CPUs (tests/conftest.py)",
)

GLOBAL_BATCH = 8


def build_model(loss_weight):
    images = keras.Input((8, 8, 3))
    labels = keras.Input((), dtype="int32")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(images)
    x = keras_interp.InterpretableMask(
        num_classes=2, loss_weight=loss_weight, beta="learned"
    )(x, labels=labels)
    x = keras_interp.InterpretableConv2D(
        4, 3, padding="same", loss_weight=loss_weight, name="interp"
    )(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2)(x)
    model = keras.Model([images, labels], outputs)
    model.compile(
        keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def one_step(initial, strategy=None, loss_weight=10.0):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 3, (GLOBAL_BATCH, 8, 8, 3)).astype("float32")
    y = np.array([0, 1, 1, 0, 1, 1, 0, 0], "int32")
    scope = (
        strategy.scope() if strategy else tf.distribute.get_strategy().scope()
    )
    with scope:
        model = build_model(loss_weight)
        model.set_weights(initial)
    history = model.fit(
        [x, y], y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0
    )
    return model, history.history


def test_two_replicas_equal_one_device_on_the_global_batch(two_cpu_strategy):
    keras.utils.set_random_seed(3)
    initial = build_model(10.0).get_weights()
    single, single_logs = one_step(initial)
    strategy = two_cpu_strategy
    assert strategy.num_replicas_in_sync == 2
    mirrored, mirrored_logs = one_step(initial, strategy)
    for a, b in zip(single.weights, mirrored.weights):
        np.testing.assert_allclose(
            a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path
        )
    # The logged filter loss is the global one, too.
    np.testing.assert_allclose(
        mirrored_logs["interp_filter_loss"],
        single_logs["interp_filter_loss"],
        rtol=1e-5,
    )
    # The filter loss really moves the weights, so the check has teeth.
    unweighted, _ = one_step(initial, loss_weight=0.0)
    kernel = single.get_layer("interp").kernel.numpy()
    plain = unweighted.get_layer("interp").kernel.numpy()
    assert np.max(np.abs(kernel - plain)) > 1e-3


def filter_loss_step(
    images,
    strategy=None,
    *,
    loss="mutual_information",
    loss_weight=1.0,
    initial=None,
):
    """One SGD step on the filter loss alone.

    Returns the initial weights, the kernel's update and the logged loss.
    """
    scope = (
        strategy.scope() if strategy else tf.distribute.get_strategy().scope()
    )
    with scope:
        model = keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                keras.layers.Conv2D(
                    4, 3, padding="same", use_bias=False, name="conv"
                ),
                keras_interp.InterpretableMask(
                    loss=loss, loss_weight=loss_weight, name="mask"
                ),
            ]
        )
        if initial is not None:
            model.set_weights(initial)
        model.compile(keras.optimizers.SGD(1.0))  # the filter loss only
    weights = model.get_weights()
    start = model.get_layer("conv").kernel.numpy().copy()
    history = model.fit(
        images, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0
    )
    update = model.get_layer("conv").kernel.numpy() - start
    return weights, update, history.history["mask_filter_loss"][0]


def test_scale_free_loss_under_two_replicas(two_cpu_strategy):
    # Scaling the images by c scales the bias-free conv's maps by c: the
    # scale-free loss, and so the kernel's update, must not change, and the
    # scale m_f must be the global-batch one (else the replicas disagree
    # with one device).
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 3, (GLOBAL_BATCH, 8, 8, 3)).astype("float32")
    x[:4] *= 5.0  # the replicas' halves have different local scales
    keras.utils.set_random_seed(4)
    initial, single, single_loss = filter_loss_step(x)
    assert np.max(np.abs(single)) > 1e-3  # it moved
    for c in (1.0, 1e-2, 300.0):
        _, update, loss = filter_loss_step(
            x * np.float32(c), two_cpu_strategy, initial=initial
        )
        np.testing.assert_allclose(loss, single_loss, rtol=1e-5)
        np.testing.assert_allclose(
            update, single, rtol=2e-3, atol=1e-3 * np.max(np.abs(single))
        )


def test_authors_surrogate_under_two_replicas(two_cpu_strategy):
    # The authors' surrogate is per replica. With the global batch made of
    # the same 4 images twice, each replica's surrogate equals the one
    # device's on the 8 images, so one step must match exactly: the
    # gradient is divided by the global batch, not the replica's.
    rng = np.random.default_rng(2)
    half = rng.uniform(0, 3, (GLOBAL_BATCH // 2, 8, 8, 3)).astype("float32")
    x = np.concatenate([half, half])
    keras.utils.set_random_seed(5)
    kwargs = dict(loss="authors", loss_weight=1e4)
    initial, single, _ = filter_loss_step(x, **kwargs)
    assert np.max(np.abs(single)) > 1e-4  # it moved
    for c in (1.0, 40.0):
        _, update, _ = filter_loss_step(
            x * np.float32(c), two_cpu_strategy, initial=initial, **kwargs
        )
        np.testing.assert_allclose(
            update, single, rtol=2e-3, atol=1e-3 * np.max(np.abs(single))
        )
