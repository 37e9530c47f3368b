"""train_and_evaluate end to end: results, TensorBoard, checkpoints, resume."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_interp import data
from keras_interp.apps import train

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))
import train_runs  # noqa: E402

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TF training script"
)

tiny_config = train_runs.tiny_config


@pytest.fixture(scope="module")
def parts_dir(tmp_path_factory):
    return train_runs.write_parts(
        tmp_path_factory.mktemp("parts"),
        seed=3,
        images_per_class=10,
        image_size=64,
        num_negatives=12,
    )


def read_events(logdir):
    """{(run, tag): [(step, kind, value)]} from every event file."""
    from tensorboard.backend.event_processing import event_file_loader

    events = {}
    for path in glob.glob(
        os.path.join(logdir, "**", "events.out.*"), recursive=True
    ):
        run = os.path.relpath(os.path.dirname(path), logdir)
        for event in event_file_loader.LegacyEventFileLoader(path).Load():
            for value in event.summary.value:
                kind = value.metadata.plugin_data.plugin_name
                tensor = tf.make_ndarray(value.tensor)
                events.setdefault((run, value.tag), []).append(
                    (event.step, kind, tensor)
                )
    return events


def epoch_summaries_of_every_epoch(events, epochs):
    """Asserts the epoch-level summaries of each of `epochs` epochs exist."""
    every = list(range(epochs))
    for tag in ("epoch_loss", "epoch_part_conv_filter_loss"):
        assert [step for step, _, _ in events[("train", tag)]] == every, tag
    for layer in ("top_mask", "part_conv"):
        for name in ("mutual_information", "peak_position", "filters"):
            key = ("interpretability", f"{layer}/{name}")
            assert [step for step, _, _ in events[key]] == every, key


def test_train_and_evaluate_multi_category(parts_dir, tmp_path):
    # 9 steps per epoch, TensorBoard update_freq 2: epochs end at steps 9,
    # 18 and 27, so Keras' callback alone would keep only epoch 2's
    # summaries (tensorflow/tensorboard#4975).
    results = train.train_and_evaluate(
        tiny_config(parts_dir, tmp_path, epochs=3, steps_per_epoch=9)
    )
    assert results["dataset_sizes"]["train"] > 0
    assert 0.0 <= results["accuracy"] <= 1.0
    assert results["num_images"] == results["dataset_sizes"]["test"]
    assert np.isfinite(results["location_instability"])
    assert results["final_train_logs"]["part_conv_filter_loss"] < 0
    saved = json.load(open(os.path.join(tmp_path, "results.json")))
    assert saved["accuracy"] == results["accuracy"]
    model = keras.models.load_model(results["model_path"])
    images = np.zeros((2, 32, 32, 3), "float32")
    assert model.predict(images, verbose=0).shape == (2, 3)

    events = read_events(os.path.join(tmp_path, "logs"))
    epoch_summaries_of_every_epoch(events, 3)
    batch = events[("train", "batch_top_mask_filter_loss")]
    assert all(kind == "scalars" and float(v) < 0 for _, kind, v in batch)
    epoch_losses = [
        float(v) for _, _, v in events[("train", "epoch_part_conv_filter_loss")]
    ]
    np.testing.assert_allclose(
        epoch_losses[-1],
        results["final_train_logs"]["part_conv_filter_loss"],
        rtol=1e-5,
    )
    for layer in ("top_mask", "part_conv"):
        mi = events[("interpretability", f"{layer}/mutual_information")]
        assert mi[0][1] == "histograms"
        peaks = events[("interpretability", f"{layer}/peak_position")]
        assert peaks[0][1] == "histograms"
        images = events[("interpretability", f"{layer}/filters")]
        assert images[0][1] == "images"


def test_single_category_task_with_negatives(parts_dir, tmp_path):
    # One epoch of 9 steps (not a multiple of update_freq 2) still writes
    # its epoch-level summaries.
    results = train.train_and_evaluate(
        tiny_config(
            parts_dir, tmp_path, task="single", epochs=1, steps_per_epoch=9
        )
    )
    epoch_summaries_of_every_epoch(
        read_events(os.path.join(tmp_path, "logs")), 1
    )
    sizes = data.dataset_sizes(
        data.read_cub(parts_dir),
        split="test",
        negatives=data.read_negatives(os.path.join(parts_dir, "negatives")),
    )
    assert results["num_images"] == sizes["examples"]
    model = keras.models.load_model(results["model_path"])
    assert model.output.shape == (None, 2)


def test_ordinary_model_has_no_filter_loss(parts_dir, tmp_path):
    results = train.train_and_evaluate(
        tiny_config(parts_dir, tmp_path, interpretable=False, epochs=1)
    )
    assert not any(
        k.endswith("filter_loss") for k in results["final_train_logs"]
    )
    assert np.isfinite(results["location_instability"])


@pytest.mark.parametrize(
    "overrides,pattern",
    [
        (dict(task="both"), r"`task`.*'both'"),
        (dict(strategy="tpu"), r"`strategy`.*'tpu'"),
        (dict(epochs=0), r"`epochs`.*0"),
        (dict(learning_rate=-1.0), r"`learning_rate`"),
        (dict(parts=["wing"]), r"`parts` \['wing'\].*Available"),
    ],
)
def test_bad_config(parts_dir, tmp_path, overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        train.train_and_evaluate(tiny_config(parts_dir, tmp_path, **overrides))


def test_missing_data_dir_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        train.train_and_evaluate(
            tiny_config(str(tmp_path / "nowhere"), tmp_path / "run")
        )


def test_script_reports_a_bad_setting_as_a_usage_error(parts_dir, tmp_path):
    command = train_runs.script_command(
        parts_dir,
        tmp_path / "run",
        "--learning_rate=-1",
        epochs=1,
        steps_per_epoch=1,
    )
    done = subprocess.run(
        command,
        env=train_runs.script_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr[-2000:]  # absl's usage exit
    assert "`learning_rate` must be positive" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()  # Nothing written.


def _run_script(parts_dir, model_dir, **popen):
    command = train_runs.script_command(
        parts_dir, model_dir, epochs=3, steps_per_epoch=6
    )
    return subprocess.Popen(command, env=train_runs.script_env(), **popen)


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_weights(parts_dir, tmp_path):
    straight = tmp_path / "straight"
    assert _run_script(parts_dir, straight).wait(timeout=600) == 0

    killed = tmp_path / "killed"
    proc = _run_script(parts_dir, killed)
    metadata = killed / "backup" / "training_metadata.json"
    deadline = time.time() + 600
    # Kill -9 as soon as epoch 1 is checkpointed: epoch 2 is under way.
    while time.time() < deadline and proc.poll() is None:
        if metadata.exists() and json.loads(metadata.read_text())["epoch"] >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (killed / "model.keras").exists()

    resumed = _run_script(
        parts_dir, killed, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out.decode()[-2000:]
    assert b"resuming from the end of epoch" in out
    # CPU kernels are deterministic run to run; allow float32 round-off.
    for a, b in zip(
        train_runs.saved_weights(straight), train_runs.saved_weights(killed)
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
