"""The evaluation report as `results.json` entries, text, and a file.

`training_results` picks the entries of an `evaluation.report`
(`evaluate_dataset`) summary that the training driver keeps in
`results.json`; `format_summary` writes a few human-readable lines of it;
`write_summary` saves it as strict JSON. A metric added to the report
reaches `results.json` by being listed in `_TRAINING_RESULTS` here, and the
digest by a line in `format_summary`.
"""

import json
import os
from typing import Any

import numpy as np

# Written next to the figures when an `out_dir` is given.
SUMMARY_FILENAME = "summary.json"


# `evaluate_dataset` entries that `training_results` copies as they are.
_TRAINING_RESULTS = (
    "location_instability_reason",
    "location_instability_fixed_cell",
    "location_instability_shuffled_landmarks",
    "location_instability_per_part",
    "location_instability_per_part_reason",
    "location_instability_per_part_fixed_cell",
    "location_instability_per_part_shuffled_landmarks",
    "location_instability_selection",
    "dead_maps",
)


def training_results(summary: dict) -> dict:
    """The entries of an `evaluate_dataset` summary kept in `results.json`.

    The training driver (`keras_interp.apps.train.evaluate_model`) returns
    these, so a metric added to the summary reaches `results.json` by being
    listed in `_TRAINING_RESULTS`.

    Args:
        summary: an `evaluate_dataset` summary.

    Returns:
        A dict: `accuracy`, `num_images`, `location_instability` (NaN when
        not computed, as `results.json` has always written it),
        `num_filters_evaluated`, and the summary's
        `location_instability_reason`, `location_instability_fixed_cell`,
        `location_instability_shuffled_landmarks`,
        `location_instability_per_part`,
        `location_instability_per_part_reason`,
        `location_instability_per_part_fixed_cell`,
        `location_instability_per_part_shuffled_landmarks`,
        `location_instability_selection` and `dead_maps` (None where the
        summary lacks them).
    """
    value = summary["location_instability"]
    results = {
        "accuracy": summary["accuracy"],
        "num_images": summary["counts"]["num_images"],
        "location_instability": float("nan") if value is None else value,
        "num_filters_evaluated": summary["counts"]["num_filters_evaluated"],
    }
    for key in _TRAINING_RESULTS:
        results[key] = summary.get(key)
    return results


def _number(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_summary(summary: dict) -> str:
    """A few human-readable lines of an `evaluate_dataset` summary.

    The command line (`python -m keras_interp.apps.evaluate`) prints them
    to stderr (stdout stays the JSON). Every location-instability value
    comes with its two reference values, and a metric that was not
    computed with its reason:

    ```
    accuracy: 0.4792 (240 images)
    location instability: 0.0412 (lower is better; fixed cell 0.0660,
        shuffled landmarks 0.0905; 120 of 128 filters; masked map of
        part_conv; landmarks back, forehead, tail)
    top-k: 100 images per filter and landmark, of at most 48 (back),
        ...; on average 47.2 used; 3.1% of the maps it would select were
        dead (peak <= 0) and dropped
    dead maps (masked map, peak <= 0): 12.5% of (image, filter) maps,
        6.3% of filters on every image
    part interpretability: not computed: <reason>
    ```

    (each entry is one line).

    Args:
        summary: an `evaluate_dataset` (or `apps.evaluate.evaluate`)
            summary.

    Returns:
        The lines, joined by newlines.
    """
    counts = summary["counts"]
    lines = [
        f"accuracy: {_number(summary['accuracy'])} "
        f"({counts['num_images']} images)"
    ]
    value = summary["location_instability"]
    if value is None:
        lines.append(
            "location instability: not computed: "
            f"{summary['location_instability_reason']}"
        )
    else:
        lines.append(
            f"location instability: {_number(value)} (lower is better; "
            "fixed cell "
            f"{_number(summary['location_instability_fixed_cell'])}, "
            "shuffled landmarks "
            f"{_number(summary['location_instability_shuffled_landmarks'])};"
            f" {counts['num_filters_evaluated']} of {counts['num_filters']} "
            f"filters; {summary['map']} map of {summary['layer']}; "
            f"landmarks {', '.join(summary['parts'])})"
        )
    selection = summary.get("location_instability_selection")
    if selection is not None:
        pools = ", ".join(
            f"{n} ({name})" for name, n in selection["pool_images"].items()
        )
        used = [v for v in selection["mean_selected_images"].values() if v]
        dropped = selection["dead_dropped_fraction"]
        lines.append(
            f"top-k: {selection['top_k']} images per filter and landmark, "
            f"of at most {pools} per category"
            + (f"; on average {np.mean(used):.1f} used" if used else "")
            + (
                f"; {dropped:.1%} of the maps it would select were dead "
                "(peak <= 0) and dropped"
                if dropped is not None
                else ""
            )
        )
    dead = summary["dead_maps"]
    lines.append(
        f"dead maps ({dead['map']} map, peak <= 0): "
        f"{dead['map_fraction']:.1%} of (image, filter) maps, "
        f"{dead['filter_fraction']:.1%} of filters on every image"
    )
    value = summary["part_interpretability"]
    lines.append(
        f"part interpretability: {_number(value)} (higher is better)"
        if value is not None
        else "part interpretability: not computed: "
        f"{summary['part_interpretability_reason']}"
    )
    return "\n".join(lines)


def write_summary(summary: dict, out_dir: str) -> str:
    """Writes `summary` as strict JSON to `<out_dir>/summary.json`.

    Args:
        summary: an `evaluate_dataset` (or `apps.evaluate.evaluate`)
            summary (no NaN: undefined values are None).
        out_dir: the output folder (created if needed).

    Returns:
        The path written.

    Raises:
        ValueError: if `summary` holds a NaN or infinity.
    """
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, SUMMARY_FILENAME)
    with open(path, "w") as f:
        json.dump(summary, f, indent=2, allow_nan=False)
        f.write("\n")
    return path
