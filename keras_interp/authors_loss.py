"""The authors' surrogate of the filter loss, and their learned-beta rule.

Authors' code: the backward pass of the `conv_mask` layer in
`our_vl_simplenn.m` (`docs/method_notes.md`). The code never computes the
paper's filter loss (`keras_interp.losses`, Eq. 1); it injects a hand-made
gradient instead (`authors_filter_gradient`) and updates beta from the
activation spread (`learned_beta_target`). Both follow the code, so their
centre defaults to the code's, the activation centroid (`AUTHORS_CENTER`),
whatever the library-wide `templates.DEFAULT_CENTER` is.

Pure `keras.ops`; inputs as in `keras_interp.losses` (channels-last maps
after ReLU, computed in float32), with the same `normalization` and
`reduction` arguments (`keras_interp.normalization`).
"""

from keras import ops

from keras_interp import templates as templates_lib
from keras_interp.normalization import DEFAULT_NORMALIZATION
from keras_interp.normalization import LOCAL_BATCH
from keras_interp.normalization import chain_normalization
from keras_interp.normalization import check_feature_maps
from keras_interp.normalization import normalize_maps

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
# The authors' code centres the mask on the activation centroid; the
# functions here reproduce it, so this is their default centre.
AUTHORS_CENTER = "centroid"


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
    beta=templates_lib.DEFAULT_BETA,
    center=AUTHORS_CENTER,
    epoch=1.0,
    positive_weight=1.0,
    negative_weight=1.0,
    normalization=DEFAULT_NORMALIZATION,
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
        center: `"centroid"` (`AUTHORS_CENTER`, the authors' code, the
            default here whatever `templates.DEFAULT_CENTER` is) or
            `"argmax"`.
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
    check_feature_maps(feature_maps)
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
    feature_maps, positives, *, beta, center=AUTHORS_CENTER, reduction=None
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
        center: `"centroid"` (`AUTHORS_CENTER`, the authors' code, the
            default here) or `"argmax"`.
        reduction: optional `BatchReduction` (global batch under
            `tf.distribute`).

    Returns:
        float32 tensor `[filters]`.
    """
    check_feature_maps(feature_maps)
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
