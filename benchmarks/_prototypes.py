"""Proposed library changes, prototyped here so the benchmarks can time them.

Nothing here is imported by `keras_interp`. A prototype is switched on
only while a benchmark variant runs (`patched(name)`), by replacing a
function of `keras_interp.losses` that the layers look up at trace time.

* `pick`: `category_mutual_information` without `ops.take_along_axis`.
  Keras' TensorFlow `take_along_axis` builds its broadcast and reshape
  shapes from `tf.shape`. Inside the layers' own
  `tf.function(jit_compile=True)`, nested in a model compiled with
  `jit_compile=True`, TensorFlow then treats the nested function's inputs
  as compile-time constants: every train step is recompiled, with the
  image and weights constant-folded. Selecting the chosen template with
  `where(arange(K) == index, ., 0)` and a sum gives the same value and
  gradient with static shapes only.
* `pick_remat`: `pick`, with the loss rematerialised in the backward pass
  (`tf.recompute_grad` / `jax.checkpoint`), to keep no `(B, C, n^2 + 1)`
  intermediate alive between the forward and backward passes.
* `pick_fused`: `pick`, and the layers' exact filter loss computed with its
  gradient in the forward pass (`_filter_loss_fused`): only a map-sized
  gradient is kept for the backward pass.
"""

import contextlib

import keras
from keras import ops

from keras_interp import losses
from keras_interp.layers import interpretable_mask

_MIXIN = interpretable_mask.InterpretableMixin
_ORIGINAL = {
    (losses, "category_mutual_information"): (
        losses.category_mutual_information
    ),
    (_MIXIN, "_filter_loss"): _MIXIN._filter_loss,
}


def category_mutual_information_pick(
    feature_maps,
    positives,
    *,
    beta=4.0,
    tau=None,
    alpha=None,
    center="argmax",
    reduction=None,
):
    """`losses.category_mutual_information` with a static-shape selection."""
    stats = losses.template_log_likelihoods(
        feature_maps, beta=beta, tau=tau, alpha=alpha, reduction=reduction
    )
    index = losses.chosen_templates(feature_maps, positives, center=center)
    num_templates = stats["log_lik"].shape[-1]
    pick = ops.arange(num_templates, dtype="int32") == index[..., None]
    log_lik = ops.sum(ops.where(pick, stats["log_lik"], 0.0), axis=-1)
    log_ratio = ops.sum(ops.where(pick, stats["log_ratio"], 0.0), axis=-1)
    prior = ops.sum(ops.where(pick, ops.exp(stats["log_prior"]), 0.0), -1)
    return ops.sum(prior * ops.exp(log_lik) * log_ratio, axis=0)


def _rematerialised(fn):
    """`fn` whose backward pass recomputes its forward (saves only inputs)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.recompute_grad(fn)
    if backend == "jax":
        import jax

        return jax.checkpoint(fn)
    return fn


def category_mutual_information_pick_remat(feature_maps, positives, **kwargs):
    """`pick`, rematerialised: the backward pass keeps no (B, C, K) tensor.

    The forward pass of the loss makes a dozen `[batch, filters, H*W + 1]`
    intermediates; autodiff keeps the ones the backward pass needs alive
    from the forward to the backward pass, next to the backbone's
    activations. Recomputing them in the backward pass costs one more
    forward of the loss and keeps only the maps (already kept by the conv).
    """

    def loss(maps, pos):
        return category_mutual_information_pick(maps, pos, **kwargs)

    return _rematerialised(loss)(feature_maps, positives)


def _value_and_grad(fn, x):
    """`fn(x)` (a scalar) and its gradient with respect to `x`."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
        return value, tape.gradient(value, x)
    if backend == "jax":
        import jax

        return jax.value_and_grad(fn)(x)
    raise NotImplementedError(backend)


def _filter_loss_fused(
    self, x32, beta, positives, use_labels, epoch, reduction
):
    """The layers' exact filter loss, its gradient taken in the forward pass.

    The filter loss is a leaf of the training objective: its gradient with
    respect to the maps is `upstream * dLoss/dx` with a scalar upstream.
    Computing `dLoss/dx` right away, inside the same compiled function as
    the value, lets every `(B, C, n^2 + 1)` intermediate die there; only
    one map-sized gradient is kept for the backward pass (like the
    authors' surrogate, which the layer already injects this way).
    """
    original = _ORIGINAL[(_MIXIN, "_filter_loss")]
    if self.loss != "mutual_information":
        return original(
            self, x32, beta, positives, use_labels, epoch, reduction
        )

    def total(maps):
        return original(
            self, maps, beta, positives, use_labels, epoch, reduction
        )

    @ops.custom_gradient
    def fused(maps):
        value, grad = _value_and_grad(total, maps)

        def backward(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return upstream * grad

        return value, backward

    return fused(x32)


PROTOTYPES = {
    "pick": {
        (losses, "category_mutual_information"): (
            category_mutual_information_pick
        )
    },
    "pick_remat": {
        (losses, "category_mutual_information"): (
            category_mutual_information_pick_remat
        )
    },
    "pick_fused": {
        (losses, "category_mutual_information"): (
            category_mutual_information_pick
        ),
        (_MIXIN, "_filter_loss"): _filter_loss_fused,
    },
}


@contextlib.contextmanager
def patched(name):
    """Switches prototype `name` on (library functions replaced) inside."""
    if name is None:
        yield
        return
    replacements = PROTOTYPES[name]
    try:
        for (owner, attr), fn in replacements.items():
            setattr(owner, attr, fn)
        yield
    finally:
        for owner, attr in replacements:
            setattr(owner, attr, _ORIGINAL[(owner, attr)])
