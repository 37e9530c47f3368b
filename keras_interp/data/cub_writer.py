"""Writes generated images in the `CUB_200_2011` folder layout, and caches.

`CubWriter` collects the rows of the CUB text files while images are saved
and writes the tables at the end, so that `keras_interp.data.read_cub`
reads the result like the real data. `generate_cached` generates a dataset
once into a cache folder, atomically. The layout written under `root`:

```
images.txt, image_class_labels.txt, classes.txt, train_test_split.txt,
bounding_boxes.txt, parts/parts.txt, parts/part_locs.txt,
images/<NNN.Category>/<Category>_<XXXX>.jpg
part_segmentations/<NNN.Category>/<Category>_<XXXX>.png  uint8, 0 = none,
                                                         k = part id k
negatives/negative_<XXXX>.jpg
synthetic_info.json                                      generator settings
```
"""

import json
import logging
import os
import shutil
import tempfile
import time

from PIL import Image

from keras_interp.data import cub
from keras_interp.data.negatives import NEGATIVES_DIR

INFO_FILE = "synthetic_info.json"
# Fixed so that files are byte-identical for a seed; 90 keeps the part
# edges sharp at 128 px while the default set stays under 10 MB.
JPEG_QUALITY = 90

_logger = logging.getLogger(__name__)


def save_jpeg(pixels, path):
    """Saves uint8 RGB `pixels` as a JPEG of quality `JPEG_QUALITY`."""
    Image.fromarray(pixels).save(path, format="JPEG", quality=JPEG_QUALITY)


class CubWriter:
    """Saves images into a new CUB-format folder and writes its tables.

    Args:
        root: output folder; created if missing, must be empty if present.
        part_names: the part names, in `parts/parts.txt` order.

    Raises:
        ValueError: if `root` exists and is not empty.
    """

    def __init__(self, root, *, part_names):
        root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        if os.path.isdir(root) and os.listdir(root):
            raise ValueError(
                f"`root` must be a new or empty folder. Received: {root!r}, "
                "which is not empty. Pass another folder or delete it."
            )
        os.makedirs(os.path.join(root, cub.PARTS_DIR), exist_ok=True)
        self.root = root
        self.part_names = tuple(part_names)
        self._classes, self._images, self._labels = [], [], []
        self._splits, self._boxes, self._locs = [], [], []

    def add_class(self, name):
        """Registers the next class; returns its folder `NNN.name`."""
        label = len(self._classes) + 1
        folder = f"{label:03d}.{name}"
        self._classes.append(f"{label} {folder}")
        for folder_root in (cub.IMAGES_DIR, cub.PART_MASKS_DIR):
            os.makedirs(
                os.path.join(self.root, folder_root, folder), exist_ok=True
            )
        return folder

    def add_image(
        self, relative, *, label, is_train, pixels, mask, box, locs, visible
    ):
        """Saves one object image and its part mask, and records its rows.

        Args:
            relative: `<NNN.Category>/<name>` without extension.
            label: 1-based class id.
            is_train: whether the image is in the training split.
            pixels: uint8 `(H, W, 3)`.
            mask: uint8 `(H, W)` part mask.
            box: `(x, y, w, h)` in pixels.
            locs: float `(P, 2)` landmarks; ignored where not visible.
            visible: bool `(P,)`.

        Returns:
            The 1-based image id.
        """
        image_id = len(self._images) + 1
        save_jpeg(
            pixels, os.path.join(self.root, cub.IMAGES_DIR, relative + ".jpg")
        )
        Image.fromarray(mask).save(
            os.path.join(
                self.root,
                cub.PART_MASKS_DIR,
                relative + cub.PART_MASK_EXTENSION,
            )
        )
        self._images.append(f"{image_id} {relative}.jpg")
        self._labels.append(f"{image_id} {label}")
        self._splits.append(f"{image_id} {int(is_train)}")
        self._boxes.append(f"{image_id} " + " ".join(f"{v:.1f}" for v in box))
        for k, (point, flag) in enumerate(zip(locs, visible, strict=True), 1):
            if flag:
                self._locs.append(
                    f"{image_id} {k} {point[0]:.2f} {point[1]:.2f} 1"
                )
            else:
                self._locs.append(f"{image_id} {k} 0 0 0")
        return image_id

    def add_negative(self, index, pixels):
        """Saves background-only image `index` (1-based) into `negatives/`."""
        folder = os.path.join(self.root, NEGATIVES_DIR)
        os.makedirs(folder, exist_ok=True)
        save_jpeg(pixels, os.path.join(folder, f"negative_{index:04d}.jpg"))

    def close(self, info):
        """Writes the tables and `info` (JSON) into `INFO_FILE`."""
        os.makedirs(os.path.join(self.root, NEGATIVES_DIR), exist_ok=True)
        tables = {
            "images.txt": self._images,
            "image_class_labels.txt": self._labels,
            "classes.txt": self._classes,
            "train_test_split.txt": self._splits,
            "bounding_boxes.txt": self._boxes,
            os.path.join(cub.PARTS_DIR, "parts.txt"): [
                f"{k} {name}" for k, name in enumerate(self.part_names, 1)
            ],
            os.path.join(cub.PARTS_DIR, "part_locs.txt"): self._locs,
        }
        for filename, lines in tables.items():
            path = os.path.join(self.root, filename)
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        with open(os.path.join(self.root, INFO_FILE), "w") as f:
            json.dump(info, f, indent=2, sort_keys=True)
            f.write("\n")
        return self.root


def generate_cached(path, generate):
    """Returns `path`, calling `generate(folder)` first if it holds no data.

    The data is generated into a temporary sibling folder and renamed into
    place, so an interrupted generation never leaves a partial dataset;
    concurrent first uses are safe (the first rename wins). `path` counts as
    generated when it holds `images.txt`.

    Args:
        path: absolute path of the dataset folder.
        generate: `generate(folder)` writes the dataset into the empty
            `folder`.

    Returns:
        `path`.
    """
    if os.path.isfile(os.path.join(path, "images.txt")):
        return path
    base = os.path.dirname(path)
    os.makedirs(base, exist_ok=True)
    temporary = tempfile.mkdtemp(
        prefix=f".{os.path.basename(path)}.partial-", dir=base
    )
    try:
        _logger.info("Generating the synthetic dataset into %s", path)
        start = time.perf_counter()
        generate(temporary)
        try:
            os.rename(temporary, path)
        except OSError:
            if not os.path.isfile(os.path.join(path, "images.txt")):
                raise
        _logger.info(
            "Generated %s in %.1f s", path, time.perf_counter() - start
        )
    finally:
        if os.path.isdir(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
    return path
