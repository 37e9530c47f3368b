"""Callbacks for training interpretable models."""

import math

import keras
import numpy as np

from keras_interp import templates
from keras_interp.layers import interpretable_layers
from keras_interp.losses import mutual_information


class FilterLossEpoch(keras.callbacks.Callback):
    """Tells every interpretable layer the current (1-based) epoch.

    The layers' `epoch` variable drives `loss_weight_decay="inverse_epoch"`
    (paper: `lambda ∝ 1/t`) and the authors' surrogate gradient (`K_t =
    t / 0.1`). It is a model weight, so it is saved with the model and a
    resumed run continues the schedule. Pass `initial_epoch` to `fit` when
    resuming, as usual.

    Example:

    >>> model.fit(x, y, epochs=5, callbacks=[keras_interp.FilterLossEpoch()])
    ... # doctest: +SKIP
    """

    def on_epoch_begin(self, epoch, logs=None):
        for layer in interpretable_layers(self.model):
            layer.epoch.assign(float(epoch + 1))


class NonFiniteLossError(ValueError):
    """Training produced a non-finite loss or non-finite weights.

    Raised by `StopOnNonFinite`; the message names the non-finite terms
    and the loss weights in use.
    """


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training with a clear error as soon as a loss becomes non-finite.

    `keras.callbacks.TerminateOnNaN` stops `fit` silently, so a diverged
    run still ends "successfully" and its NaN weights get saved. This
    callback raises `NonFiniteLossError` instead, and its message says
    which term went non-finite:

    * `<layer>_filter_loss`: the filter loss of that interpretable layer
      (listed with the layer's `loss_weight`);
    * `loss` with every filter loss finite: the task loss (or another
      `add_loss` term).

    It checks the loss terms of the batch logs (`loss` and every `*_loss`)
    after every step (the logged loss is computed before that step's
    update) and, at the end of every epoch, the model's weights, so that
    a last step that blew the weights up is caught before a checkpoint
    callback placed after it saves them. Put it first in the callback
    list. It works with `fit` and `training.DistributedTrainer`.

    Args:
        hint: optional sentence appended to the message (what to change).

    Example:

    >>> model.fit(ds, epochs=5, callbacks=[StopOnNonFinite()])
    ... # doctest: +SKIP
    """

    def __init__(self, *, hint=None):
        super().__init__()
        self.hint = hint
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = _non_finite(logs)
        if bad:
            raise NonFiniteLossError(
                self._message(
                    bad, f"epoch {self._epoch + 1}, step {batch + 1}", logs
                )
            )

    def on_epoch_end(self, epoch, logs=None):
        where = f"the end of epoch {epoch + 1}"
        bad = _non_finite(logs)
        if bad:
            raise NonFiniteLossError(self._message(bad, where, logs))
        layers = sorted(
            {
                v.path.rsplit("/", 1)[0]
                for v in self.model.trainable_variables
                if not bool(keras.ops.all(keras.ops.isfinite(v)))
            }
        )
        if layers:
            raise NonFiniteLossError(
                f"Training diverged at {where}: the last update made the "
                f"weights of {layers} non-finite (the logged losses were "
                f"still finite). {self._weights_text()} Lower the learning "
                "rate or the filter-loss weights, and check the inputs."
                + (f" {self.hint}" if self.hint else "")
            )

    def _weights_text(self):
        layers = interpretable_layers(self.model)
        if not layers:
            return "The model has no interpretable layers (no filter loss)."
        weights = ", ".join(
            f"{layer.name}: loss_weight={layer.loss_weight:g}"
            + (
                f" / epoch ({layer.loss_weight_decay})"
                if layer.loss_weight_decay
                else ""
            )
            for layer in layers
            if layer.loss is not None
        )
        return f"Filter-loss weights in use: {weights or 'none (loss=None)'}."

    def _message(self, bad, where, logs):
        filter_terms = {
            f"{layer.name}_filter_loss": layer
            for layer in interpretable_layers(self.model)
        }
        causes = [name for name in bad if name in filter_terms]
        values = ", ".join(f"{name}={value}" for name, value in bad.items())
        if causes:
            culprit = "; ".join(
                f"`{name}` is the filter loss of layer "
                f"{filter_terms[name].name!r} "
                f"(loss_weight={filter_terms[name].loss_weight:g})"
                for name in causes
            )
            advice = (
                "The filter loss diverged: lower its `loss_weight` "
                "(--loss_weight) or the learning rate."
            )
        elif "loss" in bad:
            finite = ", ".join(
                f"{name}={float(logs[name]):.4g}"
                for name in filter_terms
                if name in logs
            )
            culprit = (
                f"every filter loss is finite ({finite or 'none logged'}), "
                "so the non-finite term is the task loss (or another "
                "`add_loss` term)"
            )
            advice = (
                "Lower the learning rate or the filter-loss weights (their "
                "gradients also reach the weights the task loss uses), and "
                "check the inputs and labels."
            )
        else:
            culprit = "these logged values are non-finite"
            advice = "Lower the learning rate."
        return (
            f"Training diverged at {where}: non-finite {values}; {culprit}. "
            f"{self._weights_text()} {advice}"
            + (f" {self.hint}" if self.hint else "")
        )


def _non_finite(logs):
    """{name: value} of the non-finite loss terms in a logs dict.

    Loss terms are `loss` and every `*_loss` entry; other metrics (an
    undefined AUC, say) may legitimately be NaN.
    """
    bad = {}
    for name, value in (logs or {}).items():
        if name != "loss" and not name.endswith("_loss"):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(number):
            bad[name] = number
    return bad


class TensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` that never drops epoch summaries.

    With an integer `update_freq=N`, Keras 3's callback enters
    `tf.summary.record_if(step % N == 0)` at every batch and leaves it
    active through `on_epoch_end`. Its own `epoch_*` scalars, and every
    summary other callbacks write at the end of the epoch, are then
    recorded only when the epoch happens to end on a multiple of N steps
    (tensorflow/tensorboard#4975). This subclass records unconditionally
    from its `on_epoch_end` until the next batch starts (or training
    ends), so callbacks placed after it (such as `InterpretabilityLogger`)
    also get their epoch summaries written. Batch summaries keep the
    every-N-steps rule. Same arguments as the Keras callback.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._epoch_recording = None

    def _stop_epoch_recording(self):
        if self._epoch_recording is not None:
            self._epoch_recording.__exit__(None, None, None)
            self._epoch_recording = None

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        self._stop_epoch_recording()
        self._epoch_recording = tf.summary.record_if(True)
        self._epoch_recording.__enter__()
        super().on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        # Restore the batch-level condition before Keras swaps its own.
        self._stop_epoch_recording()
        super().on_train_batch_begin(batch, logs)

    def on_test_begin(self, logs=None):
        self._stop_epoch_recording()
        super().on_test_begin(logs)

    def on_train_end(self, logs=None):
        self._stop_epoch_recording()
        super().on_train_end(logs)


class InterpretabilityLogger(keras.callbacks.Callback):
    """Writes per-filter interpretability summaries to TensorBoard.

    Every `freq` epochs, for each interpretable layer of `probe_model`, on a
    fixed probe batch:

    * `<layer>/mutual_information`: histogram of the per-filter MI (Eq. 1)
      of the post-ReLU, pre-mask maps of the probe batch;
    * `<layer>/peak_position`: histogram of the maps' part locations `mu`
      (row-major index `i * W + j`, `part_positions`), found with the
      layer's own `center` rule (the argmax peak or the centroid): the
      cells its mask is centred on. One bar per cell means the filters
      fire everywhere, a few bars mean they settled on parts. (The
      evaluation reads the argmax peak whatever the centre:
      `evaluation.peaks`.)
    * `<layer>/filters`: images of the masked maps of the `num_filters`
      most active filters, as heatmaps over the first `num_images` probe
      images.

    The filter loss itself is a metric, so a TensorBoard callback already
    logs it per step and per epoch (`batch_/epoch_<layer>_filter_loss`);
    use this module's `TensorBoard`, which keeps the epoch summaries that
    Keras' drops with an integer `update_freq`. This callback records its
    summaries whatever `tf.summary.record_if` is active. TensorFlow
    backend only.

    Args:
        log_dir: directory for the event files.
        probe_model: an image-only model holding the interpretable layers
            (e.g. `PartClassifier.inference`); it shares the trained weights.
        probe_images: array `(N, H, W, 3)` in [0, 255].
        num_images: images per heatmap grid.
        num_filters: filters shown per layer.
        freq: write every `freq` epochs.
    """

    def __init__(
        self,
        log_dir,
        probe_model,
        probe_images,
        *,
        num_images=4,
        num_filters=4,
        freq=1,
    ):
        super().__init__()
        self.log_dir = log_dir
        self.probe_model = probe_model
        self.probe_images = np.asarray(probe_images, "float32")
        self.num_images = int(num_images)
        self.num_filters = int(num_filters)
        self.freq = int(freq)
        self._writer = None
        self._probes = None

    @property
    def writer(self):
        # Created lazily, so that a run that never logs leaves no file.
        if self._writer is None:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(self.log_dir)
        return self._writer

    def _build_probes(self):
        from keras_interp.evaluation import feature_map_model

        self._probes = {}
        for layer in interpretable_layers(self.probe_model):
            self._probes[layer.name] = (
                layer,
                feature_map_model(self.probe_model, layer.name, "raw"),
                feature_map_model(self.probe_model, layer.name, "masked"),
            )

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.freq:
            return
        import tensorflow as tf

        from keras_interp.evaluation import upsample_map

        if self._probes is None:
            self._build_probes()
        images = self.probe_images
        # Recorded whatever `record_if` a TensorBoard callback left active
        # (tensorflow/tensorboard#4975). The probes are called eagerly: a
        # traced predict function per probe model would count as
        # retracings of Keras' one shared predict step.
        with self.writer.as_default(step=epoch), tf.summary.record_if(True):
            for name, (layer, raw_probe, masked_probe) in self._probes.items():
                raw = np.maximum(_eager(raw_probe, images), 0)
                masked = _eager(masked_probe, images)
                if layer.data_format == "channels_first":
                    raw = np.moveaxis(raw, 1, -1)
                    masked = np.moveaxis(masked, 1, -1)
                beta = keras.ops.convert_to_numpy(layer.current_beta())
                mi = keras.ops.convert_to_numpy(
                    mutual_information(
                        raw.astype("float32"),
                        beta=np.asarray(beta, "float32"),
                        tau=layer.tau,
                        alpha=layer.alpha,
                        normalization=layer.normalization,
                    )
                )
                tf.summary.histogram(f"{name}/mutual_information", mi)
                tf.summary.histogram(
                    f"{name}/peak_position", part_positions(raw, layer.center)
                )
                tf.summary.image(
                    f"{name}/filters",
                    self._heatmaps(images, masked, upsample_map),
                    max_outputs=self.num_filters,
                )
        self.writer.flush()

    def _heatmaps(self, images, maps, upsample):
        """One grid image per filter: the map in red over each image."""
        count = min(self.num_images, len(images))
        strongest = np.argsort(-maps.mean(axis=(0, 1, 2)))[: self.num_filters]
        grids = []
        for f in strongest:
            tiles = []
            for i in range(count):
                heat = upsample(maps[i, :, :, f], images.shape[1:3])
                heat = heat / (heat.max() + 1e-12)
                tile = 0.5 * images[i] / 255.0
                tile[..., 0] = np.clip(tile[..., 0] + heat, 0, 1)
                tiles.append(tile)
            grids.append(np.concatenate(tiles, axis=1))
        return np.stack(grids).astype("float32")

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def part_positions(feature_maps, center):
    """Row-major cell `i * W + j` of each map's part location `mu`, flat.

    Args:
        feature_maps: `(N, H, W, F)` post-ReLU, pre-mask maps of a layer.
        center: the layer's `center` (`templates.CENTERS`): `mu` is
            `templates.part_centers(feature_maps, center=center)`, the cell
            the layer's mask is centred on.

    Returns:
        `(N * F,)` int array, image-major.

    Example:

    >>> maps = np.zeros((1, 2, 3, 1)); maps[0, 1, 2, 0] = 1.0
    >>> part_positions(maps, "argmax").tolist()
    [5]
    """
    width = feature_maps.shape[2]
    mu = keras.ops.convert_to_numpy(
        templates.part_centers(feature_maps, center=center)
    )
    return (mu[..., 0] * width + mu[..., 1]).ravel()


def _eager(model, images):
    """`model(images)` in eager mode, as numpy (no traced function)."""
    inputs = [images] if isinstance(model.input, (list, tuple)) else images
    return np.asarray(model(inputs, training=False))
