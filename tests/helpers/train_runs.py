"""Tiny training runs shared by tests/test_train.py and test_train_safety.py.

Import with `sys.path.insert(0, <tests/helpers>)`, then `import train_runs`.
"""

import os
import subprocess
import sys

import keras

from keras_interp import data
from keras_interp.apps import train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
ROOT = os.path.abspath(ROOT)
SCRIPT = os.path.join(ROOT, "examples", "train_cub.py")


def write_parts(root, *, seed, images_per_class, image_size, num_negatives):
    """A 3-class embedded part dataset (with negatives) under `root`."""
    return data.write_synthetic_parts(
        os.path.join(str(root), "CUB_200_2011"),
        seed=seed,
        num_classes=3,
        images_per_class=images_per_class,
        image_size=image_size,
        num_negatives=num_negatives,
    )


def tiny_config(parts_dir, model_dir, **overrides):
    """A `TrainConfig` of 2 epochs of 3 steps on 32-px images, silent."""
    config = dict(
        data_dir=parts_dir,
        image_size=32,
        batch_size=4,
        epochs=2,
        steps_per_epoch=3,
        model_dir=str(model_dir),
        verbose=0,
    )
    config.update(overrides)
    return train.TrainConfig(**config)


def saved_weights(model_dir):
    """The weights of `<model_dir>/model.keras`, as NumPy arrays."""
    model = keras.models.load_model(os.path.join(model_dir, "model.keras"))
    return [w.numpy() for w in model.weights]


def script_command(parts_dir, model_dir, *extra, epochs, steps_per_epoch):
    """The command line of examples/train_cub.py on a tiny run."""
    return [
        sys.executable,
        SCRIPT,
        f"--data_dir={parts_dir}",
        f"--model_dir={model_dir}",
        "--image_size=32",
        "--batch_size=4",
        f"--epochs={epochs}",
        f"--steps_per_epoch={steps_per_epoch}",
        "--verbose=0",
        *extra,
    ]


def script_env(*, tf_logs=False):
    """The environment of a script run: this tree, CPU only.

    Args:
        tf_logs: keep TensorFlow's C++ warnings (e.g. retracing) in the
            output instead of the tests' quiet level.
    """
    env = {**os.environ, "PYTHONPATH": ROOT, "CUDA_VISIBLE_DEVICES": ""}
    if tf_logs:
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


def run_script(parts_dir, model_dir, *extra, epochs, steps_per_epoch):
    """Runs examples/train_cub.py to the end; output in `.stdout`."""
    return subprocess.run(
        script_command(
            parts_dir,
            model_dir,
            *extra,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
        ),
        env=script_env(tf_logs=True),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=600,
        text=True,
    )
