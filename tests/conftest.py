"""Shared test setup: backend, quiet TF logs, per-test seeding and cleanup."""

import os

# Must be set before anything imports keras or tensorflow.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import pytest  # noqa: E402


def _split_cpu_into_two_logical_devices():
    """Two logical CPUs for MirroredStrategy tests (before TF initialises)."""
    if os.environ["KERAS_BACKEND"] != "tensorflow":
        return
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0],
            [tf.config.LogicalDeviceConfiguration()] * 2,
        )
    except RuntimeError:  # Already initialised (e.g. by a plugin).
        pass


_split_cpu_into_two_logical_devices()


@pytest.fixture(autouse=True)
def keras_test_isolation():
    # Imported here so a broken keras/TF install fails tests, not collection.
    import keras

    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def two_cpu_strategy():
    """One MirroredStrategy over the two logical CPUs, for the whole session.

    Every new strategy restarts its collective instance keys, and TF keeps
    the shapes of earlier collectives with the same keys for the life of
    the process; a second strategy on the same devices then fails with
    "Shape mismatch in the collective instance". Users have one strategy
    per process; tests share one too.
    """
    import tensorflow as tf

    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs two logical CPUs")
    return tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
