"""The filter-to-task gradient ratio, against a hand computation."""

import csv
import glob
import os

import keras
import numpy as np
import pytest

import keras_interp

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TF gradient tape"
)

B, H, W, C = 4, 3, 3, 2


def peaked_maps(seed=0):
    """Positive maps with one clear peak each: the ReLU is the identity and
    small steps never move a peak, so the loss is smooth around them."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 0.6, (B, H, W, C))
    for b in range(B):
        for c in range(C):
            x[b, rng.integers(H), rng.integers(W), c] = rng.uniform(2.0, 3.0)
    return x.astype("float32")


def np_mask(x, beta=4.0):
    """The forward mask, max(1 - beta d(mu), 0) around each map's argmax."""
    mask = np.zeros_like(x, dtype="float64")
    for b in range(x.shape[0]):
        for c in range(x.shape[3]):
            mu = np.unravel_index(np.argmax(x[b, :, :, c]), (H, W))
            for i in range(H):
                for j in range(W):
                    d = abs(i - mu[0]) / H + abs(j - mu[1]) / W
                    mask[b, i, j, c] = max(1.0 - beta * d, 0.0)
    return mask


def np_logsumexp(z, axis):
    top = np.max(z, axis=axis, keepdims=True)
    return top + np.log(np.sum(np.exp(z - top), axis=axis, keepdims=True))


def np_filter_loss(x, weight, beta=4.0):
    """-weight * sum_f MI(X; T) on x * H*W / mean max x, float64 numpy."""
    x = np.asarray(x, "float64")
    n2 = H * W
    x_hat = x * n2 / x.reshape(B, -1, C).max(axis=1).mean(axis=0)
    tau = 0.5 / n2
    templates = np.full((n2 + 1, H, W), -tau)
    for k in range(n2):
        mu = divmod(k, W)
        for i in range(H):
            for j in range(W):
                d = abs(i - mu[0]) / H + abs(j - mu[1]) / W
                templates[k, i, j] = tau * max(1.0 - beta * d, -1.0)
    alpha = n2 / (1.0 + n2)
    prior = np.array([alpha / n2] * n2 + [1.0 - alpha])
    logits = np.einsum("bijc,kij->bck", x_hat, templates)
    log_lik = logits - np_logsumexp(logits, axis=0)  # p(x|T) over the batch
    log_px = np_logsumexp(np.log(prior) + log_lik, axis=2)
    mi = np.sum(prior * np.exp(log_lik) * (log_lik - log_px), axis=(0, 2))
    return -weight * np.sum(mi)


def tiny_model(weight, dense_kernel):
    inputs = keras.Input((H, W, C))
    # `np_mask` centres the mask on the argmax.
    y = keras_interp.InterpretableMask(
        loss_weight=weight, center="argmax", name="mask"
    )(inputs)
    out = keras.layers.Dense(1, name="dense")(keras.layers.Flatten()(y))
    model = keras.Model(inputs, out)
    model.get_layer("dense").set_weights(
        [dense_kernel[:, None], np.zeros(1, "float32")]
    )
    model.compile(loss="mse")
    return model


def test_gradient_norms_match_a_hand_computation():
    weight = 0.3
    x = peaked_maps()
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=H * W * C).astype("float32")
    targets = rng.normal(size=(B, 1)).astype("float32")
    model = tiny_model(weight, kernel)

    # Task: mse = mean_b (w . flat(x * mask) - t)^2, so on the map x
    # dL/dx_b = 2 / B (pred_b - t_b) w * mask_b.
    mask = np_mask(x)
    flat = (x * mask).reshape(B, -1)
    pred = flat @ kernel.astype("float64")
    task_grad = (
        2.0 / B * (pred - targets[:, 0])[:, None] * kernel[None, :]
    ).reshape(x.shape) * mask
    # Filter loss: central differences of the float64 loss.
    filter_grad = np.zeros(x.shape)
    x64 = x.astype("float64")
    for k in np.ndindex(*x.shape):
        up, down = x64.copy(), x64.copy()
        up[k] += 1e-5
        down[k] -= 1e-5
        filter_grad[k] = (
            np_filter_loss(up, weight) - np_filter_loss(down, weight)
        ) / 2e-5

    norms = keras_interp.gradient_norms(model, x, targets)["mask"]
    np.testing.assert_allclose(
        norms["task"], np.linalg.norm(task_grad), rtol=1e-4
    )
    np.testing.assert_allclose(
        norms["filter"], np.linalg.norm(filter_grad), rtol=1e-3
    )
    assert norms["filter"] > 1e-4 and norms["task"] > 1e-4
    np.testing.assert_allclose(
        norms["ratio"], norms["filter"] / norms["task"], rtol=1e-12
    )
    ratios = keras_interp.gradient_ratio(model, x, targets)
    np.testing.assert_allclose(ratios["mask"], norms["ratio"], rtol=1e-6)
    # An explicit task loss: mean absolute error, dL/dpred = sign / B.
    mae = keras_interp.gradient_norms(
        model, x, targets, loss=keras.losses.MeanAbsoluteError()
    )["mask"]
    mae_grad = (
        np.sign(pred - targets[:, 0])[:, None] / B * kernel[None, :]
    ).reshape(x.shape) * mask
    np.testing.assert_allclose(mae["task"], np.linalg.norm(mae_grad), 1e-4)


def test_ratio_is_linear_in_the_weight():
    x = peaked_maps(seed=2)
    targets = np.ones((B, 1), "float32")
    kernel = np.linspace(-1, 1, H * W * C).astype("float32")
    one = keras_interp.gradient_ratio(tiny_model(1.0, kernel), x, targets)
    three = keras_interp.gradient_ratio(tiny_model(3.0, kernel), x, targets)
    np.testing.assert_allclose(three["mask"], 3.0 * one["mask"], rtol=1e-5)
    zero = keras_interp.gradient_ratio(tiny_model(0.0, kernel), x, targets)
    assert zero["mask"] == 0.0


def part_model():
    images = keras.Input((8, 8, 3))
    labels = keras.Input((), dtype="int32")
    x = keras.layers.Conv2D(4, 3, padding="same")(images)
    x = keras.layers.BatchNormalization()(x)
    x = keras_interp.InterpretableMask(
        num_classes=3, beta="learned", name="top"
    )(x, labels=labels)
    x = keras_interp.InterpretableConv2D(
        4, 3, padding="same", num_classes=3, name="part"
    )(x, labels=labels)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(3)(x)
    model = keras.Model([images, labels], outputs)
    model.compile(
        keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def test_measuring_does_not_change_the_model():
    model = part_model()
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 2, (6, 8, 8, 3)).astype("float32")
    labels = np.array([0, 1, 2, 0, 1, 2])
    model.fit([images, labels], labels, epochs=1, verbose=0)
    before = [v.numpy().copy() for v in model.variables]
    first = keras_interp.gradient_norms(model, [images, labels], labels)
    after = [v.numpy() for v in model.variables]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert sorted(first) == ["part", "top"]
    for values in first.values():
        assert values["filter"] > 0 and values["task"] > 0
    # Same state, same dropout seed state: the same numbers again.
    again = keras_interp.gradient_norms(model, [images, labels], labels)
    for name in first:
        np.testing.assert_allclose(
            again[name]["ratio"], first[name]["ratio"], rtol=1e-6
        )


def test_logger_adds_the_ratio_to_fit_logs_csv_and_tensorboard(tmp_path):
    model = part_model()
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 2, (12, 8, 8, 3)).astype("float32")
    labels = np.arange(12) % 3
    probe = ([images[:6], labels[:6]], labels[:6])
    log_dir = str(tmp_path / "tb")
    csv_path = str(tmp_path / "log.csv")
    history = model.fit(
        [images, labels],
        labels,
        batch_size=6,
        epochs=3,
        verbose=0,
        callbacks=[
            keras_interp.GradientRatioLogger(*probe, log_dir=log_dir),
            keras.callbacks.CSVLogger(csv_path),
        ],
    )
    for name in ("top", "part"):
        logged = history.history[f"{name}_grad_ratio"]
        assert len(logged) == 3 and all(np.isfinite(logged))
    # The last value is the ratio of the trained model on the probe batch.
    final = keras_interp.gradient_ratio(model, *probe)
    np.testing.assert_allclose(
        history.history["part_grad_ratio"][-1], final["part"], rtol=1e-5
    )
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and "top_grad_ratio" in rows[0]
    tags = {}
    for path in glob.glob(os.path.join(log_dir, "events*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    for name in ("top", "part"):
        for kind in ("grad_ratio", "filter_grad_norm", "task_grad_norm"):
            assert tags[f"{name}/{kind}"] == [0, 1, 2]


def test_errors():
    plain = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Flatten()])
    plain.compile(loss="mse")
    x = np.ones((2, 4, 4, 2), "float32")
    with pytest.raises(ValueError, match=r"no interpretable layers"):
        keras_interp.gradient_ratio(plain, x, np.zeros((2, 32)))
    model = tiny_model(1.0, np.ones(H * W * C, "float32"))
    uncompiled = keras.Model(model.inputs, model.outputs)
    with pytest.raises(ValueError, match=r"compile the model, or pass `loss=`"):
        keras_interp.gradient_ratio(uncompiled, peaked_maps(), np.ones((B, 1)))
    with pytest.raises(ValueError, match=r"`freq`.*freq=0"):
        keras_interp.GradientRatioLogger(x, x, freq=0)
