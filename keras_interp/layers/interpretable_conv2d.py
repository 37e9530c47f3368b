"""InterpretableConv2D: a 2D convolution whose filters become part detectors."""

import keras

from keras_interp import losses
from keras_interp import templates
from keras_interp.layers import interpretable_mask
from keras_interp.layers.interpretable_mask import InterpretableMixin


@keras.saving.register_keras_serializable(package="keras_interp")
class InterpretableConv2D(InterpretableMixin, keras.layers.Conv2D):
    """2D convolution with the filter loss and mask of Interpretable CNNs.

    Zhang, Wu, Zhu, "Interpretable Convolutional Neural Networks", CVPR 2018
    (arXiv 1710.00935). Each filter is pushed to fire on one object part, at
    one place. The pipeline is

    ```
    conv -> ReLU -> filter loss on the post-ReLU map (add_loss, training)
         -> mask around each map's peak -> output
    ```

    It takes every `keras.layers.Conv2D` argument except `activation` (the
    ReLU is part of the method: the templates score non-negative maps), plus
    the interpretability arguments documented in full on
    `keras_interp.InterpretableMask`: `loss`, `loss_weight`,
    `loss_weight_decay`, `normalization`, `beta`, `center`, `tau`, `alpha`,
    `num_classes`, `background_class`, `assignment_momentum`, `beta_rate`,
    `mask_at_inference`, `apply_mask` and `jit_compile`. By default the filter loss is
    scale-free (`normalization="mean_max"`).

    The paper adds such a layer (3x3, M filters, zero padding, bias) on top
    of a backbone's top conv layer and makes the backbone's own top filters
    interpretable with the mask; see `InterpretableMask`.

    Args:
        filters: positive int, the number of filters.
        kernel_size: int or tuple of 2 ints.
        strides, padding, data_format, dilation_rate, groups, use_bias,
            kernel_initializer, bias_initializer, kernel_regularizer,
            bias_regularizer, activity_regularizer, kernel_constraint,
            bias_constraint: as in `keras.layers.Conv2D`.
        loss: `"mutual_information"` (default), `"authors"` or `None`.
        loss_weight: float lambda per filter; `None` picks 0.002 for the
            exact loss and 0.02 for `"authors"` (0.02 and 1.0 with
            `normalization=None`); see `InterpretableMask`.
        **kwargs: the remaining `InterpretableMask` arguments and base layer
            arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: rank-4 tensor whose conv output has static spatial size.
        labels: optional class ids `(batch,)` (or one-hot) for the
            category-aware loss; checked as in `InterpretableMask`.
        training: Python bool; the loss and state updates happen only then.

    Input shape:
        `(batch, height, width, channels)`, or channels first.

    Output shape:
        The `Conv2D` output shape.

    Example:

    >>> layer = keras_interp.InterpretableConv2D(8, 3, padding="same")
    >>> x = np.random.default_rng(0).uniform(size=(4, 7, 7, 3))
    >>> y = layer(x, training=True)
    >>> tuple(y.shape), len(layer.losses)
    ((4, 7, 7, 8), 1)
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1),
        groups=1,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
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
        assignment_momentum=interpretable_mask.DEFAULT_ASSIGNMENT_MOMENTUM,
        beta_rate=interpretable_mask.DEFAULT_BETA_RATE,
        mask_at_inference=True,
        apply_mask=True,
        jit_compile=True,
        **kwargs,
    ):
        if "activation" in kwargs:
            raise ValueError(
                "InterpretableConv2D always applies ReLU before its mask and "
                "filter loss, so it takes no `activation` argument. Received: "
                f"activation={kwargs['activation']!r}. Remove it, or use "
                "keras.layers.Conv2D followed by "
                "keras_interp.InterpretableMask."
            )
        if (
            isinstance(filters, bool)
            or not isinstance(filters, int)
            or (filters < 1)
        ):
            raise ValueError(
                "`filters` must be a positive int (the number of filters). "
                f"Received: filters={filters!r}."
            )
        super().__init__(
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            groups=groups,
            activation="relu",
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
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
        # Checked in `build`, with a message that says how to fix it.
        self.input_spec = None

    def build(self, input_shape):
        self._check_map_shape(input_shape)
        output_shape = self.compute_output_shape(input_shape)
        map_shape = self._check_map_shape(output_shape, name="output shape")
        super().build(input_shape)
        self._build_interpretable(*map_shape)
        self._lock_input_spec(input_shape)

    def call(self, inputs, labels=None, training=None):
        return self._interpret(super().call(inputs), labels, training)

    def save_own_variables(self, store):
        # Conv2D saves only its kernel and bias, by position.
        super().save_own_variables(store)
        for variable in self._interpretable_variables():
            store[variable.name] = variable

    def load_own_variables(self, store):
        super().load_own_variables(store)
        for variable in self._interpretable_variables():
            variable.assign(store[variable.name])

    def get_config(self):
        config = super().get_config()
        config.pop("activation", None)
        config.update(self._interpretable_config())
        return config
