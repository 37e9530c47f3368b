"""The filter loss of Interpretable CNNs, in pure `keras.ops`.

Paper: Zhang, Wu, Zhu, "Interpretable Convolutional Neural Networks",
CVPR 2018, Section 3.1 (Eqs. 1-4). The authors' code computes a surrogate
gradient instead of this loss; it lives in `keras_interp.authors_loss` and
is re-exported here (`authors_filter_gradient`, `learned_beta_target`).

All functions take channels-last feature maps `[batch, height, width,
filters]` taken after ReLU, compute in float32 whatever the input dtype, and
return one value per filter. The batch plays the role of the paper's image
set `X`; a `reduction` (`BatchReduction`) says which batch.

Scale. Every loss function takes a `normalization` argument:
`"mean_max"` (default) computes Eq. 1 on the scale-free
`x_hat = x * H*W / m_f` (`m_f` the batch mean of filter `f`'s spatial
maximum), `None` on the raw maps (paper-literal). Why, and the helpers
(`normalize_maps`, `chain_normalization`, `mean_max`): see
`keras_interp.normalization`, whose names are re-exported here.
"""

import math

from keras import ops

from keras_interp import templates as templates_lib

# Re-exported: `keras_interp.losses.X` names the whole filter-loss API.
from keras_interp.authors_loss import AUTHORS_BETA_NUMERATOR  # noqa: F401
from keras_interp.authors_loss import AUTHORS_BETA_RANGE  # noqa: F401
from keras_interp.authors_loss import AUTHORS_CENTER  # noqa: F401
from keras_interp.authors_loss import AUTHORS_GRADIENT_SCALE  # noqa: F401
from keras_interp.authors_loss import AUTHORS_MAG  # noqa: F401
from keras_interp.authors_loss import AUTHORS_TEMPERATURE  # noqa: F401
from keras_interp.authors_loss import authors_filter_gradient  # noqa: F401
from keras_interp.authors_loss import code_to_paper_beta_scale  # noqa: F401
from keras_interp.authors_loss import learned_beta_target  # noqa: F401
from keras_interp.normalization import DEFAULT_NORMALIZATION
from keras_interp.normalization import LOCAL_BATCH
from keras_interp.normalization import NORMALIZATIONS  # noqa: F401
from keras_interp.normalization import BatchReduction  # noqa: F401
from keras_interp.normalization import chain_normalization  # noqa: F401
from keras_interp.normalization import check_feature_maps
from keras_interp.normalization import check_normalization  # noqa: F401
from keras_interp.normalization import mean_max  # noqa: F401
from keras_interp.normalization import normalize_maps


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
    beta=templates_lib.DEFAULT_BETA,
    tau=None,
    alpha=None,
    normalization=DEFAULT_NORMALIZATION,
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
    check_feature_maps(feature_maps)
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
    beta=templates_lib.DEFAULT_BETA,
    tau=None,
    alpha=None,
    normalization=DEFAULT_NORMALIZATION,
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


def chosen_templates(
    feature_maps, positives, *, center=templates_lib.DEFAULT_CENTER
):
    """Index of each map's label-consistent template `T^` (paper Eq. 4).

    `T^ = T_mu` (the positive template at the map's centre) for images of the
    filter's category, and `T-` (index `H*W`) for the others. The centre
    is `templates.part_centers(feature_maps, center=center)`: `"argmax"`
    (paper) or `"centroid"` (authors' code), default
    `templates.DEFAULT_CENTER`.

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
    beta=templates_lib.DEFAULT_BETA,
    tau=None,
    alpha=None,
    center=templates_lib.DEFAULT_CENTER,
    normalization=DEFAULT_NORMALIZATION,
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
            Default `templates.DEFAULT_CENTER`.

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
