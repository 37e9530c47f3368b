"""(c) The filter loss alone vs a naive (B, C, n^2, n^2) formulation.

Times, interleaved in one process, the forward and forward+backward of

* `lib`: `keras_interp.mutual_information` (label-free Eq. 1), the
  library's log-space formulation with one template GEMM;
* `lib_cat`: `keras_interp.category_mutual_information` (the builder's
  default, category-aware loss);
* `naive` (`naive_timing_variant`): a deliberately slow timing variant,
  the textbook MI whose template product materialises
  `x[b, c, None, :] * t[None, None, :, :]`, a `(B, C, n^2 + 1, n^2)` tensor
  (5 GB at B=64, C=512, n=14), then sums it;
* `gemm` (`gemm_timing_variant`): the template product alone
  (`einsum("bpc,kp->bck")`), the physical floor of about B*C*n^2*n^2
  multiply-adds;

on random post-ReLU maps `[B, n, n, C]`, with the paper's templates
(`part_templates`' default beta, `templates.DEFAULT_BETA`). Before timing,
the library's Eq. 1 (`normalization=None`: the paper's literal form, on the
raw maps) and the naive variant are checked against
`reference_mutual_information`, the one reference here (float64 numpy). The
timed `lib` and `lib_cat` run the library's defaults (the scale-free
normalised maps), as training does.

    python benchmarks/loss_alone.py --backend tensorflow --jit on
    python benchmarks/loss_alone.py --backend tensorflow --jit off
    KERAS_BACKEND=jax python benchmarks/loss_alone.py --backend jax
"""

import argparse
import math
import sys

import numpy as np
from _common import emit
from _common import format_ratio
from _common import interleaved
from _common import ratio_summary
from _common import set_backend_from_argv

VARIANTS = ("lib", "lib_cat", "naive", "gemm")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--backend", default="tensorflow", choices=("tensorflow", "jax")
    )
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--channels", type=int, default=512)
    p.add_argument("--map-size", type=int, default=14)
    p.add_argument("--jit", default="on", choices=("on", "off"))
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="dtype of the input maps (the loss runs in float32)",
    )
    p.add_argument(
        "--variants",
        default="naive,lib,lib_cat,gemm",
        help="comma-separated; the first is the baseline",
    )
    p.add_argument(
        "--passes",
        default="forward,backward",
        help="forward and/or backward (= forward+backward)",
    )
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def naive_timing_variant(feature_maps):
    """Eq. 1 as written, with the `(B, C, K, n^2)` product materialised.

    A deliberately naive formulation, kept only as the timing baseline (not
    a reference: it runs in float32 and loses precision when the MI is
    tiny). Paper-literal (raw maps, no normalisation).
    """
    from keras import ops

    import keras_interp

    _, h, w, c = feature_maps.shape
    n_cells = h * w
    x = ops.cast(feature_maps, "float32")
    x = ops.reshape(ops.transpose(x, (0, 3, 1, 2)), (-1, c, n_cells))
    t = ops.reshape(keras_interp.part_templates(h, w), (n_cells + 1, -1))
    product = x[:, :, None, :] * t[None, None, :, :]  # (B, C, K, n^2)
    logits = ops.sum(product, axis=-1)  # (B, C, K)
    alpha = n_cells / (1.0 + n_cells)
    log_prior = ops.convert_to_tensor(
        [math.log(alpha / n_cells)] * n_cells + [math.log(1.0 - alpha)],
        "float32",
    )
    log_lik = logits - ops.logsumexp(logits, axis=0, keepdims=True)
    log_px = ops.logsumexp(log_lik + log_prior, axis=-1, keepdims=True)
    terms = ops.exp(log_lik) * (log_lik - log_px)  # p(x|T) log p(x|T)/p(x)
    return ops.sum(ops.sum(terms, axis=0) * ops.exp(log_prior), axis=-1)


def reference_mutual_information(maps):
    """Eq. 1 on the raw maps in float64 numpy: the one reference here.

    The benchmark's accuracy check only; the independent, loop-by-loop
    check of the library is `tests/test_reference_math.py`.
    """
    import keras_interp

    b, h, w, c = maps.shape
    p = h * w
    x = maps.astype("float64").transpose(0, 3, 1, 2).reshape(b, c, p)
    t = np.asarray(keras_interp.part_templates(h, w), "float64")
    logits = x @ t.reshape(p + 1, p).T  # (B, C, K)
    alpha = p / (1.0 + p)
    prior = np.array([alpha / p] * p + [1.0 - alpha])
    shift = logits.max(axis=0, keepdims=True)
    z = np.log(np.exp(logits - shift).sum(axis=0, keepdims=True)) + shift
    lik = np.exp(logits - z)
    px = (lik * prior).sum(axis=-1, keepdims=True)
    return ((lik * np.log(lik / px)).sum(axis=0) * prior).sum(axis=-1)


def gemm_timing_variant(feature_maps):
    """The template product alone: the floor the other variants pay."""
    from keras import ops

    import keras_interp

    _, h, w, c = feature_maps.shape
    x = ops.reshape(ops.cast(feature_maps, "float32"), (-1, h * w, c))
    t = ops.reshape(
        keras_interp.part_templates(h, w),
        (h * w + 1, h * w),
    )
    return ops.sum(ops.einsum("bpc,kp->bck", x, t), axis=(0, 2))


def loss_functions(positives):
    import keras_interp

    return {
        "lib": keras_interp.mutual_information,
        "lib_cat": lambda x: keras_interp.category_mutual_information(
            x, positives
        ),
        "naive": naive_timing_variant,
        "gemm": gemm_timing_variant,
    }


def compile_fn(fn, backend, jit, backward):
    """A blocking closure computing sum(fn(x)) (and its gradient)."""
    if backend == "tensorflow":
        import tensorflow as tf

        if backward:

            def run(x):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    value = tf.reduce_sum(fn(x))
                return value, tape.gradient(value, x)

        else:

            def run(x):
                return tf.reduce_sum(fn(x))

        compiled = tf.function(run, jit_compile=jit, autograph=False)

        def call(x):
            out = compiled(x)
            return tf.nest.map_structure(lambda t: t.numpy(), out)

        return call
    import jax

    def value(x):
        return jax.numpy.sum(fn(x))

    compiled = jax.jit(jax.value_and_grad(value) if backward else value)
    if not jit:
        compiled = jax.value_and_grad(value) if backward else value

    def call(x):
        return jax.block_until_ready(compiled(x))

    return call


def main(argv=None):
    set_backend_from_argv(argv)
    args = parse(argv)
    import keras
    from keras import ops

    import keras_interp

    rng = np.random.default_rng(0)
    shape = (args.batch, args.map_size, args.map_size, args.channels)
    maps = np.maximum(rng.normal(size=shape), 0.0).astype("float32")
    positives = (rng.uniform(size=(args.batch, args.channels)) < 0.5).astype(
        "float32"
    )
    x = ops.convert_to_tensor(maps, args.dtype)
    fns = loss_functions(ops.convert_to_tensor(positives))
    variants = args.variants.split(",")
    jit = args.jit == "on"

    # Eq. 1 of the library (paper-literal: normalization=None) and the naive
    # variant match the float64 reference (on a slice); the naive one loses
    # float32 precision when the MI is tiny.
    small = maps[: min(8, args.batch), :, :, :16]
    reference = reference_mutual_information(small)
    checked = {
        "lib": lambda x: keras_interp.mutual_information(x, normalization=None),
        "naive": naive_timing_variant,
    }
    for name, fn in checked.items():
        got = np.asarray(fn(ops.convert_to_tensor(small)))
        error = np.max(np.abs(got - reference) / reference)
        print(f"{name}: max relative error vs float64 reference {error:.1e}")
        assert error < (1e-3 if name == "lib" else 5e-2), (name, error)

    results = {"times_s": {}, "ratios": []}
    for pass_name in args.passes.split(","):
        backward = pass_name == "backward"
        steps = [
            (
                name,
                (lambda f: lambda: f(x))(
                    compile_fn(
                        fns[name], keras.backend.backend(), jit, backward
                    )
                ),
            )
            for name in variants
        ]
        print(
            f"{pass_name} ({'forward+backward' if backward else 'forward'})",
            flush=True,
        )
        times, cpu_times = interleaved(
            steps, reps=args.reps, warmup=args.warmup, steps=args.steps
        )
        results["times_s"][pass_name] = times
        results.setdefault("cpu_s", {})[pass_name] = cpu_times
        base = variants[0]
        for name in variants[1:]:
            summary = ratio_summary(times, name, base, cpu_times)
            summary["pass"] = pass_name
            results["ratios"].append(summary)
            print("  " + format_ratio(summary), flush=True)
    emit("loss_alone", args, results, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
