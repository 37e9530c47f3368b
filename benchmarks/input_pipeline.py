"""(d) Throughput of the CUB `tf.data` pipeline, in images per second.

Writes (once, into `--data-dir`) a CUB-200-2011-format folder of
full-size JPEGs, by default like CUB's: about 500 x 375 pixels (sizes drawn
from CUB's common shapes), textured content with CUB-like file sizes, a
bounding box covering 30-90 % of each side, and 15 landmarks in
`parts/part_locs.txt` (about 80 % visible). `--source synthetic` uses
`keras_interp.data.write_synthetic_parts(image_size=500)` instead (square
images).

Then times `make_dataset(index, split="all", image_size=224,
batch_size=32, augment=True, shuffle=True, repeat=True)`: `--reps`
repetitions, each on a fresh iterator, of `--warmup-batches` untimed then
`--batches` timed batches; it reports the median images/s and its spread.
The variants alternate (A B, B A, ...); never two iterators at once.
Because the machine may be shared, it also reports the process CPU time
per image and the throughput that would give on all `nproc` cores
(`cpu_bound_images_per_s`).

`--variants` adds, interleaved, prototypes of the same pipeline written here
(not the library), to measure proposed changes:

* `decode_only`: read + `decode_jpeg` only, the decoder's ceiling;
* `crop_decode`: `make_dataset` with `tf.image.decode_and_crop_jpeg`
  decoding only the box window (same pixels as decode-then-crop).

    python benchmarks/input_pipeline.py --data-dir /tmp/cub_bench
"""

import argparse
import os
import sys
import time

import numpy as np
from _common import emit
from _common import machine_info

TARGET = 400.0
# CUB-200-2011's 15 parts, in its `parts/parts.txt` order.
CUB_PARTS = (
    "back",
    "beak",
    "belly",
    "breast",
    "crown",
    "forehead",
    "left eye",
    "left leg",
    "left wing",
    "nape",
    "right eye",
    "right leg",
    "right wing",
    "tail",
    "throat",
)
# Frequent CUB image shapes (width, height); CUB's mean is about 470 x 385.
CUB_SHAPES = (
    (500, 375),
    (500, 333),
    (500, 400),
    (375, 500),
    (500, 500),
    (500, 346),
    (333, 500),
    (500, 354),
)


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default="/tmp/keras_interp_cub_bench")
    p.add_argument(
        "--source", default="cub_like", choices=("cub_like", "synthetic")
    )
    p.add_argument("--num-images", type=int, default=500)
    p.add_argument("--num-classes", type=int, default=5)
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument(
        "--variants",
        default="library",
        help="comma-separated: library, decode_only, crop_decode",
    )
    p.add_argument("--warmup-batches", type=int, default=5)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def _texture(rng, height, width):
    """Smooth colour fields plus fine noise: CUB-like JPEG entropy."""
    from PIL import Image

    coarse = rng.uniform(0, 255, size=(6, 8, 3)).astype("uint8")
    base = np.asarray(
        Image.fromarray(coarse).resize((width, height), Image.BICUBIC),
        dtype="float32",
    )
    mid = rng.uniform(-40, 40, size=(height // 8 + 1, width // 8 + 1, 3))
    mid = np.kron(mid, np.ones((8, 8, 1)))[:height, :width]
    fine = rng.normal(0.0, 12.0, size=(height, width, 1))
    return np.clip(base + mid + fine, 0, 255).astype("uint8")


def write_cub_like(root, *, num_images, num_classes, quality, seed=0):
    """A CUB-200-2011-format folder of full-size textured JPEGs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "parts"), exist_ok=True)
    tables = {k: [] for k in ("images", "labels", "split", "boxes", "locs")}
    for i in range(1, num_images + 1):
        label = (i - 1) % num_classes + 1
        folder = f"{label:03d}.Class_{label}"
        os.makedirs(os.path.join(root, "images", folder), exist_ok=True)
        width, height = CUB_SHAPES[rng.integers(len(CUB_SHAPES))]
        pixels = _texture(rng, height, width)
        name = f"{folder}/Class_{label}_{i:05d}.jpg"
        Image.fromarray(pixels).save(
            os.path.join(root, "images", name), "JPEG", quality=quality
        )
        box_w = int(width * rng.uniform(0.3, 0.9))
        box_h = int(height * rng.uniform(0.3, 0.9))
        x = int(rng.integers(0, width - box_w + 1))
        y = int(rng.integers(0, height - box_h + 1))
        tables["images"].append(f"{i} {name}")
        tables["labels"].append(f"{i} {label}")
        tables["split"].append(f"{i} {int(rng.uniform() < 0.5)}")
        tables["boxes"].append(f"{i} {x}.0 {y}.0 {box_w}.0 {box_h}.0")
        for k in range(1, len(CUB_PARTS) + 1):
            if rng.uniform() < 0.8:
                px = x + rng.uniform(0, box_w)
                py = y + rng.uniform(0, box_h)
                tables["locs"].append(f"{i} {k} {px:.1f} {py:.1f} 1")
            else:
                tables["locs"].append(f"{i} {k} 0.0 0.0 0")
    files = {
        "images.txt": tables["images"],
        "image_class_labels.txt": tables["labels"],
        "train_test_split.txt": tables["split"],
        "bounding_boxes.txt": tables["boxes"],
        "classes.txt": [
            f"{c} {c:03d}.Class_{c}" for c in range(1, num_classes + 1)
        ],
        "parts/parts.txt": [f"{k} {n}" for k, n in enumerate(CUB_PARTS, 1)],
        "parts/part_locs.txt": tables["locs"],
    }
    for filename, lines in files.items():
        with open(os.path.join(root, filename), "w") as f:
            f.write("\n".join(lines) + "\n")


def ensure_data(args):
    root = os.path.join(args.data_dir, args.source)
    if os.path.exists(os.path.join(root, "images.txt")):
        return root
    start = time.perf_counter()
    if args.source == "cub_like":
        write_cub_like(
            root,
            num_images=args.num_images,
            num_classes=args.num_classes,
            quality=args.jpeg_quality,
        )
    else:
        from keras_interp.data import write_synthetic_parts

        per_class = max(1, args.num_images // args.num_classes)
        write_synthetic_parts(
            root,
            num_classes=args.num_classes,
            images_per_class=per_class,
            image_size=500,
            num_negatives=0,
        )
    print(f"wrote {root} in {time.perf_counter() - start:.1f} s", flush=True)
    return root


def crop_decode_dataset(index, **kwargs):
    """`make_dataset` with `decode_and_crop_jpeg` (a prototype, not the lib).

    Decoding only the crop window gives the same pixels as decoding the
    whole JPEG and slicing it; the box window and landmarks are then
    expressed relative to the crop, so `preprocess` sees a whole image.
    """
    import tensorflow as tf

    from keras_interp.data import pipeline

    original = pipeline._decode_file

    def decode(example, *, include_part_mask):
        if include_part_mask:
            return original(example, include_part_mask=include_part_mask)
        data = tf.io.read_file(example["path"])
        shape = tf.io.extract_jpeg_shape(data)
        box = example["box"]
        window = pipeline._crop_window(box, shape[0], shape[1])
        x0, y0, x1, y1 = window[0], window[1], window[2], window[3]
        full = tf.stack([0, 0, shape[0], shape[1]])
        crop = tf.where(
            example["use_box"], tf.stack([y0, x0, y1 - y0, x1 - x0]), full
        )
        image = tf.image.decode_and_crop_jpeg(data, crop, channels=3)
        origin = tf.cast(tf.stack([crop[1], crop[0]]), "float32")
        size = tf.cast(tf.stack([crop[3], crop[2]]), "float32")
        return {
            "image": image,
            # The crop is now the whole image; keep the fractional box edges.
            "box": tf.concat([tf.zeros([2]), size], 0),
            "label": example["label"],
            "parts": example["parts"] - origin,
            "part_visible": example["part_visible"],
        }

    pipeline._decode_file = decode
    try:
        return pipeline.make_dataset(index, **kwargs)
    finally:
        pipeline._decode_file = original


def decode_only_dataset(index, *, batch_size, **_):
    import tensorflow as tf

    def load(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.shape(image)

    ds = tf.data.Dataset.from_tensor_slices(index.image_paths).repeat()
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def measure(iterator, batches, batch_size):
    cpu = time.process_time()
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    images = batches * batch_size
    return images / wall, cpu / images


def main(argv=None):
    args = parse(argv)
    import tensorflow as tf  # noqa: F401

    from keras_interp.data import make_dataset
    from keras_interp.data import read_cub

    root = ensure_data(args)
    index = read_cub(root)
    paths = index.image_paths
    mean_kib = np.mean([os.path.getsize(p) for p in paths]) / 1024
    print(f"{len(paths)} images, mean JPEG {mean_kib:.0f} KiB", flush=True)
    kwargs = dict(
        split="all",
        image_size=args.image_size,
        batch_size=args.batch,
        augment=not args.no_augment,
        shuffle=True,
        repeat=True,
    )
    builders = {
        "library": make_dataset,
        "decode_only": decode_only_dataset,
        "crop_decode": crop_decode_dataset,
    }
    variants = args.variants.split(",")
    datasets = {name: builders[name](index, **kwargs) for name in variants}
    rates = {name: [] for name in variants}
    cpu_per_image = {name: [] for name in variants}
    for rep in range(args.reps):
        order = variants if rep % 2 == 0 else variants[::-1]
        for name in order:
            # A fresh iterator per measurement: a paused tf.data iterator
            # keeps decoding into its prefetch buffer in the background,
            # which would both steal CPU and inflate its next reading.
            iterator = iter(datasets[name])
            for _ in range(args.warmup_batches):
                next(iterator)
            rate, cpu = measure(iterator, args.batches, args.batch)
            del iterator
            rates[name].append(rate)
            cpu_per_image[name].append(cpu)
        print(
            f"  rep {rep + 1}/{args.reps}: "
            + ", ".join(
                f"{n} {rates[n][-1]:.0f} img/s "
                f"({cpu_per_image[n][-1] * 1e3:.2f} ms CPU/img)"
                for n in variants
            ),
            flush=True,
        )
    nproc = machine_info()["nproc"]
    results = {"mean_jpeg_kib": mean_kib, "num_images": len(paths)}
    for name in variants:
        median = float(np.median(rates[name]))
        cpu = float(np.median(cpu_per_image[name]))
        results[name] = {
            "images_per_s": rates[name],
            "median_images_per_s": median,
            "min": min(rates[name]),
            "max": max(rates[name]),
            "cpu_s_per_image": cpu_per_image[name],
            "cpu_bound_images_per_s": nproc / cpu,
        }
        verdict = "PASS" if median >= TARGET else "MISS"
        print(
            f"{name}: {median:.0f} img/s (median of {args.reps}; min "
            f"{min(rates[name]):.0f}, max {max(rates[name]):.0f}); "
            f"{cpu * 1e3:.2f} ms CPU per image -> {nproc / cpu:.0f} img/s "
            f"on {nproc} idle cores"
            + (
                f"  target >= {TARGET:.0f}: {verdict}"
                if name == "library"
                else ""
            ),
            flush=True,
        )
    emit("input_pipeline", args, results, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
