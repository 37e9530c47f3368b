"""Optional source: an already-prepared TFDS `caltech_birds2011` copy.

TFDS' `caltech_birds2011` (version 0.1.1) has images, 200-way labels,
normalised boxes and segmentation masks, but **no part landmarks**
(`docs/method_notes.md`, section 5). `load_tfds_cub` therefore
returns the schema of `make_dataset` with `P = 0` parts, and part-based
metrics (location instability) cannot be computed from it. Use `read_cub`
on the extracted archive when part annotations are needed.

`tensorflow-datasets` is optional and imported only when this loader runs.
"""

import logging
import os

import numpy as np
import tensorflow as tf

from keras_interp.data import pipeline
from keras_interp.data._checks import check_count

TFDS_NAME = "caltech_birds2011"
# TFDS split names for the pipeline's splits.
_TFDS_SPLITS = {"train": "train", "test": "test", "all": "train+test"}
# Shuffle buffer (examples) for TFDS records, which are not indexable.
# About a sixth of the 5,994 training images; records are decoded images.
TFDS_SHUFFLE_BUFFER = 1024

_logger = logging.getLogger(__name__)


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "`load_tfds_cub` needs TensorFlow Datasets, which is not "
            "installed. Run `pip install tensorflow-datasets` (or "
            "`pip install keras_interp[data]`), or read the extracted "
            "archive with `keras_interp.data.read_cub` instead."
        ) from error
    return tfds


def _decode_tfds(example) -> dict:
    image = example["image"]
    shape = tf.shape(image)
    height = tf.cast(shape[0], "float32")
    width = tf.cast(shape[1], "float32")
    # TFDS boxes are normalised [ymin, xmin, ymax, xmax].
    bbox = example["bbox"]
    ymin = tf.minimum(bbox[0], bbox[2]) * height
    ymax = tf.maximum(bbox[0], bbox[2]) * height
    xmin = tf.minimum(bbox[1], bbox[3]) * width
    xmax = tf.maximum(bbox[1], bbox[3]) * width
    return {
        "image": image,
        "box": tf.stack([xmin, ymin, xmax - xmin, ymax - ymin]),
        "label": tf.cast(example["label"], "int32"),
        "parts": tf.zeros([0, 2], "float32"),
        "part_visible": tf.zeros([0], "bool"),
    }


def _decode_tfds_whole(example) -> dict:
    decoded = _decode_tfds(example)
    shape = tf.cast(tf.shape(decoded["image"]), "float32")
    decoded["box"] = tf.stack([0.0, 0.0, shape[1], shape[0]])
    return decoded


def load_tfds_cub(
    data_dir: str | os.PathLike,
    split: str = "train",
    *,
    image_size: int = pipeline.DEFAULT_IMAGE_SIZE,
    batch_size: int = 32,
    crop_to_box: bool = True,
    augment: bool = False,
    shuffle: bool = False,
    seed: int = 0,
    drop_remainder: bool = True,
    include_parts: bool = True,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Reads a prepared TFDS `caltech_birds2011` into the pipeline's schema.

    The copy must already be prepared: this calls
    `tfds.load(..., data_dir=data_dir, download=False)` and never downloads.
    Crop, resize and flip are those of `make_dataset`. The dataset has no
    part landmarks, so `"parts"` is `(B, 0, 2)` and `"part_visible"` is
    `(B, 0)`, and a warning is logged that part metrics will be skipped.

    Args:
        data_dir: TFDS data folder, the parent of
            `caltech_birds2011/<version>/`.
        split: `"train"`, `"test"` or `"all"`.
        image_size: output side `S` in pixels.
        batch_size: examples per batch.
        crop_to_box: crop to the bounding box; otherwise use the whole
            image.
        augment: random horizontal flips.
        shuffle: shuffle files and examples (buffer `TFDS_SHUFFLE_BUFFER`).
        seed: seed of the shuffle and of the flips.
        drop_remainder: drop the last incomplete batch.
        include_parts: return the (empty) `"parts"` and `"part_visible"`.
        repeat: repeat forever.

    Returns:
        A `tf.data.Dataset` of dicts as returned by `make_dataset`, with
        `P = 0`.

    Raises:
        ImportError: if `tensorflow-datasets` is not installed.
        FileNotFoundError: if `data_dir` does not exist or holds no prepared
            copy.
        ValueError: for an unknown `split` or a non-positive size.

    Example:

    >>> train = load_tfds_cub("~/tensorflow_datasets",
    ...                       "train")  # doctest: +SKIP
    """
    split = pipeline._check_split(split)
    image_size = check_count("image_size", image_size, 1)
    batch_size = check_count("batch_size", batch_size, 1)
    path = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"TFDS data folder not found: {path!r}. Pass the folder that "
            f"contains `{TFDS_NAME}/<version>/`, prepared beforehand with "
            f"`tfds.builder('{TFDS_NAME}', data_dir=...).download_and_"
            "prepare()` on a machine with internet access."
        )
    tfds = _import_tfds()
    try:
        dataset = tfds.load(
            TFDS_NAME,
            split=_TFDS_SPLITS[split],
            data_dir=path,
            download=False,
            shuffle_files=shuffle,
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )
    except AssertionError as error:
        # TFDS signals "not prepared" with an AssertionError.
        raise FileNotFoundError(
            f"No prepared `{TFDS_NAME}` under {path!r} ({error}). Expected "
            f"{os.path.join(path, TFDS_NAME, '<version>')}; prepare it with "
            "`download_and_prepare()` where internet is available, or read "
            "the extracted archive with `keras_interp.data.read_cub`."
        ) from error
    _logger.warning(
        "TFDS `%s` has no part landmarks: 'parts' and 'part_visible' have "
        "P=0, so part metrics (location instability) will be skipped. Use "
        "`read_cub` on the extracted CUB_200_2011 archive for parts.",
        TFDS_NAME,
    )
    return pipeline._finish(
        dataset,
        _decode_tfds if crop_to_box else _decode_tfds_whole,
        num_examples=None,
        shuffle_buffer=TFDS_SHUFFLE_BUFFER,
        image_size=image_size,
        batch_size=batch_size,
        augment=augment,
        shuffle=shuffle,
        seed=seed,
        drop_remainder=drop_remainder,
        repeat=repeat,
        flip_perm=np.zeros((0,), dtype="int32"),
        include_parts=include_parts,
        include_part_mask=False,
    )
