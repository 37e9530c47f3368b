"""Alternative loss paths, switched on while a benchmark variant runs.

Nothing here is imported by `keras_interp`. An alternative replaces a
function of the library that the layers look up at trace time, only inside
`patched(name)`. The two proposals of the first benchmark round (`pick`:
a static-shape template selection; `fused`: the loss's gradient taken in
the forward pass) are now the library's own code; what stays here are the
paths they replaced or competed with, so that the benchmarks can still
show what each change buys:

* `unfused`: the exact filter loss differentiated by TensorFlow from the
  outside of the layers' compiled function (the library before the
  forward-gradient change): the compiled function then returns every
  `(B, C, n^2 + 1)` intermediate the backward pass needs.
* `take`: `unfused`, and `category_mutual_information` selecting the chosen
  template with `ops.take_along_axis` (the library before the static-shape
  selection). Keras' TensorFlow `take_along_axis` builds shapes from
  `tf.shape`; inside the layers' `tf.function(jit_compile=True)`, nested in
  a model compiled with `jit_compile=True`, TensorFlow then makes the
  nested function's inputs compile-time constants and recompiles every
  train step.
* `remat`: `unfused` with the loss rematerialised in the backward pass
  (`tf.recompute_grad`): saves memory too, but costs a second forward of
  the loss.

* `chunk128`, `chunk512`: the loss's gradient taken 128 or 512 filters
  at a time instead of the library's 64 (`FILTER_CHUNK`): the trade
  between the loss's working memory and the loop's overhead.

`unfused` and `remat` change only the TensorFlow path (the library takes
the forward gradient on TensorFlow only); `take` changes JAX too.
"""

import contextlib

from keras import ops

from keras_interp import losses
from keras_interp.layers import interpretable_mask

_ORIGINAL = {
    (losses, "category_mutual_information"): (
        losses.category_mutual_information
    ),
    (interpretable_mask, "_value_and_gradient"): (
        interpretable_mask._value_and_gradient
    ),
    (interpretable_mask, "FILTER_CHUNK"): interpretable_mask.FILTER_CHUNK,
}


def _autodiff(fn, maps, positives, beta):
    """The loss as is: the backward pass is left to autodiff."""
    return fn(maps, positives, beta), None


def _rematerialised(fn, maps, positives, beta):
    """The loss, its backward pass recomputing its forward (TensorFlow)."""
    import tensorflow as tf

    return tf.recompute_grad(lambda m: fn(m, positives, beta))(maps), None


def category_mutual_information_take(
    feature_maps,
    positives,
    *,
    beta=4.0,
    tau=None,
    alpha=None,
    center="argmax",
    normalization=losses.DEFAULT_NORMALIZATION,
    reduction=None,
):
    """`losses.category_mutual_information` with `take_along_axis`."""
    stats = losses.template_log_likelihoods(
        feature_maps,
        beta=beta,
        tau=tau,
        alpha=alpha,
        normalization=normalization,
        reduction=reduction,
    )
    index = losses.chosen_templates(feature_maps, positives, center=center)
    index = index[..., None]
    log_lik = ops.take_along_axis(stats["log_lik"], index, axis=-1)
    log_ratio = ops.take_along_axis(stats["log_ratio"], index, axis=-1)
    prior = ops.take(ops.exp(stats["log_prior"]), index)
    return ops.sum((prior * ops.exp(log_lik) * log_ratio)[..., 0], axis=0)


PROTOTYPES = {
    "unfused": {(interpretable_mask, "_value_and_gradient"): _autodiff},
    "take": {
        (interpretable_mask, "_value_and_gradient"): _autodiff,
        (losses, "category_mutual_information"): (
            category_mutual_information_take
        ),
    },
    "remat": {(interpretable_mask, "_value_and_gradient"): _rematerialised},
    "chunk128": {(interpretable_mask, "FILTER_CHUNK"): 128},
    "chunk512": {(interpretable_mask, "FILTER_CHUNK"): 512},
}


@contextlib.contextmanager
def patched(name):
    """Switches alternative `name` on (library functions replaced) inside."""
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
