"""The public API, and the rule that the core math stays backend-agnostic."""

import ast
import os
import subprocess
import sys
import textwrap

import keras
import pytest

import keras_interp

PACKAGE = os.path.dirname(keras_interp.__file__)
# Pure keras.ops modules: they must import on any backend, e.g. JAX on a GPU
# machine without TensorFlow.
BACKEND_AGNOSTIC = [
    "templates.py",
    "losses.py",
    "distribute.py",
    "callbacks.py",
    "layers/interpretable_mask.py",
    "layers/interpretable_conv2d.py",
    "models/backbones.py",
    "models/builders.py",
    "data/cub.py",
    "data/synthetic.py",
]


def test_public_names():
    for name in [
        "part_templates",
        "part_mask",
        "part_centers",
        "mutual_information",
        "category_mutual_information",
        "authors_filter_gradient",
        "learned_beta_target",
        "InterpretableConv2D",
        "InterpretableMask",
        "FilterLossEpoch",
        "interpretable_layers",
        "models",
        "__version__",
    ]:
        assert hasattr(keras_interp, name), name
    assert keras_interp.models.build_part_classifier is not None


def test_layers_are_registered_for_saving():
    for cls in [
        keras_interp.InterpretableConv2D,
        keras_interp.InterpretableMask,
        keras_interp.models.BackbonePreprocessing,
    ]:
        name = f"keras_interp>{cls.__name__}"
        assert keras.saving.get_registered_object(name) is cls


def test_core_modules_do_not_import_tensorflow_at_module_level():
    for relative in BACKEND_AGNOSTIC:
        with open(os.path.join(PACKAGE, relative)) as f:
            tree = ast.parse(f.read())
        for node in tree.body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert not name.startswith("tensorflow"), (relative, name)


def test_cub_reader_and_synthetic_data_work_without_tensorflow(tmp_path):
    # A JAX-only install (the GPU benchmark machine has no TensorFlow) must
    # read CUB and write the synthetic dataset; only the tf.data pipeline
    # needs TensorFlow, and asking for it says so.
    pytest.importorskip("jax")
    script = textwrap.dedent(
        """
        import sys
        sys.modules["tensorflow"] = None  # import tensorflow now fails
        import keras_interp
        from keras_interp import data, models
        root = data.write_synthetic_parts(
            sys.argv[1], num_classes=2, images_per_class=5,
            image_size=32, num_negatives=2,
        )
        index = data.read_cub(root)
        print(len(index.image_paths), len(index.class_names))
        try:
            data.make_dataset
        except ImportError:
            print("make_dataset needs tensorflow")
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    env["PYTHONPATH"] = os.path.dirname(PACKAGE)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "parts")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.split("\n")
    assert lines[-3:] == ["10 2", "make_dataset needs tensorflow", ""]
