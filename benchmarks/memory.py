"""(b) Peak training memory: interpretable model vs the identical plain CNN.

Each measurement runs in a fresh subprocess (peaks cannot be reset between
models in one process), one variant at a time, alternating the variants
over the repetitions (A B, B A, ...). The child builds the model like
`step_time.py`, runs `--warmup` train steps (compilation and first
allocations) and `--steps` more, and reports:

* CPU (TensorFlow): `tf_allocator_peak`, the peak of TensorFlow's CPU
  allocator over the steps after the warm-up
  (`tf.config.experimental.get_memory_info("CPU:0")`, reset after the
  warm-up): tensors only (weights, optimizer state, activations,
  gradients, XLA buffers handed out by TensorFlow), the CPU analogue of a
  GPU's `peak_bytes_in_use`. Then `peak_over_import`, the peak resident set size
  (VmHWM) minus the RSS right after importing the libraries, i.e. model,
  optimizer, activations, gradients and compiled code, without the shared
  libraries; `steady_peak_over_import`, the same peak over the steps after
  the warm-up only (VmHWM reset through `/proc/self/clear_refs`), which
  leaves out the compiler's transient memory; and the total peak RSS.
  `tracemalloc` would not see TensorFlow's allocations.
* JAX: the device's `peak_bytes_in_use` (meaningful on a GPU) and XLA's
  static `memory_analysis()` of the compiled train step (argument + temp
  bytes), which is deterministic and also works on the CPU.

The ratio is interpretable / plain of the medians over the repetitions
(memory is nearly deterministic; min and max are printed).

    python benchmarks/memory.py --backend tensorflow --batch 8 --size 224 \
        --jit off
    KERAS_BACKEND=jax python benchmarks/memory.py --backend jax --batch 64 \
        --size 224 --precision mixed_bfloat16
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

from _common import current_rss_mib
from _common import emit
from _common import peak_rss_mib
from _common import set_backend_from_argv

TARGET = 1.05


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--backend", default="tensorflow", choices=("tensorflow", "jax")
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument(
        "--jit",
        default=None,
        choices=("on", "off"),
        help="default: off on TensorFlow, on (always) on JAX",
    )
    p.add_argument(
        "--precision",
        default="float32",
        choices=("float32", "mixed_bfloat16", "mixed_float16"),
    )
    p.add_argument("--backbone", default="vgg16")
    p.add_argument("--model", default="full", choices=("full", "head"))
    p.add_argument("--variants", default="plain,interp")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def _vm_hwm_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return peak_rss_mib()


def _reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(args):
    """Measures one variant; prints one JSON line."""
    import _models
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow  # noqa: F401  (count its import in the baseline)
    else:
        import jax

    rss_import = current_rss_mib()
    _models.set_precision(args.precision)
    net = _models.build(
        args.child, model=args.model, backbone=args.backbone, size=args.size
    )
    x, y = _models.batch(net, args.batch)
    step = _models.train_step(
        net, x, y, jit=args.jit == "on", variant=args.child
    )
    result = {"variant": args.child, "rss_import_mib": rss_import}
    if keras.backend.backend() == "jax":
        result["xla_memory_analysis"] = step.memory_analysis()
    for _ in range(args.warmup):
        step()
    result["peak_over_import_mib"] = _vm_hwm_mib() - rss_import
    result["peak_total_mib"] = _vm_hwm_mib()
    tf_stats = keras.backend.backend() == "tensorflow"
    if tf_stats:
        tensorflow.config.experimental.reset_memory_stats("CPU:0")
    if _reset_hwm():
        for _ in range(args.steps):
            step()
        result["steady_peak_over_import_mib"] = _vm_hwm_mib() - rss_import
        result["peak_over_import_mib"] = max(
            result["peak_over_import_mib"],
            result["steady_peak_over_import_mib"],
        )
    result["peak_total_mib"] = max(result["peak_total_mib"], _vm_hwm_mib())
    if tf_stats:
        info = tensorflow.config.experimental.get_memory_info("CPU:0")
        result["tf_allocator_peak_mib"] = info["peak"] / 2**20
        result["tf_allocator_current_mib"] = info["current"] / 2**20
    if keras.backend.backend() == "jax":
        stats = jax.devices()[0].memory_stats() or {}
        for key in ("peak_bytes_in_use", "bytes_in_use", "bytes_limit"):
            if key in stats:
                result[key] = int(stats[key])
    print("CHILD " + json.dumps(result), flush=True)


def run_child(argv, variant):
    env = dict(os.environ)
    env["KERAS_BACKEND"] = argv_backend(argv)
    # On a GPU, allocate on demand so that the peak is the model's own.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    command = [
        sys.executable,
        os.path.abspath(__file__),
        *argv,
        "--child",
        variant,
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("CHILD "):
            return json.loads(line[len("CHILD ") :])
    raise RuntimeError(
        f"child {variant} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    )


def argv_backend(argv):
    args = parse(argv)
    return args.backend


def _metrics(record):
    out = {}
    for key in (
        "tf_allocator_peak_mib",
        "peak_bytes_in_use",
        "peak_over_import_mib",
        "steady_peak_over_import_mib",
        "peak_total_mib",
    ):
        if record.get(key) is not None:
            out[key] = record[key]
    analysis = record.get("xla_memory_analysis")
    if analysis:
        out["xla_argument_plus_temp_bytes"] = (
            analysis["argument_size_in_bytes"] + analysis["temp_size_in_bytes"]
        )
        out["xla_temp_bytes"] = analysis["temp_size_in_bytes"]
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    set_backend_from_argv(argv)
    args = parse(argv)
    if args.jit is None:
        args.jit = "on" if args.backend == "jax" else "off"
    if args.child:
        child(args)
        return
    variants = args.variants.split(",")
    records = {name: [] for name in variants}
    for rep in range(args.reps):
        order = variants if rep % 2 == 0 else variants[::-1]
        for name in order:
            record = run_child(argv, name)
            records[name].append(record)
            print(
                f"  rep {rep + 1}/{args.reps} {name}: "
                + json.dumps(_metrics(record)),
                flush=True,
            )
    base = variants[0]
    results = {"records": records, "ratios": []}
    for name in variants[1:]:
        for key in _metrics(records[base][0]):
            num = [_metrics(r)[key] for r in records[name]]
            den = [_metrics(r)[key] for r in records[base]]
            ratios = [a / b for a, b in zip(num, den)]
            summary = {
                "ratio": f"{name}/{base}",
                "metric": key,
                "median": statistics.median(num) / statistics.median(den),
                "min": min(ratios),
                "max": max(ratios),
                "median_values": {
                    name: statistics.median(num),
                    base: statistics.median(den),
                },
            }
            results["ratios"].append(summary)
            verdict = "PASS" if summary["median"] <= TARGET else "MISS"
            print(
                f"{name}/{base} {key}: {summary['median']:.3f} "
                f"(per-rep min {summary['min']:.3f}, max {summary['max']:.3f};"
                f" {summary['median_values'][name]:.4g} vs "
                f"{summary['median_values'][base]:.4g})  target <= {TARGET}: "
                f"{verdict}",
                flush=True,
            )
    emit("memory", args, results, args.out)


if __name__ == "__main__":
    main()
