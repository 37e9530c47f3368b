"""The model pairs and train steps timed by `step_time.py` and `memory.py`.

Import only after `KERAS_BACKEND` is set. TensorFlow is imported only on
the TensorFlow backend, so the JAX scripts run where it is not installed.

Variants (all built by `keras_interp.models.build_part_classifier`, with
the same backbone, seeds and head; only the interpretable parts differ):

* `plain`: `interpretable=False`, the identical CNN with a plain
  `Conv2D(activation="relu")` as "part_conv" and no "top_mask".
* `interp`: the paper's model, defaults (category-aware exact loss, on
  the scale-free maps: `normalization="mean_max"`).
* `interp_paperscale`: `interp` with `normalization=None` (Eq. 1 on the
  raw maps, the paper's literal scale), to see what the scale costs.
* `labelfree`: `category_aware=False` (Eq. 1 without labels).
* `maskonly`: `loss=None` (the masks only, no filter loss).
* `authors`: `loss="authors"` (the authors' surrogate gradient).
* `interp_nolayerjit`: `interp` with the layers' own
  `tf.function(jit_compile=True)` removed (TensorFlow only), to see what the
  inner XLA cluster costs or saves.
* `interp_unfused`, `interp_take`, `interp_remat`: `interp` with an
  alternative of `_prototypes.py` passed to its layers: the loss
  differentiated from outside the layers' compiled function; that and the
  `take_along_axis` template selection (the library of the first benchmark
  round); the loss rematerialised in the backward pass.
* `interp_chunk128`, `interp_chunk512`: the loss's gradient taken 128 or
  512 filters at a time (the library: 64).

Models:

* `full`: the backbone (VGG16 by default) at `size x size`.
* `head`: only what differs: a 1x1 conv "backbone" from a `n x n x 3`
  input to `n x n x channels` maps, then the same builder head. It times
  the interpretable layers without the backbone's noise.
"""

import _prototypes
import keras
import numpy as np

import keras_interp

VARIANTS = (
    "plain",
    "interp",
    "interp_paperscale",
    "labelfree",
    "maskonly",
    "authors",
    "interp_nolayerjit",
    "interp_unfused",
    "interp_take",
    "interp_remat",
    "interp_chunk128",
    "interp_chunk512",
)
# Variants whose layers get an alternative of `_prototypes.py`.
PROTOTYPE_OF = {
    "interp_unfused": "unfused",
    "interp_take": "take",
    "interp_remat": "remat",
    "interp_chunk128": "chunk128",
    "interp_chunk512": "chunk512",
}
BACKEND = keras.backend.backend()
# Small and non-zero: weights move (no constant folding) but stay finite.
LEARNING_RATE = 1e-6


def _variant_kwargs(variant):
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")
    return {
        "plain": {"interpretable": False},
        "interp": {},
        "interp_paperscale": {"normalization": None},
        "labelfree": {"category_aware": False},
        "maskonly": {"loss": None},
        "authors": {"loss": "authors"},
        "interp_nolayerjit": {},
        "interp_unfused": {},
        "interp_take": {},
        "interp_remat": {},
        "interp_chunk128": {},
        "interp_chunk512": {},
    }[variant]


def head_backbone(map_size, channels):
    """A 1x1 conv from an `n x n x 3` image to `n x n x channels` maps."""
    image = keras.Input((map_size, map_size, 3))
    maps = keras.layers.Conv2D(channels, 1, name="cut")(image)
    return keras.Model(image, maps, name="head_backbone")


def build(
    variant,
    *,
    model="full",
    backbone="vgg16",
    size=224,
    map_size=14,
    channels=512,
    num_classes=2,
):
    """The training view of one variant (inputs `{"image", "label"}`)."""
    keras.utils.set_random_seed(0)
    kwargs = dict(num_classes=num_classes, weights=None, seed=0)
    kwargs.update(_variant_kwargs(variant))
    if model == "full":
        models = keras_interp.models.build_part_classifier(
            backbone, image_size=size, **kwargs
        )
    elif model == "head":
        models = keras_interp.models.build_part_classifier(
            head_backbone(map_size, channels),
            cut_layer="cut",
            preprocessing="none",
            image_size=map_size,
            **kwargs,
        )
    else:
        raise ValueError(f"unknown model {model!r}; 'full' or 'head'")
    net = models.training
    if variant == "interp_nolayerjit":
        if BACKEND != "tensorflow":
            raise ValueError("interp_nolayerjit is a TensorFlow variant")
        for layer in keras_interp.interpretable_layers(net):
            layer._forward_fn = layer._forward
    return net


def batch(model, batch_size, seed=0):
    """Random images in [0, 255] and labels, as numpy."""
    rng = np.random.default_rng(seed)
    shape = (batch_size,) + tuple(model.input["image"].shape[1:])
    images = rng.uniform(0.0, 255.0, size=shape).astype("float32")
    labels = rng.integers(0, 2, size=(batch_size,)).astype("int32")
    return {"image": images, "label": labels}, labels


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _optimizer():
    return keras.optimizers.SGD(LEARNING_RATE, momentum=0.9)


def tf_train_step(net, x, y, *, jit):
    """A blocking `train_on_batch` closure, TensorFlow backend."""
    import tensorflow as tf

    net.compile(optimizer=_optimizer(), loss=_loss(), jit_compile=jit)
    x = {k: tf.constant(v) for k, v in x.items()}
    y = tf.constant(y)

    def step():
        # train_on_batch returns numpy logs: it waits for the step.
        return net.train_on_batch(x, y)

    return step


class JaxTrainStep:
    """A jitted stateless train step (what Keras' JAX trainer does).

    It keeps the state on the device and donates it, and syncs only on the
    returned loss, so host overhead does not dilute the ratio.
    """

    def __init__(self, net, x, y):
        import jax

        self.net = net
        self.optimizer = _optimizer()
        self.optimizer.build(net.trainable_variables)
        loss_fn = _loss()

        def compute(tv, ntv, x, y):
            y_pred, ntv, losses = net.stateless_call(
                tv, ntv, x, training=True, return_losses=True
            )
            self.num_added_losses = len(losses)  # Set at trace time.
            loss = loss_fn(y, y_pred)
            for extra in losses:
                loss = loss + extra
            return loss, ntv

        grad_fn = jax.value_and_grad(compute, has_aux=True)

        def train_step(tv, ntv, ov, x, y):
            (loss, ntv), grads = grad_fn(tv, ntv, x, y)
            tv, ov = self.optimizer.stateless_apply(ov, grads, tv)
            return tv, ntv, ov, loss

        self.jitted = jax.jit(train_step, donate_argnums=(0, 1, 2))
        device = jax.devices()[0]
        self.state = jax.device_put(
            (
                [v.value for v in net.trainable_variables],
                [v.value for v in net.non_trainable_variables],
                [v.value for v in self.optimizer.variables],
            ),
            device,
        )
        self.data = jax.device_put((x, y), device)

        # Compile once, explicitly: the same executable gives XLA's memory
        # analysis and runs the steps.
        self.compiled = self.jitted.lower(*self.state, *self.data).compile()

    def memory_analysis(self):
        """XLA's static memory analysis of the compiled step, in bytes."""
        stats = self.compiled.memory_analysis()
        if stats is None:
            return None
        fields = (
            "argument_size_in_bytes",
            "output_size_in_bytes",
            "alias_size_in_bytes",
            "temp_size_in_bytes",
            "generated_code_size_in_bytes",
        )
        return {f: int(getattr(stats, f, 0)) for f in fields}

    def __call__(self):
        tv, ntv, ov, loss = self.compiled(*self.state, *self.data)
        self.state = (tv, ntv, ov)
        return float(loss)  # Blocks until the step is done.


def train_step(net, x, y, *, jit=True, variant=None):
    """A blocking train-step closure, with the variant's prototype on."""
    _prototypes.configure(net, PROTOTYPE_OF.get(variant))
    if BACKEND == "tensorflow":
        return tf_train_step(net, x, y, jit=jit)
    if BACKEND == "jax":
        if not jit:
            raise ValueError("the JAX step is always jitted; use --jit on")
        return JaxTrainStep(net, x, y)  # Traces and compiles here.
    raise ValueError(f"backend {BACKEND!r} is not benchmarked")


def set_precision(precision):
    if precision not in ("float32", "mixed_bfloat16", "mixed_float16"):
        raise ValueError(f"unknown precision {precision!r}")
    keras.mixed_precision.set_global_policy(precision)
