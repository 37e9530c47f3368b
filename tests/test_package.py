"""The public API, the core math stays backend-agnostic, and packaging.

Packaging: the runtime install has no JAX or PyTorch, the repository is
self-contained (no link to a file outside it or to a missing file), and the
Bazel test wrapper passes a file skipped for a missing optional dependency
but fails one that collects nothing by mistake.
"""

import ast
import glob
import os
import re
import subprocess
import sys
import textwrap

import keras
import pytest

import keras_interp

PACKAGE = os.path.dirname(keras_interp.__file__)
# The source tree (under Bazel this file is a symlink into it).
ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
# Pure keras.ops modules: they must import on any backend, e.g. JAX on a GPU
# machine without TensorFlow.
BACKEND_AGNOSTIC = [
    "templates.py",
    "losses.py",
    "normalization.py",
    "authors_loss.py",
    "distribute.py",
    "callbacks.py",
    "class_statistics.py",
    "layers/base_interpretable.py",
    "layers/_validation.py",
    "layers/_tf_gradients.py",
    "layers/search.py",
    "layers/interpretable_mask.py",
    "layers/interpretable_conv2d.py",
    "models/backbones.py",
    "models/builders.py",
    "data/cub.py",
    "data/cub_tables.py",
    "data/negatives.py",
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


# --- Packaging -------------------------------------------------------------

# Distributions that only optional extras may require.
OPTIONAL_DISTRIBUTIONS = {"jax", "jaxlib", "torch", "matplotlib", "pytest"}


def _requirement_name(requirement):
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def _setup_py_constant(name):
    with open(os.path.join(ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [
            target.id for target in node.targets
        ] == [name]:
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py has no literal {name}")


def _requirements_file(relative):
    """Requirement names in a requirements file, following `-r` includes."""
    names = []
    path = os.path.join(ROOT, relative)
    with open(path) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line.startswith("-r "):
                included = os.path.join(os.path.dirname(relative), line[3:])
                names += _requirements_file(included.strip())
            elif line and not line.startswith("-"):
                names.append(_requirement_name(line))
    return names


def test_install_requires_has_no_optional_backend():
    install_requires = _setup_py_constant("INSTALL_REQUIRES")
    names = {_requirement_name(r) for r in install_requires}
    assert "keras" in names, names
    assert not names & OPTIONAL_DISTRIBUTIONS, names & OPTIONAL_DISTRIBUTIONS


def test_runtime_set_up_installs_no_optional_backend():
    # `bash scripts/setup_venv.sh` (the README's first command) installs
    # requirements.txt; the test command adds requirements-ci.txt.
    runtime = set(_requirements_file("requirements.txt"))
    assert "tensorflow-cpu" in runtime, runtime
    assert not runtime & OPTIONAL_DISTRIBUTIONS, runtime
    test = set(_requirements_file("requirements-ci.txt"))
    assert {"jax", "torch", "pytest"} <= test, test


def test_package_data_lists_every_non_module_file():
    # Otherwise `pip install .` (not editable) installs a package without
    # them. setuptools globs each pattern in its package's folder.
    listed = set()
    for package, patterns in _setup_py_constant("PACKAGE_DATA").items():
        folder = os.path.join(ROOT, *package.split("."))
        for pattern in patterns:
            listed.update(glob.glob(os.path.join(folder, pattern)))
    data = {
        os.path.join(ROOT, path)
        for path in _tracked_files()
        if path.startswith("keras_interp/") and not path.endswith(".py")
    }
    assert not data - listed, sorted(data - listed)


def _tracked_files():
    proc = subprocess.run(
        ["git", "-C", ROOT, "ls-files", "-z"], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"not a git checkout: {proc.stderr.strip()}")
    return [path for path in proc.stdout.split("\0") if path]


def _text(relative):
    try:
        with open(os.path.join(ROOT, relative), encoding="utf-8") as f:
            return f.read()
    except (UnicodeDecodeError, FileNotFoundError):
        return ""


def test_no_tracked_file_refers_outside_the_repository():
    # The development notes beside the repository are not shipped.
    outside = "../" + "shared"
    offenders = [
        path for path in _tracked_files() if outside in _text(path)
    ]
    assert not offenders, offenders


# In Markdown: links, and names of documents, code and scripts in backticks
# (`docs/method_notes.md`); not data files, such as CUB's `images.txt`.
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FILE_NAME = re.compile(r"`((?:[\w.-]+/)*[\w.-]+\.(?:md|py|sh|bzl))`")
# Anywhere (also docstrings and comments): any Markdown file name.
_MARKDOWN_NAME = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w.-]*\w\.md)\b")


def _missing_references(path, text, tracked_names):
    """The files that `path` (relative to ROOT) names but do not exist."""
    here = os.path.dirname(path)
    missing = []
    markdown = path.endswith(".md")
    for target in _LINK.findall(text) if markdown else []:
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same file
        target = target.split("#")[0]
        resolved = os.path.normpath(os.path.join(ROOT, here, target))
        if not resolved.startswith(ROOT + os.sep) or not os.path.exists(
            resolved
        ):
            missing.append(target)
    names = _MARKDOWN_NAME.findall(text)
    if markdown:
        names += _FILE_NAME.findall(text)
    for name in names:
        if "/" not in name:
            # A bare module or file name (`losses.py`): some tracked file.
            if name not in tracked_names:
                missing.append(name)
        elif not any(
            os.path.exists(os.path.join(ROOT, base, name))
            for base in (here, "")
        ):
            missing.append(name)
    return list(dict.fromkeys(missing))  # Each once, in order.


def test_files_refer_only_to_existing_repository_files():
    tracked = _tracked_files()
    tracked_names = {os.path.basename(path) for path in tracked}
    this_file = os.path.relpath(os.path.realpath(__file__), ROOT)
    missing = {}
    for path in tracked:
        if path != this_file:  # Its bad names below are test data.
            found = _missing_references(path, _text(path), tracked_names)
            if found:
                missing[path] = found
    assert "README.md" in tracked
    assert not missing, missing


def test_reference_check_catches_bad_references():
    text = (
        "[notes](docs/no_such_page.md), [out](../outside.md), "
        "`docs/no_such_file.py`, `no_such_name.md`, [web](https://x.org), "
        "[here](#anchor), [readme](README.md#tests-and-ci), `setup.py`"
    )
    text += ", and method.md §4"
    tracked_names = {"setup.py", "README.md"}
    assert sorted(_missing_references("README.md", text, tracked_names)) == [
        "../outside.md",
        "docs/no_such_file.py",
        "docs/no_such_page.md",
        "method.md",
        "no_such_name.md",
    ]
    docstring = (
        "see `method.md` section 4, notes.md, docs/no_such_page.md, "
        "README.md, docs/method_notes.md and https://x.org/page.md"
    )
    assert sorted(
        _missing_references("keras_interp/losses.py", docstring, {"README.md"})
    ) == ["docs/no_such_page.md", "method.md", "notes.md"]


# --- The Bazel test wrapper ------------------------------------------------

PYTEST_MAIN = os.path.join(os.path.dirname(__file__), "pytest_main.py")

# Runs tests/pytest_main.py with the optional modules made unimportable, as in
# an environment with only the runtime packages.
_WITHOUT_OPTIONAL_MODULES = """
import runpy
import sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("jax", "torch", "matplotlib"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize(
    "source, expected_code",
    [
        # Needs JAX, which is "not installed": a pass, reported as skipped.
        ('pytest.importorskip("jax")\ndef test_x():\n    pass\n', 0),
        ('pytest.importorskip("torch.nn")\ndef test_x():\n    pass\n', 0),
        # Collects nothing by mistake: still a failure (pytest's exit 5).
        ("def check_x():\n    pass\n", 5),
        ("", 5),
        # Skipped for a reason other than a missing optional dependency.
        ('pytest.skip("flaky", allow_module_level=True)\n', 5),
        ('pytest.importorskip("no_such_required_module")\n', 5),
        # Ordinary outcomes are unchanged.
        ("def test_x():\n    pass\n", 0),
        ("def test_x():\n    assert False\n", 1),
    ],
)
def test_pytest_main_exit_code(tmp_path, source, expected_code):
    test_file = tmp_path / "test_case.py"
    test_file.write_text("import pytest\n" + source)
    env = dict(os.environ)
    env.pop("XML_OUTPUT_FILE", None)  # Bazel's report is for the outer run
    command = [sys.executable, "-c", _WITHOUT_OPTIONAL_MODULES, PYTEST_MAIN]
    proc = subprocess.run(
        command + [str(test_file)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == expected_code, proc.stdout[-3000:]
    skipped_line = "SKIPPED: no tests ran because optional dependencies"
    assert (skipped_line in proc.stdout) == (
        "importorskip" in source and expected_code == 0
    ), proc.stdout[-3000:]
