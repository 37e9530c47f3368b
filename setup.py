"""Packaging for keras_interp."""

import pathlib

from setuptools import find_packages
from setuptools import setup

HERE = pathlib.Path(__file__).parent


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
    install_requires=[
        "keras>=3.15,<4",
        "numpy",
        "absl-py",
        # keras.callbacks.TensorBoard needs it; tensorflow-cpu 2.21 does
        # not pull it in.
        "tensorboard",
        # The embedded synthetic part dataset is drawn with Pillow.
        "pillow",
    ],
    extras_require={
        "cpu": ["tensorflow-cpu==2.21.0"],
        "gpu": ["tensorflow[and-cuda]==2.21.0"],
        "data": ["tensorflow-datasets"],
        "viz": ["matplotlib"],
        "test": ["pytest"],
    },
)
