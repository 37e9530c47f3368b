"""The README's minimal example runs as written."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")


def python_blocks():
    with open(README) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_minimal_example_runs(capsys):
    code = python_blocks()[0]
    assert "InterpretableConv2D" in code
    namespace = {}
    exec(compile(code, README, "exec"), namespace)
    history = namespace["history"].history
    assert len(history["parts_filter_loss"]) == 2
    assert all(value < 0 for value in history["parts_filter_loss"])
    assert "[" in capsys.readouterr().out


def test_example_uses_only_public_names():
    for code in python_blocks():
        for name in re.findall(r"keras_interp\.([A-Za-z_][A-Za-z0-9_]*)", code):
            import keras_interp

            assert hasattr(keras_interp, name), name


@pytest.mark.parametrize("path", ["scripts/setup_venv.sh", "scripts/test.sh"])
def test_readme_commands_exist(path):
    root = os.path.dirname(README)
    assert os.path.isfile(os.path.join(root, path))
    assert path in open(README).read()
