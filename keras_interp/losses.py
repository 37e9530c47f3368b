"""The filter loss of Interpretable CNNs, in pure `keras.ops`.

Paper: Zhang, Wu, Zhu, "Interpretable Convolutional Neural Networks",
CVPR 2018, Section 3.1 (Eqs. 1-4). Authors' code: the backward pass of the
`conv_mask` layer in `our_vl_simplenn.m` (`docs/method_notes.md`).

All functions take channels-last feature maps `[batch, height, width,
filters]` taken after ReLU, compute in float32 whatever the input dtype, and
return one value per filter. The batch plays the role of the paper's image
set `X`.

Scale. With the paper's `tau = 0.5 / n^2` the template logits
`tr(x . T)` grow with the activations, so Eq. 1 computed on raw maps
depends on the arbitrary scale of each backbone's activations: rescaling a
filter's maps by `c` changes its MI, and not even monotonically. Minimising
`-MI` then rewards rescaling the activations instead of localising them.
The paper's `tau` implicitly assumes peaks of order `n^2` (VGG-16 conv5 on
0-255 inputs). Every loss function here therefore takes a
`normalization` argument:

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
"""

import math

from keras import ops

from keras_interp import templates as templates_lib

# Authors' code (`our_vl_simplenn.m`): the temperature they call `alpha`.
AUTHORS_TEMPERATURE = 0.5
# Authors' code: the injected gradient is scaled by 1e-5 / K_t with
# K_t = t / mag and mag = 0.1 (`code/tool/nets/*.m`).
AUTHORS_GRADIENT_SCALE = 1e-5
AUTHORS_MAG = 0.1
# Authors' beta rule (section 4.3): beta* = clip(3 / sigma, 1.5, 3), in the
# code's [-1, 1] coordinates.
AUTHORS_BETA_NUMERATOR = 3.0
AUTHORS_BETA_RANGE = (1.5, 3.0)


def default_alpha(height: int, width: int) -> float:
    """The paper's prior mass of the positive templates, n^2 / (1 + n^2)."""
    return height * width / (1.0 + height * width)


def _check_alpha(alpha):
    if isinstance(alpha, (int, float)) and not 0.0 < alpha < 1.0:
        raise ValueError(
            "`alpha` (the total prior of the positive templates) must be in "
            "(0, 1); the paper uses H*W / (1 + H*W). Received: "
            f"alpha={alpha!r}."
        )


def _check_feature_maps(feature_maps, name="feature_maps"):
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


def normalize_maps(feature_maps, *, normalization="mean_max", reduction=None):
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
    _check_feature_maps(feature_maps)
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
    gradient, feature_maps, *, normalization="mean_max", reduction=None
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


def _log_mean_exp_over_batch(z, reduction):
    """`log mean_x exp(z)` over the (possibly global) batch axis.

    Near 0 it is computed as `log1p(mean expm1(z))`, which keeps full
    float32 precision for the small, nearly equal log-likelihoods of
    similar images; elsewhere it is the usual shifted log-sum-exp.
    """
    size = reduction.size(z)
    near = reduction.max(ops.abs(z)) <= 1.0
    clipped = ops.clip(z, -1.0, 1.0)
    precise = ops.log1p(reduction.sum(ops.expm1(clipped)) / size)
    shift = ops.stop_gradient(reduction.max(z))
    robust = shift + ops.log(reduction.sum(ops.exp(z - shift)) / size)
    return ops.where(near, precise, robust)


def _log_mix_exp(z, weights):
    """`log sum_k w_k exp(z_k)` over the last axis, `w` summing to 1.

    Precise near 0 like `_log_mean_exp_over_batch`.
    """
    near = ops.max(ops.abs(z), axis=-1, keepdims=True) <= 1.0
    clipped = ops.clip(z, -1.0, 1.0)
    precise = ops.log1p(
        ops.sum(weights * ops.expm1(clipped), axis=-1, keepdims=True)
    )
    shift = ops.stop_gradient(ops.max(z, axis=-1, keepdims=True))
    robust = shift + ops.log(
        ops.sum(weights * ops.exp(z - shift), axis=-1, keepdims=True)
    )
    return ops.where(near, precise, robust)


def _kl_term(ratio_log):
    """`phi(d) = e^d d - e^d + 1 >= 0`, exactly and without cancellation.

    `sum_x p(x|T) log[p(x|T)/p(x)] = sum_x p(x) phi(d)` with
    `d = log[p(x|T)/p(x)]`, because `sum_x p(x|T) = sum_x p(x) = 1`; every
    term is non-negative, so float32 keeps relative precision even when the
    MI is tiny. For small `|d|` the series `d^2/2 + d^3/3 + d^4/8 + d^5/30
    + d^6/144` is used (truncation error below 1e-7 relative).
    """
    d = ops.clip(ratio_log, -0.1, 0.1)
    series = d * d * (0.5 + d * (1 / 3 + d * (1 / 8 + d * (1 / 30 + d / 144))))
    direct = ops.exp(ratio_log) * (ratio_log - 1.0) + 1.0
    return ops.where(ops.abs(ratio_log) < 0.1, series, direct)


def template_log_likelihoods(
    feature_maps,
    *,
    beta=4.0,
    tau=None,
    alpha=None,
    normalization="mean_max",
    reduction=None,
):
    """Log-likelihoods of every feature map under every part template.

    Computes, per filter, in log space, on `x_hat = normalize_maps(x)`
    (`x` itself with `normalization=None`):

    * `log p(x|T) = tr(x . T) - log Z_T` with `tr(x . T) = sum_ij x_ij t_ij`
      and `Z_T = sum_{x in X} exp(tr(x . T))` over the batch (paper Eq. 1);
    * the priors `p(T_mu) = alpha / (H*W)`, `p(T-) = 1 - alpha`;
    * `log p(x) = log sum_T p(T) p(x|T)`;
    * `log[p(x|T) / p(x)]`, computed without the common `-log(batch)`
      offset, so that it keeps float32 precision when images are similar.

    The template product is one GEMM of `[batch, H*W, filters]` against the
    `[H*W + 1, H*W]` templates. `reduction` (a `BatchReduction`) says what
    "the batch" is, for `Z_T`, `p(x)` and `m_f`; the default is the
    tensor's own batch.

    Returns:
        A dict with `log_lik` `[batch, filters, H*W + 1]`, `log_prior`
        `[H*W + 1]`, `log_px` `[batch, filters, 1]` and `log_ratio`
        `[batch, filters, H*W + 1]`.
    """
    _check_feature_maps(feature_maps)
    _, height, width, filters = feature_maps.shape
    n_cells = height * width
    alpha = default_alpha(height, width) if alpha is None else alpha
    _check_alpha(alpha)
    reduction = LOCAL_BATCH if reduction is None else reduction
    x = normalize_maps(
        feature_maps, normalization=normalization, reduction=reduction
    )
    x = ops.reshape(x, (-1, n_cells, filters))
    t = templates_lib.part_templates(height, width, beta=beta, tau=tau)
    if len(t.shape) == 3:
        t = ops.reshape(t, (n_cells + 1, n_cells))
        logits = ops.einsum("bpc,kp->bck", x, t)
    else:
        t = ops.reshape(t, (filters, n_cells + 1, n_cells))
        logits = ops.einsum("bpc,ckp->bck", x, t)
    log_prior = ops.concatenate(
        [
            ops.full((n_cells,), math.log(alpha / n_cells), "float32"),
            ops.full((1,), math.log(1.0 - alpha), "float32"),
        ]
    )
    # Work with log(batch * p(x|T)) and log(batch * p(x)): centring the
    # logits over the batch makes both small for similar images.
    size = reduction.size(logits)
    centred = logits - reduction.sum(logits) / size
    scaled_lik = centred - _log_mean_exp_over_batch(centred, reduction)
    scaled_px = _log_mix_exp(scaled_lik, ops.exp(log_prior))
    log_batch = ops.log(size)
    return {
        "log_lik": scaled_lik - log_batch,
        "log_prior": log_prior,
        "log_px": scaled_px - log_batch,
        "log_ratio": scaled_lik - scaled_px,
    }


def mutual_information(
    feature_maps,
    *,
    beta=4.0,
    tau=None,
    alpha=None,
    normalization="mean_max",
    reduction=None,
):
    """Mutual information between feature maps and part templates (Eq. 1).

    ```
    MI(X; T) = sum_T p(T) sum_x p(x|T) log[p(x|T) / p(x)]
    p(x|T) = exp(tr(x . T)) / Z_T,   Z_T = sum_{x in X} exp(tr(x . T))
    p(x) = sum_T p(T) p(x|T),   p(T_mu) = alpha / (H*W),  p(T-) = 1 - alpha
    ```

    `X` is the batch: `p(x|T)` is normalised over the images of the batch,
    so a batch of one gives 0. The filter loss is `-MI`. By default `x` is
    the scale-free `x_hat = x * H*W / m_f` (`normalize_maps`; the module
    docstring says why), so the value does not change when a filter's maps
    are multiplied by any `c > 0`. Everything is
    computed in log space in float32, as a sum of non-negative terms
    `p(x) phi(log[p(x|T)/p(x)])` (see `_kl_term`), so the value keeps its
    relative precision when it is tiny and stays finite for activations
    of 1e4.

    Args:
        feature_maps: non-negative (post-ReLU) tensor
            `[batch, height, width, filters]`.
        beta: positive float or `[filters]` tensor, template slope. Default 4.
        tau: positive float, template scale. Default `0.5 / (H * W)`.
        alpha: float in (0, 1), total prior of the positive templates.
            Default `H*W / (1 + H*W)`, which gives every template the prior
            `1 / (1 + H*W)`.
        normalization: `"mean_max"` (default): Eq. 1 on
            `x * H*W / m_f`, with `m_f` the batch mean of filter `f`'s
            spatial maximum and the gradient flowing through it
            (scale-free); `None`: Eq. 1 on the raw maps (paper-literal).
        reduction: optional `BatchReduction`. With a cross-replica
            reduction, `Z_T`, `p(x)` and `m_f` are global-batch quantities
            and the result is this replica's share of the global MI (the
            shares sum to it).

    Returns:
        float32 tensor of shape `[filters]`.

    Example:

    >>> x = np.random.default_rng(0).uniform(size=(4, 3, 3, 2))
    >>> tuple(keras_interp.mutual_information(x).shape)
    (2,)
    """
    stats = template_log_likelihoods(
        feature_maps,
        beta=beta,
        tau=tau,
        alpha=alpha,
        normalization=normalization,
        reduction=reduction,
    )
    terms = ops.exp(stats["log_px"]) * _kl_term(stats["log_ratio"])
    return ops.sum(ops.sum(terms, axis=0) * ops.exp(stats["log_prior"]), -1)


def chosen_templates(feature_maps, positives, *, center="argmax"):
    """Index of each map's label-consistent template `T^` (paper Eq. 4).

    `T^ = T_mu` (the positive template at the map's centre) for images of the
    filter's category, and `T-` (index `H*W`) for the others.

    Returns:
        int32 tensor `[batch, filters]`.
    """
    _, _, width, _ = feature_maps.shape
    n_cells = feature_maps.shape[1] * width
    centers = templates_lib.part_centers(feature_maps, center=center)
    index = centers[..., 0] * width + centers[..., 1]
    return ops.where(
        ops.cast(positives, "bool"), index, ops.full_like(index, n_cells)
    )


def category_mutual_information(
    feature_maps,
    positives,
    *,
    beta=4.0,
    tau=None,
    alpha=None,
    center="argmax",
    normalization="mean_max",
    reduction=None,
):
    """The label-consistent part of Eq. 1: the category-aware filter loss.

    For filter `f`, each image keeps only the template the paper's Eq. 4
    assigns to it: `T^ = T_mu^` (the positive template at the map's centre)
    if the image belongs to the filter's category, `T-` otherwise:

    ```
    value_f = sum_x p(T^_x) p(x|T^_x) log[p(x|T^_x) / p(x)]
    ```

    with `p(x|T)`, `Z_T`, `p(T)`, `p(x)` and the scale (`normalization`;
    `m_f` is the mean over all images, of every category) exactly as in
    `mutual_information`. Eq. 4 is the gradient of this sum with `Z_T` and
    `p(x)` held constant (and its `+1` term dropped); here the exact gradient
    is used. Maximising it makes a filter fire at one place on its own
    category and stay silent on the others.

    Args:
        feature_maps: non-negative tensor `[batch, height, width, filters]`.
        positives: bool or 0/1 tensor `[batch, filters]`, True where the image
            belongs to the filter's category.
        beta, tau, alpha, normalization, reduction: as in
            `mutual_information`.
        center: `"argmax"` (paper) or `"centroid"` (authors' code).

    Returns:
        float32 tensor of shape `[filters]`.
    """
    stats = template_log_likelihoods(
        feature_maps,
        beta=beta,
        tau=tau,
        alpha=alpha,
        normalization=normalization,
        reduction=reduction,
    )
    index = chosen_templates(feature_maps, positives, center=center)
    # A one-hot selection, not a gather: its shapes are static, so a TF
    # train step jitted around the layer's own XLA block does not
    # constant-fold and recompile every step (benchmarks/README.md).
    select = ops.one_hot(index, stats["log_prior"].shape[0], dtype="float32")
    log_lik = ops.sum(select * stats["log_lik"], axis=-1)
    log_ratio = ops.sum(select * stats["log_ratio"], axis=-1)
    prior = ops.sum(select * ops.exp(stats["log_prior"]), axis=-1)
    return ops.sum(prior * ops.exp(log_lik) * log_ratio, axis=0)


def _relative_weights(logits, factors, members):
    """`g / mean_{members} g` with `g = exp(logits) * factors`, stably.

    The common factor `exp(max logits)` cancels in the ratio, so it is
    divided out first; non-members get 0, and an empty or zero-mean set
    gives 0 (the authors replace NaN by 0).
    """
    neg_inf = ops.full_like(logits, -float("inf"))
    shift = ops.max(ops.where(members > 0, logits, neg_inf), axis=0)
    shift = ops.where(ops.isfinite(shift), shift, ops.zeros_like(shift))
    safe = ops.where(members > 0, logits - shift, ops.zeros_like(logits))
    g = ops.where(members > 0, ops.exp(safe) * factors, ops.zeros_like(logits))
    mean = ops.divide_no_nan(ops.sum(g, axis=0), ops.sum(members, axis=0))
    return ops.divide_no_nan(g, mean)


def authors_filter_gradient(
    feature_maps,
    positives,
    *,
    beta=4.0,
    center="centroid",
    epoch=1.0,
    positive_weight=1.0,
    negative_weight=1.0,
    normalization="mean_max",
    reduction=None,
):
    """The authors' surrogate gradient of the filter loss.

    The authors' MatConvNet code never computes the filter loss; it adds
    this hand-made, magnitude-normalised term to `dL/dx` in the backward pass
    of `conv_mask`. With the temperature `a = 0.5`, `K = epoch / 0.1`, and
    the unclipped mask `m = max(1 - beta d, -1)` around each map's centre:

    ```
    s[b,c]  = mean_ij x[b,i,j,c] m[b,i,j,c]
    s'[b,c] = mean_ij x[b,i,j,c] m[B-1-b,i,j,C-1-c]   (mask reversed in b, c)
    A+[c] = a log mean_b exp(s'[b,c] / a)
    A-[c] = a log mean_b exp(-xbar[b,c] / a)          (xbar: spatial mean)
    positive (b,c): g = exp(s/a) (s - A+ + a)
                    G = -1e-5 w+ g / (mean_P g K) m
    negative (b,c): g = exp(-xbar/a) (-xbar - A- + a)
                    G = +1e-5 w- g / (mean_N g K)
    ```

    The means run over the filter's positive (P) or negative (N) images.
    This is Eq. 4 with a temperature, the `-log p(x)` term replaced by the
    `+1` of differentiating `p log p`, and the priors and `1/Z` dropped.

    Scale. The surrogate is normalised by its mean, but its weights
    `exp(s / a)` still depend on the activations' scale (the authors' VGG-16
    conv5 on 0-255 inputs). With `normalization="mean_max"` (default) it is
    computed on `x_hat = x * H*W / m_f` (`normalize_maps`) and taken as
    `dL/dx_hat`; the result is `dL/dx` by the exact chain rule through
    `x_hat`, `m_f` included (`chain_normalization`). So it is scale-free
    like the exact loss: for `c x` it is the result for `x` divided by `c`,
    and it is orthogonal to `x` filter by filter (it cannot inflate or
    shrink a filter's activations as a whole; the authors' uniform push
    down on negative images becomes a push relative to the filter's
    peaks). When the mean peak is near `n^2`, as in the authors' setting,
    the magnitude is about theirs. `normalization=None` is the authors'
    gradient on the raw maps, unchanged.

    Args:
        feature_maps: non-negative tensor `[batch, height, width, filters]`.
        positives: bool or 0/1 tensor `[batch, filters]`.
        beta: positive float or `[filters]` tensor. Default 4.
        center: `"centroid"` (authors' code, the default here) or `"argmax"`.
        epoch: the epoch index `t >= 1`.
        positive_weight, negative_weight: floats or `[filters]` tensors, the
            authors' class weights `w+`, `w-` (1 for single-category runs).
        normalization: `"mean_max"` (default) or None, as above.
        reduction: optional `BatchReduction`, used only for `m_f` and the
            chain rule (global batch under `tf.distribute`); the
            surrogate's own statistics stay per replica, as the authors'
            code is single-device.

    Returns:
        float32 tensor `[batch, height, width, filters]`: the term the
        authors add to the gradient of their batch-summed loss, with
        respect to the raw `feature_maps`.
    """
    _check_feature_maps(feature_maps)
    raw = ops.stop_gradient(ops.cast(feature_maps, "float32"))
    x = normalize_maps(raw, normalization=normalization, reduction=reduction)
    temp = AUTHORS_TEMPERATURE
    centers = templates_lib.part_centers(x, center=center)
    distances = templates_lib.center_distances(x, centers)
    m = templates_lib.unit_templates(distances, beta=beta, floor=-1.0)
    batch = ops.cast(ops.shape(x)[0], "float32")
    s = ops.mean(x * m, axis=(1, 2))  # [B, C]
    s_rev = ops.mean(x * ops.flip(ops.flip(m, axis=0), axis=3), axis=(1, 2))
    a_pos = temp * (ops.logsumexp(s_rev / temp, axis=0) - ops.log(batch))
    xbar = ops.mean(x, axis=(1, 2))
    a_neg = temp * (ops.logsumexp(-xbar / temp, axis=0) - ops.log(batch))
    pos = ops.cast(positives, "float32")
    neg = 1.0 - pos
    schedule = ops.cast(epoch, "float32") / AUTHORS_MAG
    g_pos = _relative_weights(s / temp, s - a_pos + temp, pos) / schedule
    g_neg = _relative_weights(-xbar / temp, -xbar - a_neg + temp, neg)
    g_neg = g_neg / schedule
    w_pos = ops.cast(positive_weight, "float32")
    w_neg = ops.cast(negative_weight, "float32")
    grad_pos = -AUTHORS_GRADIENT_SCALE * (w_pos * g_pos)[:, None, None, :] * m
    grad_neg = AUTHORS_GRADIENT_SCALE * (w_neg * g_neg)[:, None, None, :]
    gradient = grad_pos + ops.broadcast_to(grad_neg, ops.shape(x))
    return chain_normalization(
        gradient, raw, normalization=normalization, reduction=reduction
    )


def code_to_paper_beta_scale(height: int, width: int):
    """Factor from the authors' `[-1, 1]`-coordinate beta to paper units.

    Their grid spans 2 units over `n - 1` cells, the paper's distance is in
    units of `n` cells: `beta_paper = beta_code * 2 n / (n - 1)`, with
    `n = (H + W) / 2`. None for a `1 x 1` map, where beta has no effect.
    """
    n = (height + width) / 2.0
    return 2.0 * n / (n - 1.0) if n > 1.0 else None


def learned_beta_target(
    feature_maps, positives, *, beta, center="centroid", reduction=None
):
    """The authors' learned-beta target (docs/method_notes.md), paper units.

    Per filter: the activation spread `sigma` (in cells) around each map's
    centre, averaged over the positive images with the fit
    `s = mean(x m)` as weights, gives `beta*_code = clip(3 / sigma, 1.5, 3)`
    in the code's `[-1, 1]` coordinates, converted to paper units with
    `beta_paper = beta_code * 2 n / (n - 1)`, `n = (H + W) / 2`. Wider blobs
    give a smaller beta, i.e. wider templates. As in the authors' MATLAB
    code, `sigma = 0` gives the upper clamp and a negative weighted mean (a
    negative total fit) the lower one. Filters without any positive image,
    and `1 x 1` maps, keep their current `beta`.

    Args:
        feature_maps: non-negative tensor `[batch, height, width, filters]`.
        positives: bool or 0/1 tensor `[batch, filters]`.
        beta: the current beta, float or `[filters]` tensor (paper units).
        center: `"centroid"` (authors' code) or `"argmax"`.
        reduction: optional `BatchReduction` (global batch under
            `tf.distribute`).

    Returns:
        float32 tensor `[filters]`.
    """
    _check_feature_maps(feature_maps)
    reduction = LOCAL_BATCH if reduction is None else reduction
    x = ops.stop_gradient(ops.cast(feature_maps, "float32"))
    _, height, width, filters = x.shape
    current = ops.broadcast_to(ops.cast(beta, "float32"), (filters,))
    scale = code_to_paper_beta_scale(height, width)
    if scale is None:
        return current
    centers = templates_lib.part_centers(x, center=center)
    c = ops.cast(centers, "float32")
    rows = ops.arange(height, dtype="float32")[None, :, None, None]
    cols = ops.arange(width, dtype="float32")[None, None, :, None]
    sq = (rows - c[:, None, None, :, 0]) ** 2 + (
        cols - c[:, None, None, :, 1]
    ) ** 2
    mass = ops.maximum(ops.sum(x, axis=(1, 2)), templates_lib.CENTROID_EPSILON)
    sigma = ops.sqrt(ops.sum(x * sq, axis=(1, 2)) / mass)  # [B, C]
    distances = templates_lib.center_distances(x, centers)
    m = templates_lib.unit_templates(distances, beta=current, floor=-1.0)
    fit = ops.mean(x * m, axis=(1, 2)) * ops.cast(positives, "float32")
    mean_sigma = ops.divide_no_nan(
        reduction.sum(fit * sigma)[0], reduction.sum(fit)[0]
    )
    low, high = AUTHORS_BETA_RANGE
    # As in MATLAB, 3 / 0 = inf clamps to the top of the range and a
    # negative ratio (a negative total fit) to the bottom.
    code_beta = ops.where(
        mean_sigma > 0,
        ops.clip(
            ops.divide_no_nan(AUTHORS_BETA_NUMERATOR, mean_sigma), low, high
        ),
        ops.where(mean_sigma < 0, low, high),
    )
    target = code_beta * scale
    has_positives = reduction.sum(ops.cast(positives, "float32"))[0] > 0
    return ops.where(has_positives, target, current)
