"""Checks run under KERAS_BACKEND=jax (by tests/test_jax_backend.py).

Usage: python jax_backend.py OUT.json. Trains the layer and a builder model
for a few steps and compares the filter loss under
`keras.distribution.DataParallel` on 2 host devices with one device.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import keras_interp  # noqa: E402


def layer_loss(x, labels=None):
    layer = keras_interp.InterpretableMask(tau=0.2, num_classes=2)
    layer(x, labels=labels, training=True)
    return float(ops.convert_to_numpy(layer.losses[0]))


def main(out):
    results = {
        "backend": keras.backend.backend(),
        "devices": jax.device_count(),
    }
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 3, (8, 6, 6, 4)).astype("float32")
    labels = np.array([0, 1] * 4)
    results["layer_loss"] = layer_loss(x, labels)
    results["mi"] = ops.convert_to_numpy(
        keras_interp.mutual_information(x, tau=0.2)
    ).tolist()
    # The default loss is scale-free: the same value for 37 x, and a
    # gradient 37 times smaller.
    results["layer_loss_scaled"] = layer_loss(x * 37.0, labels)
    results["mi_scaled"] = ops.convert_to_numpy(
        keras_interp.mutual_information(x * 37.0, tau=0.2)
    ).tolist()

    def total_mi(v):
        return jax.numpy.sum(keras_interp.mutual_information(v))

    results["mi_grad"] = np.asarray(jax.grad(total_mi)(x)).tolist()
    results["mi_grad_scaled"] = np.asarray(
        jax.grad(total_mi)(x * 37.0)
    ).tolist()

    # A builder model trains with fit (jit) and the filter loss decreases.
    built = keras_interp.models.build_part_classifier(
        "tiny_vgg", num_classes=2, image_size=32, filters=8, loss_weight=1.0
    )
    built.training.compile(
        keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    images = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 2, 16).astype("int32")
    history = built.training.fit(
        {"image": images, "label": y}, y, epochs=2, batch_size=8, verbose=0
    )
    results["fit_loss"] = history.history["loss"]
    results["predict_shape"] = list(
        built.inference.predict(images, verbose=0).shape
    )

    # DataParallel over 2 host devices: `fit` shards the batch; the layer's
    # batch statistics stay global (one SPMD program over the global batch).
    initial = None

    def one_step():
        model = keras.Sequential(
            [
                keras.Input((6, 6, 4)),
                keras_interp.InterpretableConv2D(
                    3, 3, padding="same", tau=0.2, loss_weight=1.0
                ),
            ]
        )
        if initial is not None:
            model.set_weights(initial)
        start = [np.asarray(w) for w in model.get_weights()]
        model.compile(keras.optimizers.SGD(0.1))  # the filter loss only
        history = model.fit(x, epochs=1, batch_size=8, verbose=0)
        return start, model.get_weights(), history.history["loss"][0]

    initial, single_weights, results["single_device_loss"] = one_step()
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices())
    )
    _, parallel_weights, results["data_parallel_loss"] = one_step()
    results["max_weight_difference"] = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(single_weights, parallel_weights)
    )
    results["weights_moved"] = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(initial, single_weights)
    )
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1])
