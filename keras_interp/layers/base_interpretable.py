"""The engine of the interpretable layers: shared state, config, forward pass.

`InterpretableMixin` is to `InterpretableMask` and `InterpretableConv2D`
what Keras' `BaseConv` is to `Conv2D`: it takes and validates the
interpretability arguments, creates the non-trainable state
(`_build_interpretable`), runs the XLA-compiled template, mask and loss
math (`_interpret`), adds the loss with `add_loss`, and logs it. The math
itself lives in `keras_interp.templates` (templates, mask), `losses` (the
filter loss) and `class_statistics` (filter-to-class assignment); the
TensorFlow forward-gradient plumbing in `_tf_gradients`.
"""

import functools
import warnings

import keras
from keras import ops

from keras_interp import class_statistics
from keras_interp import distribute
from keras_interp import losses
from keras_interp import templates
from keras_interp.layers import _tf_gradients
from keras_interp.layers._validation import _check_choice
from keras_interp.layers._validation import _check_float
from keras_interp.layers._validation import _check_labels
from keras_interp.layers._validation import _labels_to_ids

LOSSES = ("mutual_information", "authors", None)
LOSS_WEIGHT_DECAYS = (None, "inverse_epoch")
# Default loss weights (lambda), per filter, by loss variant, for the default
# scale-free loss (`normalization="mean_max"`) and for the paper-literal one
# (`normalization=None`).
#
# Evidence for 0.002 (2026-12-02, 2-core CPU): the filter-to-task gradient
# ratio (`keras_interp.GradientRatioLogger`) on a batch of 16 training images
# of the embedded part dataset, before training / after epoch 1 of the
# `train_cub.py` recipe:
# - VGG-16 with torchvision ImageNet weights, top block fine-tuned, 160 px
#   (10x10 maps), lr 1e-3: 0.17 / 0.032 on `part_conv`. A prototype of this
#   setting had its best location instability at this weight (1 on the mean
#   over 512 filters), worse at 3x and 10x.
# - tiny_vgg from scratch, 64 px (8x8 maps), lr 0.05: 0.042 / 0.022 on
#   `part_conv`, 0.032 / 0.015 on `top_mask`.
# - VGG-16's `top_mask` (block5_conv3) is the exception: 11.8 / 4.6. Its maps
#   include dead and nearly dead filters (11 of 512 dead; a tenth peak below
#   0.12 on average, the median 1.15), and a scale-free loss pushes a filter
#   in proportion to `1 / m_f`. Give that layer a smaller weight if its ratio
#   is far above 1.
# `"authors"` at 0.02: 0.17 / 0.054 on VGG-16's `part_conv`, 0.025 / 0.013 on
# tiny_vgg's. The paper-literal defaults are the earlier ones: 0.02 (a
# prototype's best paper-scale weight) and 1.0 (the authors' own
# `1e-5 / (t / 0.1)` scale); on the raw maps the exact loss at 0.002 gives
# only 0.0002 on VGG-16's `part_conv`.
DEFAULT_LOSS_WEIGHTS = {"mutual_information": 0.002, "authors": 0.02, None: 0.0}
PAPER_SCALE_LOSS_WEIGHTS = {
    "mutual_information": 0.02,
    "authors": 1.0,
    None: 0.0,
}
# Authors' `our_cnn_train.m`: the per-class activation EMA uses momentum 0.9.
DEFAULT_ASSIGNMENT_MOMENTUM = class_statistics.DEFAULT_MOMENTUM
# Authors' beta rule (docs/method_notes.md): 0.016 of the gap a step before SGD
# momentum 0.9, about 0.16 once momentum has built up; 0.1 sits between.
DEFAULT_BETA_RATE = 0.1
# Authors' `add_block_mask.m` initialises beta to 2.0 in [-1, 1] coordinates.
AUTHORS_BETA_INIT = 2.0


class InterpretableMixin:
    """The interpretability engine shared by the interpretable layers.

    Mixed in before a Keras layer class (`keras.layers.Layer`,
    `keras.layers.Conv2D`): its `__init__` takes the interpretability
    arguments, documented on `InterpretableMask` and `InterpretableConv2D`,
    and passes every other argument on to that class. A subclass calls
    `_build_interpretable` from `build` with its map shape and
    `_interpret` from `call` with its post-ReLU maps, and needs a
    `data_format` attribute.
    """

    def __init__(
        self,
        *,
        loss="mutual_information",
        loss_weight=None,
        loss_weight_decay=None,
        normalization=losses.DEFAULT_NORMALIZATION,
        beta=templates.DEFAULT_BETA,
        center=templates.DEFAULT_CENTER,
        tau=None,
        alpha=None,
        num_classes=None,
        background_class=None,
        assignment_momentum=DEFAULT_ASSIGNMENT_MOMENTUM,
        beta_rate=DEFAULT_BETA_RATE,
        mask_at_inference=True,
        apply_mask=True,
        jit_compile=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
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
        # How the exact loss's value and gradient are taken on TensorFlow
        # with one replica, `(fn, maps, positives, beta) -> (value, gradient
        # or None)`, and the category-aware loss. Not public API: only
        # `benchmarks/_prototypes.py` passes alternatives, to time them.
        self._value_and_gradient = functools.partial(
            _tf_gradients.value_and_gradient,
            filter_chunk=_tf_gradients.FILTER_CHUNK,
        )
        self._category_mutual_information = losses.category_mutual_information

    def get_config(self):
        config = super().get_config()
        config.update(
            {
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
        )
        return config

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
        mean activation on images of class `c` (paper Section 3.1;
        `class_statistics.assign_filters`); the background class is never
        chosen. Filters with no statistics yet get -1: they treat every
        non-background image as positive.
        """
        if self.class_activation is None:
            raise ValueError(
                "filter_assignment() needs `num_classes`; this layer was "
                "built without it."
            )
        return class_statistics.assign_filters(
            ops.copy(self.class_activation),
            background_class=self.background_class,
        )

    def current_beta(self):
        """The template slope beta the layer uses now.

        A Python float for a fixed scalar `beta`; a float32 tensor
        `[filters]` for per-filter betas, and for `beta="learned"` a copy of
        the learned `beta` variable's current value (the layer must be
        built).
        """
        if self.beta == "learned":
            if getattr(self, "beta_variable", None) is None:
                raise ValueError(
                    f"Layer '{self.name}' learns beta, which exists only once "
                    "the layer is built. Call the layer (or build the model) "
                    "before current_beta()."
                )
            return ops.copy(self.beta_variable)
        if isinstance(self.beta, list):
            return ops.convert_to_tensor(self.beta, "float32")
        return self.beta

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
        ids = _labels_to_ids(labels, self.num_classes)
        new_stats = class_statistics.update_class_statistics(
            class_activation,
            x32,
            ids,
            momentum=self.assignment_momentum,
            reduction=reduction,
        )
        assigned = class_statistics.assign_filters(
            new_stats, background_class=self.background_class
        )
        positives = class_statistics.filter_positives(
            ids, assigned, background_class=self.background_class
        )
        return positives, new_stats

    def _filter_loss(
        self, x32, beta, positives, use_labels, epoch, reduction, scale
    ):
        """`scale` times the filter loss, and its gradient or None.

        The gradient with respect to `x32` is returned where the layer
        computes it in the forward pass: the authors' surrogate, and on
        TensorFlow with one replica the exact loss's own gradient (taken
        here, inside the compiled function; `_tf_gradients`). None
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
                mi = self._category_mutual_information(
                    maps, positives, beta=beta, center=self.center, **kwargs
                )
            else:
                mi = losses.mutual_information(maps, beta=beta, **kwargs)
            return -scale * ops.sum(mi)

        if self.loss == "mutual_information":
            if reduction is None and keras.backend.backend() == "tensorflow":
                return self._value_and_gradient(exact, x32, positives, beta)
            return exact(x32, positives, beta), None

        # The authors' surrogate (flipped-batch partition estimate, per-set
        # normalisation) stays per replica under tf.distribute; its scale
        # `m_f` and the chain rule through it use the global batch.
        w_pos, w_neg = class_statistics.authors_class_weights(
            num_classes=self.num_classes,
            background_class=self.background_class,
        )
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
        beta = self.current_beta()
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
                loss = _tf_gradients.with_gradient(
                    loss, out["loss_gradient"], x
                )
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
