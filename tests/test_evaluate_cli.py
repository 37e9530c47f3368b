"""The evaluation report (`keras_interp.evaluation.report`), its CUB
assembly and command line (`keras_interp.apps.evaluate`), and the
`keras_interp.evaluate` alias of both.

A tiny synthetic CUB-format set (3 classes x 10 images, 64 px, 6 negatives)
and an untrained tiny_vgg model saved as `.keras`. The library's numbers
are checked against the evaluation primitives run independently
(`collect_peaks` + `location_instability`, `collect_part_interpretability`,
a plain accuracy loop); the command line against the library.
"""

import ast
import dataclasses
import json
import math
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_interp import data
from keras_interp import evaluation
from keras_interp import models
from keras_interp.apps import evaluate as evaluate_lib
from keras_interp.apps import run_folder
from keras_interp.apps import train
from keras_interp.evaluation import feature_maps
from keras_interp.evaluation import report

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.data pipeline"
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_SIZE = 32
NUM_FILTERS = 8
NUM_CLASSES = 3
PARTS = ["back", "head"]
# The figures need matplotlib, an optional dependency.
try:
    import matplotlib  # noqa: F401

    HAS_MATPLOTLIB = True
except ImportError:
    HAS_MATPLOTLIB = False


@pytest.fixture(scope="module")
def parts_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    return data.write_synthetic_parts(
        str(root / "CUB_200_2011"),
        seed=3,
        num_classes=NUM_CLASSES,
        images_per_class=10,
        image_size=64,
        num_negatives=6,
    )


def _save_model(path, num_classes):
    built = models.build_part_classifier(
        "tiny_vgg",
        num_classes=num_classes,
        image_size=IMAGE_SIZE,
        filters=NUM_FILTERS,
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    built.inference.save(path)
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    return _save_model(str(root / "model.keras"), NUM_CLASSES)


@pytest.fixture(scope="module")
def single_model_path(tmp_path_factory):
    """A 2-class (object vs background) model, with its results.json."""
    root = tmp_path_factory.mktemp("single")
    with open(root / "results.json", "w") as f:
        json.dump({"config": {"task": "single", "crop_to_box": True}}, f)
    return _save_model(str(root / "model.keras"), 2)


@pytest.fixture(scope="module")
def test_split(parts_dir, model_path):
    """The library summary and the reference on the test split, once."""
    index = data.read_cub(parts_dir)
    model = keras.models.load_model(model_path)
    part_ids = [list(index.part_names).index(p) for p in PARTS]
    return {
        "summary": evaluate_lib.evaluate(model, index, parts=PARTS),
        "reference": _reference(model, index, "test", part_ids),
    }


def _dataset(index, split, **kwargs):
    return data.make_dataset(
        index,
        split=split,
        image_size=IMAGE_SIZE,
        batch_size=7,
        drop_remainder=False,
        **kwargs,
    )


def _reference(
    model, index, split, parts, map="masked", negatives=None, masks=True
):
    """Accuracy, instability and part interpretability, computed apart."""
    dataset = _dataset(index, split, negatives=negatives)
    correct = total = 0
    for batch in dataset.as_numpy_iterator():
        logits = model.predict_on_batch(batch["image"])
        correct += int(np.sum(np.argmax(logits, -1) == batch["label"]))
        total += len(batch["label"])
    peaks = evaluation.collect_peaks(model, models.PART_CONV, dataset, map=map)
    rf = evaluation.receptive_field(model, models.PART_CONV)
    instability, per_filter, _ = evaluation.location_instability(
        peaks.index,
        peaks.value,
        peaks.landmarks[:, parts],
        peaks.visible[:, parts],
        image_size=IMAGE_SIZE,
        receptive_field=rf,
        return_per_filter=True,
        labels=peaks.labels,  # the paper's multi-category rule
    )
    report = evaluation.location_instability_report(
        peaks.index,
        peaks.value,
        peaks.landmarks[:, parts],
        peaks.visible[:, parts],
        image_size=IMAGE_SIZE,
        receptive_field=rf,
        map_shape=peaks.map_size,
        labels=peaks.labels,
    )
    masks = _dataset(index, split, include_parts=False, include_part_masks=True)
    interpretability = evaluation.collect_part_interpretability(
        model,
        models.PART_CONV,
        masks,
        part_ids=np.arange(1, index.num_parts + 1),
    )
    return {
        "accuracy": correct / total,
        "num_images": total,
        "instability": instability,
        "per_filter": per_filter,
        "mean_peak": peaks.value.mean(axis=0),
        "visible": peaks.visible[:, parts].sum(axis=0),
        "interpretability": interpretability,
        "report": report,
        "dead": evaluation.dead_map_fractions(peaks.value),
    }


def test_evaluate_matches_the_primitives(parts_dir, model_path):
    index = data.read_cub(parts_dir)
    model = keras.models.load_model(model_path)
    summary = evaluate_lib.evaluate(model, index, split="all", parts=PARTS)
    json.dumps(summary, allow_nan=False)  # Strict JSON: no NaN.
    part_ids = [list(index.part_names).index(p) for p in PARTS]
    expected = _reference(model, index, "all", part_ids)
    counts = summary["counts"]
    assert counts["num_images"] == index.num_images == expected["num_images"]
    assert counts["num_objects"] == index.num_images
    assert counts["num_negatives"] == 0
    assert counts["num_filters"] == NUM_FILTERS
    assert counts["num_filters_evaluated"] == int(
        np.isfinite(expected["per_filter"]).sum()
    )
    assert counts["num_filters_evaluated"] > 0
    assert counts["visible_images"] == dict(
        zip(PARTS, expected["visible"].tolist())
    )
    assert counts["part_interpretability_images"] == index.num_images
    assert summary["accuracy"] == pytest.approx(expected["accuracy"])
    assert np.isfinite(summary["location_instability"])
    assert summary["location_instability"] == pytest.approx(
        expected["instability"], rel=1e-6
    )
    # Nonzero here (30 images x 16 cells: 2 cells per filter above T_f).
    assert summary["part_interpretability"] > 0
    assert summary["part_interpretability"] == pytest.approx(
        expected["interpretability"], rel=1e-6
    )
    assert summary["location_instability_reason"] is None
    assert summary["part_interpretability_reason"] is None
    assert summary["parts"] == PARTS
    assert summary["part_interpretability_parts"] == list(index.part_names)
    assert (summary["layer"], summary["map"]) == ("part_conv", "masked")
    assert summary["part_interpretability_map"] == "masked"
    assert (summary["split"], summary["image_size"]) == ("all", IMAGE_SIZE)


def test_defaults_every_part_and_the_raw_map(
    parts_dir, model_path, monkeypatch
):
    index = data.read_cub(parts_dir)
    model = keras.models.load_model(model_path)
    probed = []
    real = feature_maps.feature_map_model

    def spy(model, layer_name, map="masked"):
        probed.append((layer_name, map))
        return real(model, layer_name, map)

    # Every probe (the collectors' too) is built by this function.
    monkeypatch.setattr(feature_maps, "feature_map_model", spy)
    summary = evaluate_lib.evaluate(
        model, index, eval_map="raw", part_interpretability=False
    )
    # The synthetic parts have no "forehead": every part is a landmark.
    assert not set(evaluation.CUB_EVAL_PARTS) <= set(index.part_names)
    assert summary["parts"] == list(index.part_names)
    assert probed == [("part_conv", "raw")]
    assert summary["map"] == "raw"
    expected = _reference(
        model,
        index,
        "test",
        list(range(index.num_parts)),
        map="raw",
        masks=False,
    )
    assert summary["counts"]["num_images"] == expected["num_images"]
    assert summary["location_instability"] == pytest.approx(
        expected["instability"], rel=1e-6
    )
    assert summary["counts"]["visible_images"] == dict(
        zip(summary["parts"], expected["visible"].tolist())
    )


def test_train_evaluate_model_delegates(parts_dir, model_path, test_split):
    index = data.read_cub(parts_dir)
    model = keras.models.load_model(model_path)
    summary = test_split["summary"]
    parts = train._eval_parts(index, PARTS)
    results = train.evaluate_model(
        model,
        _dataset(index, "test"),
        parts=parts,
        part_names=list(index.part_names),
    )
    assert results == {
        "accuracy": summary["accuracy"],
        "num_images": summary["counts"]["num_images"],
        "location_instability": summary["location_instability"],
        "location_instability_reason": None,
        "location_instability_fixed_cell": summary[
            "location_instability_fixed_cell"
        ],
        "location_instability_shuffled_landmarks": summary[
            "location_instability_shuffled_landmarks"
        ],
        "location_instability_per_part": summary[
            "location_instability_per_part"
        ],
        "location_instability_per_part_reason": dict.fromkeys(PARTS),
        "location_instability_per_part_fixed_cell": summary[
            "location_instability_per_part_fixed_cell"
        ],
        "location_instability_per_part_shuffled_landmarks": summary[
            "location_instability_per_part_shuffled_landmarks"
        ],
        "location_instability_selection": summary[
            "location_instability_selection"
        ],
        "num_filters_evaluated": summary["counts"]["num_filters_evaluated"],
        "dead_maps": summary["dead_maps"],
    }
    assert results["location_instability_fixed_cell"] is not None
    no_parts = train.evaluate_model(
        model, _dataset(index, "test", include_parts=False)
    )
    assert math.isnan(no_parts["location_instability"])
    assert "no part annotations" in no_parts["location_instability_reason"]
    assert no_parts["dead_maps"] == summary["dead_maps"]


def test_constants_are_defined_once_and_evaluate_does_not_import_train():
    assert train.TOP_K is evaluation.TOP_K == 100
    assert train.CUB_EVAL_PARTS is evaluation.CUB_EVAL_PARTS
    code = (
        "import sys, keras_interp.evaluate; "
        "assert 'keras_interp.apps.train' not in sys.modules, 'imports train'"
    )
    env = dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND="tensorflow")
    process = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-2000:]


# The report belongs to the library's evaluation layer: it gets datasets
# and arrays, never the application layer, the CUB readers or a CLI.
REPORT_MODULES = ("report.py", "summary.py", "_report_checks.py")
REPORT_MUST_NOT_IMPORT = (
    "argparse",
    "keras_interp.apps",
    "keras_interp.callbacks",
    "keras_interp.data",
    "keras_interp.evaluate",
    "keras_interp.train",
    "keras_interp.trainers",
)


def _imported_modules(path):
    with open(path) as f:
        tree = ast.parse(f.read())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module)
            # `from keras_interp import apps` imports keras_interp.apps.
            names.extend(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_report_imports_only_the_library():
    folder = os.path.join(ROOT, "keras_interp", "evaluation")
    for module in REPORT_MODULES:
        imported = _imported_modules(os.path.join(folder, module))
        assert "numpy" in imported, module  # The parse found the imports.
        bad = [
            name
            for name in imported
            for banned in REPORT_MUST_NOT_IMPORT
            if name == banned or name.startswith(banned + ".")
        ]
        assert not bad, f"{module} imports {bad}"


def test_evaluate_module_reexports_the_new_modules():
    from keras_interp import evaluate as alias

    new_names = {"RESULTS_FILENAME": (run_folder, "RESULTS_FILE")}
    for name in alias.__all__:
        owner = evaluate_lib if hasattr(evaluate_lib, name) else report
        owner, new_name = new_names.get(name, (owner, name))
        assert getattr(alias, name) is getattr(owner, new_name), name
    assert alias.evaluate is evaluate_lib.evaluate
    assert alias.evaluate_dataset is report.evaluate_dataset
    assert alias.training_results is report.training_results


def test_references_dead_maps_and_top_k_counts(test_split):
    summary = test_split["summary"]
    expected = test_split["reference"]
    report = expected["report"]
    assert summary["location_instability"] == pytest.approx(report.value)
    assert summary["location_instability_fixed_cell"] == pytest.approx(
        report.fixed_cell, rel=1e-9
    )
    assert summary["location_instability_shuffled_landmarks"] == pytest.approx(
        report.shuffled, rel=1e-9
    )
    selection = summary["location_instability_selection"]
    assert selection["top_k"] == evaluation.TOP_K == summary["top_k"]
    assert selection["drop_dead_maps"] is True
    assert selection["shuffle_seed"] == 0
    assert selection["pool_images"] == dict(
        zip(PARTS, report.pool_images.tolist())
    )
    # 12 test images, 4 per class: the top 100 keeps every image.
    assert max(selection["pool_images"].values()) <= 4 < evaluation.TOP_K
    valid = np.isfinite(report.per_filter)
    for k, part in enumerate(PARTS):
        assert selection["mean_selected_images"][part] == pytest.approx(
            report.selected_images[valid, k].mean()
        )
    assert selection["dead_dropped_fraction"] == pytest.approx(
        report.dead_dropped_fraction
    )
    assert summary["dead_maps"] == {
        "map": "masked",
        **expected["dead"]._asdict(),
    }
    assert summary["location_instability_per_part_reason"] == dict.fromkeys(
        PARTS
    )
    shuffled_valid = np.isfinite(report.shuffled_per_filter)
    for k, part in enumerate(PARTS):
        assert summary["location_instability_per_part"][part] == (
            pytest.approx(np.nanmean(report.per_landmark[valid, k]))
        )
        assert summary["location_instability_per_part_fixed_cell"][part] == (
            pytest.approx(np.nanmean(report.fixed_cell_per_landmark[valid, k]))
        )
        assert summary["location_instability_per_part_shuffled_landmarks"][
            part
        ] == pytest.approx(
            np.nanmean(report.shuffled_per_landmark[shuffled_valid, k])
        )


def test_part_interpretability_too_few_cells_has_a_reason(test_split):
    # 12 test images x 4 x 4 cells = 192 < 200: no cell can pass T_f
    # (before: 0.0 with a null reason).
    summary = test_split["summary"]
    assert summary["part_interpretability"] is None
    reason = summary["part_interpretability_reason"]
    assert "too few map cells" in reason and "12 images x 4 x 4" in reason
    assert summary["counts"]["part_interpretability_filters"] == 0


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory):
    """A CUB folder whose classes annotate different landmarks.

    Class 0 shows back and head, class 1 tail and left wing, class 2 right
    wing and left leg (like faces with eyes and animals with paws); no
    landmark is visible in every class, and "right leg" in none.
    """
    root = data.write_synthetic_parts(
        str(tmp_path_factory.mktemp("mixed") / "CUB_200_2011"),
        seed=4,
        num_classes=NUM_CLASSES,
        images_per_class=10,
        image_size=64,
        num_negatives=0,
    )
    index = data.read_cub(root)
    keep = {
        0: {"back", "head"},
        1: {"tail", "left wing"},
        2: {"right wing", "left leg"},
    }
    labels = dict(zip(index.image_ids.tolist(), index.labels.tolist()))
    names = [str(n) for n in index.part_names]
    path = os.path.join(root, "parts", "part_locs.txt")
    with open(path) as f:
        rows = [line.split() for line in f if line.strip()]
    with open(path, "w") as f:
        for image, part, x, y, flag in rows:
            if names[int(part) - 1] not in keep[labels[int(image)]]:
                x, y, flag = "0", "0", "0"
            f.write(f"{image} {part} {x} {y} {flag}\n")
    return root


def test_classes_with_different_landmark_sets(mixed_dir, model_path):
    index = data.read_cub(mixed_dir)
    model = keras.models.load_model(model_path)
    summary = evaluate_lib.evaluate(
        model, index, split="all", part_interpretability=False
    )
    names = [str(n) for n in index.part_names]
    assert summary["parts"] == names
    # Before: NaN ("no filter has at least 2 images with each of the
    # landmarks ... visible").
    assert summary["location_instability_reason"] is None
    assert np.isfinite(summary["location_instability"])
    assert summary["counts"]["num_filters_evaluated"] > 0
    reasons = summary["location_instability_per_part_reason"]
    assert (
        "fewer than 2 images of every category (0 in all)"
        in (reasons["right leg"])
    )
    per_part = summary["location_instability_per_part"]
    assert per_part["right leg"] is None
    # Every other landmark has a value, or a reason (when no evaluated
    # filter kept the one class that shows it).
    for name in names:
        assert (per_part[name] is None) == (reasons[name] is not None)
    dataset = _dataset(index, "all")
    peaks = evaluation.collect_peaks(model, models.PART_CONV, dataset)
    expected = evaluation.location_instability(
        peaks.index,
        peaks.value,
        peaks.landmarks,
        peaks.visible,
        image_size=IMAGE_SIZE,
        receptive_field=evaluation.receptive_field(model, models.PART_CONV),
        labels=peaks.labels,
    )
    assert summary["location_instability"] == pytest.approx(expected, rel=1e-9)
    results = train.evaluate_model(
        model, dataset, parts=train._eval_parts(index, None)
    )
    assert results["location_instability"] == pytest.approx(expected, rel=1e-9)
    assert results["location_instability_reason"] is None


def _nan_model(path):
    built = models.build_part_classifier(
        "tiny_vgg",
        num_classes=NUM_CLASSES,
        image_size=IMAGE_SIZE,
        filters=NUM_FILTERS,
    )
    for weight in built.inference.weights:
        weight.assign(np.full(weight.shape, np.nan, weight.dtype))
    built.inference.save(path)
    return path


def test_diverged_model_is_refused(parts_dir, model_path, tmp_path, capsys):
    # Before: accuracy 1/3 (argmax of NaN logits is class 0) and a
    # plausible instability.
    path = _nan_model(str(tmp_path / "nan.keras"))
    index = data.read_cub(parts_dir)
    model = keras.models.load_model(path)
    with pytest.raises(
        ValueError,
        match="non-finite weights: 48 of its 48.*block1_conv1/kernel",
    ):
        evaluate_lib.evaluate(model, index, parts=PARTS)
    status = evaluate_lib.main(["--model", path, "--data_dir", parts_dir])
    assert status == evaluate_lib.USAGE_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "diverged" in captured.err
    # Finite weights, non-finite outputs (a NaN pixel through a model
    # without ReLU): the outputs are refused.
    inputs = keras.Input((8, 8, 3))
    maps = keras.layers.Conv2D(2, 3, name="part_conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(maps)
    good = keras.Model(inputs, keras.layers.Dense(3)(pooled))
    images = np.full((2, 8, 8, 3), 100.0, "float32")
    images[1, 0, 0] = np.nan
    batch = {"image": images, "label": np.zeros(2, "int32")}
    with pytest.raises(
        ValueError, match="outputs \\(images 0 to 1 .*must be finite.*check"
    ):
        report.evaluate_dataset(good, [batch])


def test_negatives_single_category(parts_dir, single_model_path):
    index = data.read_cub(parts_dir)
    negatives = os.path.join(parts_dir, "negatives")
    model = keras.models.load_model(single_model_path)
    with pytest.raises(ValueError, match="has 2 outputs.*needs `negatives`"):
        evaluate_lib.evaluate(model, index)
    summary = evaluate_lib.evaluate(
        model, index, split="all", parts=PARTS, negatives=negatives
    )
    counts = summary["counts"]
    assert counts["num_negatives"] == 6
    assert counts["num_images"] == index.num_images + 6
    part_ids = [list(index.part_names).index(p) for p in PARTS]
    expected = _reference(model, index, "all", part_ids, negatives=negatives)
    assert summary["accuracy"] == pytest.approx(expected["accuracy"])
    assert summary["location_instability"] == pytest.approx(
        expected["instability"], rel=1e-6
    )
    # Part interpretability is scored on the objects only.
    assert counts["part_interpretability_images"] == index.num_images
    assert summary["part_interpretability"] == pytest.approx(
        expected["interpretability"], rel=1e-6
    )


def test_no_part_masks_gives_null_with_reason(parts_dir, model_path):
    index = data.read_cub(parts_dir)
    model = keras.models.load_model(model_path)
    summary = evaluate_lib.evaluate(model, index, part_interpretability=False)
    assert summary["part_interpretability"] is None
    assert "disabled" in summary["part_interpretability_reason"]
    no_masks = dataclasses.replace(index, part_mask_paths=None)
    summary = evaluate_lib.evaluate(model, no_masks)
    assert summary["part_interpretability"] is None
    assert "no part masks" in summary["part_interpretability_reason"]
    assert np.isfinite(summary["location_instability"])


BAD_ARGUMENTS = [
    ({"parts": ["back", "beak"]}, r"\['beak'\].*Available.*'head'"),
    ({"layer": "nope"}, r"layer='nope'.*'top_mask', 'part_conv'"),
    ({"eval_map": "pre"}, r"map='pre'"),
    ({"image_size": 64}, r"input size 32"),
    ({"num_figure_filters": -1}, r"num_figure_filters=-1"),
]


def test_bad_arguments(parts_dir, model_path):
    index = data.read_cub(parts_dir)
    model = keras.models.load_model(model_path)
    for kwargs, pattern in BAD_ARGUMENTS:
        with pytest.raises(ValueError, match=pattern):
            evaluate_lib.evaluate(model, index, **kwargs)


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib not installed")
def test_figures_keep_only_the_shown_images(
    parts_dir, model_path, test_split, tmp_path, monkeypatch
):
    index = data.read_cub(parts_dir)
    model = keras.models.load_model(model_path)
    shown = []
    real = evaluation.plot_top_images

    def spy(images, maps, filter_ids, out_dir, top_k=8, **kwargs):
        shown.append(len(images))
        return real(images, maps, filter_ids, out_dir, top_k, **kwargs)

    monkeypatch.setattr(evaluation, "plot_top_images", spy)
    out = str(tmp_path / "out")
    summary = evaluate_lib.evaluate(
        model,
        index,
        parts=PARTS,
        out_dir=out,
        num_figure_filters=2,
        top_k_images=3,
    )
    filters = summary["figures"]["filters"]
    # The most stable filters (then the most active), as documented.
    expected = test_split["reference"]
    stability = np.where(
        np.isfinite(expected["per_filter"]), expected["per_filter"], np.inf
    )
    order = np.lexsort(
        (np.arange(NUM_FILTERS), -expected["mean_peak"], stability)
    )
    assert filters == order[:2].tolist()
    # At most 2 filters x 3 images read back, of the 12 test images.
    assert 3 <= shown[0] <= 6 < summary["counts"]["num_images"]
    names = sorted(os.listdir(out))
    assert names == sorted(
        [f"filter_{f:04d}.png" for f in filters] + ["summary.json"]
    )
    for path in summary["figures"]["paths"]:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f) == summary


# --- Command line -----------------------------------------------------------


def _cli(*args, module="keras_interp.apps.evaluate"):
    env = dict(
        os.environ,
        PYTHONPATH=ROOT,
        CUDA_VISIBLE_DEVICES="",
        KERAS_BACKEND="tensorflow",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib not installed")
def test_cli_prints_the_library_summary(
    parts_dir, model_path, test_split, tmp_path
):
    out = str(tmp_path / "figures")
    process = _cli(
        "--model",
        model_path,
        "--data_dir",
        parts_dir,
        "--parts",
        ",".join(PARTS),
        "--out",
        out,
        "--num_figure_filters",
        "2",
    )
    assert process.returncode == 0, process.stderr
    summary = json.loads(process.stdout)
    expected = test_split["summary"]
    for key in (
        "accuracy",
        "location_instability",
        "location_instability_fixed_cell",
        "location_instability_shuffled_landmarks",
    ):
        assert summary[key] == pytest.approx(expected[key], rel=1e-6), key
    assert summary["part_interpretability"] is None
    for key in (
        "part_interpretability_reason",
        "location_instability_selection",
        "dead_maps",
    ):
        assert summary[key] == expected[key], key
    # The digest on stderr: every instability with its two references,
    # and the reason of what was not computed.
    digest = report.format_summary(summary)
    assert digest in process.stderr
    assert re.search(
        r"location instability: \d\.\d{4} \(lower is better; fixed cell "
        r"\d\.\d{4}, shuffled landmarks \d\.\d{4};",
        digest,
    )
    assert "part interpretability: not computed: too few map cells" in digest
    assert "dead maps (masked map, peak <= 0): " in digest
    assert "top-k: 100 images" in digest
    # A normal run prints no tf.function retracing warning.
    assert "retracing" not in process.stderr
    assert summary["counts"] == expected["counts"]
    assert summary["parts"] == PARTS
    assert summary["model"] == os.path.abspath(model_path)
    pngs = sorted(n for n in os.listdir(out) if n.endswith(".png"))
    assert len(pngs) == 2 == len(summary["figures"]["paths"])
    assert pngs == [
        f"filter_{f:04d}.png" for f in sorted(summary["figures"]["filters"])
    ]
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f) == summary


def test_cli_single_category_from_results_json(
    parts_dir, single_model_path, capsys
):
    status = evaluate_lib.main(
        ["--model", single_model_path, "--data_dir", parts_dir]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    counts = json.loads(captured.out)["counts"]
    # results.json says task=single: <data_dir>/negatives is used, and its
    # second half is the test split.
    assert counts["num_negatives"] == 3
    assert counts["num_images"] == counts["num_objects"] + 3


CLI_ERRORS = {
    "unknown_part": (["--parts", "back,beak"], r"\['beak'\] are not.*'head'"),
    "missing_layer": (["--layer", "nope"], r"layer='nope'.*'part_conv'"),
    "missing_model": (["--model", "missing.keras"], r"--model: no such file"),
}


def _error_args(model_path, parts_dir, args):
    if "--model" not in args:
        args = ["--model", model_path] + args
    return args + ["--data_dir", parts_dir]


@pytest.mark.parametrize("case", sorted(CLI_ERRORS))
def test_cli_bad_inputs_exit_2(parts_dir, model_path, capsys, case):
    args, message = CLI_ERRORS[case]
    status = evaluate_lib.main(_error_args(model_path, parts_dir, args))
    assert status == evaluate_lib.USAGE_ERROR == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.fullmatch(r"error: .*\n", captured.err, flags=re.DOTALL)
    assert re.search(message, captured.err), captured.err


def test_cli_bad_input_process_has_no_traceback(parts_dir, model_path):
    args, message = CLI_ERRORS["missing_layer"]
    # The old entry point, `keras_interp.evaluate`, runs the same program.
    process = _cli(
        *_error_args(model_path, parts_dir, args),
        module="keras_interp.evaluate",
    )
    assert process.returncode == 2
    assert process.stdout == ""
    assert "Traceback" not in process.stderr
    errors = [
        line for line in process.stderr.splitlines() if line.startswith("error")
    ]
    assert len(errors) == 1 and re.search(message, errors[0]), process.stderr


def test_collect_peaks_keeps_the_outputs_of_the_same_pass(parts_dir):
    # The report's one pass: logits and peaks together, also when the
    # evaluated layer sits in a nested backbone.
    index = data.read_cub(parts_dir)
    dataset = _dataset(index, "test")
    inner = models.build_part_classifier(
        "tiny_vgg",
        num_classes=NUM_CLASSES,
        image_size=IMAGE_SIZE,
        filters=NUM_FILTERS,
    ).inference
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    nested = keras.Model(inputs, inner(inputs))
    for model, layer in ((inner, "part_conv"), (nested, "part_conv")):
        plain = evaluation.collect_peaks(model, layer, dataset)
        joint = evaluation.collect_peaks(
            model, layer, dataset, return_outputs=True
        )
        assert plain.outputs is None
        expected = np.concatenate(
            [model.predict_on_batch(b["image"]) for b in dataset]
        )
        np.testing.assert_allclose(joint.outputs, expected, rtol=1e-5)
        np.testing.assert_array_equal(joint.index, plain.index)
        np.testing.assert_allclose(joint.value, plain.value, rtol=1e-5)
    logits = nested.outputs[0]
    two_outputs = keras.Model(
        inputs, [logits, keras.layers.Activation("softmax")(logits)]
    )
    with pytest.raises(ValueError, match="Received a model with 2 outputs"):
        evaluation.collect_peaks(
            two_outputs, "part_conv", dataset, return_outputs=True
        )
