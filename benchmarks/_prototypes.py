"""Alternative loss paths, switched on while a benchmark variant runs.

Nothing here is imported by `keras_interp`. An alternative is passed to the
interpretable layers of one model by `configure(model, name)`, before its
first step is traced: it sets the layers' loss-gradient strategy and
category-aware loss (`InterpretableMixin._value_and_gradient` and
`_category_mutual_information`, which exist for this). The two proposals
of the first benchmark round (`pick`: a static-shape template selection;
`fused`: the loss's gradient taken in the forward pass) are now the
library's own code; what stays here are the paths they replaced or
competed with, so that the benchmarks can still show what each change
buys:

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
  at a time instead of the library's 64 (`_tf_gradients.FILTER_CHUNK`; the
  alternative passes `filter_chunk`): the trade between the loss's working
  memory and the loop's overhead.

`unfused` and `remat` change only the TensorFlow path (the library takes
the forward gradient on TensorFlow only); `take` changes JAX too.
"""

import functools

from keras import ops

import keras_interp
from keras_interp import losses
from keras_interp import templates
from keras_interp.layers import _tf_gradients


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
    beta=templates.DEFAULT_BETA,
    tau=None,
    alpha=None,
    center=templates.DEFAULT_CENTER,
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


def _chunked(filter_chunk):
    return functools.partial(
        _tf_gradients.value_and_gradient, filter_chunk=filter_chunk
    )


# Per alternative, the layer attributes it sets (without the leading "_").
PROTOTYPES = {
    "unfused": {"value_and_gradient": _autodiff},
    "take": {
        "value_and_gradient": _autodiff,
        "category_mutual_information": category_mutual_information_take,
    },
    "remat": {"value_and_gradient": _rematerialised},
    "chunk128": {"value_and_gradient": _chunked(128)},
    "chunk512": {"value_and_gradient": _chunked(512)},
}


def configure(model, name):
    """Switches alternative `name` on for the interpretable layers of `model`.

    `model` is a model or an interpretable layer; `name` a key of
    `PROTOTYPES`, or None for the library's own paths. Call it before the
    model's first traced step: the layers read these at trace time.
    Returns `model`.
    """
    if name is None:
        return model
    if name not in PROTOTYPES:
        raise ValueError(
            f"Unknown prototype {name!r}; one of {sorted(PROTOTYPES)}."
        )
    for layer in keras_interp.interpretable_layers(model):
        for attribute, value in PROTOTYPES[name].items():
            setattr(layer, f"_{attribute}", value)
    return model
