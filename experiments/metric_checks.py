"""Two checks on what the location-instability number can mean here.

1. A constant-location reference: the instability of an imaginary filter
   whose peak is always the same cell, for every cell of the 8x8 part_conv
   grid (receptive-field centres 4 + 8 i px in the 64 px crop), over all
   test images with the landmark visible (the metric takes the top 100 by
   activation; a constant filter has no ranking, so all are used). On
   box-cropped objects the landmarks sit at similar places, so "always the
   same cell" is already fairly stable; a filter must beat this to show
   that it follows a part.
2. For saved models: the fraction of (test image, part_conv filter) maps
   whose peak is <= 0 after ReLU ("dead" maps). On such maps the argmax is a
   tie (cell 0 by convention) and the masked/post-ReLU map and the raw map
   give different peak locations.
3. For saved models: how spread the peak cells of a filter are over the
   test images, as the entropy (nats) of each live filter's argmax-cell
   histogram on the raw part_conv map, averaged over filters, next to the
   same entropy of each landmark's cell (log 64 = 4.16 is uniform). The
   exact -MI with fixed uniform template priors and Z_T normalised over the
   batch is higher when different images peak at different cells.

    python experiments/metric_checks.py [runs/study/<run>/model.keras ...]
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_interp  # noqa: E402,F401
from keras_interp import data as data_lib  # noqa: E402
from keras_interp.evaluation import feature_maps  # noqa: E402

IMAGE = 64
STRIDE, OFFSET = 8, 4.0


def _test():
    index = data_lib.read_cub(data_lib.default_data_dir())
    ds = data_lib.make_dataset(
        index, split="test", image_size=IMAGE, batch_size=32,
        drop_remainder=False,
    )
    batches = list(ds.as_numpy_iterator())
    names = [str(n) for n in index.part_names]
    return batches, names


def constant_reference(batches, names):
    parts = np.concatenate([b["parts"] for b in batches])  # [N, P, 2] x, y
    visible = np.concatenate([b["part_visible"] for b in batches])
    diag = np.hypot(IMAGE, IMAGE)
    grid = OFFSET + STRIDE * np.arange(IMAGE // STRIDE)
    values = np.zeros((len(grid), len(grid)))
    for i, y in enumerate(grid):
        for j, x in enumerate(grid):
            per_part = []
            for k in range(len(names)):
                p = parts[visible[:, k], k]
                d = np.hypot(p[:, 0] - x, p[:, 1] - y) / diag
                per_part.append(np.std(d, ddof=1))
            values[i, j] = np.mean(per_part)
    return values


def _entropy(cells, size=IMAGE // STRIDE):
    counts = np.bincount(cells, minlength=size * size).astype(float)
    p = counts / counts.sum()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def landmark_entropy(batches, names):
    parts = np.concatenate([b["parts"] for b in batches])
    visible = np.concatenate([b["part_visible"] for b in batches])
    cells = np.clip((parts // STRIDE).astype(int), 0, IMAGE // STRIDE - 1)
    index = cells[..., 1] * (IMAGE // STRIDE) + cells[..., 0]
    return {
        n: _entropy(index[visible[:, k], k]) for k, n in enumerate(names)
    }


def model_checks(path, batches):
    model = keras.saving.load_model(path, compile=False)
    probe = feature_maps.feature_map_model(model, "part_conv", map="raw")
    maps = np.concatenate(
        [probe.predict_on_batch(b["image"]) for b in batches]
    )  # [N, H, W, F], pre-ReLU
    n, h, w, f = maps.shape
    peaks = maps.max(axis=(1, 2))
    dead = peaks <= 0
    cells = maps.reshape(n, h * w, f).argmax(1)  # [N, F]
    live = dead.mean(0) <= 0.5
    entropy = [_entropy(cells[:, c]) for c in range(f) if live[c]]
    return (
        float(dead.mean()),
        float((~live).mean()),
        float(np.mean(entropy)) if entropy else float("nan"),
    )


def main(argv):
    batches, names = _test()
    values = constant_reference(batches, names)
    print(f"landmarks: {names}")
    print(
        "constant-location instability: best cell "
        f"{values.min():.4f}, centre cells {values[3:5, 3:5].mean():.4f}, "
        f"corner cell (0, 0) {values[0, 0]:.4f}, mean over cells "
        f"{values.mean():.4f}"
    )
    entropies = landmark_entropy(batches, names)
    print(
        "landmark cell entropy (nats): "
        + ", ".join(f"{k} {v:.2f}" for k, v in entropies.items())
    )
    for path in argv[1:]:
        dead, mostly, entropy = model_checks(path, batches)
        name = os.path.basename(os.path.dirname(path))
        print(
            f"{name}: dead maps {dead:.2f} of (image, filter); filters dead "
            f"on > half the images {mostly:.2f}; peak-cell entropy of the "
            f"other filters {entropy:.2f} nats",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv)
