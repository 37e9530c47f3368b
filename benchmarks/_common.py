"""Shared helpers of the benchmark scripts: timing, machine info, output.

Every ratio is measured side by side in one process: after warm-up, the
variants run interleaved (A, B, A, B, ...), so that load from other
processes on a shared machine hits both sides alike. Each repetition gives
one ratio of adjacent measurements; the scripts report the median of those
ratios, their spread (min, max) and the median time of every variant.

Nothing here imports TensorFlow or JAX: the GPU scripts run where only one
of them is installed.
"""

import datetime
import json
import os
import platform
import resource
import statistics
import sys
import time

# Let `python benchmarks/<script>.py` import the package from the checkout.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def machine_info():
    """Date, host and library versions, for the results doc."""
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            info["ram_gib"] = round(kib / 2**20, 1)
        info["loadavg_when_written"] = os.getloadavg()
    except OSError:
        pass
    for module in ("keras", "tensorflow", "jax", "torch", "numpy"):
        if module in sys.modules:
            info[module] = getattr(sys.modules[module], "__version__", "?")
    return info


def peak_rss_mib():
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def time_call(fn, steps):
    """Wall and process-CPU seconds per call of `fn` (which must block).

    The CPU time (all threads of this process) is less sensitive than the
    wall time to other processes on a shared machine, though thread-pool
    spinning and cache contention still show in it.
    """
    cpu = time.process_time()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    wall = (time.perf_counter() - start) / steps
    return wall, (time.process_time() - cpu) / steps


def interleaved(variants, *, reps, warmup=1, steps=1, log=print):
    """Times `variants` (a list of `(name, fn)`) interleaved.

    Each variant is first called `warmup` times (compilation, allocation).
    Then, `reps` times, each variant runs `steps` calls in turn; the order
    of the variants alternates between repetitions (A B, B A, ...), so a
    trend in the machine's load cancels in the per-repetition ratios.

    Returns:
        `{name: [wall seconds per call, one per repetition]}`, and the same
        for process CPU seconds.
    """
    for name, fn in variants:
        start = time.perf_counter()
        for _ in range(warmup):
            fn()
        log(f"  warm-up {name}: {time.perf_counter() - start:.2f} s")
    times = {name: [] for name, _ in variants}
    cpu_times = {name: [] for name, _ in variants}
    for rep in range(reps):
        order = variants if rep % 2 == 0 else variants[::-1]
        for name, fn in order:
            wall, cpu = time_call(fn, steps)
            times[name].append(wall)
            cpu_times[name].append(cpu)
        log(
            f"  rep {rep + 1}/{reps}: "
            + ", ".join(
                f"{n}={times[n][-1] * 1e3:.1f} ms "
                f"(cpu {cpu_times[n][-1] * 1e3:.0f})"
                for n, _ in variants
            ),
            flush=True,
        )
    return times, cpu_times


def _ratios(times, numerator, denominator):
    return [a / b for a, b in zip(times[numerator], times[denominator])]


def ratio_summary(times, numerator, denominator, cpu_times=None):
    """Median, min and max of the per-repetition ratios, and both medians.

    With `cpu_times`, the same ratio of process CPU time is added
    (`cpu_median`, `cpu_min`, `cpu_max`).
    """
    ratios = _ratios(times, numerator, denominator)
    summary = {
        "ratio": f"{numerator}/{denominator}",
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "reps": len(ratios),
        "median_s": {
            numerator: statistics.median(times[numerator]),
            denominator: statistics.median(times[denominator]),
        },
        "ratio_of_medians": statistics.median(times[numerator])
        / statistics.median(times[denominator]),
        # The fastest run of each is the least disturbed by other load.
        "ratio_of_mins": min(times[numerator]) / min(times[denominator]),
    }
    if cpu_times is not None:
        cpu = _ratios(cpu_times, numerator, denominator)
        summary.update(
            cpu_median=statistics.median(cpu),
            cpu_min=min(cpu),
            cpu_max=max(cpu),
            cpu_median_s={
                numerator: statistics.median(cpu_times[numerator]),
                denominator: statistics.median(cpu_times[denominator]),
            },
        )
    return summary


def format_ratio(summary, target=None):
    s = summary
    text = (
        f"{s['ratio']} = {s['median']:.3f} (median of {s['reps']}; "
        f"min {s['min']:.3f}, max {s['max']:.3f}; ratio of medians "
        f"{s['ratio_of_medians']:.3f}; of mins {s['ratio_of_mins']:.3f}; "
        + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in s["median_s"].items())
        + ")"
    )
    if "cpu_median" in s:
        text += (
            f"; CPU-time ratio {s['cpu_median']:.3f} "
            f"[{s['cpu_min']:.3f}, {s['cpu_max']:.3f}]"
        )
    if target is not None:
        verdict = "PASS" if s["median"] <= target else "MISS"
        text += f"  target <= {target}: {verdict}"
    return text


def emit(name, args, results, out=None):
    """Prints one `RESULT {json}` line and appends it to `out` if given."""
    record = {
        "benchmark": name,
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "args": vars(args) if args is not None else None,
        "machine": machine_info(),
        "results": results,
    }
    line = json.dumps(record, sort_keys=True, default=str)
    if not out:
        print("RESULT " + line, flush=True)
    else:
        print(f"record appended to {out}", flush=True)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "a") as f:
            f.write(line + "\n")
    return record


def set_backend_from_argv(argv=None):
    """Sets KERAS_BACKEND from `--backend X` before keras is imported."""
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == "--backend" and i + 1 < len(argv):
            os.environ["KERAS_BACKEND"] = argv[i + 1]
        elif arg.startswith("--backend="):
            os.environ["KERAS_BACKEND"] = arg.split("=", 1)[1]
