"""Model builders: the paper's recipe on a Keras Applications backbone."""

import collections

import keras

from keras_interp import templates
from keras_interp.layers import InterpretableConv2D
from keras_interp.layers import InterpretableMask
from keras_interp.models import backbones as backbones_lib
from keras_interp.normalization import DEFAULT_NORMALIZATION

PartClassifier = collections.namedtuple(
    "PartClassifier", ["training", "inference"]
)
PartClassifier.__doc__ = """The two views of one classifier, sharing layers.

Attributes:
    training: a functional model with inputs `{"image", "label"}`; the
        labels reach the category-aware filter loss. Compile and fit it.
    inference: a functional model with the image as its only input. Save
        and deploy it; it predicts from images alone.
"""

# Stable layer names, used by the evaluation tools and the examples.
TOP_MASK = "top_mask"
PART_CONV = "part_conv"
CLASSIFIER = "classifier"


def _cut_backbone(backbone, x, *, weights, cut_layer, preprocessing):
    """Applies the backbone to `x`.

    Returns:
        `(features, layers)`: the top conv features, and the backbone's
        layers in topological order up to the cut layer (for
        `trainable_from`).
    """
    if isinstance(backbone, str):
        if backbone not in backbones_lib.BACKBONES:
            raise ValueError(
                "`backbone` must be one of "
                f"{sorted(backbones_lib.BACKBONES)} or a keras.Model. "
                f"Received: backbone={backbone!r}."
            )
        spec = backbones_lib.BACKBONES[backbone]
        path, mode = backbones_lib.resolve_weights(
            backbone, weights, preprocessing=preprocessing
        )
        x = backbones_lib.BackbonePreprocessing(mode, name="preprocessing")(x)
        # `input_tensor` keeps the graph flat: every backbone layer stays
        # addressable by name in the final model.
        model = spec.constructor(
            include_top=False, weights=path, input_tensor=x
        )
        cut_layer = cut_layer or spec.cut_layer
    elif isinstance(backbone, keras.Model):
        path, mode = backbones_lib.resolve_weights(
            None, weights, preprocessing=preprocessing
        )
        if path is not None:
            backbone.load_weights(path)
        if cut_layer is None:
            raise ValueError(
                "`cut_layer` is required with a custom backbone model: the "
                "name of its top conv layer. Valid names: "
                f"{[layer.name for layer in backbone.layers]}."
            )
        x = backbones_lib.BackbonePreprocessing(mode, name="preprocessing")(x)
        names = [layer.name for layer in backbone.layers]
        if cut_layer not in names:
            raise ValueError(_unknown_layer(cut_layer, backbone))
        cut = keras.Model(
            backbone.input,
            backbone.get_layer(cut_layer).output,
            name="backbone",
        )
        return cut(x), list(cut.layers)
    else:
        raise ValueError(
            "`backbone` must be a name or a keras.Model. Received: "
            f"backbone={backbone!r}."
        )
    layers = list(model.layers)
    if cut_layer is None:
        return model.output, layers
    names = [layer.name for layer in layers]
    if cut_layer not in names:
        raise ValueError(_unknown_layer(cut_layer, model))
    return (
        model.get_layer(cut_layer).output,
        layers[: names.index(cut_layer) + 1],
    )


def _unknown_layer(name, model):
    spatial = [
        layer.name
        for layer in model.layers
        if len(getattr(layer.output, "shape", ())) == 4
    ]
    return (
        f"`cut_layer` {name!r} is not a layer of backbone '{model.name}'. "
        f"Valid names (4-D outputs): {spatial}."
    )


def _freeze_below(layers, trainable_from):
    """Freezes the backbone layers before `trainable_from`.

    `layers` are the backbone's layers in topological order up to the cut
    layer. A frozen `BatchNormalization` also runs in inference mode (Keras
    3: a non-trainable BatchNormalization uses its moving statistics).
    `PART_CONV` freezes the whole backbone.
    """
    if trainable_from is None:
        return
    valid = [layer.name for layer in layers if layer.weights]
    if trainable_from == PART_CONV:
        first = len(layers)
    elif isinstance(trainable_from, str) and trainable_from in valid:
        first = [layer.name for layer in layers].index(trainable_from)
    else:
        raise ValueError(
            f"`trainable_from` must name the first trainable backbone layer "
            f"(a layer with weights, up to the cut layer), or "
            f"{PART_CONV!r} to freeze the whole backbone. Received: "
            f"trainable_from={trainable_from!r}. Valid names: "
            f"{valid + [PART_CONV]}."
        )
    for layer in layers[:first]:
        layer.trainable = False


def build_part_classifier(
    backbone="vgg16",
    *,
    num_classes,
    image_size=224,
    weights=None,
    cut_layer=None,
    preprocessing=None,
    trainable_from=None,
    filters=None,
    interpretable=True,
    category_aware=True,
    background_class=None,
    loss="mutual_information",
    loss_weight=None,
    loss_weight_decay=None,
    normalization=DEFAULT_NORMALIZATION,
    beta=templates.DEFAULT_BETA,
    center=templates.DEFAULT_CENTER,
    apply_mask=True,
    dropout=0.5,
    seed=0,
    name="part_classifier",
):
    """Builds the paper's interpretable CNN (or the matching ordinary one).

    The recipe of Zhang et al. (CVPR 2018, Section 5; docs/method_notes.md):

    1. the backbone, cut at its top conv layer (`cut_layer`), whose filters
       are made interpretable with an `InterpretableMask` ("top_mask": mask
       and filter loss on its output; the paper's "we modified all filters
       in the top conv-layer");
    2. a new 3x3 `InterpretableConv2D` ("part_conv") with `filters` filters
       (default: the backbone's channel count M), zero-padded, with bias;
    3. global average pooling, dropout and a dense classifier
       ("classifier", float32 logits).

    With `interpretable=False` the model is the identical ordinary CNN: the
    same layers and initialisation, with "part_conv" a plain
    `Conv2D(activation="relu")` and no mask, for fair comparisons.

    The images are RGB in [0, 255]; the backbone's own preprocessing is a
    layer inside the model. With `num_classes` labels the filters are
    assigned to classes and the loss is category-aware; for the paper's
    single-category task (objects vs. background images) use
    `num_classes=2, background_class=0`.

    Args:
        backbone: a name from `keras_interp.models.BACKBONES` (vgg16,
            vgg19, resnet50, mobilenet_v2, efficientnet_b0, convnext_tiny,
            tiny_vgg) or any `keras.Model` (then `cut_layer` is required).
        num_classes: int >= 2, the number of classes.
        image_size: int, the square input size. Default 224 (the paper).
        weights: None (random), `"imagenet"` (Keras' official ImageNet
            file, downloaded once into `$KERAS_HOME/models` and then used
            offline, as Keras Applications do), or the path of a local
            weights file for the backbone, e.g. one built by
            `python -m keras_interp.models.convert_lpips_vgg16`.
        cut_layer: name of the backbone layer whose output feeds the
            interpretable layers; default per backbone (VGG16:
            `block5_conv3`).
        preprocessing: a `BackbonePreprocessing` mode, or None: the mode
            recorded in the weights file (`"torch"` for the converted
            torchvision VGG-16), else the backbone's (VGG16: `"caffe"`,
            the mode of Keras' own ImageNet weights). A mode that differs
            from the one the weights record is a ValueError.
        trainable_from: None (everything trains), the name of the first
            trainable backbone layer (e.g. `"block5_conv1"`: only VGG16's
            top block is fine-tuned; every layer before it is frozen, and
            frozen BatchNormalization runs in inference mode), or
            `PART_CONV` (`"part_conv"`) to freeze the whole backbone.
        filters: int, filters of "part_conv". Default: M, the backbone's
            channel count (paper).
        interpretable: bool, build the interpretable (True) or ordinary CNN.
        category_aware: bool; True (default): the training labels reach the
            interpretable layers, which assign filters to classes and use
            the category-aware loss. False: the label-free Eq. 1 loss.
        background_class: class id of background-only images, if any.
        loss, loss_weight, loss_weight_decay, normalization, beta, center,
            apply_mask: passed to both interpretable layers (see
            `InterpretableMask`). The defaults are the library's:
            `normalization.DEFAULT_NORMALIZATION`, `templates.DEFAULT_BETA`
            and `templates.DEFAULT_CENTER`.
        dropout: float, dropout rate before the classifier. Default 0.5.
        seed: int, seed of the new layers' initialisers.
        name: model name.

    Returns:
        A `PartClassifier(training, inference)` pair sharing all layers.

    Raises:
        ValueError: for an unknown backbone, cut layer or `trainable_from`
            (the message lists the valid names), bad or unreachable
            weights, preprocessing that does not match the weights, or bad
            sizes.

    Example:

    >>> models = keras_interp.models.build_part_classifier(
    ...     "tiny_vgg", num_classes=3, image_size=32)
    >>> models.inference.output.shape
    (None, 3)
    """
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int)
        or (num_classes < 2)
    ):
        raise ValueError(
            "`num_classes` must be an int >= 2 (use 2 with "
            "background_class=0 for object-vs-background). Received: "
            f"num_classes={num_classes!r}."
        )
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int)
        or (image_size < 8)
    ):
        raise ValueError(
            f"`image_size` must be an int >= 8. Received: {image_size!r}."
        )
    if filters is not None and (
        isinstance(filters, bool) or not isinstance(filters, int) or filters < 1
    ):
        raise ValueError(
            f"`filters` must be a positive int or None. Received: {filters!r}."
        )
    image = keras.Input((image_size, image_size, 3), name="image")
    label = keras.Input((), dtype="int32", name="label")
    features, backbone_layers = _cut_backbone(
        backbone,
        image,
        weights=weights,
        cut_layer=cut_layer,
        preprocessing=preprocessing,
    )
    _freeze_below(backbone_layers, trainable_from)
    channels = features.shape[-1]
    filters = filters or channels
    conv_kwargs = dict(
        kernel_size=3,
        padding="same",
        kernel_initializer=keras.initializers.HeNormal(seed=seed),
        name=PART_CONV,
    )
    if not category_aware:
        background_class = None
    interp_kwargs = dict(
        num_classes=num_classes if category_aware else None,
        background_class=background_class,
        loss=loss,
        loss_weight=loss_weight,
        loss_weight_decay=loss_weight_decay,
        normalization=normalization,
        beta=beta,
        center=center,
        apply_mask=apply_mask,
    )
    head = [
        keras.layers.GlobalAveragePooling2D(name="pool"),
        keras.layers.Dropout(dropout, seed=seed, name="dropout"),
        keras.layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
            dtype="float32",
            name=CLASSIFIER,
        ),
    ]

    def apply_head(x):
        for layer in head:
            x = layer(x)
        return x

    if interpretable:
        mask = InterpretableMask(name=TOP_MASK, **interp_kwargs)
        conv = InterpretableConv2D(filters, **conv_kwargs, **interp_kwargs)
        labels = label if category_aware else None
        train_out = apply_head(
            conv(mask(features, labels=labels), labels=labels)
        )
        infer_out = apply_head(conv(mask(features)))
    else:
        conv = keras.layers.Conv2D(filters, activation="relu", **conv_kwargs)
        train_out = infer_out = apply_head(conv(features))
    training = keras.Model(
        {"image": image, "label": label}, train_out, name=name
    )
    inference = keras.Model(image, infer_out, name=name)
    return PartClassifier(training, inference)
