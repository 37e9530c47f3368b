"""The scale of the maps the filter losses see, and what "the batch" is.

Shared by the exact loss (`keras_interp.losses`) and the authors' surrogate
(`keras_interp.authors_loss`), in pure `keras.ops`.

Scale. With the paper's `tau = 0.5 / n^2` the template logits
`tr(x . T)` grow with the activations, so Eq. 1 computed on raw maps
depends on the arbitrary scale of each backbone's activations: rescaling a
filter's maps by `c` changes its MI, and not even monotonically. Minimising
`-MI` then rewards rescaling the activations instead of localising them.
The paper's `tau` implicitly assumes peaks of order `n^2` (VGG-16 conv5 on
0-255 inputs). Every loss function therefore takes a `normalization`
argument:

* `"mean_max"` (default): Eq. 1 is computed on
  `x_hat = x * n^2 / m_f`, where `n^2 = H * W` and `m_f` is the batch mean
  of filter `f`'s spatial maximum (the paper's "mean max x", Section 5,
  which the paper folds into `lambda`). The gradient flows through `m_f`.
  The loss is then scale-free: `loss(c x) = loss(x)` for every `c > 0`, its
  gradient scales as `1 / c`, and it is orthogonal to `x` filter by filter
  (`sum x dLoss/dx = 0`), so the loss cannot be lowered by inflating or
  shrinking a filter's activations. `tau`, `beta` and `alpha` keep the
  paper's meaning, applied to `x_hat`. A dead filter (`m_f = 0`) has loss
  0 and gradient 0.
* `None`: the paper-literal Eq. 1 on the raw maps, for reproduction.

The batch. The paper's image set `X` is the batch; `BatchReduction` says
which one (the replica's own, or the global batch under `tf.distribute`).
"""

from keras import ops


def check_feature_maps(feature_maps, name="feature_maps"):
    """Checks a rank-4, channels-last tensor with static height and width."""
    shape = tuple(feature_maps.shape)
    if len(shape) != 4:
        raise ValueError(
            f"`{name}` must be a rank-4 tensor [batch, height, width, "
            f"filters] (channels-last). Received shape {shape}."
        )
    if shape[1] is None or shape[2] is None:
        raise ValueError(
            f"`{name}` must have static spatial dimensions; the templates "
            f"depend on them. Received shape {shape}."
        )


class BatchReduction:
    """Reductions over the batch axis, the paper's image set `X`.

    The default reduces over the tensor's own batch. Under `tf.distribute`
    with several replicas, `keras_interp.distribute.CrossReplicaReduction`
    reduces over the global batch instead, so `Z_T` and `p(x)` are the
    global-batch quantities. Every method keeps the batch axis (size 1).
    """

    def sum(self, x):
        return ops.sum(x, axis=0, keepdims=True)

    def max(self, x):
        return ops.max(x, axis=0, keepdims=True)

    def size(self, x):
        return ops.cast(ops.shape(x)[0], "float32")


LOCAL_BATCH = BatchReduction()

# Scale of the maps the filter loss sees; see the module docstring.
NORMALIZATIONS = ("mean_max", None)
DEFAULT_NORMALIZATION = "mean_max"


def check_normalization(normalization):
    """Validates the `normalization` argument and returns it."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`normalization` must be one of {NORMALIZATIONS}: 'mean_max' "
            "(the scale-free default, Eq. 1 on x * H*W / mean max x) or None "
            "(the paper-literal scale). Received: "
            f"normalization={normalization!r}."
        )
    return normalization


def mean_max(feature_maps, *, reduction=None):
    """`m_f`, the batch mean of each filter's spatial maximum, `[filters]`.

    The paper's "mean max x" (Section 5). `reduction` says what the batch
    is: under `tf.distribute` a cross-replica reduction gives the global
    batch mean. Differentiable (the maximum's gradient is shared equally by
    tied cells).
    """
    reduction = LOCAL_BATCH if reduction is None else reduction
    peaks = ops.max(ops.cast(feature_maps, "float32"), axis=(1, 2))  # [B, C]
    return reduction.sum(peaks)[0] / reduction.size(peaks)


def normalize_maps(
    feature_maps, *, normalization=DEFAULT_NORMALIZATION, reduction=None
):
    """The maps the filter loss scores: `x * H*W / m_f`, or `x` itself.

    With `normalization="mean_max"`, each filter's maps are divided by
    `m_f = mean_batch max_ij x` (`mean_max`) and multiplied by `n^2 = H*W`,
    so that the mean peak is `n^2`, the scale the paper's
    `tau = 0.5 / n^2` assumes. The gradient flows through `m_f`. A filter
    with `m_f <= 0` (dead on the whole batch) maps to zeros, with a zero
    gradient and no NaN. With `normalization=None` the float32 maps are
    returned unchanged (the paper-literal loss).

    Args:
        feature_maps: non-negative tensor `[batch, height, width, filters]`.
        normalization: `"mean_max"` (default) or None.
        reduction: optional `BatchReduction` (global batch under
            `tf.distribute`).

    Returns:
        float32 tensor, the shape of `feature_maps`.
    """
    check_normalization(normalization)
    x = ops.cast(feature_maps, "float32")
    if normalization is None:
        return x
    check_feature_maps(feature_maps)
    return _mean_max_scaled(x, reduction)[0]


def _mean_max_scaled(x, reduction):
    """`(x_hat, m_safe, alive)` for `normalize_maps`: `x * n^2 / m_f`, `m_f`
    (1 where the filter is dead) and `m_f > 0`.

    The one computation of `m_f` shared by `normalize_maps` and
    `chain_normalization`.
    """
    _, height, width, _ = x.shape
    m = mean_max(x, reduction=reduction)
    alive = m > 0
    safe = ops.where(alive, m, ops.ones_like(m))
    scaled = x * (float(height * width) / safe)
    return ops.where(alive, scaled, ops.zeros_like(x)), safe, alive


def chain_normalization(
    gradient,
    feature_maps,
    *,
    normalization=DEFAULT_NORMALIZATION,
    reduction=None,
):
    """`dL/dx` from `dL/dx_hat`, through `x_hat = normalize_maps(x)`.

    The exact chain rule, `m_f` included:

    ```
    dL/dx = n^2 / m_f * (G - (sum_{b,i,j} G x_hat) / n^2 * dm_f/dx)
    dm_f/dx[b,i,j] = 1 / (B * ties_b)  at the peak cells of image b, else 0
    ```

    with `G = dL/dx_hat`, the sum over the (global) batch and `ties_b` the
    number of cells tied at image `b`'s maximum (the maximum's gradient is
    shared equally, as autodiff does). The result is orthogonal to `x`
    filter by filter. Zero for dead filters (`m_f <= 0`); `G` itself with
    `normalization=None`. Used for the authors' surrogate, which gives a
    gradient but no loss to differentiate.

    Args:
        gradient: `[batch, height, width, filters]`, `dL/dx_hat`.
        feature_maps: the raw maps `x`, same shape.
        normalization, reduction: as in `normalize_maps`.

    Returns:
        float32 tensor, the shape of `feature_maps`.
    """
    check_normalization(normalization)
    g = ops.cast(gradient, "float32")
    if normalization is None:
        return g
    x = ops.cast(feature_maps, "float32")
    reduction = LOCAL_BATCH if reduction is None else reduction
    _, height, width, _ = feature_maps.shape
    n2 = float(height * width)
    x_hat, safe, alive = _mean_max_scaled(x, reduction)
    peaks = ops.max(x, axis=(1, 2), keepdims=True)
    at_peak = ops.cast(ops.equal(x, peaks), "float32")
    ties = ops.sum(at_peak, axis=(1, 2), keepdims=True)
    dm_dx = at_peak / (ties * reduction.size(x))
    projection = reduction.sum(ops.sum(g * x_hat, axis=(1, 2)))[0] / n2
    chained = (n2 / safe) * (g - projection * dm_dx)
    return ops.where(alive, chained, ops.zeros_like(chained))
