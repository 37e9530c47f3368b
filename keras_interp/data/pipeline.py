"""`tf.data` input pipeline for CUB-format datasets.

Decoding ("what is in the file": `_decode_*`) is kept apart from
preprocessing ("what the model needs": `preprocess`). Every source
(`make_dataset` for a `CubIndex`, `load_tfds_cub` for TFDS) decodes into the
same intermediate example and shares `preprocess`, so train and eval differ
only in the flip augmentation.

Output batches are dicts:

| key | dtype | shape | content |
| --- | --- | --- | --- |
| `"image"` | float32 | `(B, S, S, 3)` | RGB in `[0, 255]`, not normalised |
| `"label"` | int32 | `(B,)` | 0-based class, or 1/0 object/negative |
| `"parts"` | float32 | `(B, P, 2)` | landmark `[x, y]` in output pixels |
| `"part_visible"` | bool | `(B, P)` | landmark annotated and inside |
| `"part_mask"` | uint8 | `(B, S, S)` | part-id map, 0 = none (optional) |

The image is not normalised: the model applies its backbone's
`preprocess_input`.

Coordinate conventions. Coordinates are continuous: an image of width `W`
spans `[0, W)` in x, pixel column `j` covers `[j, j + 1)` and its centre is
`j + 0.5`. Landmarks are used as annotated (the authors' `readPartTruth.m`
also maps CUB clicks as `(p - box origin) / box size * 224`). Cropping to a
box `[x, y, w, h]` keeps the whole pixels that the box touches (the box is
rounded outward, then clipped to the image); resizing the crop of
`[x0, x1) x [y0, y1)` to `S x S` with half-pixel centres (what
`tf.image.resize` does) maps a point exactly as

    x' = (x - x0) * S / (x1 - x0),    y' = (y - y0) * S / (y1 - y0),

which for CUB's integer boxes is `(x - box_x) * S / box_w`. A landmark with
`x'` or `y'` outside `[0, S)` becomes invisible. The output pixel that holds
a landmark is `(row, col) = (floor(y'), floor(x'))`. A horizontal flip maps
`x' -> S - x'` (pixel `j -> S - 1 - j`) and swaps each "left ..." part with
its "right ..." counterpart, in `parts`, `part_visible` and `part_mask`.
Invisible landmarks are `[0, 0]`, as in CUB's `part_locs.txt`.
"""

import functools
import re
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_interp.data._checks import check_count
from keras_interp.data.cub import CubIndex

# Decode, crop and resize run in parallel; tf.data picks the thread count.
from keras_interp.data.decode_failures import NUM_PARALLEL_CALLS
from keras_interp.data.decode_failures import decode_naming_failures
from keras_interp.data.decode_failures import describe_files
from keras_interp.data.negatives import NEGATIVE_EXTENSIONS  # noqa: F401
from keras_interp.data.negatives import NEGATIVE_LABEL
from keras_interp.data.negatives import OBJECT_LABEL
from keras_interp.data.negatives import read_negatives  # noqa: F401
from keras_interp.data.negatives import resolve_negatives

SPLITS = ("train", "test", "all")
# VGG-16's input size in the paper and the authors' code (docs/method_notes.md).
DEFAULT_IMAGE_SIZE = 224
# Antialias when shrinking, as MATLAB's `imresize` does by default (the
# authors resize in MATLAB, bilinear; docs/method_notes.md).
RESIZE_ANTIALIAS = True
# Box edges within this many pixels of an integer are treated as that
# integer before rounding outward (normalised TFDS boxes are not exact).
_BOX_ROUNDING_TOLERANCE = 1e-3
_SIDE_PATTERN = re.compile(r"\b(left|right)\b", flags=re.IGNORECASE)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(
            f"`split` must be one of {SPLITS}. Received: split={split!r}."
        )
    return split


def flip_permutation(part_names: Sequence[str]) -> np.ndarray:
    """Index map that swaps left and right parts under a horizontal flip.

    A part whose name contains the word "left" (or "right") is swapped with
    the part whose name has that word replaced by its opposite, case
    preserved: "left wing" <-> "right wing", "Left Eye" <-> "Right Eye".
    Parts without a counterpart keep their index.

    Args:
        part_names: the `P` part names, in part-id order.

    Returns:
        int32 `(P,)` array `perm` such that, after flipping an image,
        `parts_flipped = parts_mirrored[perm]`.

    Example:

    >>> flip_permutation(["back", "left eye", "right eye"]).tolist()
    [0, 2, 1]
    """

    def swap(match):
        word = match.group(0)
        other = "right" if word.lower() == "left" else "left"
        if word.isupper():
            return other.upper()
        if word[0].isupper():
            return other.capitalize()
        return other

    names = [str(name) for name in part_names]
    position = {name: i for i, name in enumerate(names)}
    return np.array(
        [
            position.get(_SIDE_PATTERN.sub(swap, name), i)
            for i, name in enumerate(names)
        ],
        dtype="int32",
    )


def _split_rows(index: CubIndex, split: str) -> np.ndarray:
    if split == "train":
        return np.flatnonzero(index.is_train)
    if split == "test":
        return np.flatnonzero(~index.is_train)
    return np.arange(index.num_images)


def dataset_sizes(
    index: CubIndex,
    *,
    split: str = "train",
    negatives=None,
    batch_size: int | None = None,
    drop_remainder: bool = True,
) -> dict[str, int]:
    """Counts what `make_dataset` yields for one epoch, for logging.

    Args:
        index: the dataset, from `read_cub`.
        split: `"train"`, `"test"` or `"all"`.
        negatives: as in `make_dataset`.
        batch_size: if given, the number of batches is also returned.
        drop_remainder: as in `make_dataset`.

    Returns:
        A dict with `"objects"`, `"negatives"` and `"examples"` (their sum),
        plus `"batches"` when `batch_size` is given.

    Example:

    >>> dataset_sizes(index, split="test")  # doctest: +SKIP
    {'objects': 5794, 'negatives': 0, 'examples': 5794}
    """
    split = _check_split(split)
    num_objects = int(_split_rows(index, split).size)
    negative_paths = resolve_negatives(negatives, split)
    num_negatives = 0 if negative_paths is None else int(negative_paths.size)
    sizes = {
        "objects": num_objects,
        "negatives": num_negatives,
        "examples": num_objects + num_negatives,
    }
    if batch_size is not None:
        batch_size = check_count("batch_size", batch_size, 1)
        total = sizes["examples"]
        sizes["batches"] = (
            total // batch_size if drop_remainder else -(-total // batch_size)
        )
    return sizes


def _crop_window(box, height, width):
    """Integer crop `[x0, y0, x1, y1)` covering `box`, inside the image."""
    tolerance = _BOX_ROUNDING_TOLERANCE
    width_f = tf.cast(width, "float32")
    height_f = tf.cast(height, "float32")
    x0 = tf.floor(box[0] + tolerance)
    y0 = tf.floor(box[1] + tolerance)
    x1 = tf.math.ceil(box[0] + box[2] - tolerance)
    y1 = tf.math.ceil(box[1] + box[3] - tolerance)
    x0 = tf.clip_by_value(x0, 0.0, width_f - 1.0)
    y0 = tf.clip_by_value(y0, 0.0, height_f - 1.0)
    x1 = tf.clip_by_value(x1, x0 + 1.0, width_f)
    y1 = tf.clip_by_value(y1, y0 + 1.0, height_f)
    return tf.cast(tf.stack([x0, y0, x1, y1]), "int32")


def preprocess(
    example: dict,
    flip,
    *,
    image_size: int,
    flip_perm: np.ndarray,
    include_part_mask: bool,
) -> dict:
    """Crops, resizes and optionally flips one decoded example.

    Args:
        example: decoded example with `"image"` uint8 `(H, W, 3)`, `"box"`
            float32 `[x, y, w, h]` pixels (the crop; the whole image when no
            cropping), `"label"` int32, `"parts"` float32 `(P, 2)`,
            `"part_visible"` bool `(P,)` and, with `include_part_mask`,
            `"part_mask"` uint8 `(H, W, 1)`.
        flip: scalar bool tensor, whether to mirror the example.
        image_size: output side `S`.
        flip_perm: `flip_permutation(part_names)`.
        include_part_mask: whether to process and return `"part_mask"`.

    Returns:
        The output dict described in the module docstring, unbatched.
    """
    image = example["image"]
    shape = tf.shape(image)
    window = _crop_window(example["box"], shape[0], shape[1])
    x0, y0, x1, y1 = window[0], window[1], window[2], window[3]
    size = (image_size, image_size)

    crop = image[y0:y1, x0:x1]
    image = tf.image.resize(
        crop, size, method="bilinear", antialias=RESIZE_ANTIALIAS
    )
    image = tf.clip_by_value(image, 0.0, 255.0)

    origin = tf.cast(tf.stack([x0, y0]), "float32")
    extent = tf.cast(tf.stack([x1 - x0, y1 - y0]), "float32")
    parts = (example["parts"] - origin) * (float(image_size) / extent)
    inside = tf.reduce_all((parts >= 0.0) & (parts < image_size), axis=-1)
    visible = example["part_visible"] & inside

    mirrored = tf.stack([image_size - parts[:, 0], parts[:, 1]], axis=-1)
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    parts = tf.cond(flip, lambda: tf.gather(mirrored, flip_perm), lambda: parts)
    visible = tf.cond(
        flip, lambda: tf.gather(visible, flip_perm), lambda: visible
    )
    parts = tf.where(visible[:, None], parts, 0.0)
    output = {
        "image": image,
        "label": example["label"],
        "parts": parts,
        "part_visible": visible,
    }

    if include_part_mask:
        mask = example["part_mask"][y0:y1, x0:x1]
        mask = tf.image.resize(mask, size, method="nearest")[:, :, 0]
        # Part ids are 1-based; id k moves to flip_perm[k - 1] + 1.
        lookup = tf.constant(
            np.concatenate([[0], flip_perm + 1]).astype("int32")
        )
        mask = tf.cond(
            flip,
            lambda: tf.gather(lookup, tf.reverse(tf.cast(mask, "int32"), [1])),
            lambda: tf.cast(mask, "int32"),
        )
        output["part_mask"] = tf.cast(mask, "uint8")
    return output


def _finish(
    dataset: tf.data.Dataset,
    decode_fn,
    *,
    num_examples: int | None,
    image_size: int,
    batch_size: int,
    augment: bool,
    shuffle: bool,
    seed: int,
    drop_remainder: bool,
    repeat: bool,
    flip_perm: np.ndarray,
    include_parts: bool,
    include_part_mask: bool,
    shuffle_buffer: int | None = None,
    describe_fn=None,
) -> tf.data.Dataset:
    """Shuffle, repeat, decode, preprocess, batch and prefetch.

    With `describe_fn` (example -> scalar string naming its files), an
    example that fails to load stops the iteration with an error naming
    its files; see `decode_failures.decode_naming_failures`.
    """
    if shuffle:
        dataset = dataset.shuffle(
            shuffle_buffer or num_examples,
            seed=seed,
            reshuffle_each_iteration=True,
        )
    if repeat:
        dataset = dataset.repeat()
    # One random int64 per element, redrawn on each new iteration (epoch),
    # turned into a stateless per-example flip seed: reproducible for a
    # given `seed`, yet different from epoch to epoch.
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    dataset = tf.data.Dataset.zip((dataset, randoms))
    flip_seed = tf.constant(seed, "int64")

    def transform(decoded, random):
        if augment:
            coin = tf.random.stateless_uniform(
                [], seed=tf.stack([flip_seed, random])
            )
            flip = coin < 0.5
        else:
            flip = tf.constant(False)
        output = preprocess(
            decoded,
            flip,
            image_size=image_size,
            flip_perm=flip_perm,
            include_part_mask=include_part_mask,
        )
        if not include_parts:
            del output["parts"], output["part_visible"]
        return output

    if describe_fn is None:
        dataset = dataset.map(
            lambda example, random: transform(decode_fn(example), random),
            num_parallel_calls=NUM_PARALLEL_CALLS,
        )
    else:
        dataset = decode_naming_failures(
            dataset,
            decode_fn,
            describe_fn,
            num_examples=None if repeat else num_examples,
        )
        dataset = dataset.map(
            lambda decoded, random, count: transform(decoded, random),
            num_parallel_calls=NUM_PARALLEL_CALLS,
        )
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _decode_file(example, *, include_part_mask: bool) -> dict:
    data = tf.io.read_file(example["path"])
    # decode_image handles JPEG (via decode_jpeg) and PNG negatives;
    # channels=3 also converts CUB's few grayscale JPEGs to RGB.
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    shape = tf.shape(image)
    whole = tf.cast(tf.stack([0, 0, shape[1], shape[0]]), "float32")
    decoded = {
        "image": image,
        "box": tf.where(example["use_box"], example["box"], whole),
        "label": example["label"],
        "parts": example["parts"],
        "part_visible": example["part_visible"],
    }
    if include_part_mask:
        decoded["part_mask"] = tf.cond(
            example["has_mask"],
            lambda: tf.io.decode_png(
                tf.io.read_file(example["mask_path"]), channels=1
            ),
            lambda: tf.zeros([shape[0], shape[1], 1], "uint8"),
        )
    return decoded


def make_dataset(
    index: CubIndex,
    *,
    split: str = "train",
    image_size: int = DEFAULT_IMAGE_SIZE,
    batch_size: int = 32,
    crop_to_box: bool = True,
    augment: bool = False,
    shuffle: bool = False,
    seed: int = 0,
    drop_remainder: bool = True,
    include_parts: bool = True,
    include_part_masks: bool = False,
    negatives=None,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Builds a batched `tf.data.Dataset` from a `CubIndex`.

    Each image is read and decoded in parallel (`NUM_PARALLEL_CALLS`),
    cropped to its bounding box (as the paper does) or kept whole, resized
    bilinearly to `image_size x image_size` without keeping the aspect ratio
    (as the authors do), and, with `augment`, mirrored with probability 1/2.
    Landmarks and part masks follow every step exactly; see the module
    docstring for the coordinate conventions.

    With `negatives`, the dataset is the paper's single-category task: every
    object of `index` gets label `OBJECT_LABEL` (1) and every background
    image `NEGATIVE_LABEL` (0). Background images are used whole, have no
    visible part and an all-zero part mask. Their first half (rounded up, in
    name order) is the train split and the rest the test split, as in the
    authors' `getImdb_cub200.m`. Without `shuffle`, objects come first.

    A file that cannot be read or decoded stops the iteration with an
    `InvalidArgumentError` that names it (TensorFlow's own decoder error
    names no file). Files that `read_cub(check_images=True)` (the default)
    has already decoded cannot fail, so for such an index without
    negatives the pipeline skips the bookkeeping this needs (two `scan`
    stages and `ignore_errors`, which only turns a failure into that error
    and never skips an example; about 0.1 ms of CPU per example on a busy
    2-core machine, against about 2.5 ms to decode and resize a CUB
    image). A file that changes on disk after `read_cub` then fails with
    TensorFlow's message alone.

    Args:
        index: the dataset, from `read_cub`.
        split: `"train"`, `"test"` or `"all"`.
        image_size: output side `S` in pixels.
        batch_size: examples per batch.
        crop_to_box: crop objects to their bounding box; otherwise use the
            whole image.
        augment: random horizontal flips (left/right parts swapped).
        shuffle: shuffle the examples, anew each epoch.
        seed: seed of the shuffle and of the flips. The same seed gives the
            same order and the same flips.
        drop_remainder: drop the last incomplete batch, which keeps the
            batch dimension static.
        include_parts: return `"parts"` and `"part_visible"`.
        include_part_masks: return `"part_mask"`; needs
            `index.part_mask_paths`.
        negatives: `None`, a folder of background images (see
            `read_negatives`) or a list of image paths.
        repeat: repeat forever (use `steps_per_epoch` in `fit`).

    Returns:
        A `tf.data.Dataset` of dicts: `"image"` float32 `(B, S, S, 3)` in
        `[0, 255]`, `"label"` int32 `(B,)`, `"parts"` float32 `(B, P, 2)`,
        `"part_visible"` bool `(B, P)` and, if requested, `"part_mask"`
        uint8 `(B, S, S)`.

    Raises:
        ValueError: for an unknown `split`, a non-positive size, part masks
            requested from an index without them, an empty split, or fewer
            examples than one batch with `drop_remainder=True`.
        FileNotFoundError: if the `negatives` folder does not exist.

    The iteration raises `tf.errors.InvalidArgumentError` naming the file
    if an image or part mask that `read_cub` did not decode fails to
    decode.

    Example:

    >>> index = read_cub("/data/CUB_200_2011")  # doctest: +SKIP
    >>> train = make_dataset(index, split="train", augment=True,
    ...                      shuffle=True)  # doctest: +SKIP
    >>> batch = next(iter(train))  # doctest: +SKIP
    >>> batch["image"].shape, batch["parts"].shape  # doctest: +SKIP
    (TensorShape([32, 224, 224, 3]), TensorShape([32, 15, 2]))
    """
    split = _check_split(split)
    image_size = check_count("image_size", image_size, 1)
    batch_size = check_count("batch_size", batch_size, 1)
    if include_part_masks and index.part_mask_paths is None:
        raise ValueError(
            "`include_part_masks=True` needs part masks, but the dataset at "
            f"{index.data_dir!r} has no `part_segmentations/` folder. Pass "
            "`include_part_masks=False`."
        )

    rows = _split_rows(index, split)
    num_parts = index.num_parts
    columns = {
        "path": index.image_paths[rows],
        "box": index.boxes[rows].astype("float32"),
        "use_box": np.full(rows.size, bool(crop_to_box)),
        "label": index.labels[rows].astype("int32"),
        "parts": index.part_locs[rows].astype("float32"),
        "part_visible": index.part_visible[rows].astype(bool),
    }
    if include_part_masks:
        columns["mask_path"] = index.part_mask_paths[rows]
        columns["has_mask"] = np.ones(rows.size, dtype=bool)

    negative_paths = resolve_negatives(negatives, split)
    if negative_paths is not None:
        count = negative_paths.size
        columns["label"] = np.full(rows.size, OBJECT_LABEL, dtype="int32")
        extra = {
            "path": negative_paths,
            "box": np.zeros((count, 4), dtype="float32"),
            "use_box": np.zeros(count, dtype=bool),
            "label": np.full(count, NEGATIVE_LABEL, dtype="int32"),
            "parts": np.zeros((count, num_parts, 2), dtype="float32"),
            "part_visible": np.zeros((count, num_parts), dtype=bool),
        }
        if include_part_masks:
            extra["mask_path"] = np.full(count, "", dtype=str)
            extra["has_mask"] = np.zeros(count, dtype=bool)
        columns = {
            key: np.concatenate([value, extra[key]])
            for key, value in columns.items()
        }

    num_examples = int(columns["label"].shape[0])
    if num_examples == 0:
        raise ValueError(
            f"split={split!r} of {index.data_dir!r} has no examples. Use "
            "another split."
        )
    if drop_remainder and num_examples < batch_size:
        raise ValueError(
            f"split={split!r} has {num_examples} examples, fewer than "
            f"batch_size={batch_size}, so `drop_remainder=True` would yield "
            "no batch. Lower `batch_size` or pass `drop_remainder=False`."
        )

    describe_fn = None
    if negative_paths is not None or not index.images_checked:
        # Some files were not decoded by `read_cub(check_images=True)`:
        # make a decoding failure name its file.
        describe_fn = functools.partial(
            describe_files, include_part_mask=include_part_masks
        )
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    return _finish(
        dataset,
        lambda example: _decode_file(
            example, include_part_mask=include_part_masks
        ),
        num_examples=num_examples,
        image_size=image_size,
        batch_size=batch_size,
        augment=augment,
        shuffle=shuffle,
        seed=seed,
        drop_remainder=drop_remainder,
        repeat=repeat,
        flip_perm=flip_permutation(index.part_names),
        include_parts=include_parts,
        include_part_mask=include_part_masks,
        describe_fn=describe_fn,
    )
