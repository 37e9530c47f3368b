"""train_and_evaluate never loses work or saves garbage.

Reruns of finished runs, runs killed during the final evaluation, diverged
runs, corrupt backups, invalid labels, `--noresume`, and the reasons for
metrics that cannot be computed.
"""

import dataclasses
import json
import math
import os
import re
import sys

import keras
import numpy as np
import pytest

from keras_interp import callbacks
from keras_interp import data
from keras_interp.apps import train

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))
import train_runs  # noqa: E402

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TF training script"
)

tiny_config = train_runs.tiny_config
saved_weights = train_runs.saved_weights


@pytest.fixture(scope="module")
def parts_dir(tmp_path_factory):
    return train_runs.write_parts(
        tmp_path_factory.mktemp("parts"),
        seed=5,
        images_per_class=8,
        image_size=48,
        num_negatives=4,
    )


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def same_metric(a, b):
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.fixture(scope="module")
def finished_run(parts_dir, tmp_path_factory):
    """A finished 2-epoch run: its folder, results and model weights."""
    model_dir = tmp_path_factory.mktemp("finished")
    results = train.train_and_evaluate(tiny_config(parts_dir, model_dir))
    return model_dir, results, saved_weights(model_dir)


def copy_run(model_dir, tmp_path):
    import shutil

    target = tmp_path / "run"
    shutil.copytree(model_dir, target)
    return target


def test_rerun_of_a_finished_run_keeps_model_and_results(
    parts_dir, finished_run, tmp_path, capsys
):
    model_dir, first, weights = finished_run
    run = copy_run(model_dir, tmp_path)
    model_bytes = (run / "model.keras").read_bytes()
    results_bytes = (run / "results.json").read_bytes()
    # verbose is presentation only: still the same run.
    again = train.train_and_evaluate(tiny_config(parts_dir, run, verbose=1))
    out = capsys.readouterr().out
    assert "run complete" in out
    assert (run / "model.keras").read_bytes() == model_bytes
    assert (run / "results.json").read_bytes() == results_bytes
    assert again["accuracy"] == first["accuracy"]
    assert same_metric(
        again["location_instability"], first["location_instability"]
    )
    assert_same(saved_weights(run), weights)
    saved = json.loads((run / "config.json").read_text())
    assert saved == first["config"]


@pytest.mark.parametrize(
    "lost", [("results.json",), ("results.json", "model.keras")]
)
def test_rerun_after_a_kill_during_evaluation_evaluates_the_trained_weights(
    parts_dir, finished_run, tmp_path, capsys, lost
):
    model_dir, first, weights = finished_run
    run = copy_run(model_dir, tmp_path)
    for name in lost:  # Killed before these were (re)written.
        os.remove(run / name)
    again = train.train_and_evaluate(tiny_config(parts_dir, run))
    out = capsys.readouterr().out
    assert "restoring the trained weights" in out
    assert_same(saved_weights(run), weights)
    assert again["accuracy"] == first["accuracy"]
    assert same_metric(
        again["location_instability"], first["location_instability"]
    )
    saved = json.loads((run / "results.json").read_text())
    assert saved["accuracy"] == first["accuracy"]


def test_rerun_with_more_epochs_continues_training(
    parts_dir, finished_run, tmp_path, capsys
):
    model_dir, _, _ = finished_run
    run = copy_run(model_dir, tmp_path)
    results = train.train_and_evaluate(tiny_config(parts_dir, run, epochs=3))
    assert "resuming from the end of epoch 2" in capsys.readouterr().out
    # Only epoch 3 ran; History holds one value per metric.
    assert results["final_train_logs"]
    assert results["config"]["epochs"] == 3


@pytest.mark.slow
def test_noresume_discards_the_backup_and_trains_from_scratch(
    parts_dir, finished_run, tmp_path
):
    model_dir, first, weights = finished_run
    run = copy_run(model_dir, tmp_path)
    results = train.train_and_evaluate(
        tiny_config(parts_dir, run, resume=False)
    )
    # Trained all epochs again (the old backup was not restored by fit)...
    assert set(results["final_train_logs"]) >= {"loss", "accuracy"}
    # ...from the same seed, to the same weights.
    for a, b in zip(saved_weights(run), weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_backup_trained_with_other_settings_is_not_resumed(
    parts_dir, finished_run, tmp_path
):
    model_dir, _, _ = finished_run
    run = copy_run(model_dir, tmp_path)
    results_bytes = (run / "results.json").read_bytes()
    os.remove(run / "model.keras")
    # Would evaluate the backup's weights under a learning rate they were
    # not trained with.
    with pytest.raises(
        ValueError, match=r"learning_rate=0.05 \(now 0.1\).*--noresume"
    ):
        train.train_and_evaluate(tiny_config(parts_dir, run, learning_rate=0.1))
    assert (run / "results.json").read_bytes() == results_bytes
    assert not (run / "model.keras").exists()
    # The refused settings did not replace those the weights were trained
    # with.
    saved = train.TrainConfig.from_json(str(run / "config.json"))
    assert saved.learning_rate == 0.05


def test_epochs_below_the_backup_are_refused(parts_dir, finished_run, tmp_path):
    model_dir, _, _ = finished_run
    run = copy_run(model_dir, tmp_path)
    with pytest.raises(ValueError, match=r"holds 2 epochs.*`epochs`=1"):
        train.train_and_evaluate(tiny_config(parts_dir, run, epochs=1))


def truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 3)


@pytest.mark.parametrize("epochs", [3, 2])  # fit resumes / evaluation only
def test_truncated_backup_names_the_file_and_noresume(
    parts_dir, finished_run, tmp_path, epochs
):
    model_dir, _, _ = finished_run
    run = copy_run(model_dir, tmp_path)
    os.remove(run / "results.json")
    weights = run / "backup" / "latest.weights.h5"
    truncate(weights)
    with pytest.raises(ValueError, match="resume") as info:
        train.train_and_evaluate(tiny_config(parts_dir, run, epochs=epochs))
    message = str(info.value)
    assert repr(str(weights)) in message
    assert "--noresume" in message and "truncated or corrupt" in message
    assert not (run / "results.json").exists()


def test_corrupt_backup_metadata_names_the_file(
    parts_dir, finished_run, tmp_path
):
    model_dir, _, _ = finished_run
    run = copy_run(model_dir, tmp_path)
    metadata = run / "backup" / "training_metadata.json"
    metadata.write_text('{"epo')
    with pytest.raises(ValueError, match="--noresume") as info:
        train.train_and_evaluate(tiny_config(parts_dir, run, epochs=3))
    assert repr(str(metadata)) in str(info.value)


def test_diverged_run_raises_and_saves_nothing(parts_dir, tmp_path):
    config = tiny_config(
        parts_dir,
        tmp_path,
        loss_weight=1e6,
        batch_size=2,
        epochs=1,
        steps_per_epoch=12,
    )
    with pytest.raises(callbacks.NonFiniteLossError) as info:
        train.train_and_evaluate(config)
    message = str(info.value)
    assert "diverged" in message
    # Names the non-finite term (a layer's filter loss, or the task loss
    # when every filter loss is still finite) and the weight in use.
    assert re.search(
        r"_filter_loss=nan.*is the filter loss of layer '\w+' "
        r"\(loss_weight=1e\+06\)|non-finite loss=nan; every filter loss "
        r"is finite \(\w+_filter_loss=.*task loss",
        message,
    ), message
    assert "loss_weight=1e+06" in message
    assert not (tmp_path / "model.keras").exists()
    assert not (tmp_path / "results.json").exists()
    # The settings were written before training started.
    assert train.TrainConfig.from_json(str(tmp_path / "config.json")) == config


def test_out_of_range_labels_are_refused_before_training(
    parts_dir, tmp_path, monkeypatch
):
    read_cub = data.read_cub

    def bad_labels(data_dir, **kwargs):
        index = read_cub(data_dir, **kwargs)
        labels = index.labels.copy()
        labels[2] = 99
        return dataclasses.replace(index, labels=labels)

    monkeypatch.setattr(train.data_lib, "read_cub", bad_labels)
    with pytest.raises(ValueError, match=r"\[0, 3\).*label 99"):
        train.train_and_evaluate(tiny_config(parts_dir, tmp_path))
    assert not (tmp_path / "backup").exists()


def _summary(**overrides):
    summary = {
        "accuracy": 0.5,
        "location_instability": None,
        "location_instability_reason": "no landmark is visible",
        "part_interpretability": None,
        "part_interpretability_reason": "no part masks were given",
        "counts": {"num_images": 8, "num_filters_evaluated": 0},
    }
    summary.update(overrides)
    return summary


@pytest.mark.parametrize(
    "summary",
    [
        _summary(),
        _summary(
            location_instability_reason=None,
            reasons={"location_instability": "no landmark is visible"},
        ),
    ],
)
def test_evaluate_model_carries_the_reason(monkeypatch, summary):
    monkeypatch.setattr(
        train.report_lib, "evaluate_dataset", lambda *args, **kwargs: summary
    )
    results = train.evaluate_model(None, None, parts=[0])
    assert math.isnan(results["location_instability"])
    assert results["location_instability_reason"] == "no landmark is visible"
    # Part interpretability is not reported by training, nor its reason.
    assert "part_interpretability_reason" not in results


def test_printed_summary_gives_reasons_and_paths(tmp_path, capsys):
    results = {
        "accuracy": 0.5,
        "location_instability": float("nan"),
        "location_instability_reason": "no landmark is visible",
        "num_images": 8,
        "final_train_logs": {"part_conv_filter_loss": -1.0},
    }
    logdir = str(tmp_path / "my logs")
    train._print_summary(results, str(tmp_path), logdir)
    out = capsys.readouterr().out
    assert "location_instability: not computed: no landmark is visible" in out
    assert str(tmp_path / "model.keras") in out
    assert str(tmp_path / "results.json") in out
    assert f"tensorboard --logdir '{logdir}'" in out


def _script(parts_dir, model_dir, *extra):
    return train_runs.run_script(
        parts_dir, model_dir, *extra, epochs=1, steps_per_epoch=3
    )


@pytest.mark.slow
def test_script_run_rerun_and_divergence(parts_dir, tmp_path):
    run = tmp_path / "run"
    first = _script(parts_dir, run)
    assert first.returncode == 0, first.stdout[-3000:]
    assert "retrac" not in first.stdout.lower(), first.stdout[-3000:]
    assert f"tensorboard --logdir {run / 'logs'}" in first.stdout
    assert f"model:   {run / 'model.keras'}" in first.stdout
    model_bytes = (run / "model.keras").read_bytes()

    second = _script(parts_dir, run)
    assert second.returncode == 0, second.stdout[-3000:]
    assert "run complete" in second.stdout
    assert (run / "model.keras").read_bytes() == model_bytes

    diverged = tmp_path / "diverged"
    bad = _script(
        parts_dir,
        diverged,
        "--loss_weight=1e6",
        "--batch_size=2",
        "--steps_per_epoch=12",
    )
    assert bad.returncode != 0
    assert "NonFiniteLossError" in bad.stdout
    assert "loss_weight=1e+06" in bad.stdout
    assert not (diverged / "model.keras").exists()
