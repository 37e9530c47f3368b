"""keras_interp.callbacks: divergence stop, TensorBoard epochs, logger."""

import glob
import math
import os

import keras
import numpy as np
import pytest

import keras_interp
from keras_interp import callbacks

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.summary callbacks"
)


def tiny_model(loss_weight=1.0, **layer_kwargs):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras_interp.InterpretableConv2D(
        4,
        3,
        padding="same",
        tau=0.2,
        loss_weight=loss_weight,
        name="interp",
        **layer_kwargs,
    )(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 3, (n, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 2, n).astype("int32")
    return x, y


def compiled(model, loss=None):
    model.compile(
        keras.optimizers.SGD(0.01),
        loss=loss or keras.losses.SparseCategoricalCrossentropy(True),
    )
    return model


# --- StopOnNonFinite -------------------------------------------------------


def test_stop_names_the_filter_loss_its_layer_and_weight():
    stop = callbacks.StopOnNonFinite(hint="Try less.")
    stop.set_model(tiny_model(loss_weight=250.0))
    stop.on_epoch_begin(2)
    logs = {"loss": math.nan, "interp_filter_loss": math.nan, "accuracy": 0.5}
    with pytest.raises(callbacks.NonFiniteLossError) as info:
        stop.on_train_batch_end(4, logs)
    message = str(info.value)
    assert "epoch 3, step 5" in message
    assert "interp_filter_loss=nan" in message
    assert "filter loss of layer 'interp' (loss_weight=250)" in message
    assert "accuracy" not in message
    assert message.endswith("Try less.")
    assert isinstance(info.value, ValueError)


def test_stop_blames_the_task_loss_when_filter_losses_are_finite():
    stop = callbacks.StopOnNonFinite()
    stop.set_model(tiny_model())
    with pytest.raises(callbacks.NonFiniteLossError) as info:
        stop.on_train_batch_end(0, {"loss": math.inf, "interp_filter_loss": -1})
    message = str(info.value)
    assert "loss=inf" in message and "task loss" in message
    assert "interp: loss_weight=1" in message


def test_stop_passes_finite_logs():
    stop = callbacks.StopOnNonFinite()
    stop.set_model(tiny_model())
    # Only loss terms count: other metrics may be undefined (NaN).
    logs = {"loss": 1.0, "interp_filter_loss": -1.0, "auc": math.nan}
    stop.on_train_batch_end(0, logs)
    stop.on_epoch_end(0, logs)


def test_stop_catches_non_finite_weights_at_epoch_end():
    model = tiny_model()
    stop = callbacks.StopOnNonFinite()
    stop.set_model(model)
    kernel = model.get_layer("interp").kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    with pytest.raises(callbacks.NonFiniteLossError, match=r"\['interp'\]"):
        stop.on_epoch_end(0, {"loss": 1.0})


def test_fit_stops_when_a_batch_poisons_the_weights():
    x, y = data()
    x[5] = np.nan  # The second batch makes the first kernel NaN.
    model = compiled(tiny_model())
    # Where the error comes depends on the kernels: a ReLU that maps NaN to
    # 0 keeps every later loss finite, and only the weights check sees it.
    with pytest.raises(callbacks.NonFiniteLossError, match="epoch 1"):
        model.fit(
            x,
            y,
            batch_size=4,
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=[callbacks.StopOnNonFinite()],
        )


def test_fit_stops_on_a_non_finite_task_loss():
    x, _ = data()
    targets = np.zeros((len(x), 2), "float32")
    targets[0, 0] = np.inf
    model = compiled(tiny_model(), loss="mse")
    with pytest.raises(callbacks.NonFiniteLossError, match="task loss"):
        model.fit(
            x,
            targets,
            batch_size=4,
            verbose=0,
            callbacks=[callbacks.StopOnNonFinite()],
        )


# --- TensorBoard ------------------------------------------------------------


def read_events(logdir):
    """{(run, tag): [step, ...]} of every summary in the event files."""
    from tensorboard.backend.event_processing import event_file_loader

    events = {}
    for path in glob.glob(
        os.path.join(logdir, "**", "events.out.*"), recursive=True
    ):
        run = os.path.relpath(os.path.dirname(path), logdir)
        for event in event_file_loader.LegacyEventFileLoader(path).Load():
            for value in event.summary.value:
                events.setdefault((run, value.tag), []).append(event.step)
    return events


class EpochScalar(keras.callbacks.Callback):
    """A later callback writing its own epoch-end scalar (no record_if)."""

    def __init__(self, logdir):
        super().__init__()
        self.writer = tf.summary.create_file_writer(logdir)

    def on_epoch_end(self, epoch, logs=None):
        with self.writer.as_default():
            tf.summary.scalar("extra", 1.0, step=epoch)
        self.writer.flush()


@pytest.mark.parametrize("epochs", [1, 4])
def test_tensorboard_writes_every_epoch_when_steps_do_not_divide_update_freq(
    tmp_path, epochs
):
    # 3 steps per epoch, update_freq 2: epochs end at steps 3, 6, 9, 12.
    # Keras' callback records the epoch summaries only at 6 and 12.
    x, y = data(12)
    model = compiled(tiny_model())
    logdir = str(tmp_path)
    model.fit(
        x,
        y,
        batch_size=4,
        epochs=epochs,
        verbose=0,
        callbacks=[
            callbacks.TensorBoard(logdir, update_freq=2, write_graph=False),
            EpochScalar(os.path.join(logdir, "extra")),
        ],
    )
    events = read_events(logdir)
    every_epoch = list(range(epochs))
    for tag in ("epoch_loss", "epoch_interp_filter_loss"):
        assert events[("train", tag)] == every_epoch, tag
    assert events[("extra", "extra")] == every_epoch
    # Batch summaries keep Keras' every-update_freq-steps rule.
    batch_steps = events[("train", "batch_loss")]
    assert batch_steps and all(step % 2 == 0 for step in batch_steps)


def test_logger_records_under_any_tensorboard(tmp_path):
    # The stock callback (placed first) leaves record_if(step % 2 == 0)
    # active at epoch end; the logger writes every epoch regardless.
    x, y = data(12)
    model = compiled(tiny_model())
    logdir = str(tmp_path)
    model.fit(
        x,
        y,
        batch_size=4,
        epochs=3,
        verbose=0,
        callbacks=[
            keras.callbacks.TensorBoard(
                logdir, update_freq=2, write_graph=False
            ),
            callbacks.InterpretabilityLogger(
                os.path.join(logdir, "interpretability"), model, x[:4]
            ),
        ],
    )
    events = read_events(logdir)
    for tag in ("mutual_information", "peak_position", "filters"):
        assert events[("interpretability", f"interp/{tag}")] == [0, 1, 2]


def centre_cells(maps, center):
    """Row-major `i * W + j` of each map's centre, image-major (numpy)."""
    n, h, w, f = maps.shape
    cells = []
    for b in range(n):
        for c in range(f):
            x = maps[b, :, :, c].astype("float64")
            if center == "argmax":
                cells.append(int(np.argmax(x)))
                continue
            mass = max(x.sum(), 1e-9)
            i = math.floor((x.sum(axis=1) * np.arange(h)).sum() / mass + 0.5)
            j = math.floor((x.sum(axis=0) * np.arange(w)).sum() / mass + 0.5)
            cells.append(min(i, h - 1) * w + min(j, w - 1))
    return np.array(cells)


@pytest.mark.parametrize("center", ["argmax", "centroid"])
def test_logger_peak_position_follows_the_layers_center(
    tmp_path, monkeypatch, center
):
    # The histogram shows the cells the layer centres its mask on: the
    # centroid for a centroid layer, not the argmax.
    x, _ = data(4)
    model = tiny_model(center=center)
    recorded = {}
    histogram = tf.summary.histogram

    def spy(name, values, *args, **kwargs):
        recorded[name] = np.asarray(values)
        return histogram(name, values, *args, **kwargs)

    monkeypatch.setattr(tf.summary, "histogram", spy)
    logger = callbacks.InterpretabilityLogger(str(tmp_path), model, x)
    logger.set_model(model)
    logger.on_epoch_end(0)
    logger.on_train_end()
    probe = keras_interp.evaluation.feature_map_model(model, "interp", "raw")
    raw = np.maximum(np.asarray(probe(x)), 0.0)
    positions = recorded["interp/peak_position"]
    np.testing.assert_array_equal(positions, centre_cells(raw, center))
    if center == "centroid":
        assert (positions != centre_cells(raw, "argmax")).any()


def test_logger_traces_no_function(tmp_path):
    # Each probe model's predict function would be a retrace of Keras'
    # shared predict step (tf.function retracing warnings).
    x, _ = data(4)
    model = tiny_model()
    logger = callbacks.InterpretabilityLogger(str(tmp_path), model, x)
    logger.set_model(model)
    logger.on_epoch_end(0)
    logger.on_epoch_end(1)
    logger.on_train_end()
    for _, raw, masked in logger._probes.values():
        assert raw.predict_function is None
        assert masked.predict_function is None
