"""Packaging for keras_interp.

Dependencies (see README, "Install"):

* `install_requires`: the runtime of the main job, except the TensorFlow
  wheel itself: Keras 3, TensorFlow Datasets, NumPy, absl-py, TensorBoard
  and Pillow.
* TensorFlow is chosen with exactly one extra, because TensorFlow publishes
  the same library under two names (`tensorflow-cpu`, `tensorflow`) that pip
  treats as unrelated packages writing the same files. Naming one in
  `install_requires` would make the other extra install both, overwriting
  each other:
    - `cpu`: `tensorflow-cpu` on Linux x86-64 (2.21: 1.3 GB unpacked against
      1.9 GB for `tensorflow`), `tensorflow` elsewhere (macOS, aarch64);
    - `gpu`: `tensorflow[and-cuda]`, TensorFlow plus NVIDIA's CUDA wheels.
* Other backends and tools: `jax`, `torch`, `viz` (matplotlib, for
  `keras_interp.evaluation.visualize`), and `test` (pytest and the JAX and
  PyTorch CPU builds the backend tests run on).

The exact versions CI tests are pinned in `requirements.txt` (runtime) and
`requirements-ci.txt` (tests); this file keeps ranges.
"""

import pathlib

from setuptools import find_packages
from setuptools import setup

HERE = pathlib.Path(__file__).parent

TENSORFLOW = "==2.21.*"
# tensorflow-cpu on Linux x86-64 (what CI tests), tensorflow, which is
# published for every platform, elsewhere. PEP 508 markers have no "not".
HAS_TENSORFLOW_CPU = 'sys_platform == "linux" and platform_machine == "x86_64"'
NO_TENSORFLOW_CPU = 'sys_platform != "linux" or platform_machine != "x86_64"'

INSTALL_REQUIRES = [
    "keras>=3.15,<4",
    "tensorflow-datasets>=4.9",
    "numpy>=1.26",
    "absl-py>=1.0",
    # keras.callbacks.TensorBoard needs it; tensorflow-cpu 2.21 does not
    # pull it in.
    "tensorboard>=2.21",
    # The embedded synthetic part dataset is drawn with Pillow.
    "pillow>=10",
]

EXTRAS_REQUIRE = {
    "cpu": [
        f"tensorflow-cpu{TENSORFLOW}; {HAS_TENSORFLOW_CPU}",
        f"tensorflow{TENSORFLOW}; {NO_TENSORFLOW_CPU}",
    ],
    "gpu": [f"tensorflow[and-cuda]{TENSORFLOW}"],
    # CPU builds; for a GPU follow the JAX / PyTorch install guides.
    "jax": ["jax>=0.10"],
    "torch": ["torch>=2.13"],
    "viz": ["matplotlib>=3.8"],
    "test": [
        "pytest>=8.2",
        "jax[cpu]>=0.10,<0.11",
        # An exact CPU build: a range lets pip pick a multi-GB CUDA build.
        "torch==2.13.0",
        "matplotlib>=3.8",
    ],
}

# Files other than modules that the package needs at run time: the
# background photos of the embedded scenes dataset. tests/test_package.py
# checks that every such tracked file is listed.
PACKAGE_DATA = {"keras_interp.data": ["background_photos/*"]}


def _version():
    # Read, not import: importing keras_interp would pull in keras/TF.
    namespace = {}
    exec((HERE / "keras_interp" / "version.py").read_text(), namespace)
    return namespace["__version__"]


def _long_description():
    readme = HERE / "README.md"
    return readme.read_text(encoding="utf-8") if readme.exists() else ""


setup(
    name="keras_interp",
    version=_version(),
    description="Interpretable convolutional filters as Keras 3 layers.",
    long_description=_long_description(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["keras_interp", "keras_interp.*"]),
    package_data=PACKAGE_DATA,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
