"""Command-line flags generated from the fields of `TrainConfig`.

One flag per field, of the field's name, type and default; settings with a
few allowed values are enum flags with the choices of `config.CHOICES`
(None is spelled `none`). `define_flags` refuses a field without help text
or help text without a field, so the flags cannot drift from the config.

    from absl import app
    from keras_interp.apps import train, train_flags

    train_flags.define_flags()
    app.run(lambda argv: train.train_and_evaluate(
        train_flags.config_from_flags()))

`--beta` takes a number, a comma-separated list (one value per filter) or
`learned`.
"""

import dataclasses
import typing

from absl import flags

from keras_interp.apps import config as config_lib
from keras_interp.apps.config import TrainConfig
from keras_interp.data import NEGATIVES_DIR

NONE = "none"  # How None is spelled on the command line.

_HELP = {
    "data_dir": "CUB_200_2011 folder (or parent); default: the embedded "
    "dataset picked by --embedded_dataset.",
    "embedded_dataset": "Embedded dataset when --data_dir is unset: parts "
    "(objects fill most of the image) or scenes (small objects anywhere "
    "over real photos; use --nocrop_to_box).",
    "data_source": "A CUB-format folder, or a prepared TFDS caltech_birds2011.",
    "task": "multi: classify the classes; single: objects vs negatives.",
    "negatives_dir": "Background images for --task=single; default "
    f"<data_dir>/{NEGATIVES_DIR}.",
    "backbone": "A keras_interp.models.BACKBONES name.",
    "weights": "Backbone weights: 'imagenet' (Keras' file, downloaded once "
    "into the Keras cache) or a local file (e.g. from python -m "
    "keras_interp.models.convert_lpips_vgg16); default: random.",
    "trainable_from": "First trainable backbone layer, e.g. block5_conv1 "
    "(VGG16's top block); the layers before it are frozen. Default: all "
    "train.",
    "image_size": "Square input size.",
    "crop_to_box": "Crop to the bounding box.",
    "batch_size": "Global batch size.",
    "epochs": "Epochs.",
    "steps_per_epoch": "Steps per epoch; default: one pass over the "
    "training split.",
    "learning_rate": "Initial SGD rate.",
    "lr_schedule": "cosine, constant, or paper (10x over 10 epochs).",
    "momentum": "SGD momentum.",
    "interpretable": "Interpretable model (--nointerpretable: the identical "
    "ordinary CNN).",
    "category_aware": "Labels reach the filter loss (--nocategory_aware: "
    "label-free Eq. 1).",
    "loss": "Filter loss: the exact -MI, the authors' surrogate, or none "
    "(the mask without a loss).",
    "loss_weight": "Filter-loss weight lambda per filter; default: the "
    "layer's default for --loss.",
    "loss_weight_decay": "inverse_epoch: decay lambda as 1/epoch (paper).",
    "normalization": "Scale of the maps the filter loss scores: mean_max "
    "(scale-free, default) or none (the paper's literal scale, for "
    "reproduction).",
    "beta": "Template slope: a number (paper: 4), a comma-separated list "
    "with one value per filter of each interpretable layer, or 'learned'.",
    "center": "Part location: argmax (paper) or centroid (authors).",
    "apply_mask": "Forward mask on (--noapply_mask: the filter loss without "
    "the mask, an ablation).",
    "strategy": "tf.distribute strategy; multi_worker needs TF_CONFIG.",
    "mixed_precision": "Mixed-precision policy (the filter loss stays "
    "float32).",
    "model_dir": "config.json, checkpoints, model.keras, results.json.",
    "logdir": "TensorBoard dir; default <model_dir>/logs.",
    "resume": "Resume from <model_dir>/backup; a finished run is reported, "
    "not redone. --noresume discards the backup and trains from scratch.",
    "parts": "Landmarks for location instability; default: back,forehead,"
    "tail on CUB, else all.",
    "eval_map": "Map for the instability: masked (paper) or raw (authors).",
    "cache_dir": "Where the embedded dataset is generated; default "
    "$KERAS_INTERP_CACHE or ~/.cache/keras_interp.",
    "seed": "Random seed.",
    "verbose": "Keras verbosity (0, 1, 2).",
}


def parse_beta(text):
    """The `beta` of a `--beta` value: a float, a tuple or `"learned"`.

    Args:
        text: `"4"`, `"4,4,2"` (one value per filter) or `"learned"`; a
            non-string (a flag default) is checked as a `TrainConfig.beta`.

    Raises:
        ValueError: naming the value received and the accepted forms.
    """
    if not isinstance(text, str):
        return config_lib.check_beta(text)
    text = text.strip()
    if text == config_lib.LEARNED_BETA:
        return text
    pieces = text.split(",")
    try:
        values = [float(piece) for piece in pieces]
    except ValueError:
        raise ValueError(
            "`--beta` must be a positive number (e.g. 4), a comma-separated "
            "list of positive numbers with one per filter of each "
            f"interpretable layer (e.g. 4,4,2) or "
            f"{config_lib.LEARNED_BETA!r}. Received: --beta={text!r}."
        ) from None
    return config_lib.check_beta(values if len(values) > 1 else values[0])


class BetaParser(flags.ArgumentParser):
    """absl parser of `--beta` (see `parse_beta`)."""

    syntax_description = "a number, a comma-separated list, or 'learned'"

    def parse(self, argument):
        return parse_beta(argument)

    def flag_type(self):
        return "beta"


def _flag_kind(hint):
    """The flag kind of a field's type hint, e.g. int for `Optional[int]`."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            hint = rest[0]
    if hint == config_lib.Beta:
        return "beta"
    if typing.get_origin(hint) is tuple:
        return "list"
    return hint


def _flag_choices(name):
    return [NONE if c is None else c for c in config_lib.CHOICES[name]]


def define_flags(flag_values=flags.FLAGS):
    """Defines one flag per `TrainConfig` field in `flag_values`.

    Raises:
        ValueError: if a field has no help text, help text has no field, or
            a field has a type no flag kind is known for.
    """
    fields = dataclasses.fields(TrainConfig)
    names = {field.name for field in fields}
    if names != set(_HELP):
        raise ValueError(
            "The flags must match the TrainConfig fields one to one. Fields "
            f"without help text: {sorted(names - set(_HELP))}; help text "
            f"without a field: {sorted(set(_HELP) - names)}. Update _HELP "
            "in keras_interp/apps/train_flags.py."
        )
    hints = typing.get_type_hints(TrainConfig)
    for field in fields:
        name, default, text = field.name, field.default, _HELP[field.name]
        kind = _flag_kind(hints[name])
        common = dict(flag_values=flag_values)
        if name in config_lib.CHOICES:
            flags.DEFINE_enum(
                name, default, _flag_choices(name), text, **common
            )
        elif kind == "beta":
            flags.DEFINE(BetaParser(), name, default, text, **common)
        elif kind == "list":
            flags.DEFINE_list(name, default, text, **common)
        elif kind is bool:
            flags.DEFINE_bool(name, default, text, **common)
        elif kind is int:
            flags.DEFINE_integer(name, default, text, **common)
        elif kind is float:
            flags.DEFINE_float(name, default, text, **common)
        elif kind is str:
            flags.DEFINE_string(name, default, text, **common)
        else:
            raise ValueError(
                f"No flag kind for TrainConfig.{name} of type {hints[name]}. "
                "Add one to keras_interp/apps/train_flags.define_flags."
            )


def config_from_flags(flag_values=flags.FLAGS):
    """The `TrainConfig` of the parsed flags of `define_flags`."""
    values = {}
    for field in dataclasses.fields(TrainConfig):
        value = flag_values[field.name].value
        if field.name in config_lib.CHOICES and value == NONE:
            value = None
        values[field.name] = value
    return TrainConfig(**values)
