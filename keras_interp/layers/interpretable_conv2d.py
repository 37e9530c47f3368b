"""InterpretableConv2D: a 2D convolution whose filters become part detectors."""

import keras

from keras_interp.layers.base_interpretable import InterpretableMixin


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

    The part location `mu` of each map is its activation-weighted centroid
    or its argmax (`center`). While training, the filter loss `-MI(X; T)`
    (Eq. 1) between the batch of maps and the `H*W + 1` part templates is
    added through `add_loss`, times `loss_weight`; with `labels` it is
    category-aware (Eq. 4). The output is `x * max(1 - beta d(mu), 0)`, with
    no gradient through the mask. The loss is computed in float32, logged as
    `<layer name>_filter_loss` (not on JAX), and XLA-compiled on TensorFlow.

    The paper adds such a layer (3x3, M filters, zero padding, bias) on top
    of a backbone's top conv layer, and makes the backbone's own top filters
    interpretable with `keras_interp.InterpretableMask`.

    Args:
        filters: positive int, the number of filters.
        kernel_size: int or tuple of 2 ints.
        loss: `"mutual_information"` (default): the exact `-MI` of Eq. 1, or
            its category-aware form with labels; `"authors"`: the same value
            with the authors' surrogate gradient
            (`losses.authors_filter_gradient`); `None`: mask only, no loss.
        loss_weight: float `lambda` >= 0 on the sum of the per-filter
            losses (Eq. 3). `None` (default) picks, per filter, 0.002 for
            `"mutual_information"` and 0.02 for `"authors"`; 0.02 and 1.0
            with `normalization=None` (evidence at
            `base_interpretable.DEFAULT_LOSS_WEIGHTS`).
        loss_weight_decay: `None` (default) or `"inverse_epoch"`: divide the
            weight by the epoch `t` (paper: `lambda ∝ 1/t`), advanced by the
            `keras_interp.FilterLossEpoch` callback.
        normalization: `"mean_max"` (default): the loss scores
            `x * H*W / m_f`, `m_f` the batch mean of the filter's peak, so it
            is scale-free; `None`: the paper-literal loss on the raw maps.
        beta: template slope in paper units: a float (default
            `templates.DEFAULT_BETA`, 4, the paper's value), one value per
            filter, or `"learned"` (the authors' rule, a non-trainable
            per-filter beta moved toward `learned_beta_target`).
            `current_beta()` gives the beta in use.
        center: `"centroid"` (default, `templates.DEFAULT_CENTER`; the
            authors' code) or `"argmax"` (the paper).
        tau: template scale for the loss; default `0.5 / (H * W)`.
        alpha: prior mass of the positive templates; default
            `H*W / (1 + H*W)`.
        num_classes: number of label classes passed at call time, for the
            category-aware loss; each filter is assigned to the class with
            the highest moving average of its mean activation
            (`filter_assignment()`, paper Section 3.1).
        background_class: optional class id whose images are negatives for
            every filter and which no filter is assigned to.
        assignment_momentum: momentum of the per-class activation average.
            Default 0.9 (authors' code).
        beta_rate: with `beta="learned"`, the fraction of the gap to the
            target closed per training step. Default 0.1.
        mask_at_inference: apply the mask outside training too (default
            True, as in the authors' code).
        apply_mask: apply the forward mask at all (default True); False is
            the "loss without the mask" ablation.
        jit_compile: XLA-compile the template, mask and loss math on the
            TensorFlow backend (default True).
        **kwargs: every other `keras.layers.Conv2D` argument (`strides`,
            `padding`, `data_format`, `dilation_rate`, `groups`, `use_bias`,
            the initializers, regularizers and constraints) except
            `activation` (the ReLU is part of the method: the templates
            score non-negative maps), and base layer arguments (`name`,
            `dtype`, ...).

    Call arguments:
        inputs: rank-4 tensor whose conv output has static spatial size.
        labels: optional class ids `(batch,)` or `(batch, 1)`, or one-hot
            rows `(batch, num_classes)`, for the category-aware loss.
            Requires `num_classes`. Shapes are checked whenever known,
            values in eager calls; inside a compiled graph an id outside
            `[0, num_classes)` is an image of no class.
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

    def __init__(self, filters, kernel_size, **kwargs):
        if "activation" in kwargs:
            raise ValueError(
                "InterpretableConv2D always applies ReLU before its mask and "
                "filter loss, so it takes no `activation` argument. Received: "
                f"activation={kwargs['activation']!r}. Remove it, or use "
                "keras.layers.Conv2D followed by "
                "keras_interp.InterpretableMask."
            )
        # Conv2D's own messages for 2.5 (groups), True (accepted) or "a"
        # (TypeError) do not say what `filters` must be.
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
            activation="relu",
            **kwargs,
        )
        # Conv2D's `InputSpec(min_ndim=4)` would reject a wrong rank before
        # `build`, whose message says how to fix it (`_check_map_shape`).
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
        # Conv2D saves only its kernel and bias (by position): the
        # interpretable state (epoch, class statistics, learned beta) is
        # saved by name beside them.
        super().save_own_variables(store)
        for variable in self._interpretable_variables():
            store[variable.name] = variable

    def load_own_variables(self, store):
        super().load_own_variables(store)
        for variable in self._interpretable_variables():
            variable.assign(store[variable.name])

    def get_config(self):
        config = super().get_config()
        config.pop("activation", None)  # Always ReLU; not an argument.
        return config
