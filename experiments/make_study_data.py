"""Writes the study's datasets: the embedded scenes, one category vs negatives.

Two independent draws of `keras_interp.data.write_synthetic_scenes` with one
category (the paper's single-category setting, Table 5: one object class
against background images):

* `<out>/single` (seed 0): 800 object images (400 train, 400 test) and 400
  negatives (200 train, 200 test); the study trains and reports on it.
* `<out>/single_val` (seed 1): 400 object images (200 / 200) and 200
  negatives (100 / 100); the learning-rate grid is trained on its train
  split and scored on its test split, so the reported test split is never
  used to pick anything.
* `<out>/multi` (seed 2): 3 object categories, 600 images each (300 train,
  300 test), no negatives: the multi-category task.
* `<out>/multi_val` (seed 3): the same 3 categories, 200 images each
  (100 / 100), for the learning-rate grid of the multi-category task.

    python experiments/make_study_data.py runs/study_data
"""

import os
import sys

from keras_interp import data

SETS = {
    "single": dict(seed=0, images_per_class=800, num_negatives=400),
    "single_val": dict(seed=1, images_per_class=400, num_negatives=200),
    "multi": dict(seed=2, num_classes=3, images_per_class=600, num_negatives=0),
    "multi_val": dict(
        seed=3, num_classes=3, images_per_class=200, num_negatives=0
    ),
}


def main(out):
    for name, kwargs in SETS.items():
        root = os.path.join(out, name)
        if os.path.isfile(os.path.join(root, "images.txt")):
            print(f"{root}: exists")
            continue
        data.write_synthetic_scenes(root, **{"num_classes": 1, **kwargs})
        print(f"{root}: written ({kwargs})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/study_data")
