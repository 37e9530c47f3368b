"""`TrainConfig`: every setting of a training run, frozen and validated.

`keras_interp.apps.train.train_and_evaluate` runs a `TrainConfig`;
`keras_interp.apps.train_flags` generates the command-line flags of
`examples/train_cub.py` from its fields, with the choices of `CHOICES`.
The config is written to `<model_dir>/config.json` before training starts
(`TrainConfig.from_json` reads it back) and kept under `"config"` in
`results.json`.
"""

import dataclasses
import json
import math
from typing import Optional
from typing import Tuple
from typing import Union

from keras_interp import losses
from keras_interp import models
from keras_interp import templates
from keras_interp.apps import schedules
from keras_interp.apps import strategies
from keras_interp.data import synthetic
from keras_interp.evaluation import feature_maps
from keras_interp.layers.base_interpretable import LOSS_WEIGHT_DECAYS
from keras_interp.layers.base_interpretable import LOSSES

TASKS = ("multi", "single")
DATA_SOURCES = ("cub", "tfds")
PRECISIONS = (None, "mixed_float16", "mixed_bfloat16")
LEARNED_BETA = "learned"
# The allowed values of every setting that takes one of a few; the flags
# of `examples/train_cub.py` take their choices from here.
CHOICES = {
    "embedded_dataset": synthetic.VARIANTS,
    "data_source": DATA_SOURCES,
    "task": TASKS,
    "backbone": tuple(models.BACKBONES),
    "lr_schedule": schedules.LR_SCHEDULES,
    "loss": LOSSES,
    "loss_weight_decay": LOSS_WEIGHT_DECAYS,
    "normalization": losses.NORMALIZATIONS,
    "center": templates.CENTERS,
    "strategy": strategies.STRATEGIES,
    "mixed_precision": PRECISIONS,
    "eval_map": feature_maps.MAPS,
}

Beta = Union[float, str, Tuple[float, ...]]


def check_beta(beta):
    """The `beta` setting, normalised: a float, a tuple of floats, "learned".

    Args:
        beta: a positive number (one slope for every filter), a non-empty
            sequence of positive numbers (one per filter of each
            interpretable layer), or `"learned"` (the authors' learned
            slope, see `InterpretableMask`).

    Raises:
        ValueError: naming the value received and the accepted forms.
    """
    if isinstance(beta, str) and beta == LEARNED_BETA:
        return beta
    values = beta if isinstance(beta, (list, tuple)) else (beta,)
    if values and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        values = tuple(float(v) for v in values)
        if all(math.isfinite(v) and v > 0 for v in values):
            return values if isinstance(beta, (list, tuple)) else values[0]
    raise ValueError(
        "`beta` must be a positive number (e.g. "
        f"{templates.DEFAULT_BETA}, the paper's), a non-empty list of "
        "positive numbers (one per filter of each interpretable layer, "
        f"e.g. '4,4,2' on the command line) or {LEARNED_BETA!r}. "
        f"Received: beta={beta!r}."
    )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a run; `examples/train_cub.py` maps flags onto it.

    Frozen, and validated on construction (a ValueError names the first bad
    setting); derive variants with `dataclasses.replace`. Lists (`beta`,
    `parts`) are stored as tuples.

    Attributes:
        data_dir: extracted `CUB_200_2011` folder (or its parent), or a TFDS
            data dir with `data_source="tfds"`. None: the embedded synthetic
            part dataset, generated into the cache on first use.
        embedded_dataset: the embedded dataset that `data_dir=None` uses:
            `"parts"` (objects filling most of the image) or `"scenes"`
            (smaller objects anywhere over real photos, 300 test images per
            class; use with `crop_to_box=False`). See
            `keras_interp.data.synthetic`.
        data_source: `"cub"` (a CUB-format folder) or `"tfds"` (an already
            prepared `caltech_birds2011`; it has no part landmarks).
        task: `"multi"`: classify the classes; `"single"`: the paper's
            single-category task, objects vs. background images from
            `negatives_dir`.
        negatives_dir: folder of background images for `task="single"`;
            default `<data_dir>/negatives` (`NEGATIVES_DIR`).
        backbone: a `models.BACKBONES` name.
        weights: backbone weights: None (random), `"imagenet"` (Keras'
            official file, downloaded once into the Keras cache) or a local
            file, e.g. from `keras_interp.models.convert_lpips_vgg16`; the
            preprocessing follows the file.
        trainable_from: the first trainable backbone layer (e.g.
            `"block5_conv1"`: only VGG16's top block is fine-tuned); None:
            the whole backbone trains.
        image_size: square input size.
        crop_to_box: crop objects to their bounding box (the paper does).
        batch_size: global batch size.
        epochs: number of epochs.
        steps_per_epoch: training steps per epoch; None: one pass.
        learning_rate: initial SGD learning rate.
        lr_schedule: `"cosine"`, `"constant"` or `"paper"` (10x log-linear
            decay over 10 epochs, then constant); see `apps.schedules`.
        momentum: SGD momentum (the authors: 0.9).
        interpretable: build the interpretable model, or the ordinary one.
        category_aware: pass the labels to the interpretable layers (the
            category-aware loss) or not (the label-free Eq. 1).
        loss, loss_weight, loss_weight_decay, normalization, center,
            apply_mask: the interpretable layers' arguments (see
            `InterpretableMask`); `center` defaults to
            `templates.DEFAULT_CENTER`, like the layers'.
        beta: the template slope: a positive float (default
            `templates.DEFAULT_BETA`, the paper's 4), a tuple with one
            value per filter of each interpretable layer, or `"learned"`.
        strategy: `"default"`, `"mirrored"` or `"multi_worker"` (a custom
            loop; needs `TF_CONFIG`).
        mixed_precision: None, `"mixed_float16"` or `"mixed_bfloat16"`.
        model_dir: where `config.json`, checkpoints, the final
            `model.keras` and `results.json` go.
        logdir: TensorBoard directory; default `<model_dir>/logs`.
        resume: continue from the backup in `<model_dir>/backup`, if any.
            A run that already finished with the same settings is
            reported, not redone; one whose training finished but whose
            evaluation did not is evaluated on the backup's weights.
            False: discard the backup and train from scratch.
        parts: landmark names for location instability; default: the
            authors' back/forehead/tail when present, else every part.
        eval_map: `"masked"` (paper) or `"raw"` (authors' code).
        cache_dir: where the synthetic dataset is generated.
        seed: seed of initialisation, shuffling and augmentation.
        verbose: Keras verbosity.
    """

    data_dir: Optional[str] = None
    embedded_dataset: str = "parts"
    data_source: str = "cub"
    task: str = "multi"
    negatives_dir: Optional[str] = None
    backbone: str = "tiny_vgg"
    weights: Optional[str] = None
    trainable_from: Optional[str] = None
    image_size: int = 64
    crop_to_box: bool = True
    batch_size: int = 16
    epochs: int = 30
    steps_per_epoch: Optional[int] = None
    learning_rate: float = 0.05
    lr_schedule: str = "cosine"
    momentum: float = 0.9
    interpretable: bool = True
    category_aware: bool = True
    loss: Optional[str] = "mutual_information"
    loss_weight: Optional[float] = None
    loss_weight_decay: Optional[str] = None
    normalization: Optional[str] = losses.DEFAULT_NORMALIZATION
    beta: Beta = templates.DEFAULT_BETA
    center: str = templates.DEFAULT_CENTER
    apply_mask: bool = True
    strategy: str = "default"
    mixed_precision: Optional[str] = None
    model_dir: str = "runs/train_cub"
    logdir: Optional[str] = None
    resume: bool = True
    parts: Optional[Tuple[str, ...]] = None
    eval_map: str = "masked"
    cache_dir: Optional[str] = None
    seed: int = 0
    verbose: int = 1

    def __post_init__(self):
        # Frozen: normalise through object.__setattr__, before validating.
        object.__setattr__(self, "beta", check_beta(self.beta))
        if isinstance(self.parts, (list, tuple)):
            object.__setattr__(self, "parts", tuple(self.parts))
        self.validate()

    @classmethod
    def from_json(cls, path):
        """The config saved at `path` (e.g. `<model_dir>/config.json`)."""
        with open(path) as f:
            values = json.load(f)
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"{path!r} holds settings that `TrainConfig` does not have: "
                f"{unknown}. It was written by another version of "
                "keras_interp; remove them or rerun with this version."
            )
        return cls(**values)

    def validate(self):
        """Raises a ValueError naming the first bad setting; returns self."""
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"`{name}` must be one of {allowed}. Received: "
                    f"{name}={getattr(self, name)!r}."
                )
        if self.data_dir and self.embedded_dataset != "parts":
            raise ValueError(
                "`embedded_dataset` picks the dataset used when `data_dir` "
                "is None. Received: embedded_dataset="
                f"{self.embedded_dataset!r} with data_dir={self.data_dir!r}. "
                "Unset one of them."
            )
        for name in ("image_size", "batch_size", "epochs"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or (value < 1)
            ):
                raise ValueError(
                    f"`{name}` must be a positive int. Received: "
                    f"{name}={value!r}."
                )
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(
                "`steps_per_epoch` must be a positive int or None. Received: "
                f"{self.steps_per_epoch!r}."
            )
        if not self.learning_rate > 0:
            raise ValueError(
                "`learning_rate` must be positive. Received: "
                f"{self.learning_rate!r}."
            )
        return self
