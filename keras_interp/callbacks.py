"""Callbacks for training interpretable models."""

import keras
import numpy as np

from keras_interp.layers.interpretable_mask import InterpretableMixin
from keras_interp.losses import mutual_information


def interpretable_layers(model):
    """All interpretable layers of `model`, nested models included."""
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, InterpretableMixin)
    ]


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


class InterpretabilityLogger(keras.callbacks.Callback):
    """Writes per-filter interpretability summaries to TensorBoard.

    Every `freq` epochs, for each interpretable layer of `probe_model`, on a
    fixed probe batch:

    * `<layer>/mutual_information`: histogram of the per-filter MI (Eq. 1)
      of the post-ReLU, pre-mask maps of the probe batch;
    * `<layer>/peak_position`: histogram of the maps' peak cells (row-major
      index `i * W + j`; one bar per cell means the filters fire
      everywhere, a few bars mean they settled on parts);
    * `<layer>/filters`: images of the masked maps of the `num_filters`
      most active filters, as heatmaps over the first `num_images` probe
      images.

    The filter loss itself is a metric, so `keras.callbacks.TensorBoard`
    already logs it per step and per epoch (`batch_/epoch_<layer>_filter_loss`).
    TensorFlow backend only.

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
        with self.writer.as_default(step=epoch):
            for name, (layer, raw_probe, masked_probe) in self._probes.items():
                raw = np.maximum(raw_probe.predict_on_batch(images), 0)
                masked = np.asarray(masked_probe.predict_on_batch(images))
                if layer.data_format == "channels_first":
                    raw = np.moveaxis(raw, 1, -1)
                    masked = np.moveaxis(masked, 1, -1)
                beta = layer.beta
                if layer.beta_variable is not None:
                    beta = layer.beta_variable.numpy()
                mi = keras.ops.convert_to_numpy(
                    mutual_information(
                        raw.astype("float32"),
                        beta=np.asarray(beta, "float32"),
                        tau=layer.tau,
                        alpha=layer.alpha,
                    )
                )
                tf.summary.histogram(f"{name}/mutual_information", mi)
                flat = raw.reshape(raw.shape[0], -1, raw.shape[-1])
                tf.summary.histogram(
                    f"{name}/peak_position", np.argmax(flat, axis=1).ravel()
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
