"""Callbacks for training interpretable models."""

import keras

from keras_interp.layers.interpretable_mask import InterpretableMixin


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
