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
"""

import contextlib

from keras import ops

from keras_interp import losses

_ORIGINAL = {"category_mutual_information": losses.category_mutual_information}


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


PROTOTYPES = {
    "pick": {"category_mutual_information": category_mutual_information_pick},
}


@contextlib.contextmanager
def patched(name):
    """Replaces `keras_interp.losses` functions by prototype `name`."""
    if name is None:
        yield
        return
    replacements = PROTOTYPES[name]
    try:
        for attr, fn in replacements.items():
            setattr(losses, attr, fn)
        yield
    finally:
        for attr in replacements:
            setattr(losses, attr, _ORIGINAL[attr])
