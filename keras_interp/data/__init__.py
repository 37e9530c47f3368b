"""Data sources and the `tf.data` input pipeline.

`read_cub` reads an extracted CUB-200-2011 folder, `write_synthetic_parts`
and `default_data_dir` provide a generated stand-in in the same format, and
`make_dataset` / `load_tfds_cub` turn either source into batches of one
schema (see `keras_interp.data.pipeline`).
"""

from keras_interp.data.cub import CubIndex
from keras_interp.data.cub import read_cub
from keras_interp.data.pipeline import dataset_sizes
from keras_interp.data.pipeline import flip_permutation
from keras_interp.data.pipeline import make_dataset
from keras_interp.data.pipeline import read_negatives
from keras_interp.data.synthetic import default_data_dir
from keras_interp.data.synthetic import write_synthetic_parts
from keras_interp.data.tfds_cub import load_tfds_cub
