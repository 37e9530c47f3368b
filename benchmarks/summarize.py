"""Prints the records of a results file (`*.jsonl`) as Markdown tables.

Usage: `python benchmarks/summarize.py benchmarks/results/cpu.jsonl`, or
`python benchmarks/summarize.py "$OUT/gpu.jsonl"` for the GPU records.
"""

import json
import sys


def _config(args):
    keys = ("backend", "model", "batch", "size", "jit", "precision", "dtype")
    return ", ".join(
        f"{k}={args[k]}" for k in keys if args.get(k) not in (None, "")
    )


def step_rows(record):
    for r in record["results"]["ratios"]:
        cpu = ""
        if "cpu_median" in r:
            cpu = (
                f"{r['cpu_median']:.3f} [{r['cpu_min']:.3f}, "
                f"{r['cpu_max']:.3f}]"
            )
        yield (
            f"| {record['machine']['date']} | {_config(record['args'])} | "
            f"{r.get('pass', '')} {r['ratio']} | {r['median']:.3f} "
            f"[{r['min']:.3f}, {r['max']:.3f}] | {r['ratio_of_mins']:.3f} | "
            f"{cpu} | "
            + ", ".join(f"{k} {v:.3g} s" for k, v in r["median_s"].items())
            + f" | {r['reps']} |"
        )


def memory_rows(record):
    for r in record["results"]["ratios"]:
        yield (
            f"| {record['machine']['date']} | {_config(record['args'])} | "
            f"{r['ratio']} | {r['metric']} | {r['median']:.3f} "
            f"[{r['min']:.3f}, {r['max']:.3f}] | "
            + " vs ".join(f"{v:.4g}" for v in r["median_values"].values())
            + " |"
        )


def xla_rows(record):
    analyses = record["results"]["xla_memory_analysis"]
    variants = record["args"]["variants"].split(",")

    def total(a):
        return a["argument_size_in_bytes"] + a["temp_size_in_bytes"]

    base = analyses[variants[0]]
    for name in variants[1:]:
        yield (
            f"| {record['machine']['date']} | {_config(record['args'])} | "
            f"{name}/{variants[0]} | XLA arguments + temp | "
            f"{total(analyses[name]) / total(base):.3f} | "
            f"{total(analyses[name]) / 2**20:.0f} vs "
            f"{total(base) / 2**20:.0f} MiB |"
        )


def main(path):
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    for record in records:
        name = record["benchmark"]
        print(f"\n### {name}: `{record['command']}`\n")
        if name in ("step_time", "loss_alone"):
            print(
                "| date | config | ratio | wall median [min, max] | "
                "ratio of mins | CPU-time median [min, max] | medians | "
                "reps |\n|---|---|---|---|---|---|---|---|"
            )
            rows = step_rows(record)
        elif name == "memory":
            print(
                "| date | config | ratio | metric | median [min, max] | "
                "values |\n|---|---|---|---|---|---|"
            )
            rows = memory_rows(record)
        elif name == "xla_memory":
            print(
                "| date | config | ratio | metric | ratio | values |\n"
                "|---|---|---|---|---|---|"
            )
            rows = xla_rows(record)
        else:
            print("```\n" + json.dumps(record["results"], indent=1)[:3000])
            print("```")
            rows = []
        for row in rows:
            print(row)


if __name__ == "__main__":
    main(sys.argv[1])
