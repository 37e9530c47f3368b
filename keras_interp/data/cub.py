"""Reader for an extracted CUB-200-2011 folder.

`read_cub` parses the index files of `CUB_200_2011/` exactly as distributed
(the layout is below) into a `CubIndex` of numpy
arrays. It reads no image data and imports no TensorFlow: images are decoded
later by `keras_interp.data.make_dataset`.

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
import os

import numpy as np

CUB_FOLDER_NAME = "CUB_200_2011"
IMAGES_DIR = "images"
PARTS_DIR = "parts"
PART_MASKS_DIR = "part_segmentations"
PART_MASK_EXTENSION = ".png"
# Number of missing images listed in the error message.
_MAX_LISTED_MISSING = 5

_LAYOUT = f"""\
{CUB_FOLDER_NAME}/
  images.txt               <image_id> <class folder>/<file>.jpg
  image_class_labels.txt   <image_id> <class_id>
  classes.txt              <class_id> <class name>
  train_test_split.txt     <image_id> <1 = train, 0 = test>
  bounding_boxes.txt       <image_id> <x> <y> <width> <height>
  parts/parts.txt          <part_id> <part name>         (optional)
  parts/part_locs.txt      <image_id> <part_id> <x> <y> <visible> (optional)
  images/<class folder>/<file>.jpg"""


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
            f"{_LAYOUT}"
        )
    for candidate in (path, os.path.join(path, CUB_FOLDER_NAME)):
        if os.path.isfile(os.path.join(candidate, "images.txt")):
            return candidate
    raise FileNotFoundError(
        f"No `images.txt` in {path!r} nor in "
        f"{os.path.join(path, CUB_FOLDER_NAME)!r}. Pass the extracted "
        f"`{CUB_FOLDER_NAME}` folder (or its parent), laid out as:\n{_LAYOUT}"
    )


def _read_rows(path: str, num_fields: int, last_is_text: bool = False):
    """Yields `(line_number, fields)` for the non-empty lines of `path`.

    With `last_is_text`, the last field takes the rest of the line (file
    names and class names never contain spaces in CUB, but this keeps
    such a name whole).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Missing CUB index file: {path!r}. Expected layout:\n{_LAYOUT}"
        )
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            if last_is_text:
                fields = line.split(maxsplit=num_fields - 1)
            else:
                fields = line.split()
            if len(fields) != num_fields:
                raise ValueError(
                    f"Malformed line {path}:{line_number}: {line!r}. Expected "
                    f"{num_fields} space-separated fields, got {len(fields)}."
                )
            yield line_number, fields


def _to_id(path: str, line_number: int, line: list[str], text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value.is_integer() or value < 1:
        raise ValueError(
            f"Malformed line {path}:{line_number}: {' '.join(line)!r}. "
            f"Expected a positive integer id, got {text!r}."
        )
    return int(value)


def _to_floats(
    path: str, line_number: int, line: list[str], texts: list[str]
) -> list[float]:
    try:
        values = [float(text) for text in texts]
    except ValueError:
        values = [float("nan")]
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"Malformed line {path}:{line_number}: {' '.join(line)!r}. "
            f"Expected finite numbers, got {texts}."
        )
    return values


def _read_id_table(path: str, num_values: int) -> dict[int, list[float]]:
    """Reads `<image_id> <v1> ... <vn>` lines into `{id: [floats]}`."""
    table = {}
    for line_number, fields in _read_rows(path, num_values + 1):
        key = _to_id(path, line_number, fields, fields[0])
        if key in table:
            raise ValueError(
                f"Malformed line {path}:{line_number}: {' '.join(fields)!r}. "
                f"Id {key} appears twice."
            )
        table[key] = _to_floats(path, line_number, fields, fields[1:])
    return table


def _read_names(path: str) -> dict[int, str]:
    """Reads `<id> <name>` lines into `{id: name}`."""
    names = {}
    for line_number, fields in _read_rows(path, 2, last_is_text=True):
        key = _to_id(path, line_number, fields, fields[0])
        if key in names:
            raise ValueError(
                f"Malformed line {path}:{line_number}: {' '.join(fields)!r}. "
                f"Id {key} appears twice."
            )
        names[key] = fields[1]
    return names


def _dense_names(path: str, names: dict[int, str]) -> np.ndarray:
    """Checks that ids are exactly 1..K and returns the names in id order."""
    expected = list(range(1, len(names) + 1))
    if sorted(names) != expected:
        missing = sorted(set(expected) - set(names))[:_MAX_LISTED_MISSING]
        raise ValueError(
            f"The ids in {path} must be 1..{len(names)} without gaps. "
            f"Missing ids include {missing}. Fix the file."
        )
    return np.array([names[i] for i in expected], dtype=str)


def _lookup(path: str, table: dict, image_ids: np.ndarray, what: str) -> list:
    missing = [int(i) for i in image_ids if int(i) not in table]
    if missing:
        raise ValueError(
            f"{path} has no {what} for {len(missing)} image id(s) listed in "
            f"images.txt, e.g. {missing[:_MAX_LISTED_MISSING]}. Every image "
            "needs one line."
        )
    return [table[int(i)] for i in image_ids]


def _check_files_exist(paths: np.ndarray, what: str, fix: str) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        listed = "\n  ".join(missing[:_MAX_LISTED_MISSING])
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} {what} are missing, e.g.:\n"
            f"  {listed}\n{fix}"
        )


def _read_parts(
    root: str, image_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts_path = os.path.join(root, PARTS_DIR, "parts.txt")
    locs_path = os.path.join(root, PARTS_DIR, "part_locs.txt")
    part_names = _dense_names(parts_path, _read_names(parts_path))
    num_parts = len(part_names)
    row_of = {int(image_id): row for row, image_id in enumerate(image_ids)}
    locs = np.zeros((len(image_ids), num_parts, 2), dtype="float32")
    visible = np.zeros((len(image_ids), num_parts), dtype=bool)
    seen = np.zeros((len(image_ids), num_parts), dtype=bool)
    for line_number, fields in _read_rows(locs_path, 5):
        image_id = _to_id(locs_path, line_number, fields, fields[0])
        part_id = _to_id(locs_path, line_number, fields, fields[1])
        x, y, flag = _to_floats(locs_path, line_number, fields, fields[2:])
        if image_id not in row_of or part_id > num_parts:
            raise ValueError(
                f"Malformed line {locs_path}:{line_number}: "
                f"{' '.join(fields)!r}. Image id {image_id} must be listed in "
                f"images.txt and part id {part_id} in parts.txt "
                f"(1..{num_parts})."
            )
        row, col = row_of[image_id], part_id - 1
        if seen[row, col]:
            raise ValueError(
                f"Malformed line {locs_path}:{line_number}: "
                f"{' '.join(fields)!r}. Part {part_id} of image {image_id} "
                "appears twice."
            )
        seen[row, col] = True
        visible[row, col] = flag > 0
        if flag > 0:
            locs[row, col] = (x, y)
    if not seen.all():
        row, col = np.argwhere(~seen)[0]
        raise ValueError(
            f"{locs_path} lacks {int((~seen).sum())} (image, part) rows, e.g. "
            f"image id {int(image_ids[row])}, part id {col + 1}. CUB lists "
            "every part of every image, with `0 0 0` for invisible parts."
        )
    return part_names, locs, visible


def read_cub(data_dir: str | os.PathLike) -> CubIndex:
    """Reads the index files of an extracted CUB-200-2011 folder.

    Numbers are parsed as floats (CUB writes boxes as `60.0`). Every image
    file is checked for existence (a `stat` per file, well under a second for
    the 11,788 CUB images) so that a broken extraction fails here rather
    than mid-epoch.

    Args:
        data_dir: the `CUB_200_2011` folder itself, or the folder that
            contains it.

    Returns:
        A `CubIndex` sorted by image id. Without `parts/`, `has_parts` is
        `False` and the part arrays have `P = 0`. Without
        `part_segmentations/`, `part_mask_paths` is `None`.

    Raises:
        FileNotFoundError: if the folder, an index file, an image or a part
            mask is missing. The message names the path and shows the
            expected layout.
        ValueError: if an index file is malformed (the message names
            `file:line` and quotes the line), or if the files disagree (an
            image without a label, box or split entry).

    Example:

    >>> index = keras_interp.data.read_cub("/data/CUB_200_2011")
    ... # doctest: +SKIP
    >>> index.image_paths[index.is_train].shape  # doctest: +SKIP
    (5994,)
    """
    root = _resolve_root(data_dir)
    images_path = os.path.join(root, "images.txt")
    relative_paths = _read_names(images_path)
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
    class_names = _dense_names(classes_path, _read_names(classes_path))

    labels_path = os.path.join(root, "image_class_labels.txt")
    labels_table = _read_id_table(labels_path, 1)
    labels = np.array(
        _lookup(labels_path, labels_table, image_ids, "class label"),
        dtype="float64",
    )[:, 0]
    bad = (labels < 1) | (labels > len(class_names)) | (labels % 1 != 0)
    if bad.any():
        image_id = int(image_ids[np.argmax(bad)])
        raise ValueError(
            f"{labels_path}: image id {image_id} has class id "
            f"{labels[np.argmax(bad)]}, but classes.txt defines class ids "
            f"1..{len(class_names)}."
        )
    labels = (labels - 1).astype("int32")

    split_path = os.path.join(root, "train_test_split.txt")
    split_table = _read_id_table(split_path, 1)
    is_train = (
        np.array(
            _lookup(split_path, split_table, image_ids, "train/test flag"),
            dtype="float64",
        )[:, 0]
        > 0
    )

    boxes_path = os.path.join(root, "bounding_boxes.txt")
    boxes_table = _read_id_table(boxes_path, 4)
    boxes = np.array(
        _lookup(boxes_path, boxes_table, image_ids, "bounding box"),
        dtype="float32",
    )
    if (boxes[:, 2:] <= 0).any():
        row = int(np.argmax((boxes[:, 2:] <= 0).any(axis=1)))
        raise ValueError(
            f"{boxes_path}: image id {int(image_ids[row])} has a box with a "
            f"non-positive size: {boxes[row].tolist()} ([x, y, width, "
            "height]). Fix the box."
        )

    has_parts = os.path.isdir(os.path.join(root, PARTS_DIR))
    if has_parts:
        part_names, part_locs, part_visible = _read_parts(root, image_ids)
    else:
        part_names = np.zeros((0,), dtype=str)
        part_locs = np.zeros((len(image_ids), 0, 2), dtype="float32")
        part_visible = np.zeros((len(image_ids), 0), dtype=bool)

    _check_files_exist(
        image_paths,
        "images listed in images.txt",
        f"Re-extract the archive so that every file exists under "
        f"{os.path.join(root, IMAGES_DIR)}.",
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
        _check_files_exist(
            part_mask_paths,
            f"part masks in {PART_MASKS_DIR}/",
            f"Each image needs `{PART_MASKS_DIR}/<class folder>/<file>"
            f"{PART_MASK_EXTENSION}`; remove {masks_root} to read the "
            "dataset without part masks.",
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
    )
