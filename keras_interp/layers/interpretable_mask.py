"""InterpretableMask: makes the filters of a feature map interpretable."""

import keras
from keras import ops

from keras_interp.layers._validation import _check_choice
from keras_interp.layers.base_interpretable import InterpretableMixin


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

    1. the part location `mu` is the map's activation-weighted centroid
       (default, authors' code) or its argmax (paper), `center`;
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
            scale-free loss; 0.02 and 1.0 with `normalization=None` (the
            evidence is at `base_interpretable.DEFAULT_LOSS_WEIGHTS`). To see
            whether a weight acts, log the filter-to-task gradient ratio
            (`keras_interp.GradientRatioLogger`; linear in the weight). On
            VGG-16's `block5_conv3` (dead and nearly dead filters) that
            ratio is far above 1 at the default: give such a layer a smaller
            weight.
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
            size). A float (default `templates.DEFAULT_BETA`, 4, the paper's
            value), a list with one
            value per channel, or `"learned"`: the authors' rule, a
            non-trainable per-filter beta started at their 2.0 (converted to
            paper units) and moved toward `learned_beta_target` while
            training. `current_beta()` gives the beta in use.
        center: where each map's part sits: `"centroid"` (default,
            `templates.DEFAULT_CENTER`; the authors' code), the
            activation-weighted centroid, or `"argmax"` (the paper), the
            map's peak cell.
        tau: template scale for the loss (applied to the normalized maps
            by default); default `0.5 / (H * W)`.
        alpha: prior mass of the positive templates; default
            `H*W / (1 + H*W)`.
        num_classes: number of label classes passed at call time; needed for
            the category-aware loss. The layer keeps a moving average of each
            filter's mean activation per class (the non-trainable
            `class_activation` weight) and assigns each filter to its
            argmax class (`filter_assignment()`, paper Section 3.1).
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
        data_format: `"channels_last"` or `"channels_first"`; `None`
            (default) takes `keras.config.image_data_format()`.
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

    def __init__(self, *, data_format=None, **kwargs):
        super().__init__(**kwargs)
        if data_format is None:
            data_format = keras.config.image_data_format()
        self.data_format = _check_choice(
            "data_format", data_format, ("channels_last", "channels_first")
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
        config["data_format"] = self.data_format
        return config
