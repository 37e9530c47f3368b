"""The layer and a builder model under the Keras torch backend."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

HELPER = os.path.join(os.path.dirname(__file__), "helpers", "torch_backend.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def torch_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("torch") / "results.json"
    env = {**os.environ, "PYTHONPATH": ROOT, "KERAS_BACKEND": "torch"}
    proc = subprocess.run(
        [sys.executable, HELPER, str(out)],
        env=env,
        capture_output=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return json.loads(out.read_text())


def test_values_match_the_tensorflow_backend(torch_results):
    import keras

    import keras_interp

    assert torch_results["backend"] == "torch"
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 3, (8, 6, 6, 4)).astype("float32")
    mi = keras.ops.convert_to_numpy(keras_interp.mutual_information(x, tau=0.2))
    np.testing.assert_allclose(torch_results["mi"], mi, rtol=1e-5)
    layer = keras_interp.InterpretableMask(tau=0.2, num_classes=2)
    layer(x, labels=np.array([0, 1] * 4), training=True)
    np.testing.assert_allclose(
        torch_results["layer_loss"],
        float(keras.ops.convert_to_numpy(layer.losses[0])),
        rtol=1e-5,
    )


def test_authors_custom_gradient_on_torch(torch_results):
    import keras

    import keras_interp

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 3, (8, 6, 6, 4)).astype("float32") + 0.01
    expected = keras_interp.authors_filter_gradient(
        x, np.ones((8, 4)), center="centroid"
    )
    expected = keras.ops.convert_to_numpy(expected) / 8  # batch mean
    np.testing.assert_allclose(
        torch_results["authors_grad"], expected, rtol=1e-5, atol=1e-12
    )


@pytest.mark.parametrize("name", ["authors_grad", "exact_grad"])
def test_default_loss_is_scale_free_on_torch(torch_results, name):
    grad = np.array(torch_results[name])
    assert np.max(np.abs(grad)) > 0
    np.testing.assert_allclose(
        5.0 * np.array(torch_results[f"{name}_scaled"]),
        grad,
        rtol=1e-3,
        atol=1e-4 * np.max(np.abs(grad)),
    )


def test_builder_model_trains_on_torch(torch_results):
    logs = torch_results["fit_logs"]
    assert all(np.isfinite(logs["loss"]))
    assert all(v < 0 for v in logs["part_conv_filter_loss"])
    assert torch_results["predict_shape"] == [16, 2]
