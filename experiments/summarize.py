"""Summarise the study's runs as a markdown table.

Reads `runs/study/<variant>_s<seed>/results.json` (written by
`examples/train_cub.py`) and, when present, `evaluate_<map>.json` next to it
(stdout of `python -m keras_interp.evaluate --model .../model.keras
--map <map>`), and prints one row per variant:

* accuracy and location instability, mean +- std over seeds (std with N-1;
  "-" for a single seed);
* ratio of the variant's mean instability to the ordinary CNN's mean over
  the *same seeds*, and the accuracy drop in points against the same
  ordinary runs (paired by seed);
* the filter losses logged over the last epoch (lambda * sum over filters of
  -MI, mean over its batches) for `top_mask` and `part_conv`, and the same
  divided by lambda and the number of filters: the mean per-filter MI in
  nats (its ceiling is log(n^2 + 1) = 4.17 for the 8x8 maps);
* part interpretability (evaluate.py, masked map), instability on the
  authors' raw map (and its ratio to the ordinary CNN's raw-map value over
  the same seeds) and on the backbone's top conv, when those files exist.

    python experiments/summarize.py [runs/study]
"""

import glob
import json
import math
import os
import re
import sys

# keras_interp.layers.interpretable_mask.DEFAULT_LOSS_WEIGHTS.
DEFAULT_LOSS_WEIGHTS = {"mutual_information": 0.02, "authors": 1.0}
# Filters of tiny_vgg's top conv (block4_conv2) and of part_conv.
NUM_FILTERS = {"top_mask": 128, "part_conv": 128}
BASELINE = "ordinary"


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _mean_std(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def _fmt(mean, std, digits):
    if mean is None:
        return "-"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def collect(root):
    runs = {}
    for path in sorted(glob.glob(os.path.join(root, "*_s*", "results.json"))):
        folder = os.path.basename(os.path.dirname(path))
        match = re.fullmatch(r"(.+)_s(\d+)", folder)
        if not match:
            continue
        results = _load(path)
        if results is None:
            continue
        variant, seed = match.group(1), int(match.group(2))
        config = results.get("config", {})
        logs = results.get("final_train_logs", {})
        weight = config.get("loss_weight")
        if weight is None:
            weight = DEFAULT_LOSS_WEIGHTS.get(config.get("loss"), 0.0)
        row = {
            "seed": seed,
            "interpretable": config.get("interpretable", True),
            "accuracy": results.get("accuracy"),
            "instability": results.get("location_instability"),
            "train_accuracy": logs.get("accuracy"),
            "seconds": results.get("seconds"),
        }
        for layer, filters in NUM_FILTERS.items():
            value = logs.get(f"{layer}_filter_loss")
            row[f"{layer}_loss"] = value
            row[f"{layer}_mi"] = (
                -value / (weight * filters)
                if value is not None and weight and row["interpretable"]
                else None
            )
        extra = os.path.dirname(path)
        masked = _load(os.path.join(extra, "evaluate_masked.json")) or {}
        raw = _load(os.path.join(extra, "evaluate_raw.json")) or {}
        top = _load(os.path.join(extra, "evaluate_top_masked.json")) or {}
        row["part_interpretability"] = masked.get("part_interpretability")
        row["instability_raw"] = raw.get("location_instability")
        row["instability_top"] = top.get("location_instability")
        runs.setdefault(variant, {})[seed] = row
    return runs


def table(runs):
    base = runs.get(BASELINE, {})
    order = [BASELINE] + sorted(v for v in runs if v != BASELINE)
    lines = [
        "| variant | seeds | test accuracy | location instability | "
        "ratio to ordinary | accuracy drop (points) | train accuracy | "
        "top_mask filter loss (MI/filter) | part_conv filter loss "
        "(MI/filter) | part interpretability | instability, raw map | "
        "ratio, raw map | instability, top conv |",
        "|" + "---|" * 13,
    ]
    for variant in order:
        if variant not in runs:
            continue
        seeds = sorted(runs[variant])
        rows = [runs[variant][s] for s in seeds]

        def stat(key, rows=rows):
            return _mean_std([r[key] for r in rows])

        acc, acc_std = stat("accuracy")
        ins, ins_std = stat("instability")
        paired = [base[s] for s in seeds if s in base]
        ratio = drop = ratio_raw = "-"
        raw, raw_std = stat("instability_raw")
        if variant != BASELINE and len(paired) == len(seeds):
            # Only when every run of both has its raw-map value (paired).
            base_raw, _ = _mean_std([r["instability_raw"] for r in paired])
            complete = all(
                r["instability_raw"] is not None for r in paired + rows
            )
            if complete and raw is not None and base_raw:
                ratio_raw = f"{raw / base_raw:.2f}"
            base_ins, _ = _mean_std([r["instability"] for r in paired])
            base_acc, _ = _mean_std([r["accuracy"] for r in paired])
            if ins is not None and base_ins:
                ratio = f"{ins / base_ins:.2f}"
            if acc is not None and base_acc is not None:
                drop = f"{100 * (base_acc - acc):+.1f}"

        def loss_cell(layer):
            loss, _ = stat(f"{layer}_loss")
            mi, _ = stat(f"{layer}_mi")
            if loss is None:
                return "-"
            return f"{loss:.2e} ({mi:.1e})" if mi is not None else f"{loss:.2e}"

        cells = [
            variant,
            ",".join(str(s) for s in seeds),
            _fmt(acc, acc_std, 3),
            _fmt(ins, ins_std, 4),
            ratio,
            drop,
            _fmt(*stat("train_accuracy"), 3),
            loss_cell("top_mask"),
            loss_cell("part_conv"),
            _fmt(*stat("part_interpretability"), 3),
            _fmt(raw, raw_std, 4),
            ratio_raw,
            _fmt(*stat("instability_top"), 4),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_run(runs):
    lines = [
        "| run | accuracy | instability | train accuracy | seconds |",
        "|---|---|---|---|---|",
    ]
    for variant in sorted(runs):
        for seed, r in sorted(runs[variant].items()):
            acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
            ins = (
                "-" if r["instability"] is None else f"{r['instability']:.4f}"
            )
            tr = (
                "-"
                if r["train_accuracy"] is None
                else f"{r['train_accuracy']:.3f}"
            )
            lines.append(
                f"| {variant}_s{seed} | {acc} | {ins} | {tr} | "
                f"{r['seconds']} |"
            )
    return "\n".join(lines)


def main(argv):
    root = argv[1] if len(argv) > 1 else "runs/study"
    runs = collect(root)
    if not runs:
        print(f"No runs/study results under {root!r}.")
        return 1
    print(table(runs))
    print()
    print(per_run(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
