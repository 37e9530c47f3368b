"""Is the filter loss doing anything? Its gradient next to the task's.

The paper's Eq. 3 adds two gradients on each interpretable feature map `x`:

```
dLoss/dx = lambda dLoss_f/dx + dL_task/dx
```

If the first is a thousandth of the second, the filter loss is inert; if it
is much larger, it dominates the classifier. `gradient_norms` measures
both on a probe batch and `GradientRatioLogger` logs their ratio every
epoch, so a user can see which regime a run is in.

Definition. For an interpretable layer (`InterpretableMask`,
`InterpretableConv2D`), `x` is the map its filter loss scores: the layer's
post-ReLU map before the mask (the input of the mask; for
`InterpretableConv2D` the ReLU of its convolution). On one batch, in
training mode:

* `filter_norm = ||d(layer's filter-loss term)/dx||`, the Frobenius norm
  over the whole `[batch, H, W, filters]` tensor. The term is the one the
  layer adds with `add_loss`: `loss_weight` (after any
  `loss_weight_decay`) times the summed per-filter loss, or the authors'
  surrogate gradient with `loss="authors"`. Only this layer's own term
  counts (another interpretable layer's filter loss also reaches `x`
  through the network; it is not included).
* `task_norm = ||dL_task/dx||`, with `L_task` the model's compiled loss
  (or `loss`) on the batch, a batch mean as in `fit`. It reaches `x`
  through the mask and the rest of the network.
* `ratio = filter_norm / task_norm` (inf if only the task norm is 0, NaN
  if both are).

Both are the gradients `fit` adds on `x` in a training step on that batch.
The measurement runs the model in training mode (dropout and batch
statistics as in `fit`) and then restores every non-trainable variable
(batch-norm statistics, the layers' class statistics and learned beta,
random-seed states, metrics), so it does not change the model. TensorFlow
backend.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_interp.layers import interpretable_layers


class _Probe:
    """Collects each interpretable layer's map `x` and its filter-loss term.

    The layers call `watch(layer, x)` on entry and `record_loss(layer,
    loss)` after `add_loss` while `layer._gradient_probe` is set.
    """

    def __init__(self, tape):
        self.tape = tape
        self.maps = {}
        self.losses = {}

    def watch(self, layer, x):
        self.tape.watch(x)
        self.maps.setdefault(id(layer), []).append(x)
        return x

    def record_loss(self, layer, loss):
        self.losses.setdefault(id(layer), []).append(loss)


def _task_loss(model, loss):
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError(
                "gradient_norms needs the task loss: compile the model, or "
                "pass `loss=` (a callable `(y_true, y_pred) -> scalar` or a "
                "Keras loss)."
            )
    if isinstance(loss, (dict, list, tuple)):
        raise ValueError(
            "gradient_norms needs one task loss; the model was compiled "
            f"with {type(loss).__name__} of losses. Pass `loss=` as a "
            "callable `(y_true, y_pred) -> scalar`."
        )
    return keras.losses.get(loss)


def _norm(tensors):
    total = 0.0
    for t in tensors:
        if t is not None:
            t = ops.cast(t, "float32")
            total += float(ops.convert_to_numpy(ops.sum(t * t)))
    return math.sqrt(total)


def gradient_norms(
    model, inputs, targets, *, loss=None, layers=None, training=True
):
    """Filter-loss and task-loss gradient norms at each interpretable map.

    See the module docstring for the exact definition.

    Args:
        model: a Keras model containing interpretable layers (nested models
            included), e.g. `PartClassifier.training`.
        inputs: one batch of model inputs, as `model(inputs)` takes them
            (for `PartClassifier.training`, `{"image": ..., "label": ...}`).
            The filter loss's image set is this batch: use the training
            batch size.
        targets: the batch's targets for the task loss.
        loss: the task loss, a callable `(y_true, y_pred) -> scalar` or a
            Keras loss identifier; default: the model's compiled loss.
        layers: the interpretable layers to measure; default all of them.
        training: run the model in training mode (default True, as `fit`
            does; the filter loss is only added in training mode).

    Returns:
        A dict `{layer name: {"filter": float, "task": float, "ratio":
        float}}`.

    Raises:
        ValueError: on a backend other than TensorFlow, without a task
            loss, or if a layer is not called by the model.
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "gradient_norms runs on the TensorFlow backend. Received backend "
            f"{keras.backend.backend()!r}."
        )
    import tensorflow as tf

    loss_fn = _task_loss(model, loss)
    chosen = interpretable_layers(model) if layers is None else list(layers)
    if not chosen:
        raise ValueError(
            f"Model '{model.name}' has no interpretable layers "
            "(InterpretableMask, InterpretableConv2D) to measure."
        )
    state = [(v, v.numpy()) for v in model.non_trainable_variables]
    try:
        with tf.GradientTape(persistent=True) as tape:
            probe = _Probe(tape)
            for layer in chosen:
                layer._gradient_probe = probe
            try:
                outputs = model(inputs, training=training)
            finally:
                for layer in chosen:
                    layer._gradient_probe = None
            # A per-sample loss (e.g. the function "mse") is averaged, as
            # `fit` does.
            task = ops.mean(ops.cast(loss_fn(targets, outputs), "float32"))
    finally:
        for variable, value in state:
            variable.assign(value)
    results = {}
    for layer in chosen:
        maps = probe.maps.get(id(layer))
        if not maps:
            raise ValueError(
                f"Layer '{layer.name}' was not called when running model "
                f"'{model.name}' on the probe batch."
            )
        task_norm = _norm(tape.gradient(task, maps))
        terms = probe.losses.get(id(layer), [])
        filter_norm = 0.0
        if terms:
            filter_norm = _norm(tape.gradient(tf.add_n(terms), maps))
        if task_norm > 0:
            ratio = filter_norm / task_norm
        else:
            ratio = math.inf if filter_norm > 0 else math.nan
        results[layer.name] = {
            "filter": filter_norm,
            "task": task_norm,
            "ratio": ratio,
        }
    del tape
    return results


def gradient_ratio(model, inputs, targets, **kwargs):
    """`{layer name: filter_norm / task_norm}`; see `gradient_norms`.

    Example:

    >>> built = keras_interp.models.build_part_classifier(
    ...     "tiny_vgg", num_classes=3, image_size=32)
    >>> images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3))
    >>> labels = np.arange(8) % 3
    >>> ratios = keras_interp.gradient_ratio(
    ...     built.training, {"image": images, "label": labels}, labels,
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> sorted(ratios)
    ['part_conv', 'top_mask']
    """
    norms = gradient_norms(model, inputs, targets, **kwargs)
    return {name: values["ratio"] for name, values in norms.items()}


class GradientRatioLogger(keras.callbacks.Callback):
    """Logs each interpretable layer's filter-to-task gradient ratio.

    At the end of every `freq`-th epoch it runs `gradient_norms` on a fixed
    probe batch and adds `<layer>_grad_ratio` to the epoch's `logs`, so
    `fit`'s History, `keras.callbacks.CSVLogger` and
    `keras.callbacks.TensorBoard` (as `epoch_<layer>_grad_ratio`) record
    it. Put it before those callbacks in the `callbacks` list (Keras adds
    History and the progress bar after the user's callbacks). With
    `log_dir` it also writes `<layer>/grad_ratio`, `<layer>/filter_grad_norm`
    and `<layer>/task_grad_norm` scalars there itself (step = epoch index).

    A ratio around 1e-3 means the filter loss is inert; around 1 or more
    means it competes with (or dominates) the task loss on that map.

    Args:
        inputs: one probe batch of model inputs, at the training batch size
            (the filter loss's image set is the batch).
        targets: its targets.
        loss: the task loss; default the model's compiled loss.
        freq: measure every `freq` epochs.
        log_dir: optional TensorBoard directory for the scalars above.
        model: the model to measure; default the model being trained.

    Example:

    >>> logger = keras_interp.GradientRatioLogger(
    ...     {"image": images, "label": labels}, labels)
    >>> history = built.training.fit(..., callbacks=[logger])  # doctest: +SKIP
    >>> history.history["part_conv_grad_ratio"]  # doctest: +SKIP
    """

    def __init__(
        self, inputs, targets, *, loss=None, freq=1, log_dir=None, model=None
    ):
        super().__init__()
        if isinstance(freq, bool) or not isinstance(freq, int) or freq < 1:
            raise ValueError(
                f"`freq` must be a positive int. Received: freq={freq!r}."
            )
        self.inputs = inputs
        self.targets = np.asarray(targets)
        self.loss = loss
        self.freq = freq
        self.log_dir = log_dir
        self.probe_model = model
        self._writer = None
        self.last = {}

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.freq:
            return
        model = self.probe_model or self.model
        self.last = gradient_norms(
            model, self.inputs, self.targets, loss=self.loss
        )
        if logs is not None:
            for name, values in self.last.items():
                logs[f"{name}_grad_ratio"] = values["ratio"]
        if self.log_dir is None:
            return
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=epoch), tf.summary.record_if(True):
            for name, values in self.last.items():
                tf.summary.scalar(f"{name}/grad_ratio", values["ratio"])
                tf.summary.scalar(f"{name}/filter_grad_norm", values["filter"])
                tf.summary.scalar(f"{name}/task_grad_norm", values["task"])
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
