"""Reader for an extracted CUB-200-2011 folder.

`read_cub` parses the index files of `CUB_200_2011/` exactly as distributed
into a `CubIndex` of numpy arrays, and checks them against the images: it
reads every image's size from its header and, with `check_images`, decodes
every image once with Pillow to find corrupt files. It imports no
TensorFlow: the pixels used for training are decoded later by
`keras_interp.data.make_dataset`. The index files are parsed, line by
line, in `keras_interp.data.cub_tables`; this module checks them against
the images.

Expected layout (all ids 1-based, fields separated by spaces):

```
CUB_200_2011/
  images.txt               <image_id> <class folder>/<file>.jpg
  image_class_labels.txt   <image_id> <class_id>
  classes.txt              <class_id> <class name>
  train_test_split.txt     <image_id> <1 = train, 0 = test>
  bounding_boxes.txt       <image_id> <x> <y> <width> <height>
  parts/parts.txt          <part_id> <part name>              (optional)
  parts/part_locs.txt      <image_id> <part_id> <x> <y> <visible> (optional)
  images/<class folder>/<file>.jpg
  part_segmentations/<class folder>/<file>.png                (optional)
```

Coordinates are in pixels of the original image, with the origin at the
top-left corner and x to the right. Invisible parts are written as
`0 0 0` in `part_locs.txt`.

`part_segmentations/` is not part of the official archive; the synthetic
dataset of `keras_interp.data.synthetic` writes it. Each PNG is a uint8 map of
the image's size whose value is the 1-based part id (0 = no part).
"""

import dataclasses
import logging
import os

import numpy as np
from PIL import Image

from keras_interp.data.cub_tables import CUB_FOLDER_NAME
from keras_interp.data.cub_tables import IMAGES_DIR
from keras_interp.data.cub_tables import LAYOUT
from keras_interp.data.cub_tables import MAX_LISTED
from keras_interp.data.cub_tables import PARTS_DIR
from keras_interp.data.cub_tables import Row
from keras_interp.data.cub_tables import dense_names
from keras_interp.data.cub_tables import read_boxes
from keras_interp.data.cub_tables import read_labels
from keras_interp.data.cub_tables import read_names
from keras_interp.data.cub_tables import read_parts
from keras_interp.data.cub_tables import read_split

PART_MASKS_DIR = "part_segmentations"
PART_MASK_EXTENSION = ".png"
# Pillow's names of the formats that `tf.io.decode_image` decodes (JPEG XL,
# which TensorFlow also reads, needs a Pillow plugin). "MPO" is a JPEG with
# extra frames, as some cameras write.
DECODABLE_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP")
# How far (pixels) a box edge may lie outside its image: one pixel of
# rounding. The pipeline clips the rest of such a box to the image.
BOX_SLACK_PIXELS = 1.0

_logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class CubIndex:
    """Index of a CUB-format dataset, as numpy arrays in image-id order.

    `N` is the number of images, `C` the number of classes and `P` the
    number of parts (0 when the source has no part annotations).

    Attributes:
        data_dir: absolute path of the `CUB_200_2011`-format folder.
        image_ids: int64 `(N,)`, the 1-based ids of `images.txt`, sorted.
        image_paths: str `(N,)`, absolute image paths.
        labels: int32 `(N,)`, 0-based class index (class id - 1).
        class_names: str `(C,)`, names from `classes.txt`, index = label.
        is_train: bool `(N,)`, from `train_test_split.txt`.
        boxes: float32 `(N, 4)`, `[x, y, width, height]` in pixels.
        part_names: str `(P,)`, names from `parts/parts.txt`, index =
            part id - 1.
        part_locs: float32 `(N, P, 2)`, `[x, y]` in pixels; `0` where the
            part is invisible.
        part_visible: bool `(N, P)`.
        has_parts: whether `parts/` was present.
        part_mask_paths: str `(N,)` absolute paths of the part-id PNG maps
            in `part_segmentations/`, or `None` when that folder is absent.
        image_sizes: int32 `(N, 2)`, `[width, height]` of each image in
            pixels, as read by `read_cub` (`None` if built otherwise).
        images_checked: whether `read_cub` decoded every image and part
            mask (`check_images=True`). `make_dataset` then skips its
            per-example bookkeeping that names a file failing to decode.
    """

    data_dir: str
    image_ids: np.ndarray
    image_paths: np.ndarray
    labels: np.ndarray
    class_names: np.ndarray
    is_train: np.ndarray
    boxes: np.ndarray
    part_names: np.ndarray
    part_locs: np.ndarray
    part_visible: np.ndarray
    has_parts: bool
    part_mask_paths: np.ndarray | None = None
    image_sizes: np.ndarray | None = None
    images_checked: bool = False

    @property
    def num_images(self) -> int:
        return int(self.image_ids.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.class_names.shape[0])

    @property
    def num_parts(self) -> int:
        return int(self.part_names.shape[0])


def _resolve_root(data_dir: str | os.PathLike) -> str:
    path = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"CUB data folder not found: {path!r}. Pass the extracted "
            f"`{CUB_FOLDER_NAME}` folder (or its parent), laid out as:\n"
            f"{LAYOUT}"
        )
    for candidate in (path, os.path.join(path, CUB_FOLDER_NAME)):
        if os.path.isfile(os.path.join(candidate, "images.txt")):
            return candidate
    raise FileNotFoundError(
        f"No `images.txt` in {path!r} nor in "
        f"{os.path.join(path, CUB_FOLDER_NAME)!r}. Pass the extracted "
        f"`{CUB_FOLDER_NAME}` folder (or its parent), laid out as:\n{LAYOUT}"
    )


def _check_files_exist(paths: np.ndarray, what: str, fix: str) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        listed = "\n  ".join(missing[:MAX_LISTED])
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} {what} are missing, e.g.:\n"
            f"  {listed}\n{fix}"
        )


def _read_image_sizes(
    paths: np.ndarray, *, decode: bool, what: str, fix: str
) -> np.ndarray:
    """`[width, height]` of each image, from its header or a full decode.

    Opening a file with Pillow parses only its header: this finds files
    that are no image at all (empty, HTML, ...) and formats that
    `tf.io.decode_image` cannot read. With `decode`, the pixels are
    decoded too, which finds truncated and corrupt files: on truncated,
    bit-flipped, empty and non-image files (JPEG, progressive JPEG, PNG),
    Pillow and `tf.io.decode_image` rejected exactly the same ones.
    """
    sizes = np.zeros((len(paths), 2), dtype="int32")
    failures = []
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                if image.format not in DECODABLE_FORMATS:
                    raise ValueError(
                        f"format {image.format}, which tf.io.decode_image "
                        f"cannot decode (it reads {DECODABLE_FORMATS})"
                    )
                if decode:
                    image.load()
                sizes[i] = image.size
        # Pillow signals a broken file with many types (OSError,
        # SyntaxError, EOFError, struct.error, zlib.error, ...); each one
        # means the pipeline could not decode the file either.
        except Exception as error:  # noqa: BLE001
            failures.append(f"{path}: {type(error).__name__}: {error}")
    if failures:
        listed = "\n  ".join(failures[:MAX_LISTED])
        verb = "decoded" if decode else "opened as images"
        raise ValueError(
            f"{len(failures)} of {len(paths)} {what} cannot be {verb}, "
            f"e.g.:\n  {listed}\n{fix}"
        )
    return sizes


def _check_boxes_inside(
    path: str, rows: list[Row], image_paths: np.ndarray, sizes: np.ndarray
) -> None:
    boxes = np.array([row.values for row in rows], dtype="float64")
    slack = BOX_SLACK_PIXELS
    outside = (
        (boxes[:, 0] < -slack)
        | (boxes[:, 1] < -slack)
        | (boxes[:, 0] + boxes[:, 2] > sizes[:, 0] + slack)
        | (boxes[:, 1] + boxes[:, 3] > sizes[:, 1] + slack)
    )
    if outside.any():
        first = int(np.argmax(outside))
        width, height = sizes[first].tolist()
        raise ValueError(
            f"{int(outside.sum())} box(es) in {path} reach outside their "
            f"image, e.g. {rows[first].where(path)} (`<image_id> <x> <y> "
            f"<width> <height>`), but {image_paths[first]} is {width} x "
            f"{height} pixels (width x height). A box must lie inside its "
            f"image (up to {slack:g} pixel of rounding). Fix the box; a box "
            "far outside is often in the coordinates of a resized copy of "
            "the image."
        )


def _hide_landmarks_outside(
    locs_path: str,
    lines: np.ndarray,
    part_locs: np.ndarray,
    part_visible: np.ndarray,
    sizes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Marks visible landmarks outside `[0, W) x [0, H)` invisible.

    This is what `make_dataset` does with a landmark that falls outside the
    output image, so the index and the batches agree; a warning names the
    first such line.
    """
    x, y = part_locs[..., 0], part_locs[..., 1]
    width, height = sizes[:, None, 0], sizes[:, None, 1]
    outside = part_visible & ((x < 0) | (y < 0) | (x >= width) | (y >= height))
    if not outside.any():
        return part_locs, part_visible
    row, col = np.argwhere(outside)[0]
    _logger.warning(
        "%d visible landmark(s) in %s lie outside their image and are "
        "treated as invisible, e.g. line %d: [x, y] = %s in an image of "
        "%d x %d pixels (width x height). Fix the file if these are "
        "annotation errors.",
        int(outside.sum()),
        locs_path,
        int(lines[row, col]),
        part_locs[row, col].tolist(),
        int(sizes[row, 0]),
        int(sizes[row, 1]),
    )
    part_locs = np.where(outside[..., None], 0.0, part_locs).astype("float32")
    return part_locs, part_visible & ~outside


def read_cub(
    data_dir: str | os.PathLike, *, check_images: bool = True
) -> CubIndex:
    """Reads the index files of an extracted CUB-200-2011 folder.

    Numbers are parsed as floats (CUB writes boxes as `60.0`); ids must be
    integers. Everything is checked here, so that a broken dataset fails
    now, naming the file and line, rather than mid-epoch:

    - class ids in `image_class_labels.txt` must be integers in `1..C`
      (the ids of `classes.txt`), train/test and visibility flags `0` or
      `1`, box sides positive;
    - every image must exist and open as an image in a format that
      `tf.io.decode_image` reads. Its size is read from its header and kept
      in `image_sizes`;
    - every box must lie inside its image, up to `BOX_SLACK_PIXELS`
      (one pixel) of rounding; `make_dataset` clips a box that sticks out
      by less;
    - a visible landmark outside its image (`x` not in `[0, W)` or `y` not
      in `[0, H)`) is marked invisible, with a warning that names the
      first such line: `make_dataset` treats a landmark outside its output
      image the same way, and CUB writes invisible parts as `0 0 0`;
    - part masks, if present, must exist and have their image's size;
    - with `check_images` (the default), every image and part mask is also
      decoded once with Pillow, which finds truncated and corrupt files
      (on truncated and bit-flipped JPEGs and PNGs, Pillow and
      `tf.io.decode_image` rejected exactly the same files).

    Cost (CPU time; the reading is single-threaded): `read_cub` on 1,000
    CUB-like 500 x 375 JPEGs (about 90 KiB each) takes 1.1-1.2 ms of CPU
    per image with `check_images`, 0.1 ms without (index files and
    headers), so the check adds about 13 s for the 11,788 CUB images, little
    next to a training run that a corrupt file would stop hours in. On the
    embedded synthetic set (128 px images and their part masks) it is
    0.27 against 0.10 ms per image. With `check_images=False`, a corrupt
    file stops `make_dataset`'s iteration with an error that names it.

    Args:
        data_dir: the `CUB_200_2011` folder itself, or the folder that
            contains it.
        check_images: fully decode every image and part mask now.

    Returns:
        A `CubIndex` sorted by image id. Without `parts/`, `has_parts` is
        `False` and the part arrays have `P = 0`. Without
        `part_segmentations/`, `part_mask_paths` is `None`.

    Raises:
        FileNotFoundError: if the folder, an index file, an image or a part
            mask is missing. The message names the path and shows the
            expected layout.
        ValueError: if an index file is malformed or holds an invalid value
            (the message names `file:line` and quotes the line), if the
            files disagree (an image without a label, box or split entry),
            if a box lies outside its image, or if an image or part mask
            cannot be opened or decoded (the message names the files).

    Example:

    >>> index = keras_interp.data.read_cub("/data/CUB_200_2011")
    ... # doctest: +SKIP
    >>> index.image_paths[index.is_train].shape  # doctest: +SKIP
    (5994,)
    """
    if not isinstance(check_images, bool):
        raise ValueError(
            "`check_images` must be True or False. Received: "
            f"check_images={check_images!r}."
        )
    root = _resolve_root(data_dir)
    images_path = os.path.join(root, "images.txt")
    relative_paths = read_names(images_path)
    if not relative_paths:
        raise ValueError(
            f"{images_path} lists no images. Expected `<image_id> "
            "<class folder>/<file>.jpg` lines."
        )
    image_ids = np.array(sorted(relative_paths), dtype="int64")
    relative = [relative_paths[int(i)] for i in image_ids]
    image_paths = np.array(
        [os.path.join(root, IMAGES_DIR, r) for r in relative], dtype=str
    )

    classes_path = os.path.join(root, "classes.txt")
    class_names = dense_names(classes_path, read_names(classes_path))
    labels = read_labels(
        os.path.join(root, "image_class_labels.txt"),
        image_ids,
        classes_path,
        len(class_names),
    )
    split_path = os.path.join(root, "train_test_split.txt")
    is_train = read_split(split_path, image_ids)
    boxes_path = os.path.join(root, "bounding_boxes.txt")
    box_rows = read_boxes(boxes_path, image_ids)
    boxes = np.array([row.values for row in box_rows], dtype="float32")

    has_parts = os.path.isdir(os.path.join(root, PARTS_DIR))
    if has_parts:
        part_names, part_locs, part_visible, part_lines = read_parts(
            root, image_ids
        )
    else:
        part_names = np.zeros((0,), dtype=str)
        part_locs = np.zeros((len(image_ids), 0, 2), dtype="float32")
        part_visible = np.zeros((len(image_ids), 0), dtype=bool)

    fix = (
        "Re-extract the archive, or replace these files, so that every "
        f"file exists under {os.path.join(root, IMAGES_DIR)}."
    )
    _check_files_exist(image_paths, "images listed in images.txt", fix)
    if check_images:
        _logger.info(
            "Decoding the %d images of %s to check them "
            "(`check_images=False` skips this).",
            len(image_paths),
            root,
        )
    image_sizes = _read_image_sizes(
        image_paths,
        decode=check_images,
        what="images listed in images.txt",
        fix=(
            "Replace these files (re-extract the archive), or remove their "
            "lines from every index file."
        ),
    )
    _check_boxes_inside(boxes_path, box_rows, image_paths, image_sizes)
    if has_parts:
        part_locs, part_visible = _hide_landmarks_outside(
            os.path.join(root, PARTS_DIR, "part_locs.txt"),
            part_lines,
            part_locs,
            part_visible,
            image_sizes,
        )

    part_mask_paths = None
    masks_root = os.path.join(root, PART_MASKS_DIR)
    if os.path.isdir(masks_root):
        part_mask_paths = np.array(
            [
                os.path.join(masks_root, os.path.splitext(r)[0])
                + PART_MASK_EXTENSION
                for r in relative
            ],
            dtype=str,
        )
        masks_fix = (
            f"Each image needs `{PART_MASKS_DIR}/<class folder>/<file>"
            f"{PART_MASK_EXTENSION}`, of the image's size; remove "
            f"{masks_root} to read the dataset without part masks."
        )
        _check_files_exist(
            part_mask_paths, f"part masks in {PART_MASKS_DIR}/", masks_fix
        )
        mask_sizes = _read_image_sizes(
            part_mask_paths,
            decode=check_images,
            what=f"part masks in {PART_MASKS_DIR}/",
            fix=masks_fix,
        )
        wrong = (mask_sizes != image_sizes).any(axis=1)
        if wrong.any():
            first = int(np.argmax(wrong))
            raise ValueError(
                f"{int(wrong.sum())} part mask(s) differ in size from their "
                f"image, e.g. {part_mask_paths[first]} is "
                f"{mask_sizes[first].tolist()} but {image_paths[first]} is "
                f"{image_sizes[first].tolist()} ([width, height]). {masks_fix}"
            )

    return CubIndex(
        data_dir=root,
        image_ids=image_ids,
        image_paths=image_paths,
        labels=labels,
        class_names=class_names,
        is_train=is_train,
        boxes=boxes,
        part_names=part_names,
        part_locs=part_locs,
        part_visible=part_visible,
        has_parts=has_parts,
        part_mask_paths=part_mask_paths,
        image_sizes=image_sizes,
        images_checked=check_images,
    )
