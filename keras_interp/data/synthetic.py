"""The embedded datasets: generated part datasets in the CUB folder format.

Two variants, drawn from the same five object categories and seven parts
(`keras_interp.data.shapes`), written as `CUB_200_2011`-format folders so
that `read_cub` and `make_dataset` read them like the real data:

- `write_synthetic_parts` (variant `"parts"`, the default): 128 px images in
  which the object fills 35-80 % of the side, over synthetic clutter. Close
  to what the model sees after cropping to the box.
- `write_synthetic_scenes` (variant `"scenes"`): 192 px un-cropped scenes,
  small objects (25-60 % of the side) anywhere inside the image over crops
  of real photos, with test splits large enough for the top-100 of
  location instability to select. For `crop_to_box=False` training.

`default_data_dir(variant=...)` generates either once into a cache folder.
They stand in for CUB in tests, smoke runs, machines without the real data
and controlled studies; they are not benchmarks.

What is drawn. Each object is one of five categories seen from above, facing
up: `Swallow`, `Moth`, `Beetle`, `Dragonfly` and `Plane`. All are built from
the same primitives (ellipses, rectangles, triangles, thick polylines).
Categories differ in the *shape and arrangement* of their parts, never in
colour (the table of parts per category is in `keras_interp.data.shapes`).

The parts (`PART_NAMES`) are `back`, `head`, `tail`, `left wing`,
`right wing`, `left leg` and `right leg`; a category without a part always
marks it invisible. "Left" is the object's own left, which in the
upright view is image-left, so a horizontal flip must swap the left and
right labels (as in CUB). Every object is chiral (its right appendages are
8-20 % smaller than its left ones) so that a mirrored object looks different.
Each part has one landmark on its exposed surface (e.g. the head centre, a
point two thirds out on a wing, a foot).

What varies, per image: the category's shape parameters (about +-15 %), the
mirror (probability 1/2, labels swapped accordingly), rotation, scale and
position (per variant, below), the colour of each part role (uniform RGB,
the same distribution for every category) and an optional stripe texture
per part role.

Why it is hard. Backgrounds are textured or real photos, and cluttered by
distractors: detached parts of random categories (loose wings, heads, tails,
legs) at object-like scales and any rotation, and blobs, so the presence of
a part-like shape neither identifies the category nor locates the object's
parts; only the arrangement does. Occluders may be drawn over the object.
Pixel noise and JPEG artefacts follow. A landmark is visible only if it is
inside the image and its pixel in the part mask shows that part, so
occluded and cropped-out parts are invisible, as in CUB. Background-only
negatives (same backgrounds and distractors, no object) support the
single-category task.

The `"parts"` variant (`renderer.PARTS_LAYOUT`): rotation +-30 degrees,
the object's longer box side 35-80 % of the image, position such that the
object may stick out of the image by up to 15 % of its size; backgrounds
are a smooth random colour field, optional stripes and random opaque blobs
(`renderer.textured_background`); 2-6 distractors, and in 30 % of object
images one or two occluders; 2-8 distractors per negative. Within each
category, images 0, 1, 2 of every 5 are train and 3, 4 test (60/40).
Defaults: 5 x 120 images (360 train, 240 test, 48 test per class), 200
negatives (100 train, 100 test); about 6 s of CPU time to generate, 9 MB.

The `"scenes"` variant (`renderer.SCENES_LAYOUT`): rotation +-20 degrees,
the object's longer box side 25-60 % of the image, position uniform with the
whole object inside the image (so landmarks are lost only to occlusion);
backgrounds are random crops of nine real public-domain / CC0 photos
(`keras_interp.data.photos`); 0-3 distractors, and in 20 % of object images
one or two occluders; 1-5 distractors per negative. Within each category,
images 1, 3, 5, ... are train and 2, 4, 6, ... test (50/50). Defaults:
5 x 600 images of 192 px (1500 train, 1500 test), 1200 negatives (600
train, 600 test): the single-category test split has 1500 objects and 600
negatives, the multi-category one 300 images per class. About 50 s of CPU
time to generate, 83 MB.

The scenes are for `crop_to_box=False`: cropping to the box turns them back
into object-centred images. Uncropped, the landmarks spread over the whole
image. On the default test splits, a "filter" fixed at the best single
place for the back, head and tail scores a location instability (Sec.
5.2.2; all visible images, per category) of 0.076 on the scenes, against
0.023 on the parts variant cropped to the box (0.078 uncropped).

Files written under `root`: the `read_cub` layout, plus the part masks in
`part_segmentations/`, the negatives in `negatives/` and the generator
settings in `synthetic_info.json` (listed in `keras_interp.data.cub_writer`).
Bounding boxes are the tight box of the object's pixels (occluded ones
included) clipped to the image.

Determinism: image `i` is drawn from `numpy.random.default_rng([seed, kind,
i])` (one `kind` per variant and per objects / negatives), with Pillow and a
fixed JPEG quality, so the same seed gives byte-identical files (for a
given Pillow/libjpeg build), independent of generation order.
"""

import os

import numpy as np

from keras_interp.data import cub_writer
from keras_interp.data import photos
from keras_interp.data import renderer
from keras_interp.data._checks import check_count
from keras_interp.data.cub_writer import JPEG_QUALITY  # noqa: F401
from keras_interp.data.negatives import NEGATIVES_DIR  # noqa: F401
from keras_interp.data.renderer import SUPERSAMPLING  # noqa: F401
from keras_interp.data.shapes import CATEGORY_NAMES
from keras_interp.data.shapes import CHIRALITY_RANGE  # noqa: F401
from keras_interp.data.shapes import PART_NAMES
from keras_interp.data.shapes import SHAPE_JITTER  # noqa: F401

# Bump when a variant's output changes; they name the cache folders.
SYNTHETIC_VERSION = 1
SCENES_VERSION = 1
VARIANTS = ("parts", "scenes")
CACHE_ENV_VAR = "KERAS_INTERP_CACHE"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "keras_interp")
# The "parts" variant's placement (see `renderer.PARTS_LAYOUT`).
OBJECT_SCALE_RANGE = renderer.PARTS_LAYOUT.scale_range
MAX_ROTATION_DEGREES = renderer.PARTS_LAYOUT.max_rotation_degrees
MAX_OVERHANG = renderer.PARTS_LAYOUT.max_overhang
OCCLUSION_PROBABILITY = renderer.PARTS_LAYOUT.occlusion_probability
# Within a category, image i is train iff i % SPLIT_PERIOD < SPLIT_TRAIN:
# 60/40 for "parts", 50/50 for "scenes".
SPLIT_PERIOD = 5
SPLIT_TRAIN = 3
SCENES_SPLIT_PERIOD = 2
SCENES_SPLIT_TRAIN = 1
# Below this the thinnest parts (legs) vanish at the output resolution.
_MIN_IMAGE_SIZE = 32
# The first entry of the seed sequence of each image, per variant.
_OBJECT_KIND = 0
_NEGATIVE_KIND = 1
_SCENE_OBJECT_KIND = 2
_SCENE_NEGATIVE_KIND = 3


def _check_num_classes(num_classes):
    if isinstance(num_classes, bool) or num_classes not in range(
        1, len(CATEGORY_NAMES) + 1
    ):
        raise ValueError(
            f"`num_classes` must be an integer in 1..{len(CATEGORY_NAMES)} "
            f"(the categories {CATEGORY_NAMES}). Received: "
            f"num_classes={num_classes!r}."
        )
    return int(num_classes)


def _write(
    root,
    *,
    seed,
    num_classes,
    images_per_class,
    image_size,
    num_negatives,
    layout,
    background,
    split,
    kinds,
    info,
):
    """Validates the arguments, draws every image and writes the folder."""
    num_classes = _check_num_classes(num_classes)
    images_per_class = check_count("images_per_class", images_per_class, 1)
    image_size = check_count("image_size", image_size, _MIN_IMAGE_SIZE)
    num_negatives = check_count("num_negatives", num_negatives, 0)
    seed = check_count("seed", seed, 0)
    writer = cub_writer.CubWriter(root, part_names=PART_NAMES)
    period, train = split
    object_kind, negative_kind = kinds
    image_id = 0
    for category in range(num_classes):
        name = CATEGORY_NAMES[category]
        folder = writer.add_class(name)
        for i in range(images_per_class):
            image_id += 1
            rng = np.random.default_rng([seed, object_kind, image_id])
            pixels, mask, box, locs, visible = renderer.render_object(
                rng, category, image_size, layout=layout, background=background
            )
            writer.add_image(
                f"{folder}/{name}_{i + 1:04d}",
                label=category + 1,
                is_train=i % period < train,
                pixels=pixels,
                mask=mask,
                box=box,
                locs=locs,
                visible=visible,
            )
    for i in range(1, num_negatives + 1):
        rng = np.random.default_rng([seed, negative_kind, i])
        pixels = renderer.render_negative(
            rng, image_size, layout=layout, background=background
        )
        writer.add_negative(i, pixels)
    return writer.close(
        {
            "generator": "keras_interp.data.synthetic",
            **info,
            "seed": seed,
            "num_classes": num_classes,
            "images_per_class": images_per_class,
            "image_size": image_size,
            "num_negatives": num_negatives,
        }
    )


def write_synthetic_parts(
    root: str | os.PathLike,
    *,
    seed: int = 0,
    num_classes: int = 5,
    images_per_class: int = 120,
    image_size: int = 128,
    num_negatives: int = 200,
) -> str:
    """Writes the synthetic part dataset into `root` in the CUB layout.

    The `"parts"` variant: see the module docstring for what is drawn and
    why. The output reads with `read_cub(root)`; background-only negatives
    are in `os.path.join(root, NEGATIVES_DIR)` for
    `make_dataset(negatives=...)`.

    Args:
        root: output folder; created if missing, must be empty if present.
        seed: generator seed. The same seed writes byte-identical files.
        num_classes: number of categories, the first ones of
            `CATEGORY_NAMES` (1 to 5).
        images_per_class: images per category (60 % train, 40 % test).
        image_size: side of the square images in pixels (>= 32).
        num_negatives: number of background-only images.

    Returns:
        The absolute path of `root`.

    Raises:
        ValueError: if an argument is out of range or `root` is not empty.

    Example:

    >>> path = write_synthetic_parts("/tmp/parts", images_per_class=6,
    ...                              image_size=64)  # doctest: +SKIP
    >>> read_cub(path).part_names.tolist()  # doctest: +SKIP
    ['back', 'head', 'tail', 'left wing', 'right wing', 'left leg', ...]
    """
    return _write(
        root,
        seed=seed,
        num_classes=num_classes,
        images_per_class=images_per_class,
        image_size=image_size,
        num_negatives=num_negatives,
        layout=renderer.PARTS_LAYOUT,
        background=renderer.textured_background,
        split=(SPLIT_PERIOD, SPLIT_TRAIN),
        kinds=(_OBJECT_KIND, _NEGATIVE_KIND),
        info={"version": SYNTHETIC_VERSION},
    )


def write_synthetic_scenes(
    root: str | os.PathLike,
    *,
    seed: int = 0,
    num_classes: int = 5,
    images_per_class: int = 600,
    image_size: int = 192,
    num_negatives: int = 1200,
) -> str:
    """Writes the un-cropped scenes dataset into `root` in the CUB layout.

    The `"scenes"` variant: small objects at random positions, scales,
    rotations and mirrorings, whole inside the image, over random crops of
    real photos (see the module docstring). With the defaults: 3000 object
    images, 1500 train and 1500 test (300 test images per class), and 1200
    negatives in `os.path.join(root, NEGATIVES_DIR)` (600 train, 600 test
    with `make_dataset`'s first-half / second-half split). Train on it with
    `crop_to_box=False`.

    Args:
        root: output folder; created if missing, must be empty if present.
        seed: generator seed. The same seed writes byte-identical files.
        num_classes: number of categories, the first ones of
            `CATEGORY_NAMES` (1 to 5).
        images_per_class: images per category (50 % train, 50 % test).
        image_size: side of the square images in pixels (>= 32).
        num_negatives: number of background-only images.

    Returns:
        The absolute path of `root`.

    Raises:
        ValueError: if an argument is out of range or `root` is not empty.
        FileNotFoundError: if the package's background photos are missing.

    Example:

    >>> path = write_synthetic_scenes("/tmp/scenes", images_per_class=6,
    ...                               num_negatives=4)  # doctest: +SKIP
    >>> read_cub(path).num_images  # doctest: +SKIP
    30
    """
    return _write(
        root,
        seed=seed,
        num_classes=num_classes,
        images_per_class=images_per_class,
        image_size=image_size,
        num_negatives=num_negatives,
        layout=renderer.SCENES_LAYOUT,
        background=photos.photo_background,
        split=(SCENES_SPLIT_PERIOD, SCENES_SPLIT_TRAIN),
        kinds=(_SCENE_OBJECT_KIND, _SCENE_NEGATIVE_KIND),
        info={"variant": "scenes", "version": SCENES_VERSION},
    )


def default_data_dir(
    cache_dir: str | os.PathLike | None = None, *, variant: str = "parts"
) -> str:
    """Returns an embedded dataset, generating it on first use.

    The dataset (the writer's defaults, seed 0) lives in
    `<cache>/synthetic_parts_v<SYNTHETIC_VERSION>_seed0` for
    `variant="parts"` (`write_synthetic_parts`) and in
    `<cache>/synthetic_scenes_v<SCENES_VERSION>_seed0` for
    `variant="scenes"` (`write_synthetic_scenes`), where `<cache>` is
    `cache_dir`, else the `KERAS_INTERP_CACHE` environment variable, else
    `~/.cache/keras_interp`. It is generated into a temporary sibling folder
    and renamed into place, so an interrupted generation never leaves a
    partial dataset; concurrent first uses are safe (the first rename wins).

    Args:
        cache_dir: cache folder; overrides the environment variable.
        variant: `"parts"` or `"scenes"` (see the module docstring).

    Returns:
        Absolute path of the dataset folder, readable with `read_cub`.

    Raises:
        ValueError: if `variant` is not one of `VARIANTS`.

    Example:

    >>> index = read_cub(default_data_dir())  # doctest: +SKIP
    >>> scenes = read_cub(default_data_dir(variant="scenes"))  # doctest: +SKIP
    """
    if variant not in VARIANTS:
        raise ValueError(
            f"`variant` must be one of {VARIANTS}. Received: "
            f"variant={variant!r}."
        )
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_DIR
    base = os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))
    if variant == "parts":
        name = f"synthetic_parts_v{SYNTHETIC_VERSION}_seed0"
        write = write_synthetic_parts
    else:
        name = f"synthetic_scenes_v{SCENES_VERSION}_seed0"
        write = write_synthetic_scenes
    return cub_writer.generate_cached(
        os.path.join(base, name), lambda folder: write(folder, seed=0)
    )
