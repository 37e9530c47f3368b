"""Checks run under KERAS_BACKEND=torch (by tests/test_torch_backend.py).

Usage: python torch_backend.py OUT.json.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "torch"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from keras import ops  # noqa: E402

import keras_interp  # noqa: E402


def main(out):
    results = {"backend": keras.backend.backend()}
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 3, (8, 6, 6, 4)).astype("float32")
    results["mi"] = ops.convert_to_numpy(
        keras_interp.mutual_information(x, tau=0.2)
    ).tolist()
    layer = keras_interp.InterpretableMask(tau=0.2, num_classes=2)
    layer(x, labels=np.array([0, 1] * 4), training=True)
    results["layer_loss"] = float(ops.convert_to_numpy(layer.losses[0]))

    # The authors' surrogate reaches the input through the custom gradient.
    def layer_gradient(scale, **kwargs):
        layer = keras_interp.InterpretableMask(**kwargs)
        inputs = torch.tensor((x + 0.01) * scale, requires_grad=True)
        layer(inputs, training=True)
        layer.losses[0].backward()
        return inputs.grad.numpy().tolist()

    # lambda = 1, the scale of `authors_filter_gradient` that the test
    # compares against (the layer's default lambda for this loss is 0.02).
    authors = dict(loss="authors", center="centroid", loss_weight=1.0)
    results["authors_grad"] = layer_gradient(1.0, **authors)
    # The default loss is scale-free: for 5 x the gradient is 5 times
    # smaller, for both the exact loss and the authors' surrogate.
    results["authors_grad_scaled"] = layer_gradient(5.0, **authors)
    results["exact_grad"] = layer_gradient(1.0)
    results["exact_grad_scaled"] = layer_gradient(5.0)

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
    results["fit_logs"] = history.history
    results["predict_shape"] = list(
        built.inference.predict(images, verbose=0).shape
    )
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1])
