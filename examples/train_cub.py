r"""Train an interpretable CNN on CUB-200-2011 (or the embedded part dataset).

Intentionally thin: flags map onto `keras_interp.train.TrainConfig`, and
`keras_interp.train.train_and_evaluate` does the work (and is tested).

    python examples/train_cub.py                      # embedded dataset
    python examples/train_cub.py --embedded_dataset=scenes --nocrop_to_box \
        --image_size=128                              # un-cropped scenes
    python examples/train_cub.py --data_dir=/data/CUB_200_2011 \
        --backbone=vgg16 --weights=/path/vgg16_notop.h5 --image_size=224
    tensorboard --logdir runs/train_cub/logs
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from keras_interp import train  # noqa: E402
from keras_interp.data import synthetic  # noqa: E402

_D = train.TrainConfig()
flags.DEFINE_string(
    "data_dir",
    None,
    "CUB_200_2011 folder (or parent); "
    "default: the embedded dataset picked by --embedded_dataset.",
)
flags.DEFINE_enum(
    "embedded_dataset",
    _D.embedded_dataset,
    list(synthetic.VARIANTS),
    "Embedded dataset when --data_dir is unset: parts (objects fill most "
    "of the image) or scenes (small objects anywhere over real photos; use "
    "--nocrop_to_box).",
)
flags.DEFINE_enum(
    "data_source",
    _D.data_source,
    ["cub", "tfds"],
    "A CUB-format folder, or a prepared TFDS caltech_birds2011.",
)
flags.DEFINE_enum(
    "task",
    _D.task,
    list(train.TASKS),
    "multi: classify the classes; single: objects vs negatives.",
)
flags.DEFINE_string(
    "negatives_dir",
    None,
    "Background images for --task=single; default <data_dir>/negatives.",
)
flags.DEFINE_string(
    "backbone",
    _D.backbone,
    "A keras_interp.models.BACKBONES "
    "name: tiny_vgg, vgg16, vgg19, resnet50, mobilenet_v2, "
    "efficientnet_b0, convnext_tiny.",
)
flags.DEFINE_string(
    "weights",
    None,
    "Backbone weights: 'imagenet' (Keras' file, downloaded once into the "
    "Keras cache) or a local file (e.g. from python -m "
    "keras_interp.models.convert_lpips_vgg16); default: random.",
)
flags.DEFINE_string(
    "trainable_from",
    None,
    "First trainable backbone layer, e.g. block5_conv1 (VGG16's top "
    "block); the layers before it are frozen. Default: all train.",
)
flags.DEFINE_integer("image_size", _D.image_size, "Square input size.")
flags.DEFINE_bool("crop_to_box", _D.crop_to_box, "Crop to the bounding box.")
flags.DEFINE_integer("batch_size", _D.batch_size, "Global batch size.")
flags.DEFINE_integer("epochs", _D.epochs, "Epochs.")
flags.DEFINE_integer(
    "steps_per_epoch",
    None,
    "Steps per epoch; default: one pass over the training split.",
)
flags.DEFINE_float("learning_rate", _D.learning_rate, "Initial SGD rate.")
flags.DEFINE_enum(
    "lr_schedule",
    _D.lr_schedule,
    list(train.LR_SCHEDULES),
    "cosine, constant, or paper (10x over 10 epochs).",
)
flags.DEFINE_float("momentum", _D.momentum, "SGD momentum.")
flags.DEFINE_bool(
    "interpretable",
    _D.interpretable,
    "Interpretable model (--nointerpretable: the identical ordinary CNN).",
)
flags.DEFINE_bool(
    "category_aware",
    _D.category_aware,
    "Labels reach the filter loss (--nocategory_aware: label-free Eq. 1).",
)
flags.DEFINE_enum(
    "loss",
    _D.loss,
    ["mutual_information", "authors"],
    "Filter loss: the exact -MI, or the authors' surrogate.",
)
flags.DEFINE_float(
    "loss_weight",
    None,
    "Filter-loss weight lambda per "
    "filter; default: the layer's default for --loss.",
)
flags.DEFINE_enum(
    "loss_weight_decay",
    None,
    ["inverse_epoch"],
    "Decay lambda as 1/epoch (paper).",
)
flags.DEFINE_enum(
    "normalization",
    _D.normalization,
    ["mean_max", "none"],
    "Scale of the maps the filter loss scores: mean_max (scale-free, "
    "default) or none (the paper's literal scale, for reproduction).",
)
flags.DEFINE_float("beta", _D.beta, "Template slope (paper: 4).")
flags.DEFINE_enum(
    "center",
    _D.center,
    ["argmax", "centroid"],
    "Part location: argmax (paper) or centroid (authors).",
)
flags.DEFINE_bool(
    "apply_mask",
    _D.apply_mask,
    "Forward mask on (--noapply_mask: the filter loss without the mask, an "
    "ablation).",
)
flags.DEFINE_enum(
    "strategy",
    _D.strategy,
    list(train.STRATEGIES),
    "tf.distribute strategy; multi_worker needs TF_CONFIG.",
)
flags.DEFINE_enum(
    "mixed_precision",
    None,
    ["mixed_float16", "mixed_bfloat16"],
    "Mixed-precision policy (the filter loss stays float32).",
)
flags.DEFINE_string(
    "model_dir", _D.model_dir, "Checkpoints, model.keras, results.json."
)
flags.DEFINE_string(
    "logdir", None, "TensorBoard dir; default <model_dir>/logs."
)
flags.DEFINE_bool(
    "resume",
    _D.resume,
    "Resume from <model_dir>/backup; a finished run is reported, not "
    "redone. --noresume discards the backup and trains from scratch.",
)
flags.DEFINE_list(
    "parts",
    None,
    "Landmarks for location instability; "
    "default: back,forehead,tail on CUB, else all.",
)
flags.DEFINE_enum(
    "eval_map",
    _D.eval_map,
    ["masked", "raw"],
    "Map for the instability: masked (paper) or raw (authors).",
)
flags.DEFINE_string(
    "cache_dir",
    None,
    "Where the embedded dataset is "
    "generated; default $KERAS_INTERP_CACHE or "
    "~/.cache/keras_interp.",
)
flags.DEFINE_integer("seed", _D.seed, "Random seed.")
flags.DEFINE_integer("verbose", _D.verbose, "Keras verbosity (0, 1, 2).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    names = [f.name for f in train.dataclasses.fields(train.TrainConfig)]
    values = {name: getattr(flags.FLAGS, name) for name in names}
    if values["normalization"] == "none":
        values["normalization"] = None
    config = train.TrainConfig(**values)
    train.train_and_evaluate(config)


if __name__ == "__main__":
    app.run(main)
