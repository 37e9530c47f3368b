"""(a) Train-step time: interpretable model vs the identical plain CNN.

Builds `build_part_classifier(backbone, interpretable=True)` and the same
model with `interpretable=False` (plus any extra `--variants`), then times
their train steps interleaved in this one process and prints the median
per-repetition ratio of each variant to `plain`.

CPU (TensorFlow backend, issue target <= 1.05):

    python benchmarks/step_time.py --backend tensorflow --batch 8 \
        --size 224 --jit on
    python benchmarks/step_time.py --backend tensorflow --batch 8 \
        --size 224 --jit off

GPU (JAX backend, target <= 1.02; see run_gpu.sh):

    KERAS_BACKEND=jax python benchmarks/step_time.py --backend jax \
        --batch 64 --size 224 --precision mixed_bfloat16

`--model head` times only the layers after the backbone cut (a 1x1 conv
stand-in for the backbone, then the builder's head), which isolates the
absolute cost of the interpretable layers with little noise.
"""

import argparse
import sys

from _common import emit
from _common import format_ratio
from _common import interleaved
from _common import ratio_summary
from _common import set_backend_from_argv

# Issue targets by device: train-step ratio on a GPU and on a CPU.
TARGETS = {"gpu": 1.02, "cpu": 1.05}


def device_kind(backend):
    """Returns "gpu" if the backend computes on a GPU, else "cpu"."""
    if backend == "jax":
        import jax

        return "gpu" if jax.devices()[0].platform == "gpu" else "cpu"
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--backend", default="tensorflow", choices=("tensorflow", "jax")
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224, help="image side")
    p.add_argument("--jit", default="on", choices=("on", "off"))
    p.add_argument(
        "--precision",
        default="float32",
        choices=("float32", "mixed_bfloat16", "mixed_float16"),
    )
    p.add_argument("--backbone", default="vgg16")
    p.add_argument("--model", default="full", choices=("full", "head"))
    p.add_argument(
        "--map-size",
        type=int,
        default=14,
        help="feature-map side for --model head",
    )
    p.add_argument(
        "--channels",
        type=int,
        default=512,
        help="feature-map channels for --model head",
    )
    p.add_argument(
        "--variants",
        default="plain,interp",
        help="comma-separated; the first is the baseline",
    )
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--steps", type=int, default=1, help="steps per variant per repetition"
    )
    p.add_argument(
        "--compile-only",
        action="store_true",
        help="JAX: print XLA's memory analysis of each step and stop",
    )
    p.add_argument("--out", default=None, help="append the JSON record here")
    return p.parse_args(argv)


def main(argv=None):
    set_backend_from_argv(argv)
    args = parse(argv)
    import _models  # noqa: E402  (after KERAS_BACKEND is set)

    _models.set_precision(args.precision)
    variants = args.variants.split(",")
    steps = []
    for name in variants:
        net = _models.build(
            name,
            model=args.model,
            backbone=args.backbone,
            size=args.size,
            map_size=args.map_size,
            channels=args.channels,
        )
        x, y = _models.batch(net, args.batch)
        step = _models.train_step(net, x, y, jit=args.jit == "on", variant=name)
        steps.append((name, step))
        added = getattr(step, "num_added_losses", None)
        print(
            f"built {name}: {net.count_params():,} parameters"
            + ("" if added is None else f", {added} add_loss terms"),
            flush=True,
        )
    memory = {}
    for name, step in steps:
        analyse = getattr(step, "memory_analysis", None)
        if analyse is not None:
            analysis = analyse()
            if analysis:
                memory[name] = analysis
    if memory:
        base = variants[0]

        def total(a):
            return a["argument_size_in_bytes"] + a["temp_size_in_bytes"]

        for name in variants[1:]:
            print(
                f"XLA memory (arguments + temp) {name}/{base} = "
                f"{total(memory[name]) / total(memory[base]):.3f} "
                f"({total(memory[name]) / 2**20:.0f} MiB vs "
                f"{total(memory[base]) / 2**20:.0f} MiB)",
                flush=True,
            )
    if args.compile_only:
        emit("xla_memory", args, {"xla_memory_analysis": memory}, args.out)
        return
    times, cpu_times = interleaved(
        steps, reps=args.reps, warmup=args.warmup, steps=args.steps
    )
    device = device_kind(args.backend)
    target = TARGETS[device] if args.model == "full" else None
    results = {
        "times_s": times,
        "cpu_s": cpu_times,
        "ratios": [],
        "xla_memory_analysis": memory,
        "device": device,
    }
    base = variants[0]
    for name in variants[1:]:
        summary = ratio_summary(times, name, base, cpu_times)
        results["ratios"].append(summary)
        print(format_ratio(summary, target), flush=True)
    emit("step_time", args, results, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
