"""The mask-and-loss part of an interpretable conv layer, and the mask layer.

`InterpretableMixin` holds everything both layers share: arguments and their
validation, the non-trainable state, the XLA-compiled forward computation,
`add_loss`, and the logged metric. `InterpretableMask` applies it to an
existing feature map; `InterpretableConv2D` applies it after its own conv.
"""

import math
import warnings

import keras
import numpy as np
from keras import ops

from keras_interp import distribute
from keras_interp import losses
from keras_interp import templates

LOSSES = ("mutual_information", "authors", None)
LOSS_WEIGHT_DECAYS = (None, "inverse_epoch")
# Default loss weights (lambda), per filter, by loss variant, for the default
# scale-free loss (`normalization="mean_max"`) and for the paper-literal one
# (`normalization=None`). See the `loss_weight` entry of the class docstrings
# for the evidence.
DEFAULT_LOSS_WEIGHTS = {"mutual_information": 0.002, "authors": 0.02, None: 0.0}
PAPER_SCALE_LOSS_WEIGHTS = {
    "mutual_information": 0.02,
    "authors": 1.0,
    None: 0.0,
}
# Authors' `our_cnn_train.m`: the per-class activation EMA uses momentum 0.9.
DEFAULT_ASSIGNMENT_MOMENTUM = 0.9
# Authors' beta rule (docs/method_notes.md): 0.016 of the gap a step before SGD
# momentum 0.9, about 0.16 once momentum has built up; 0.1 sits between.
DEFAULT_BETA_RATE = 0.1
# Authors' `add_block_mask.m` initialises beta to 2.0 in [-1, 1] coordinates.
AUTHORS_BETA_INIT = 2.0
# Filters per group when the layer takes the exact loss's gradient itself
# (TensorFlow): bounds the loss's working memory inside the compiled block.
FILTER_CHUNK = 64


def _check_float(name, value, low=None, high=None, low_open=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        rule = []
        if low is not None:
            rule.append(f"{'>' if low_open else '>='} {low}")
        if high is not None:
            rule.append(f"<= {high}")
        raise ValueError(
            f"`{name}` must be a finite number {' and '.join(rule)}. "
            f"Received: {name}={value!r}."
        )
    return float(value)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {choices}. Received: {name}={value!r}."
        )
    return value


def _value_and_gradient(fn, maps, positives, beta):
    """`fn(maps, positives, beta)` and its gradient `d/dmaps` (TensorFlow).

    `fn` is a sum of independent per-filter terms (the filter loss; its
    scale `m_f` is per filter too), so it is evaluated `FILTER_CHUNK`
    filters at a time, with each group's
    gradient taken right away. Inside the layer's compiled function the
    loss's `[batch, filters, H*W + 1]` intermediates then exist for one
    group at a time and die there, instead of being kept for the backward
    pass (`benchmarks/README.md`).
    """
    import tensorflow as tf

    def value_and_gradient(args):
        maps, positives, beta = args
        with tf.GradientTape() as tape:
            tape.watch(maps)
            value = fn(maps, positives, beta)
        return value, tape.gradient(value, maps)

    _, height, width, filters = maps.shape
    chunk = max(
        d for d in range(1, min(filters, FILTER_CHUNK) + 1) if filters % d == 0
    )
    groups = filters // chunk
    if groups == 1:
        return value_and_gradient((maps, positives, beta))
    batch = tf.shape(maps)[0]
    grouped_maps = tf.transpose(
        tf.reshape(maps, [batch, height, width, groups, chunk]),
        [3, 0, 1, 2, 4],
    )
    grouped_positives = tf.transpose(
        tf.reshape(positives, [batch, groups, chunk]), [1, 0, 2]
    )
    grouped = (grouped_maps, grouped_positives)
    if tf.is_tensor(beta) and beta.shape.rank > 0:  # One beta per filter.
        grouped += (tf.reshape(beta, [groups, chunk]),)
        group = value_and_gradient
    else:  # One beta: the templates stay shared by all filters.

        def group(args):
            return value_and_gradient((*args, beta))

    values, gradients = tf.map_fn(
        group, grouped, fn_output_signature=(tf.float32, tf.float32)
    )
    gradient = tf.reshape(
        tf.transpose(gradients, [1, 2, 3, 0, 4]),
        [batch, height, width, filters],
    )
    return tf.reduce_sum(values), gradient


def _with_gradient(value, gradient, x):
    """`value`, with `gradient` as its gradient with respect to `x`.

    `stop(value) + s - stop(s)` with `s = sum(stop(gradient) * x)`: the value
    is unchanged (`s - stop(s)` is exactly 0) and `d/dx = gradient`. The
    backward pass keeps only `gradient` (and `x`, which the network keeps
    anyway). Pure `keras.ops`, no custom-gradient machinery. The gradient is
    a constant of the backward pass: no second derivatives.
    """
    s = ops.sum(ops.stop_gradient(gradient) * ops.cast(x, "float32"))
    return ops.stop_gradient(value) + (s - ops.stop_gradient(s))


def _concrete(value):
    """`value` as a numpy array if its values are known now, else None.

    Known: Python and numpy values, and eager tensors. Unknown: symbolic
    tensors (Keras functional construction, `tf.function`/XLA graphs, JAX
    tracers, `torch.compile`).
    """
    if isinstance(value, (np.ndarray, np.generic, list, tuple, int, float)):
        return np.asarray(value)
    if isinstance(value, keras.KerasTensor):
        return None
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.is_tensor(value) and not tf.is_symbolic_tensor(value):
            return value.numpy()
        return None
    if backend == "jax":
        import jax

        if isinstance(value, jax.core.Tracer):
            return None
        return np.asarray(value)
    if backend == "torch":
        import torch

        if torch.compiler.is_compiling():
            return None
        return keras.ops.convert_to_numpy(value)
    return np.asarray(value)


def _check_labels(labels, batch, num_classes, layer_name):
    """Checks `labels` against the batch and the classes, where it can.

    Shapes are checked whenever they are known (static shapes, eager
    calls); values only when they are known (`_concrete`). Raises a
    ValueError naming `labels`, what was received and what is valid.
    """
    values = _concrete(labels)
    shape = tuple(values.shape if values is not None else labels.shape)
    one_hot = len(shape) == 2 and shape[-1] == num_classes and num_classes > 1
    ids = len(shape) == 1 or (len(shape) == 2 and shape[-1] == 1)
    if not (one_hot or ids):
        raise ValueError(
            "`labels` must be class ids of shape (batch,) or (batch, 1), or "
            f"one-hot of shape (batch, {num_classes}). Received shape "
            f"{shape}."
        )
    if shape[0] is not None and batch is not None and shape[0] != batch:
        raise ValueError(
            f"`labels` has {shape[0]} entries but layer '{layer_name}' "
            f"received a batch of {batch} feature maps. Pass one label per "
            "image."
        )
    if values is None:
        return
    if values.dtype == bool:
        values = values.astype("int32")
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(
            "`labels` must be numeric class ids or one-hot rows. Received "
            f"dtype {values.dtype}."
        )
    values = values.astype("float64")
    bad = ~np.isfinite(values)
    if one_hot:
        rows = values.sum(axis=-1)
        bad_rows = np.any(bad | (values < 0), axis=-1) | ~(rows > 0)
        if np.any(bad_rows):
            row = int(np.flatnonzero(bad_rows)[0])
            raise ValueError(
                f"`labels` one-hot rows must be finite, non-negative and not "
                f"all zero (layer '{layer_name}', num_classes={num_classes}). "
                f"Received {values[row].tolist()} at position {row}."
            )
        return
    values = values.reshape(-1)
    invalid = (
        bad
        | (values != np.round(values))
        | (values < 0)
        | (values >= num_classes)
    )
    if np.any(invalid):
        index = int(np.flatnonzero(invalid)[0])
        raise ValueError(
            f"`labels` must be integer class ids in [0, {num_classes}) "
            f"(num_classes={num_classes} of layer '{layer_name}'). Received "
            f"{values[index]:g} at position {index}. Use ids 0 to "
            f"{num_classes - 1}, or raise num_classes."
        )


def _labels_to_ids(labels, num_classes):
    """Class ids `[batch]` from ids `[batch]`/`[batch, 1]` or one-hot."""
    if (
        len(labels.shape) == 2
        and labels.shape[-1] == num_classes
        and (num_classes > 1)
    ):
        return ops.cast(ops.argmax(labels, axis=-1), "int32")
    if len(labels.shape) == 2 and labels.shape[-1] == 1:
        labels = labels[:, 0]
    if len(labels.shape) != 1:
        raise ValueError(
            "`labels` must be class ids of shape (batch,) or (batch, 1), or "
            f"one-hot of shape (batch, {num_classes}). Received shape "
            f"{tuple(labels.shape)}."
        )
    return ops.cast(labels, "int32")


class InterpretableMixin:
    """Shared implementation; see `InterpretableMask` for the arguments."""

    def _init_interpretable(
        self,
        *,
        loss,
        loss_weight,
        loss_weight_decay,
        normalization,
        beta,
        center,
        tau,
        alpha,
        num_classes,
        background_class,
        assignment_momentum,
        beta_rate,
        mask_at_inference,
        apply_mask,
        jit_compile,
    ):
        self.loss = _check_choice("loss", loss, LOSSES)
        self.normalization = losses.check_normalization(normalization)
        if loss_weight is None:
            defaults = DEFAULT_LOSS_WEIGHTS
            if normalization is None:
                defaults = PAPER_SCALE_LOSS_WEIGHTS
            loss_weight = defaults[loss]
        self.loss_weight = _check_float("loss_weight", loss_weight, low=0.0)
        self.loss_weight_decay = _check_choice(
            "loss_weight_decay", loss_weight_decay, LOSS_WEIGHT_DECAYS
        )
        if loss == "authors" and loss_weight_decay is not None:
            raise ValueError(
                "`loss='authors'` already scales its gradient by 1/epoch "
                "(the authors' K_t = t / 0.1), so `loss_weight_decay` must be "
                f"None. Received: loss_weight_decay={loss_weight_decay!r}."
            )
        if beta != "learned":
            if isinstance(beta, (list, tuple)):
                beta = [float(b) for b in beta]
            templates.check_beta(beta)
            if isinstance(beta, (int, float)):
                beta = float(beta)
        self.beta = beta
        self.center = templates.check_center(center)
        self.tau = (
            None
            if tau is None
            else _check_float("tau", tau, low=0.0, low_open=True)
        )
        if alpha is not None:
            alpha = _check_float("alpha", alpha, low=0.0, low_open=True)
            if alpha >= 1.0:
                raise ValueError(
                    f"`alpha` must be in (0, 1). Received: alpha={alpha!r}."
                )
        self.alpha = alpha
        if num_classes is not None and (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, int)
            or num_classes < 1
        ):
            raise ValueError(
                "`num_classes` must be a positive int (the number of label "
                "classes passed at call time) or None. Received: "
                f"num_classes={num_classes!r}."
            )
        self.num_classes = num_classes
        if background_class is not None and (
            num_classes is None
            or not isinstance(background_class, int)
            or not 0 <= background_class < num_classes
        ):
            raise ValueError(
                "`background_class` must be a class id in [0, num_classes) "
                "and needs `num_classes`. Received: background_class="
                f"{background_class!r}, num_classes={num_classes!r}."
            )
        if background_class is not None and num_classes < 2:
            raise ValueError(
                "`background_class` needs at least one other class; set "
                f"num_classes >= 2. Received: num_classes={num_classes}."
            )
        self.background_class = background_class
        self.assignment_momentum = _check_float(
            "assignment_momentum", assignment_momentum, low=0.0, high=1.0
        )
        self.beta_rate = _check_float("beta_rate", beta_rate, low=0.0, high=1.0)
        self.mask_at_inference = bool(mask_at_inference)
        if not isinstance(apply_mask, bool):
            raise ValueError(
                "`apply_mask` must be True (the method) or False (the filter "
                "loss without the forward mask, an ablation). Received: "
                f"apply_mask={apply_mask!r}."
            )
        self.apply_mask = apply_mask
        self.jit_compile = bool(jit_compile)
        self._forward_fn = None
        self._warned_batch_of_one = False
        # Set by `keras_interp.diagnostics` while it measures gradients.
        self._gradient_probe = None
        self.filter_loss_tracker = None
        if self.loss is not None and keras.backend.backend() != "jax":
            # keras-team/keras#21639: metrics updated in `call` fail on JAX.
            self.filter_loss_tracker = keras.metrics.Mean(
                name=f"{self.name}_filter_loss"
            )

    def _interpretable_config(self):
        return {
            "loss": self.loss,
            "loss_weight": self.loss_weight,
            "loss_weight_decay": self.loss_weight_decay,
            "normalization": self.normalization,
            "beta": self.beta,
            "center": self.center,
            "tau": self.tau,
            "alpha": self.alpha,
            "num_classes": self.num_classes,
            "background_class": self.background_class,
            "assignment_momentum": self.assignment_momentum,
            "beta_rate": self.beta_rate,
            "mask_at_inference": self.mask_at_inference,
            "apply_mask": self.apply_mask,
            "jit_compile": self.jit_compile,
        }

    def _check_map_shape(self, shape, name="input_shape"):
        shape = tuple(shape)
        if len(shape) != 4:
            raise ValueError(
                f"{type(self).__name__} expects rank-4 inputs (batch, height, "
                f"width, channels). Received {name} {shape} (rank "
                f"{len(shape)})."
            )
        if self.data_format == "channels_first":
            channels, height, width = shape[1], shape[2], shape[3]
        else:
            height, width, channels = shape[1], shape[2], shape[3]
        if height is None or width is None:
            raise ValueError(
                f"{type(self).__name__} needs static spatial dimensions: the "
                "part templates depend on the feature-map size. Received "
                f"{name} {shape}. Give the model a fixed input size, e.g. "
                "keras.Input((224, 224, 3))."
            )
        if channels is None:
            raise ValueError(
                f"{type(self).__name__} needs a known channel dimension. "
                f"Received {name} {shape}."
            )
        return height, width, channels

    def _lock_input_spec(self, input_shape):
        """After build, let Keras check later inputs (rank and channels)."""
        axis = 1 if self.data_format == "channels_first" else -1
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={axis: input_shape[axis]}
        )

    def _build_interpretable(self, height, width, channels):
        self.map_shape = (height, width, channels)
        self.beta_variable = None
        if self.beta == "learned":
            self.beta_variable = self.add_weight(
                name="beta",
                shape=(channels,),
                initializer=keras.initializers.Constant(
                    AUTHORS_BETA_INIT
                    * (losses.code_to_paper_beta_scale(height, width) or 2.0)
                ),
                trainable=False,
                autocast=False,  # State stays float32 under mixed precision.
                aggregation="mean",
            )
        elif isinstance(self.beta, list) and len(self.beta) != channels:
            raise ValueError(
                f"`beta` has {len(self.beta)} values but the feature map has "
                f"{channels} channels; give one value per channel or a "
                "scalar."
            )
        self.class_activation = None
        if self.num_classes is not None:
            self.class_activation = self.add_weight(
                name="class_activation",
                shape=(self.num_classes, channels),
                initializer="zeros",
                trainable=False,
                autocast=False,  # State stays float32 under mixed precision.
                aggregation="mean",
            )
        self.epoch = self.add_weight(
            name="epoch",
            shape=(),
            initializer=keras.initializers.Constant(1.0),
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )
        forward = self._forward
        if self.jit_compile and keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # Keras does not jit under tf.distribute or on CPU ("auto"), so
            # the template, mask and loss math is compiled here explicitly.
            forward = tf.function(forward, jit_compile=True, autograph=False)
        self._forward_fn = forward

    def _interpretable_variables(self):
        variables = [self.beta_variable, self.class_activation, self.epoch]
        return [v for v in variables if v is not None]

    def filter_assignment(self):
        """Class id each filter is assigned to, `[filters]` int32.

        Filters are assigned to `argmax_c` of the moving average of their
        mean activation on images of class `c` (paper Section 3.1); the
        background class is never chosen. Filters with no statistics yet get
        -1: they treat every non-background image as positive.
        """
        if self.class_activation is None:
            raise ValueError(
                "filter_assignment() needs `num_classes`; this layer was "
                "built without it."
            )
        return self._assignment(ops.copy(self.class_activation))

    def _assignment(self, class_activation):
        stats = class_activation
        if self.background_class is not None:
            is_bg = ops.arange(self.num_classes) == self.background_class
            stats = ops.where(is_bg[:, None], -1.0, stats)
        assigned = ops.cast(ops.argmax(stats, axis=0), "int32")
        seen = ops.max(stats, axis=0) > 0
        return ops.where(seen, assigned, -1)

    def _forward(
        self,
        x,
        beta,
        labels,
        class_activation,
        epoch,
        training,
        reduction=None,
        replicas=1,
    ):
        """Mask, loss and state updates for channels-last post-ReLU maps.

        Returns a dict: `mask`; while training `loss` and, where the layer
        computes it itself, `loss_gradient` (see `_filter_loss`); the new
        `class_activation` and `beta` state. Only a `loss` without a
        `loss_gradient` carries a gradient. `reduction` and `replicas` come
        from `distribute.replica_reduction`: with several replicas the batch
        statistics are global and the loss is this replica's share, times
        `replicas` to undo Keras' 1/R scaling.
        """
        x32 = ops.cast(x, "float32")
        out = {}
        batch = ops.shape(x32)[0]
        filters = self.map_shape[-1]
        if training and self.loss is not None:
            positives = ops.ones((batch, filters), "float32")
            use_labels = labels is not None and self.num_classes is not None
            if use_labels:
                positives, new_stats = self._positives(
                    x32, labels, class_activation, reduction
                )
                out["class_activation"] = new_stats
            weight = self.loss_weight
            if self.loss_weight_decay == "inverse_epoch":
                weight = weight / epoch
            out["loss"], gradient = self._filter_loss(
                x32,
                beta,
                positives,
                use_labels,
                epoch,
                reduction,
                scale=weight * replicas,
            )
            if gradient is not None:
                out["loss_gradient"] = gradient
            if self.beta_variable is not None:
                target = losses.learned_beta_target(
                    x32,
                    positives,
                    beta=beta,
                    center=self.center,
                    reduction=reduction,
                )
                out["beta"] = beta + self.beta_rate * (target - beta)
        if self.apply_mask and (training or self.mask_at_inference):
            # Applied by the caller: the backward pass of `x * mask` then
            # needs only `x`, which the network keeps anyway, and `mask`.
            out["mask"] = templates.part_mask(
                x32, beta=beta, center=self.center
            )
        # Nothing else is differentiated through this function: with no
        # gradient path, TensorFlow keeps none of its intermediates for the
        # backward pass.
        for key in out:
            if key != "loss" or "loss_gradient" in out:
                out[key] = ops.stop_gradient(out[key])
        return out

    def _positives(self, x32, labels, class_activation, reduction):
        """Per-image, per-filter category membership, and the new EMA."""
        reduction = reduction or losses.LOCAL_BATCH
        ids = _labels_to_ids(labels, self.num_classes)
        one_hot = ops.one_hot(ids, self.num_classes, dtype="float32")  # [B,N]
        activation = ops.mean(x32, axis=(1, 2))  # [B, C]; paper: mean sum x
        counts = reduction.sum(one_hot)[0][:, None]  # [N, 1]
        per_class = one_hot[:, :, None] * activation[:, None, :]  # [B, N, C]
        batch_mean = ops.divide_no_nan(reduction.sum(per_class)[0], counts)
        m = self.assignment_momentum
        blended = ops.where(
            class_activation > 0,
            m * class_activation + (1.0 - m) * batch_mean,
            batch_mean,
        )
        new_stats = ops.where(counts > 0, blended, class_activation)
        assigned = self._assignment(new_stats)  # [C]
        foreground = ops.ones_like(ids, dtype="bool")
        if self.background_class is not None:
            foreground = ids != self.background_class
        own = (ids[:, None] == assigned[None, :]) | (assigned[None, :] < 0)
        positives = ops.cast(own & foreground[:, None], "float32")
        return positives, new_stats

    def _authors_class_weights(self):
        """The authors' w+ = 0.5 / rho and w- = 0.5 / (1 - rho) (§4.4)."""
        foreground = self.num_classes or 1
        if self.background_class is not None:
            foreground -= 1
        if foreground <= 1:
            return 1.0, 1.0
        # The layer does not see dataset class frequencies; like the authors
        # for more than 10 classes, it assumes rho = 1 / classes.
        rho = 1.0 / foreground
        return 0.5 / rho, 0.5 / (1.0 - rho)

    def _filter_loss(
        self, x32, beta, positives, use_labels, epoch, reduction, scale
    ):
        """`scale` times the filter loss, and its gradient or None.

        The gradient with respect to `x32` is returned where the layer
        computes it in the forward pass: the authors' surrogate, and on
        TensorFlow with one replica the exact loss's own gradient (taken
        here, inside the compiled function; `_value_and_gradient`). None
        leaves the gradient to autodiff. The filter loss is a leaf of the
        training objective, so a gradient taken in the forward pass is
        exact for the first derivative.
        """
        kwargs = {
            "tau": self.tau,
            "alpha": self.alpha,
            "normalization": self.normalization,
            "reduction": reduction,
        }

        def exact(maps, positives, beta):
            if use_labels:
                mi = losses.category_mutual_information(
                    maps, positives, beta=beta, center=self.center, **kwargs
                )
            else:
                mi = losses.mutual_information(maps, beta=beta, **kwargs)
            return -scale * ops.sum(mi)

        if self.loss == "mutual_information":
            if reduction is None and keras.backend.backend() == "tensorflow":
                return _value_and_gradient(exact, x32, positives, beta)
            return exact(x32, positives, beta), None

        # The authors' surrogate (flipped-batch partition estimate, per-set
        # normalisation) stays per replica under tf.distribute; its scale
        # `m_f` and the chain rule through it use the global batch.
        w_pos, w_neg = self._authors_class_weights()
        surrogate = losses.authors_filter_gradient(
            x32,
            positives,
            beta=beta,
            center=self.center,
            epoch=epoch,
            positive_weight=w_pos,
            negative_weight=w_neg,
            normalization=self.normalization,
            reduction=reduction,
        )
        # The authors' term is for a batch-summed objective; Keras losses
        # are means over the global batch.
        batch = (reduction or losses.LOCAL_BATCH).size(x32)
        return exact(x32, positives, beta), scale * surrogate / batch

    def _warn_if_batch_of_one(self, batch):
        """Warns once per layer when the loss's image set is one image."""
        if batch != 1 or self._warned_batch_of_one:
            return
        self._warned_batch_of_one = True
        effect = (
            "the filter loss (Eq. 1) is identically 0 and has no gradient"
            if self.loss == "mutual_information"
            else "the logged filter loss is identically 0 and the authors' "
            "batch statistics are degenerate"
        )
        warnings.warn(
            f"Layer '{self.name}' was trained on a batch of 1 image: the "
            "filter loss needs an image set (the paper's X is the batch), so "
            f"{effect}. Use a batch of several images (the paper and the "
            "authors' code use 32-64). This warning is shown once per layer.",
            stacklevel=4,
        )

    def _interpret(self, x, labels=None, training=None):
        """Runs the shared computation on post-ReLU maps `x`."""
        if self._gradient_probe is not None:
            x = self._gradient_probe.watch(self, x)
        channels_first = self.data_format == "channels_first"
        if channels_first:
            x = ops.transpose(x, (0, 2, 3, 1))
        training = bool(training)
        beta = self.beta
        if self.beta_variable is not None:
            beta = ops.copy(self.beta_variable)
        elif isinstance(beta, list):
            beta = ops.convert_to_tensor(beta, "float32")
        class_activation = None
        if self.class_activation is not None:
            class_activation = ops.copy(self.class_activation)
        if labels is not None:
            if self.num_classes is None:
                raise ValueError(
                    f"Layer '{self.name}' received `labels` but was created "
                    "without `num_classes`. Pass num_classes=<number of "
                    "classes> (and background_class for negatives) to use "
                    "the category-aware loss."
                )
            _check_labels(labels, x.shape[0], self.num_classes, self.name)
            labels = ops.convert_to_tensor(labels)
        epoch = ops.cast(ops.copy(self.epoch), "float32")
        reduction, replicas = distribute.replica_reduction()
        if training and self.loss is not None and replicas == 1:
            self._warn_if_batch_of_one(x.shape[0])
        if reduction is None:
            out = self._forward_fn(
                x, beta, labels, class_activation, epoch, training
            )
        else:
            # Cross-replica all-reduces cannot run inside an XLA cluster.
            out = self._forward(
                x,
                beta,
                labels,
                class_activation,
                epoch,
                training,
                reduction=reduction,
                replicas=replicas,
            )
        if "loss" in out:
            loss = out["loss"]
            if "loss_gradient" in out:
                loss = _with_gradient(loss, out["loss_gradient"], x)
            self.add_loss(loss)
            if self._gradient_probe is not None:
                self._gradient_probe.record_loss(self, loss)
            if self.filter_loss_tracker is not None:
                self.filter_loss_tracker.update_state(out["loss"])
        if "class_activation" in out:
            self.class_activation.assign(out["class_activation"])
        if "beta" in out:
            self.beta_variable.assign(out["beta"])
        outputs = x
        if "mask" in out:
            outputs = x * ops.cast(out["mask"], x.dtype)
        if channels_first:
            outputs = ops.transpose(outputs, (0, 3, 1, 2))
        return outputs


@keras.saving.register_keras_serializable(package="keras_interp")
class InterpretableMask(InterpretableMixin, keras.layers.Layer):
    """Makes the filters of an existing feature map interpretable.

    The layer rectifies its input, adds the filter loss of Zhang et al.
    (CVPR 2018) through `add_loss` while training, and multiplies each
    feature map by a mask that keeps its activations near its peak. It has
    no kernel: it turns the filters of a backbone's top conv layer into part
    detectors, as the paper does ("we modified all filters in the top
    conv-layer"). `InterpretableConv2D` is the same computation behind its
    own convolution.

    For each filter and image, with `x` the post-ReLU `H x W` map:

    1. the part location `mu` is the map's argmax (paper) or its
       activation-weighted centroid (authors' code), `center`;
    2. while training, the filter loss `-MI(X; T)` (Eq. 1) between the batch
       of maps and the `H*W + 1` part templates is added, times
       `loss_weight`; with `labels` it is category-aware: images of the
       filter's category are scored against `T_mu`, others against `T-`
       (Eq. 4, `category_mutual_information`). By default it is scale-free
       (`normalization="mean_max"`): Eq. 1 scores `x * H*W / m_f`, with
       `m_f` the batch mean of the filter's peak, so rescaling a filter's
       activations can neither lower the loss nor change where it pushes;
       the batch is the paper's image set `X`, so a batch of one image
       gives 0 (the layer warns once);
    3. the output is `x * max(1 - beta d(mu), 0)`, the template scaled to a
       maximum of 1 and clipped at 0 (authors' code; the paper's literal
       tau-scaled mask would shrink features ~400x). No gradient flows
       through the mask.

    The loss is computed in float32 under any mixed-precision policy, and
    its value is logged by `model.fit` as `<layer name>_filter_loss` (not on
    JAX, keras-team/keras#21639). On the TensorFlow backend the template,
    mask and loss math runs in a `tf.function(jit_compile=True)`, so it is
    XLA-compiled even where Keras does not jit the model (CPU, or any
    `tf.distribute` strategy). With one replica, the exact loss's gradient
    is also taken inside that block, 64 filters at a time, and attached to
    the loss outside it, so that no intermediate of the loss is kept for
    the backward pass (the loss then has no second derivatives).

    Args:
        loss: `"mutual_information"` (default): the exact `-MI` of Eq. 1, or
            its category-aware form with labels; `"authors"`: the same value,
            but with the authors' surrogate gradient (`our_vl_simplenn.m`,
            `authors_filter_gradient`) in place of its own gradient;
            `None`: mask only, no loss.
        loss_weight: float `lambda` >= 0, applied to the sum of the per-filter
            losses, so each filter's gradient is `lambda dLoss_f / dx` as in
            Eq. 3. `None` (default) picks, per filter, 0.002 for
            `"mutual_information"` and 0.02 for `"authors"` with the default
            scale-free loss; 0.02 and 1.0 with `normalization=None`. To see
            whether a weight acts, log the filter-to-task gradient ratio
            (`keras_interp.GradientRatioLogger`; linear in the weight).
            Evidence for 0.002 (2026-12-02, 2-core CPU): that ratio on a
            batch of 16 training images of the embedded part dataset,
            before training / after epoch 1 of the `train_cub.py` recipe:
            - VGG-16 with torchvision ImageNet weights, top block
              fine-tuned, 160 px (10x10 maps), lr 1e-3: 0.17 / 0.032 on
              `part_conv`. A prototype of this setting had its best location
              instability at this weight (1 on the mean over 512 filters),
              worse at 3x and 10x.
            - tiny_vgg from scratch, 64 px (8x8 maps), lr 0.05: 0.042 /
              0.022 on `part_conv`, 0.032 / 0.015 on `top_mask`.
            - VGG-16's `top_mask` (block5_conv3) is the exception: 11.8 /
              4.6. Its maps include dead and nearly dead filters (11 of 512
              dead; a tenth peak below 0.12 on average, the median 1.15),
              and a scale-free loss pushes a filter in proportion to
              `1 / m_f`. Give that layer a smaller weight if its ratio is
              far above 1.
            `"authors"` at 0.02: 0.17 / 0.054 on VGG-16's `part_conv`,
            0.025 / 0.013 on tiny_vgg's. The paper-literal defaults are the
            earlier ones: 0.02 (a prototype's best paper-scale weight) and
            1.0 (the authors' own `1e-5 / (t / 0.1)` scale); on the raw maps
            the exact loss at 0.002 gives only 0.0002 on VGG-16's
            `part_conv`.
        normalization: the scale of the maps the loss scores.
            `"mean_max"` (default): Eq. 1 on `x_hat = x * H*W / m_f`, where
            `m_f` is the batch mean of filter `f`'s spatial maximum (the
            paper's "mean max x"; the global batch under `tf.distribute`)
            and the gradient flows through `m_f`. The loss is then the same
            for `x` and `c x` (`c > 0`), its gradient scales as `1/c`, and a
            dead filter (`m_f = 0`) gets loss and gradient 0. With the
            paper's `tau = 0.5 / n^2` the logits `tr(x . T)` otherwise grow
            with the activations, so the paper-literal loss depends on each
            backbone's arbitrary activation scale (not even monotonically)
            and SGD can lower it by rescaling activations instead of
            localising them; `x_hat` has mean peak `n^2`, the scale that
            `tau` assumes. With `loss="authors"` the surrogate is computed
            on `x_hat` and carried back to `x` by the exact chain rule
            (`losses.authors_filter_gradient`). `None`: the paper-literal
            loss on the raw maps, for reproduction.
        loss_weight_decay: `None` (default) or `"inverse_epoch"`: divide the
            weight by the epoch `t` (paper: `lambda ∝ 1/t`). The epoch is
            the layer's `epoch` variable, advanced by the
            `keras_interp.FilterLossEpoch` callback.
        beta: template slope, in paper units (`d` is normalised by the map
            size). A float (default 4, the paper's value), a list with one
            value per channel, or `"learned"`: the authors' rule, a
            non-trainable per-filter beta started at their 2.0 (converted to
            paper units) and moved toward `learned_beta_target` while
            training.
        center: `"argmax"` (default, paper) or `"centroid"` (authors' code).
        tau: template scale for the loss (applied to the normalized maps
            by default); default `0.5 / (H * W)`.
        alpha: prior mass of the positive templates; default
            `H*W / (1 + H*W)`.
        num_classes: number of label classes passed at call time; needed for
            the category-aware loss. The layer keeps a moving average of each
            filter's mean activation per class (the non-trainable
            `class_activation` weight) and assigns each filter to its
            argmax class (`filter_assignment()`).
        background_class: optional class id whose images are negatives for
            every filter and which no filter is assigned to, e.g. the
            random images of the paper's single-category tasks.
        assignment_momentum: momentum of the per-class activation average.
            Default 0.9 (authors' code).
        beta_rate: with `beta="learned"`, the fraction of the gap to the
            target closed per training step. Default 0.1.
        mask_at_inference: apply the mask outside training too (default
            True, as in the authors' code).
        apply_mask: apply the forward mask at all (default True). False
            keeps the filter loss but passes the post-ReLU maps through
            unmasked: the "loss without the mask" ablation.
        jit_compile: XLA-compile the template, mask and loss math on the
            TensorFlow backend (default True).
        data_format: `"channels_last"` (default) or `"channels_first"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: rank-4 feature maps with static spatial dimensions.
        labels: optional class ids `(batch,)` or `(batch, 1)`, or one-hot
            rows `(batch, num_classes)`, for the category-aware loss.
            Requires `num_classes`. Shapes are checked whenever they are
            known, including a labels/batch size mismatch. Values are
            checked when they are known, i.e. in eager calls (numpy arrays,
            lists, eager tensors): ids must be integers in
            `[0, num_classes)` (integral floats are fine), one-hot rows
            finite, non-negative and not all zero; otherwise a ValueError
            names `labels`, the value and the valid range. Inside a compiled
            graph (`tf.function`, XLA, `jax.jit`, `model.fit` unless
            `run_eagerly=True`) values cannot be checked: ids are cast to
            int32 (fractional values truncate toward zero), and an id
            outside `[0, num_classes)` gives an all-zero one-hot row, i.e.
            an image of no class, which updates no class statistics and is
            a negative for every filter assigned to a class. Check labels
            in the input pipeline (the CUB reader does).
        training: Python bool. The loss and the state updates happen only
            when True.

    Input shape:
        `(batch, height, width, channels)`, or channels first.

    Output shape:
        Same as the input.

    Example:

    >>> layer = keras_interp.InterpretableMask()
    >>> x = np.random.default_rng(0).uniform(size=(4, 7, 7, 8))
    >>> y = layer(x, training=True)
    >>> tuple(y.shape), len(layer.losses)
    ((4, 7, 7, 8), 1)
    """

    def __init__(
        self,
        loss="mutual_information",
        loss_weight=None,
        loss_weight_decay=None,
        normalization=losses.DEFAULT_NORMALIZATION,
        beta=templates.DEFAULT_BETA,
        center="argmax",
        tau=None,
        alpha=None,
        num_classes=None,
        background_class=None,
        assignment_momentum=DEFAULT_ASSIGNMENT_MOMENTUM,
        beta_rate=DEFAULT_BETA_RATE,
        mask_at_inference=True,
        apply_mask=True,
        jit_compile=True,
        data_format=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if data_format is None:
            data_format = keras.config.image_data_format()
        self.data_format = _check_choice(
            "data_format", data_format, ("channels_last", "channels_first")
        )
        self._init_interpretable(
            loss=loss,
            loss_weight=loss_weight,
            loss_weight_decay=loss_weight_decay,
            normalization=normalization,
            beta=beta,
            center=center,
            tau=tau,
            alpha=alpha,
            num_classes=num_classes,
            background_class=background_class,
            assignment_momentum=assignment_momentum,
            beta_rate=beta_rate,
            mask_at_inference=mask_at_inference,
            apply_mask=apply_mask,
            jit_compile=jit_compile,
        )

    def build(self, input_shape):
        self._build_interpretable(*self._check_map_shape(input_shape))
        self._lock_input_spec(input_shape)

    def call(self, inputs, labels=None, training=None):
        return self._interpret(ops.relu(inputs), labels, training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(self._interpretable_config())
        config["data_format"] = self.data_format
        return config
