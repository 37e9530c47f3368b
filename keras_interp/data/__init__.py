"""Data sources and the `tf.data` input pipeline.

`read_cub` reads an extracted CUB-200-2011 folder, `write_synthetic_parts`,
`write_synthetic_scenes` (un-cropped scenes over real photos) and
`default_data_dir` provide generated stand-ins in the same format, and
`make_dataset` / `load_tfds_cub` turn either source into batches of one
schema (see `keras_interp.data.pipeline`). `read_negatives` lists the
background images of the single-category task (the folder `NEGATIVES_DIR`
of a generated dataset).

Only the pipeline needs TensorFlow. It is imported on first use, so that the
CUB reader and the synthetic dataset work under any Keras backend without
TensorFlow installed.
"""

import importlib

from keras_interp.data.cub import CubIndex
from keras_interp.data.cub import read_cub
from keras_interp.data.negatives import NEGATIVES_DIR
from keras_interp.data.negatives import read_negatives
from keras_interp.data.synthetic import default_data_dir
from keras_interp.data.synthetic import write_synthetic_parts
from keras_interp.data.synthetic import write_synthetic_scenes

# Public names of the TensorFlow modules, imported on first access.
_LAZY = {
    "dataset_sizes": "pipeline",
    "flip_permutation": "pipeline",
    "make_dataset": "pipeline",
    "load_tfds_cub": "tfds_cub",
}


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
