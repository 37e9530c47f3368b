"""Checks that the prototypes of `_prototypes.py` change nothing but speed.

For each prototype, the filter loss of an `InterpretableMask` and an
`InterpretableConv2D` (category-aware and label-free) and its gradient
with respect to the input maps must match the library's, on the current
backend (TensorFlow or JAX), also inside a `jit_compile` function.

    python benchmarks/check_prototypes.py
    KERAS_BACKEND=jax python benchmarks/check_prototypes.py
"""

import functools
import sys

import _common  # noqa: F401  (puts the checkout on sys.path)
import numpy as np


def loss_and_grad(layer_fn, x, labels, jit):
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        layer = layer_fn()
        layer(x)  # builds, outside the compiled function

        def run(x, labels):
            with tf.GradientTape() as tape:
                tape.watch(x)
                layer(x, labels=labels, training=True)
                value = tf.add_n(layer.losses)
            return value, tape.gradient(value, x)

        return tf.function(run, jit_compile=jit)(
            tf.constant(x), tf.constant(labels)
        )
    import jax

    layer = layer_fn()
    layer(x, labels=labels, training=True)  # builds
    tv = [v.value for v in layer.trainable_variables]
    ntv = [v.value for v in layer.non_trainable_variables]

    def value(x):
        _, _, losses = layer.stateless_call(
            tv, ntv, x, labels=labels, training=True, return_losses=True
        )
        return sum(losses)

    fn = jax.value_and_grad(value)
    return (jax.jit(fn) if jit else fn)(x)


def main():
    import _prototypes
    import keras

    import keras_interp

    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5, 5, 8)).astype("float32")
    labels = rng.integers(0, 3, size=(6,)).astype("int32")
    layers = {
        "mask_category": lambda: keras_interp.InterpretableMask(
            num_classes=3, background_class=0
        ),
        "mask_labelfree": lambda: keras_interp.InterpretableMask(),
        "conv_category": lambda: keras_interp.InterpretableConv2D(
            4,
            3,
            padding="same",
            num_classes=3,
            kernel_initializer=keras.initializers.HeNormal(seed=1),
        ),
    }
    failures = 0
    for jit in (False, True):
        for name, make in layers.items():

            def layer_fn(make=make, name=name, proto=None):
                layer = _prototypes.configure(make(), proto)
                if "labelfree" in name:
                    return _NoLabels(layer)
                return layer

            ref_value, ref_grad = loss_and_grad(layer_fn, x, labels, jit)
            for proto in _prototypes.PROTOTYPES:
                value, grad = loss_and_grad(
                    functools.partial(layer_fn, proto=proto), x, labels, jit
                )
                ok = np.allclose(value, ref_value, rtol=1e-5, atol=1e-9)
                ok &= np.allclose(grad, ref_grad, rtol=1e-4, atol=1e-9)
                failures += not ok
                print(
                    f"{'OK  ' if ok else 'FAIL'} {proto:10s} {name:15s} "
                    f"jit={jit}: value {float(value):.6e} vs "
                    f"{float(ref_value):.6e}, max |grad diff| "
                    f"{np.max(np.abs(np.asarray(grad) - ref_grad)):.1e} "
                    f"(max |grad| {np.max(np.abs(ref_grad)):.1e})",
                    flush=True,
                )
    sys.exit(1 if failures else 0)


class _NoLabels:
    """Calls a layer without its labels (the label-free loss)."""

    def __init__(self, layer):
        self.layer = layer

    def __call__(self, x, labels=None, training=None):
        return self.layer(x, training=training)

    def __getattr__(self, name):
        return getattr(self.layer, name)

    def stateless_call(self, tv, ntv, x, labels=None, **kwargs):
        return self.layer.stateless_call(tv, ntv, x, **kwargs)


if __name__ == "__main__":
    main()
