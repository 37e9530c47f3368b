"""Background images of the single-category task (objects vs. negatives).

The paper trains single-category models against generic background images
(the authors ship 1000 in `data/neg/`; `getImdb_cub200.m` labels objects
+1 and negatives -1). `read_negatives` lists such a folder, and
`resolve_negatives` gives the split that `make_dataset` and
`dataset_sizes` use. The synthetic datasets write theirs in
`NEGATIVES_DIR` next to the CUB tables. No TensorFlow is imported here.
"""

import os

import numpy as np

# The folder of background images in a generated dataset, under its root.
NEGATIVES_DIR = "negatives"
# Labels of the single-category task: objects vs. background images (the
# authors' `getImdb_cub200.m` uses +1 / -1).
OBJECT_LABEL = 1
NEGATIVE_LABEL = 0
NEGATIVE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def read_negatives(folder: str | os.PathLike) -> np.ndarray:
    """Lists the background images of a folder for the single-category task.

    The paper trains single-category models against generic background
    images (the authors ship 1000 in `data/neg/`). Files ending in
    `NEGATIVE_EXTENSIONS` (any case) directly in `folder` are used, sorted by
    name; subfolders are ignored.

    Args:
        folder: folder holding the images.

    Returns:
        str `(M,)` array of absolute paths, sorted.

    Raises:
        FileNotFoundError: if `folder` does not exist.
        ValueError: if it holds no image.

    Example:

    >>> paths = read_negatives("/data/neg")  # doctest: +SKIP
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"Negatives folder not found: {path!r}. Pass a folder of "
            f"background images ({', '.join(NEGATIVE_EXTENSIONS)})."
        )
    names = sorted(
        name
        for name in os.listdir(path)
        if name.lower().endswith(NEGATIVE_EXTENSIONS)
        and os.path.isfile(os.path.join(path, name))
    )
    if not names:
        raise ValueError(
            f"Negatives folder {path!r} holds no image with extension "
            f"{NEGATIVE_EXTENSIONS}. Add background images or pass "
            "`negatives=None`."
        )
    return np.array([os.path.join(path, name) for name in names], dtype=str)


def split_negatives(paths: np.ndarray, split: str) -> np.ndarray:
    """The `split` ("train", "test" or "all") of a sorted list of paths."""
    # The authors' getImdb_cub200.m: first half train, second half test.
    num_train = (len(paths) + 1) // 2
    if split == "train":
        return paths[:num_train]
    if split == "test":
        return paths[num_train:]
    return paths


def resolve_negatives(negatives, split: str) -> np.ndarray | None:
    """`negatives` (None, a folder or a list of paths) as `split`'s paths."""
    if negatives is None:
        return None
    if isinstance(negatives, (str, os.PathLike)):
        paths = read_negatives(negatives)
    else:
        paths = np.asarray(negatives, dtype=str)
        if paths.ndim != 1 or paths.size == 0:
            raise ValueError(
                "`negatives` must be a folder or a non-empty 1-D list of "
                f"image paths. Received an array of shape {paths.shape}."
            )
    return split_negatives(paths, split)
