"""Summarise the study (`experiments/run_study.sh`) as markdown tables.

Reads `runs/study/<run>/results.json` (written by `examples/train_cub.py`)
and the per-epoch Keras log lines in `runs/study/<run>/train.log`, and prints

* the learning-rate grid: per arm and rate, train and validation accuracy;
* the main table: per arm, mean +- std over seeds (std with N-1) of train
  and test accuracy and of location instability, the ratio of the arm's mean
  instability to the ordinary CNN's over the same seeds, the two reference
  values `keras_interp.evaluate` reports (a filter fixed at its best cell;
  the same filters with shuffled landmarks), dead maps, and the
  filter-to-task gradient ratio of each interpretable layer after epoch 1
  and after the last epoch.

    python experiments/summarize.py [runs/study]
"""

import glob
import json
import math
import os
import re
import sys

ARMS = ("ordinary", "interpretable", "lambda0", "nomask")
ARM_NAMES = {
    "ordinary": "ordinary CNN",
    "interpretable": "interpretable (shipped defaults)",
    "lambda0": "control: lambda = 0 (mask only)",
    "nomask": "control: filter loss, no mask",
}
LAYERS = ("top_mask", "part_conv")


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _grad_ratios(log_path):
    """`{layer: [ratio after epoch 1, 2, ...]}` from a verbose=2 train.log."""
    ratios = {layer: [] for layer in LAYERS}
    try:
        lines = open(log_path).read().splitlines()
    except OSError:
        return ratios
    for line in lines:
        for layer in LAYERS:
            match = re.search(rf"{layer}_grad_ratio: ([0-9.eE+-]+)", line)
            if match:
                ratios[layer].append(float(match.group(1)))
    return ratios


def _mean_std(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def _fmt(values, digits):
    mean, std = _mean_std(values)
    if mean is None:
        return "-"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _run(path):
    r = _load(os.path.join(path, "results.json"))
    if r is None:
        return None
    dead = r.get("dead_maps") or {}
    selection = r.get("location_instability_selection") or {}
    return {
        "lr": r["config"]["learning_rate"],
        "seed": r["config"]["seed"],
        "train_acc": r["final_train_logs"].get("accuracy"),
        "acc": r["accuracy"],
        "li": r.get("location_instability"),
        "fixed": r.get("location_instability_fixed_cell"),
        "shuffled": r.get("location_instability_shuffled_landmarks"),
        "dead_maps": dead.get("map_fraction"),
        "dead_filters": dead.get("filter_fraction"),
        "dropped": selection.get("dead_dropped_fraction"),
        "ratios": _grad_ratios(os.path.join(path, "train.log")),
        "seconds": r.get("seconds"),
    }


def grid_table(out):
    rows = [
        "| arm | learning rate | train accuracy | validation accuracy | "
        "instability (validation) |",
        "|---|---|---|---|---|",
    ]
    for arm in ARMS:
        runs = []
        for path in glob.glob(os.path.join(out, f"grid_{arm}_lr*")):
            run = _run(path)
            if run is not None:
                runs.append(run)
        if not runs:
            continue
        best = max(runs, key=lambda r: (r["acc"], -r["lr"]))
        for run in sorted(runs, key=lambda r: r["lr"]):
            mark = " (picked)" if run is best else ""
            rows.append(
                f"| {arm} | {run['lr']:g}{mark} | {run['train_acc']:.3f} | "
                f"{run['acc']:.3f} | {run['li']:.4f} |"
            )
    return "\n".join(rows)


def main_table(out):
    by_arm = {}
    for arm in ARMS:
        for path in sorted(glob.glob(os.path.join(out, f"{arm}_s[0-9]*"))):
            run = _run(path)
            if run is not None:
                by_arm.setdefault(arm, []).append(run)
    base = {r["seed"]: r for r in by_arm.get("ordinary", [])}
    rows = [
        "| arm | seeds | lr | train acc | test acc | instability | ratio | "
        "fixed cell | shuffled | dead maps (filters) | dead dropped | "
        "grad ratio top_mask, ep 1 / last | grad ratio part_conv, ep 1 / last |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, runs in by_arm.items():
        paired = [r for r in runs if r["seed"] in base]
        ratio = "-"
        if paired:
            own, _ = _mean_std([r["li"] for r in paired])
            ref, _ = _mean_std([base[r["seed"]]["li"] for r in paired])
            if own is not None and ref:
                ratio = f"{own / ref:.2f}"
        grads = []
        for layer in LAYERS:
            first = [r["ratios"][layer][0] for r in runs if r["ratios"][layer]]
            last = [r["ratios"][layer][-1] for r in runs if r["ratios"][layer]]
            grads.append(
                f"{_fmt(first, 3)} / {_fmt(last, 3)}" if first else "-"
            )
        rows.append(
            f"| {ARM_NAMES[arm]} | {','.join(str(r['seed']) for r in runs)} | "
            f"{runs[0]['lr']:g} | {_fmt([r['train_acc'] for r in runs], 3)} | "
            f"{_fmt([r['acc'] for r in runs], 3)} | "
            f"{_fmt([r['li'] for r in runs], 4)} | {ratio} | "
            f"{_fmt([r['fixed'] for r in runs], 4)} | "
            f"{_fmt([r['shuffled'] for r in runs], 4)} | "
            f"{_fmt([r['dead_maps'] for r in runs], 3)} "
            f"({_fmt([r['dead_filters'] for r in runs], 3)}) | "
            f"{_fmt([r['dropped'] for r in runs], 3)} | {grads[0]} | "
            f"{grads[1]} |"
        )
    return "\n".join(rows)


def main(out):
    print("### Learning-rate grid (validation draw, seed 0)\n")
    print(grid_table(out))
    print("\n### Test split (mean ± std over seeds)\n")
    print(main_table(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/study")
