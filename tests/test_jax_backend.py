"""The layer and a builder model under the Keras JAX backend."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("jax")

HELPER = os.path.join(os.path.dirname(__file__), "helpers", "jax_backend.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def jax_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("jax") / "results.json"
    env = {**os.environ, "PYTHONPATH": ROOT, "KERAS_BACKEND": "jax"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    proc = subprocess.run(
        [sys.executable, HELPER, str(out)],
        env=env,
        capture_output=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return json.loads(out.read_text())


def test_runs_on_the_jax_backend_with_two_devices(jax_results):
    assert jax_results["backend"] == "jax"
    assert jax_results["devices"] == 2


def test_loss_matches_the_tensorflow_backend(jax_results):
    import keras

    import keras_interp

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 3, (8, 6, 6, 4)).astype("float32")
    mi = keras.ops.convert_to_numpy(keras_interp.mutual_information(x, tau=0.2))
    np.testing.assert_allclose(jax_results["mi"], mi, rtol=1e-5)
    layer = keras_interp.InterpretableMask(tau=0.2, num_classes=2)
    layer(x, labels=np.array([0, 1] * 4), training=True)
    np.testing.assert_allclose(
        jax_results["layer_loss"],
        float(keras.ops.convert_to_numpy(layer.losses[0])),
        rtol=1e-5,
    )


def test_default_loss_is_scale_free_on_jax(jax_results):
    np.testing.assert_allclose(
        jax_results["mi_scaled"], jax_results["mi"], rtol=1e-5
    )
    np.testing.assert_allclose(
        jax_results["layer_loss_scaled"], jax_results["layer_loss"], rtol=1e-5
    )
    grad = np.array(jax_results["mi_grad"])
    assert np.max(np.abs(grad)) > 1e-4
    np.testing.assert_allclose(
        37.0 * np.array(jax_results["mi_grad_scaled"]),
        grad,
        rtol=1e-3,
        atol=1e-4 * np.max(np.abs(grad)),
    )


def test_builder_model_trains_on_jax(jax_results):
    assert all(np.isfinite(jax_results["fit_loss"]))
    assert jax_results["predict_shape"] == [16, 2]


def test_data_parallel_loss_equals_single_device(jax_results):
    np.testing.assert_allclose(
        jax_results["data_parallel_loss"],
        jax_results["single_device_loss"],
        rtol=1e-5,
    )
    assert jax_results["single_device_loss"] < 0
    assert jax_results["weights_moved"] > 1e-4
    assert jax_results["max_weight_difference"] < 1e-5
