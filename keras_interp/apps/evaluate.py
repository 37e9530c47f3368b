r"""Evaluate a saved model on a CUB-format folder: the assembly and the CLI.

`evaluate(model, index)` builds the CUB-specific inputs of the library's
report (`keras_interp.evaluation.report.evaluate_dataset`): the
unshuffled, unaugmented datasets of one split of a `data.read_cub` folder
(plus its background images for a single-category model), the landmark
indices, the image size, and the checks that the model's classes match
the data. What is computed, on which map, is documented in
`keras_interp.evaluation.report`.

Command line (prints the JSON summary to stdout and a short digest,
`evaluation.report.format_summary`, to stderr; exit status 2 with a one-line
message on stderr for bad inputs, a diverged model included):

    python -m keras_interp.apps.evaluate \
        --model runs/train_cub/model.keras \
        [--data_dir CUB_200_2011] [--parts back,forehead,tail] [--out DIR] \
        [--split test] [--map masked|raw] [--batch_size 32] \
        [--negatives DIR] [--layer part_conv] [--no_crop]

(`python -m keras_interp.evaluate` runs the same.) TensorFlow backend (the
`tf.data` pipeline of `keras_interp.data`).
"""

import argparse
import json
import os
import sys
from typing import Any
from typing import Optional
from typing import Sequence

import keras

from keras_interp import data as data_lib
from keras_interp import evaluation
from keras_interp import models
from keras_interp.apps import run_folder
from keras_interp.evaluation import feature_maps
from keras_interp.evaluation import report

# Exit status of the command line for bad inputs (as argparse uses).
USAGE_ERROR = 2


def _model_image_size(model: keras.Model, image_size: Any) -> int:
    shape = tuple(model.inputs[0].shape) if model.inputs else ()
    fixed = (
        shape[1]
        if len(shape) == 4 and shape[1] is not None and shape[1] == shape[2]
        else None
    )
    if image_size is None:
        if fixed is None:
            raise ValueError(
                "`image_size` is needed: the model's input shape "
                f"{shape} has no fixed square size. Pass image_size=224 "
                "(the size it was trained at)."
            )
        return int(fixed)
    image_size = report.check_count("image_size", image_size, 1)
    if fixed is not None and image_size != fixed:
        raise ValueError(
            f"`image_size` must match the model's input size {fixed}. "
            f"Received: image_size={image_size}. Pass image_size=None."
        )
    return image_size


def _check_classes(model, index, negatives) -> None:
    outputs = model.outputs[0].shape[-1]
    expected = 2 if negatives is not None else index.num_classes
    if outputs is not None and outputs != expected:
        if negatives is None:
            fix = (
                "A single-category model (2 outputs: background, object) "
                "needs `negatives`, a folder of background images; "
                "otherwise evaluate on the dataset it was trained on."
            )
        else:
            fix = (
                "With `negatives` the task is objects vs background (2 "
                "classes); pass negatives=None for a multi-class model."
            )
        raise ValueError(
            f"`model` has {outputs} outputs but the evaluation data has "
            f"{expected} classes ({index.data_dir!r}, negatives="
            f"{'given' if negatives is not None else 'None'}). {fix}"
        )


def _part_names_arg(parts: Any) -> Any:
    if isinstance(parts, str):
        parts = [p.strip() for p in parts.split(",") if p.strip()]
    return list(parts) if parts else None


def evaluate(
    model: keras.Model,
    index: data_lib.CubIndex,
    *,
    split: str = "test",
    image_size: Optional[int] = None,
    batch_size: int = 32,
    crop_to_box: bool = True,
    parts: Optional[Sequence[str]] = None,
    layer: str = models.PART_CONV,
    eval_map: str = "masked",
    negatives: Any = None,
    part_interpretability: bool = True,
    out_dir: Optional[str] = None,
    num_figure_filters: int = 8,
    top_k_images: int = 8,
) -> dict:
    """Evaluates a model on one split of a CUB-format dataset.

    Builds the (unshuffled, unaugmented, every image) datasets with
    `data.make_dataset` and runs `evaluation.report.evaluate_dataset`,
    whose docstring lists the summary's entries. Location instability
    uses the model's `eval_map`; part interpretability (when the dataset
    has `part_segmentations/` and `part_interpretability`) uses the masked
    map of the objects only, never the background images.

    Args:
        model: the image-only model (`PartClassifier.inference`, or a
            loaded `model.keras`): RGB 0..255 in, logits out.
        index: the dataset, from `data.read_cub`.
        split: `"test"` (default), `"train"` or `"all"`.
        image_size: image side; default the model's input size.
        batch_size: images per batch (memory only).
        crop_to_box: crop objects to their box, as in training.
        parts: landmark names for location instability (a list, or a
            comma-separated string); default: the authors' CUB landmarks
            `evaluation.CUB_EVAL_PARTS` when present, else every part.
        layer: the evaluated layer (default "part_conv").
        eval_map: `"masked"` (default; paper: after ReLU and mask) or
            `"raw"` (authors' code: before them), for location instability
            and the figures.
        negatives: background images (a folder or paths) for a
            single-category model: objects are label 1, background 0, and
            the test split is their second half. None for multi-class.
        part_interpretability: score part interpretability when the
            dataset has part masks.
        out_dir: if given, per-filter PNG grids and `summary.json` go here.
        num_figure_filters: filters to draw
            (`evaluation.report.FIGURE_SELECTION`).
        top_k_images: images per filter grid.

    Returns:
        The `evaluate_dataset` summary, plus `split`, `image_size`,
        `crop_to_box`, `data_dir`, and `num_objects` / `num_negatives` in
        `counts`.

    Raises:
        ValueError: for unknown `parts` (listing the available ones),
            `parts` on a dataset without landmarks, a bad `layer` (listing
            the layers with feature maps), a class count that does not
            match the model, a bad `split`, size or `eval_map`.
        FileNotFoundError: if the `negatives` folder does not exist.

    Example:

    >>> from keras_interp import data
    >>> model = keras.models.load_model("runs/train_cub/model.keras")
    ... # doctest: +SKIP
    >>> summary = evaluate(model, data.read_cub("CUB_200_2011"))
    ... # doctest: +SKIP
    >>> summary["parts"]  # doctest: +SKIP
    ['back', 'forehead', 'tail']
    """
    # The weights are checked by `evaluate_dataset`, once.
    layer = report.check_model(model, layer, weights=False)
    feature_maps.check_map(eval_map)
    image_size = _model_image_size(model, image_size)
    names = _part_names_arg(parts)
    if names and not index.has_parts:
        raise ValueError(
            f"`parts` {names} were requested, but the dataset at "
            f"{index.data_dir!r} has no part annotations (parts/). Pass "
            "parts=None."
        )
    part_ids = (
        evaluation.landmark_ids(index.part_names, names)
        if index.has_parts
        else None
    )
    _check_classes(model, index, negatives)
    sizes = data_lib.dataset_sizes(index, split=split, negatives=negatives)
    common = dict(
        split=split,
        image_size=image_size,
        batch_size=batch_size,
        crop_to_box=crop_to_box,
        drop_remainder=False,
    )
    dataset = data_lib.make_dataset(
        index,
        include_parts=part_ids is not None,
        negatives=negatives,
        **common,
    )
    has_masks = index.part_mask_paths is not None
    mask_dataset = None
    if part_interpretability and has_masks:
        mask_dataset = data_lib.make_dataset(
            index, include_parts=False, include_part_masks=True, **common
        )
    summary = report.evaluate_dataset(
        model,
        dataset,
        parts=part_ids,
        part_names=[str(n) for n in index.part_names],
        layer=layer,
        map=eval_map,
        part_mask_dataset=mask_dataset,
        part_mask_images=sizes["objects"],
        out_dir=out_dir,
        num_figure_filters=num_figure_filters,
        top_k_images=top_k_images,
        metadata={
            "split": split,
            "image_size": image_size,
            "crop_to_box": bool(crop_to_box),
            "data_dir": index.data_dir,
        },
    )
    if mask_dataset is None:
        summary["part_interpretability_reason"] = (
            "disabled (part_interpretability=False)"
            if has_masks
            else "the dataset has no part masks (part_segmentations/)"
        )
    summary["counts"]["num_objects"] = sizes["objects"]
    summary["counts"]["num_negatives"] = sizes["negatives"]
    if out_dir is not None:
        report.write_summary(summary, out_dir)
    return summary


# --- Command line -----------------------------------------------------------


def _run_config(model_path: str) -> dict:
    """The training config in `results.json` next to the model, if any.

    The training driver writes it (`apps.run_folder.RESULTS_FILE`); its
    `"config"` gives the defaults of the task, crop and embedded dataset.
    """
    path = os.path.join(os.path.dirname(model_path), run_folder.RESULTS_FILE)
    try:
        with open(path) as f:
            config = json.load(f).get("config")
    except (OSError, ValueError, AttributeError):
        return {}
    return config if isinstance(config, dict) else {}


def _parser() -> argparse.ArgumentParser:
    # Imported here: the pipeline needs TensorFlow, the module does not.
    from keras_interp.data.pipeline import SPLITS

    parser = argparse.ArgumentParser(
        prog="python -m keras_interp.apps.evaluate",
        description=(
            "Evaluate a saved model (accuracy, location instability, part "
            "interpretability) on a CUB-format folder and print a JSON "
            "summary."
        ),
    )
    parser.add_argument(
        "--model", required=True, help="Saved image-only model (.keras)."
    )
    parser.add_argument(
        "--data_dir",
        default=None,
        help="CUB_200_2011-format folder (or its parent); default: the "
        "embedded synthetic part dataset.",
    )
    parser.add_argument(
        "--parts",
        default=None,
        help="Comma-separated landmarks for location instability; default: "
        f"{','.join(evaluation.CUB_EVAL_PARTS)} when present, else every "
        "part.",
    )
    parser.add_argument(
        "--out",
        default=None,
        help=f"Folder for PNG grids and {report.SUMMARY_FILENAME}.",
    )
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument(
        "--map",
        default="masked",
        choices=feature_maps.MAPS,
        help="Map for location instability and figures: masked (paper, "
        "after ReLU and mask) or raw (authors' code). Part "
        "interpretability always uses the masked map.",
    )
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument(
        "--negatives",
        default=None,
        help="Background images for a single-category model; default "
        f"<data_dir>/{data_lib.NEGATIVES_DIR} when "
        f"{run_folder.RESULTS_FILE} says task=single.",
    )
    parser.add_argument("--layer", default=models.PART_CONV)
    parser.add_argument(
        "--no_crop",
        action="store_true",
        help="Use whole images, not bounding-box crops (default: as in "
        f"training per {run_folder.RESULTS_FILE}, else crop).",
    )
    parser.add_argument("--num_figure_filters", type=int, default=8)
    parser.add_argument("--top_k_images", type=int, default=8)
    parser.add_argument(
        "--no_part_interpretability",
        action="store_true",
        help="Skip part interpretability (two extra passes).",
    )
    return parser


def _negatives(args, config: dict, data_dir: str) -> Any:
    if args.negatives:
        return args.negatives
    if config.get("task") != "single":
        return None
    folder = os.path.join(data_dir, data_lib.NEGATIVES_DIR)
    if not os.path.isdir(folder):
        raise ValueError(
            "The model was trained for the single-category task "
            f"({run_folder.RESULTS_FILE}: task='single'), but {folder!r} "
            "does not exist. Pass --negatives DIR, a folder of background "
            "images."
        )
    return folder


def run(args: argparse.Namespace) -> dict:
    """Runs the command line's evaluation; returns the summary.

    Args:
        args: parsed `_parser()` arguments.

    Returns:
        The `evaluate` summary, with `model` (its path) added.

    Raises:
        ValueError, FileNotFoundError: for bad inputs (see `evaluate`).
    """
    if not os.path.isfile(args.model):
        raise FileNotFoundError(
            f"--model: no such file: {args.model!r}. Pass a saved .keras "
            "model, e.g. runs/train_cub/model.keras."
        )
    config = _run_config(args.model)
    data_dir = args.data_dir or data_lib.default_data_dir(
        variant=config.get("embedded_dataset", "parts")
    )
    index = data_lib.read_cub(data_dir)
    try:
        model = keras.models.load_model(args.model)
    except (ValueError, OSError, TypeError) as error:
        raise ValueError(
            f"--model: cannot load {args.model!r} as a Keras model: {error}"
        ) from error
    summary = evaluate(
        model,
        index,
        split=args.split,
        batch_size=args.batch_size,
        crop_to_box=not args.no_crop and config.get("crop_to_box", True),
        parts=args.parts,
        layer=args.layer,
        eval_map=args.map,
        negatives=_negatives(args, config, index.data_dir),
        part_interpretability=not args.no_part_interpretability,
        out_dir=args.out,
        num_figure_filters=args.num_figure_filters,
        top_k_images=args.top_k_images,
    )
    summary["model"] = os.path.abspath(args.model)
    if args.out is not None:
        report.write_summary(summary, args.out)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        summary = run(args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    print(json.dumps(summary, indent=2, allow_nan=False))
    print(report.format_summary(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
