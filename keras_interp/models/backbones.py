"""Supported backbones: constructors, cut points and preprocessing."""

import dataclasses
import os
from typing import Callable
from typing import Optional

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
            x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
            x = keras.layers.ReLU(name=f"{name}_relu")(x)
    inputs = keras.utils.get_source_inputs(input_tensor)
    model = keras.Model(inputs, x, name="tiny_vgg")
    if weights is not None:
        model.load_weights(weights)
    return model


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How to build a backbone and where the paper's recipe cuts it.

    Attributes:
        constructor: a `keras.applications`-style function taking
            `include_top`, `weights`, `input_tensor`.
        cut_layer: the top conv layer whose filters become interpretable;
            `None` means the backbone's output.
        preprocessing: a `BackbonePreprocessing` mode.
        weights_file: the official Keras file name (no top), for the docs.
    """

    constructor: Callable
    cut_layer: Optional[str]
    preprocessing: str
    weights_file: Optional[str] = None


BACKBONES = {
    "vgg16": BackboneSpec(
        keras.applications.VGG16,
        "block5_conv3",
        "caffe",
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "vgg19": BackboneSpec(
        keras.applications.VGG19,
        "block5_conv4",
        "caffe",
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "resnet50": BackboneSpec(
        keras.applications.ResNet50,
        "conv5_block3_out",
        "caffe",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "mobilenet_v2": BackboneSpec(
        keras.applications.MobileNetV2,
        "out_relu",
        "tf",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    ),
    "efficientnet_b0": BackboneSpec(
        keras.applications.EfficientNetB0,
        "top_activation",
        "none",  # Rescaling and Normalization are part of its graph.
        "efficientnetb0_notop.h5",
    ),
    "convnext_tiny": BackboneSpec(
        keras.applications.ConvNeXtTiny,
        None,  # Normalisation is inside; cut at its output (final norm).
        "none",
        "convnext_tiny_notop.h5",
    ),
    "tiny_vgg": BackboneSpec(tiny_vgg, "block4_conv2_relu", "unit"),
}


def check_weights(weights):
    """`weights` must be None or an existing local file; never a download."""
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)) or weights == "imagenet":
        raise ValueError(
            "`weights` must be None (random initialisation) or the path of a "
            "local weights file; keras_interp never downloads. Received: "
            f"weights={weights!r}. Download the official Keras file (see "
            "README, 'Backbones') on a machine with internet and pass its "
            "path."
        )
    if not os.path.isfile(weights):
        raise ValueError(
            f"`weights` file not found: {os.fspath(weights)!r}. Pass the "
            "path of an existing .h5 / .weights.h5 file, or None."
        )
    return os.fspath(weights)
