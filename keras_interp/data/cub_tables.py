"""Parsing of the CUB-200-2011 index files (the text tables).

Each `_read_*` function parses one file of the layout below into numpy
arrays in image-id order, and checks every line as it goes: a malformed
line or an invalid value fails with the file, the line number and the line
itself. `keras_interp.data.cub.read_cub` assembles them and checks them
against the images. Numbers are parsed as floats (CUB writes boxes as
`60.0`); ids must be integers.
"""

import os
from typing import NamedTuple

import numpy as np

CUB_FOLDER_NAME = "CUB_200_2011"
IMAGES_DIR = "images"
PARTS_DIR = "parts"
# Number of missing items listed in an error message.
MAX_LISTED = 5

LAYOUT = f"""\
{CUB_FOLDER_NAME}/
  images.txt               <image_id> <class folder>/<file>.jpg
  image_class_labels.txt   <image_id> <class_id>
  classes.txt              <class_id> <class name>
  train_test_split.txt     <image_id> <1 = train, 0 = test>
  bounding_boxes.txt       <image_id> <x> <y> <width> <height>
  parts/parts.txt          <part_id> <part name>              (optional)
  parts/part_locs.txt      <image_id> <part_id> <x> <y> <visible> (optional)
  images/<class folder>/<file>.jpg
  part_segmentations/<class folder>/<file>.png                (optional)"""


def _read_rows(path: str, num_fields: int, last_is_text: bool = False):
    """Yields `(line_number, fields)` for the non-empty lines of `path`.

    With `last_is_text`, the last field takes the rest of the line (file
    names and class names never contain spaces in CUB, but this keeps
    such a name whole).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Missing CUB index file: {path!r}. Expected layout:\n{LAYOUT}"
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


class Row(NamedTuple):
    """One parsed line of an `<image_id> <v1> ... <vn>` file."""

    line_number: int
    fields: list[str]
    values: list[float]

    def where(self, path: str) -> str:
        """`file:line: 'the line'`, for error messages."""
        return f"{path}:{self.line_number}: {' '.join(self.fields)!r}"


def _read_id_table(path: str, num_values: int) -> dict[int, Row]:
    """Reads `<image_id> <v1> ... <vn>` lines into `{id: Row}`."""
    table = {}
    for line_number, fields in _read_rows(path, num_values + 1):
        key = _to_id(path, line_number, fields, fields[0])
        if key in table:
            raise ValueError(
                f"Malformed line {path}:{line_number}: {' '.join(fields)!r}. "
                f"Id {key} appears twice."
            )
        values = _to_floats(path, line_number, fields, fields[1:])
        table[key] = Row(line_number, fields, values)
    return table


def read_names(path: str) -> dict[int, str]:
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


def dense_names(path: str, names: dict[int, str]) -> np.ndarray:
    """Checks that ids are exactly 1..K and returns the names in id order."""
    expected = list(range(1, len(names) + 1))
    if sorted(names) != expected:
        missing = sorted(set(expected) - set(names))[:MAX_LISTED]
        raise ValueError(
            f"The ids in {path} must be 1..{len(names)} without gaps. "
            f"Missing ids include {missing}. Fix the file."
        )
    return np.array([names[i] for i in expected], dtype=str)


def _lookup(
    path: str, table: dict[int, Row], image_ids: np.ndarray, what: str
) -> list[Row]:
    missing = [int(i) for i in image_ids if int(i) not in table]
    if missing:
        raise ValueError(
            f"{path} has no {what} for {len(missing)} image id(s) listed in "
            f"images.txt, e.g. {missing[:MAX_LISTED]}. Every image "
            "needs one line."
        )
    return [table[int(i)] for i in image_ids]


def read_labels(
    path: str, image_ids: np.ndarray, classes_path: str, num_classes: int
) -> np.ndarray:
    """0-based labels; every class id must be an integer in 1..C."""
    rows = _lookup(path, _read_id_table(path, 1), image_ids, "class label")
    for row in rows:
        class_id = row.values[0]
        if not (class_id.is_integer() and 1 <= class_id <= num_classes):
            raise ValueError(
                f"Invalid class id in {row.where(path)}: got "
                f"{row.fields[1]!r}, but class ids must be integers in "
                f"1..{num_classes} (the ids of {classes_path}). Fix the "
                "line, or add the class to classes.txt."
            )
    return np.array([row.values[0] - 1 for row in rows], dtype="int32")


def read_split(path: str, image_ids: np.ndarray) -> np.ndarray:
    rows = _lookup(path, _read_id_table(path, 1), image_ids, "train/test flag")
    for row in rows:
        if row.values[0] not in (0.0, 1.0):
            raise ValueError(
                f"Invalid train/test flag in {row.where(path)}: got "
                f"{row.fields[1]!r}, expected 1 (train) or 0 (test)."
            )
    return np.array([row.values[0] == 1.0 for row in rows], dtype=bool)


def read_boxes(path: str, image_ids: np.ndarray) -> list[Row]:
    rows = _lookup(path, _read_id_table(path, 4), image_ids, "bounding box")
    for row in rows:
        if min(row.values[2:]) <= 0:
            raise ValueError(
                f"Invalid box in {row.where(path)}: the width and height of "
                "`<image_id> <x> <y> <width> <height>` must be positive. Fix "
                "the box."
            )
    return rows


def read_parts(
    root: str, image_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Part names, locations, visibility and `part_locs.txt` line numbers."""
    parts_path = os.path.join(root, PARTS_DIR, "parts.txt")
    locs_path = os.path.join(root, PARTS_DIR, "part_locs.txt")
    part_names = dense_names(parts_path, read_names(parts_path))
    num_parts = len(part_names)
    row_of = {int(image_id): row for row, image_id in enumerate(image_ids)}
    locs = np.zeros((len(image_ids), num_parts, 2), dtype="float32")
    visible = np.zeros((len(image_ids), num_parts), dtype=bool)
    lines = np.zeros((len(image_ids), num_parts), dtype="int64")
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
        if flag not in (0.0, 1.0):
            raise ValueError(
                f"Invalid visibility flag in {locs_path}:{line_number}: "
                f"{' '.join(fields)!r}. Expected 1 (visible) or 0 "
                f"(invisible), got {fields[4]!r}."
            )
        row, col = row_of[image_id], part_id - 1
        if lines[row, col]:
            raise ValueError(
                f"Malformed line {locs_path}:{line_number}: "
                f"{' '.join(fields)!r}. Part {part_id} of image {image_id} "
                "appears twice."
            )
        lines[row, col] = line_number
        visible[row, col] = flag == 1.0
        if flag == 1.0:
            locs[row, col] = (x, y)
    if not lines.all():
        row, col = np.argwhere(lines == 0)[0]
        raise ValueError(
            f"{locs_path} lacks {int((lines == 0).sum())} (image, part) rows, "
            f"e.g. image id {int(image_ids[row])}, part id {col + 1}. CUB "
            "lists every part of every image, with `0 0 0` for invisible "
            "parts."
        )
    return part_names, locs, visible, lines
