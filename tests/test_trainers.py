"""The custom training loop under default, Mirrored and multi-worker."""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_interp
from keras_interp import trainers

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.distribute loop"
)

HELPER = os.path.join(os.path.dirname(__file__), "helpers", "multi_worker.py")
sys.path.insert(0, os.path.dirname(HELPER))
import multi_worker  # noqa: E402


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 3, (n, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 2, n).astype("int32")
    return x, y


def dataset(x, y):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(
        multi_worker.GLOBAL_BATCH, drop_remainder=True
    )


def sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def train_with_fit(initial, x, y, epochs=1):
    model = multi_worker.build_model()
    model.set_weights(initial)
    model.compile(
        keras.optimizers.SGD(multi_worker.LEARNING_RATE), loss=sparse_ce()
    )
    history = model.fit(
        x,
        y,
        batch_size=multi_worker.GLOBAL_BATCH,
        epochs=epochs,
        shuffle=False,
        verbose=0,
    )
    return model, history.history


def train_with_loop(initial, x, y, strategy=None, epochs=1, **kwargs):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = multi_worker.build_model()
        model.set_weights(initial)
        optimizer = keras.optimizers.SGD(multi_worker.LEARNING_RATE)
    trainer = trainers.DistributedTrainer(
        model, optimizer, sparse_ce(), strategy=strategy
    )
    history = trainer.fit(dataset(x, y), epochs=epochs, verbose=0, **kwargs)
    return model, history.history


def assert_same_weights(a, b, rtol=1e-5, atol=1e-5):
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_allclose(
            va.numpy(), vb.numpy(), rtol=rtol, atol=atol, err_msg=va.path
        )


def test_loop_equals_fit_on_one_device():
    x, y = data()
    initial = multi_worker.build_model().get_weights()
    fitted, fit_logs = train_with_fit(initial, x, y)
    looped, loop_logs = train_with_loop(initial, x, y)
    assert_same_weights(fitted, looped)
    np.testing.assert_allclose(loop_logs["loss"], fit_logs["loss"], rtol=1e-5)
    np.testing.assert_allclose(
        loop_logs["interp_filter_loss"], fit_logs["interp_filter_loss"], 1e-5
    )


@pytest.mark.skipif(
    len(tf.config.list_logical_devices("CPU")) < 2, reason="two logical CPUs"
)
def test_loop_under_mirrored_strategy_equals_one_device(two_cpu_strategy):
    x, y = data()
    initial = multi_worker.build_model().get_weights()
    single, single_logs = train_with_loop(initial, x, y)
    mirrored, mirrored_logs = train_with_loop(initial, x, y, two_cpu_strategy)
    assert_same_weights(single, mirrored)
    np.testing.assert_allclose(
        mirrored_logs["loss"], single_logs["loss"], rtol=1e-5
    )


def test_checkpoint_resume_equals_uninterrupted(tmp_path):
    x, y = data(24)
    initial = multi_worker.build_model().get_weights()
    straight, _ = train_with_loop(initial, x, y, epochs=3)
    ckpt = os.path.join(tmp_path, "ckpt")
    train_with_loop(initial, x, y, epochs=2, checkpoint_dir=ckpt)
    # A new process would rebuild from scratch: start from other weights.
    other = multi_worker.build_model().get_weights()
    resumed, logs = train_with_loop(other, x, y, epochs=3, checkpoint_dir=ckpt)
    assert len(logs["loss"]) == 1  # only epoch 3 ran
    assert_same_weights(straight, resumed)


def test_callbacks_receive_logs():
    seen = []

    class Recorder(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, sorted(logs)))

    x, y = data()
    initial = multi_worker.build_model().get_weights()
    train_with_loop(
        initial,
        x,
        y,
        epochs=2,
        callbacks=[Recorder(), keras_interp.FilterLossEpoch()],
    )
    assert [epoch for epoch, _ in seen] == [0, 1]
    assert {"loss", "interp_filter_loss"} <= set(seen[0][1])


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_on_loopback_match_a_single_process(tmp_path):
    x, y = data()
    np.savez(os.path.join(tmp_path, "data.npz"), x=x, y=y)
    model = multi_worker.build_model()
    model.save_weights(os.path.join(tmp_path, "init.weights.h5"))
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.getcwd()}
    procs = []
    for index in range(2):
        tf_config = {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": index},
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, HELPER, str(tmp_path), "worker"],
                env={**env, "TF_CONFIG": json.dumps(tf_config)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    single = subprocess.Popen(
        [sys.executable, HELPER, str(tmp_path), "single"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    outputs = []
    try:
        for proc in procs + [single]:
            out, _ = proc.communicate(timeout=300)
            outputs.append(out.decode(errors="replace")[-3000:])
    finally:
        for proc in procs + [single]:
            if proc.poll() is None:
                proc.kill()
    for proc, out in zip(procs + [single], outputs):
        assert proc.returncode == 0, out
    results = [
        np.load(os.path.join(tmp_path, name))
        for name in ("worker0.npz", "worker1.npz", "single0.npz")
    ]
    keys = [k for k in results[0].files if k.startswith("arr_")]
    for key in keys:
        np.testing.assert_array_equal(results[0][key], results[1][key])
        np.testing.assert_allclose(
            results[0][key], results[2][key], rtol=1e-5, atol=1e-6
        )
    np.testing.assert_allclose(
        results[0]["loss"], results[2]["loss"], rtol=1e-5
    )


class Poison(keras.callbacks.Callback):
    """Sets a layer's kernel to NaN after step `batch` of epoch `epoch`.

    `layer` is a layer name or an index into `model.layers`.

    Stands in for an update that blew the weights up while the logged loss
    (computed before it) was still finite.
    """

    def __init__(self, layer, epoch, batch):
        super().__init__()
        self.layer, self.epoch, self.batch = layer, epoch, batch

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self._epoch, batch) == (self.epoch, self.batch):
            layer = self.layer
            if isinstance(layer, str):
                layer = self.model.get_layer(layer)
            else:
                layer = self.model.layers[layer]
            kernel = layer.kernel
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))


def test_non_finite_weights_stop_before_the_checkpoint(tmp_path):
    """StopOnNonFinite under the loop: the diverged epoch is not saved."""
    x, y = data()  # 2 steps per epoch.
    initial = multi_worker.build_model().get_weights()
    ckpt = os.path.join(tmp_path, "ckpt")
    with pytest.raises(
        keras_interp.callbacks.NonFiniteLossError,
        match=r"end of epoch 2.*\['interp'\]",
    ):
        train_with_loop(
            initial,
            x,
            y,
            epochs=3,
            checkpoint_dir=ckpt,
            callbacks=[
                Poison("interp", epoch=1, batch=1),
                keras_interp.callbacks.StopOnNonFinite(),
            ],
        )
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(ckpt))
    assert reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 1


def test_non_finite_task_loss_stops_the_loop():
    x, y = data()
    initial = multi_worker.build_model().get_weights()
    with pytest.raises(
        keras_interp.callbacks.NonFiniteLossError,
        match="epoch 1, step 2: non-finite loss=nan; .*task loss",
    ):
        train_with_loop(
            initial,
            x,
            y,
            callbacks=[
                Poison(-1, epoch=0, batch=0),  # The logits' Dense.
                keras_interp.callbacks.StopOnNonFinite(),
            ],
        )
