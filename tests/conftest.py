"""Shared test setup: backend, quiet TF logs, per-test seeding and cleanup."""

import os

# Must be set before anything imports keras or tensorflow.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def keras_test_isolation():
    # Imported here so a broken keras/TF install fails tests, not collection.
    import keras

    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()
    keras.config.set_dtype_policy("float32")
