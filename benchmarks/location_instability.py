"""(e) Location-instability evaluation time, 2,000 images x 512 filters.

Synthesises the peaks of `--images` images x `--filters` filters on a
`n x n` map (VGG16's 14 x 14 at 224: stride 16, offset 8), with
`--landmarks` random landmarks (about 80 % visible), and times
`keras_interp.evaluation.location_instability(...)` with the paper's
top-100 images (`evaluation.TOP_K`): median of `--reps` calls after one
warm-up. It also times the multi-category form (`labels`, `--categories`
classes), which runs the metric once per category.

`--collect-images N` also times `collect_peaks` (the model pass that
produces the peaks) on N random images with a VGG16 interpretable model at
224 (TensorFlow backend, "part_conv"), and extrapolates to `--images`.

    python benchmarks/location_instability.py
    python benchmarks/location_instability.py --landmarks 15 --collect-images 32
"""

import argparse
import functools
import statistics
import sys
import time

import numpy as np
from _common import emit

TARGET_S = 60.0
# Theoretical receptive field of VGG16's conv5_3 (pixels).
VGG16_RF_SIZE = 212


def parse(argv):
    from keras_interp.evaluation import TOP_K

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--filters", type=int, default=512)
    p.add_argument("--landmarks", type=int, default=3)
    p.add_argument("--map-size", type=int, default=14)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--top-k", type=int, default=TOP_K)
    p.add_argument(
        "--categories",
        type=int,
        default=5,
        help="classes of the multi-category run (0 = skip)",
    )
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--collect-images", type=int, default=0)
    p.add_argument("--collect-batch", type=int, default=8)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def synthetic_peaks(args, seed=0):
    rng = np.random.default_rng(seed)
    n, f, k = args.images, args.filters, args.landmarks
    index = rng.integers(0, args.map_size, size=(n, f, 2))
    value = rng.gamma(2.0, 1.0, size=(n, f)).astype("float32")
    landmarks = rng.uniform(0, args.image_size, size=(n, k, 2))
    visible = rng.uniform(size=(n, k)) < 0.8
    labels = rng.integers(0, max(args.categories, 1), size=(n,))
    return index, value, landmarks.astype("float32"), visible, labels


def time_calls(fn, reps):
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summary(times):
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
    }


def collect(args):
    """Times `collect_peaks` with a VGG16 interpretable model."""
    import keras
    import tensorflow as tf

    import keras_interp
    from keras_interp.evaluation import collect_peaks
    from keras_interp.evaluation import feature_map_model

    keras.utils.set_random_seed(0)
    model = keras_interp.models.build_part_classifier(
        "vgg16", num_classes=2, image_size=args.image_size, weights=None
    ).inference
    rng = np.random.default_rng(0)
    n = args.collect_images
    images = rng.uniform(0, 255, (n, args.image_size, args.image_size, 3))
    parts = rng.uniform(0, args.image_size, (n, args.landmarks, 2))
    data = tf.data.Dataset.from_tensor_slices(
        {
            "image": images.astype("float32"),
            "parts": parts.astype("float32"),
            "part_visible": np.ones((n, args.landmarks), bool),
        }
    ).batch(args.collect_batch)
    # Warm-up on one batch (graph tracing), then the timed pass.
    collect_peaks(model, "part_conv", data.take(1))
    start = time.perf_counter()
    peaks = collect_peaks(model, "part_conv", data)
    seconds = time.perf_counter() - start
    assert peaks.index.shape == (n, model.get_layer("part_conv").filters, 2)
    # The model pass alone, for the overhead of collecting.
    probe = feature_map_model(model, "part_conv")
    start = time.perf_counter()
    for batch in data.as_numpy_iterator():
        probe.predict_on_batch(batch["image"])
    forward = time.perf_counter() - start
    return {
        "images": n,
        "seconds": seconds,
        "forward_only_seconds": forward,
        "seconds_per_image": seconds / n,
        "extrapolated_s": seconds / n * args.images,
    }


def main(argv=None):
    args = parse(argv)
    from keras_interp.evaluation import ReceptiveField
    from keras_interp.evaluation import location_instability

    # Synthetic peaks need only a grid of cells tiling the image (VGG16's
    # conv5_3 at 224: stride 16, offset 8); the metric reads the RF size
    # nowhere, so the one given is VGG16's.
    stride = args.image_size // args.map_size
    rf = ReceptiveField(
        stride=(stride, stride),
        offset=(stride / 2, stride / 2),
        size=(VGG16_RF_SIZE, VGG16_RF_SIZE),
    )
    index, value, landmarks, visible, labels = synthetic_peaks(args)

    single = functools.partial(
        location_instability,
        index,
        value,
        landmarks,
        visible,
        image_size=args.image_size,
        receptive_field=rf,
        top_k=args.top_k,
    )
    multi = functools.partial(single, labels=labels)

    results = {}
    score = single()
    results["single_category"] = summary(time_calls(single, args.reps))
    results["single_category"]["score"] = score
    s = results["single_category"]
    verdict = "PASS" if s["median_s"] < TARGET_S else "MISS"
    print(
        f"location_instability {args.images} images x {args.filters} filters"
        f" x {args.landmarks} landmarks: {s['median_s']:.3f} s (median of "
        f"{args.reps}; min {s['min_s']:.3f}, max {s['max_s']:.3f}); "
        f"score {score:.4f}  target < {TARGET_S:.0f} s: {verdict}",
        flush=True,
    )
    if args.categories > 1:
        results["multi_category"] = summary(time_calls(multi, args.reps))
        m = results["multi_category"]
        print(
            f"  with labels ({args.categories} categories): "
            f"{m['median_s']:.3f} s (min {m['min_s']:.3f}, max "
            f"{m['max_s']:.3f})",
            flush=True,
        )
    if args.collect_images:
        results["collect_peaks"] = collect(args)
        c = results["collect_peaks"]
        print(
            f"collect_peaks (VGG16 at {args.image_size}, CPU): "
            f"{c['seconds_per_image'] * 1e3:.0f} ms/image on "
            f"{c['images']} images -> about {c['extrapolated_s']:.0f} s for "
            f"{args.images}; the forward pass alone takes "
            f"{c['forward_only_seconds'] / c['seconds']:.0%} of it",
            flush=True,
        )
    emit("location_instability", args, results, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
