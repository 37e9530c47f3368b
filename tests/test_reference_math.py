"""Independent float64 reference checks of keras_interp's filter math.

Every reference below is written with explicit Python loops directly from the
equations of Zhang et al., "Interpretable Convolutional Neural Networks"
(CVPR 2018), Eq. 1, and from the authors' MatConvNet surrogate gradient
(see the method notes, sections 2-4).  Nothing here mirrors the library's
vectorised implementation; only the public API is used.

Conventions: channels-last feature maps (B, H, W, C); 0-based indices;
i = row, j = column.
"""

import math

import keras
import numpy as np
import pytest

import keras_interp

RTOL = 1e-4
ATOL = 1e-6
# The references of sections 2-5 are the paper-literal Eq. 1 and the authors'
# gradient on the raw maps; the library's default scale-free form (Eq. 1 on
# x * H*W / mean max x) is checked in section 6.
PAPER = {"normalization": None}

SIZES = [(1, 1), (2, 2), (3, 3), (7, 7), (14, 14), (3, 5), (5, 2)]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


def make_maps(seed, B, H, W, C, scale=3.0, kind="uniform"):
    """Non-negative float32 feature maps with some exact zeros."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        x = rng.uniform(0.0, scale, size=(B, H, W, C))
        drop = rng.uniform(size=(B, H, W, C)) < 0.15
        x[drop] = 0.0
    elif kind == "relu":
        x = np.maximum(rng.normal(0.0, scale, size=(B, H, W, C)), 0.0)
    elif kind == "exponential":
        x = rng.exponential(scale, size=(B, H, W, C))
        drop = rng.uniform(size=(B, H, W, C)) < 0.15
        x[drop] = 0.0
    else:
        raise ValueError(kind)
    return x.astype(np.float32)


def make_positives(seed, B, C, mode="mixed"):
    rng = np.random.default_rng(seed + 1000)
    if mode == "all":
        return np.ones((B, C), dtype=bool)
    if mode == "none":
        return np.zeros((B, C), dtype=bool)
    if mode == "one":
        pos = np.zeros((B, C), dtype=bool)
        for c in range(C):
            pos[int(rng.integers(0, B)), c] = True
        return pos
    # mixed: at least one positive and one negative per filter when B >= 2
    pos = rng.uniform(size=(B, C)) < 0.5
    if B >= 2:
        for c in range(C):
            pos[0, c] = True
            pos[B - 1, c] = False
    return pos


def per_filter(value, C):
    """Scalar or length-C sequence -> list of C python floats."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return [float(arr)] * C
    assert arr.shape == (C,)
    return [float(v) for v in arr]


def logsumexp(values):
    """log(sum(exp(v))) written out by hand, float64, overflow-safe."""
    m = -math.inf
    for v in values:
        if v > m:
            m = v
    if m == -math.inf:
        return -math.inf
    total = 0.0
    for v in values:
        total += math.exp(v - m)
    return m + math.log(total)


# --------------------------------------------------------------------------
# references (explicit loops, straight from the formulas)
# --------------------------------------------------------------------------

_TEMPLATE_CACHE = {}


def ref_templates(H, W, beta=4.0, tau=None):
    """(H*W + 1, H, W): the positive templates
    t_ij = tau*max(1 - beta*(|i-mi|/H + |j-mj|/W), -1) in row-major order of
    the centre, then the negative template (-tau)."""
    if tau is None:
        tau = 0.5 / (H * W)
    key = (H, W, float(beta), float(tau))
    if key in _TEMPLATE_CACHE:
        return _TEMPLATE_CACHE[key]
    T = np.zeros((H * W + 1, H, W), dtype=np.float64)
    for mi in range(H):
        for mj in range(W):
            k = mi * W + mj
            for i in range(H):
                for j in range(W):
                    d = abs(i - mi) / H + abs(j - mj) / W
                    T[k, i, j] = tau * max(1.0 - beta * d, -1.0)
    for i in range(H):
        for j in range(W):
            T[H * W, i, j] = -tau
    _TEMPLATE_CACHE[key] = T
    return T


def ref_trace(x, t):
    """tr(x . T) = sum_ij x_ij t_ij."""
    H, W = x.shape
    s = 0.0
    for i in range(H):
        for j in range(W):
            s += float(x[i, j]) * float(t[i, j])
    return s


def ref_priors(HW, alpha):
    if alpha is None:
        alpha = HW / (1.0 + HW)
    return [alpha / HW] * HW + [1.0 - alpha]


def ref_log_likelihoods(maps, T):
    """log p(x_b | T_k) with Z_T summed over the batch; [k][b]."""
    K = T.shape[0]
    B = len(maps)
    out = []
    for k in range(K):
        tr = [ref_trace(maps[b], T[k]) for b in range(B)]
        logZ = logsumexp(tr)
        out.append([tr[b] - logZ for b in range(B)])
    return out


def ref_log_px(logpxT, priors):
    K = len(priors)
    B = len(logpxT[0])
    out = []
    for b in range(B):
        terms = []
        for k in range(K):
            if priors[k] > 0.0:
                terms.append(math.log(priors[k]) + logpxT[k][b])
        out.append(logsumexp(terms))
    return out


def ref_mi_one_filter_direct(maps, T, alpha):
    """Eq. 1 computed literally (exp / sum), float64: moderate inputs only."""
    K = T.shape[0]
    B = len(maps)
    priors = ref_priors(K - 1, alpha)
    pxT = []
    for k in range(K):
        e = [math.exp(ref_trace(maps[b], T[k])) for b in range(B)]
        Z = 0.0
        for v in e:
            Z += v
        pxT.append([v / Z for v in e])
    px = []
    for b in range(B):
        acc = 0.0
        for k in range(K):
            acc += priors[k] * pxT[k][b]
        px.append(acc)
    mi = 0.0
    for k in range(K):
        for b in range(B):
            p = pxT[k][b]
            if p > 0.0 and priors[k] > 0.0:
                mi += priors[k] * p * math.log(p / px[b])
    return mi


def ref_mi_one_filter_log(maps, T, alpha):
    """Eq. 1 computed in log space (same quantity, safe for huge inputs)."""
    K = T.shape[0]
    B = len(maps)
    priors = ref_priors(K - 1, alpha)
    logpxT = ref_log_likelihoods(maps, T)
    logpx = ref_log_px(logpxT, priors)
    mi = 0.0
    for k in range(K):
        if priors[k] <= 0.0:
            continue
        for b in range(B):
            lp = logpxT[k][b]
            mi += priors[k] * math.exp(lp) * (lp - logpx[b])
    return mi


def ref_mutual_information(fm, beta=4.0, tau=None, alpha=None, log_space=False):
    fm = np.asarray(fm, dtype=np.float64)
    B, H, W, C = fm.shape
    betas = per_filter(beta, C)
    out = np.zeros(C)
    for c in range(C):
        T = ref_templates(H, W, betas[c], tau)
        maps = [fm[b, :, :, c] for b in range(B)]
        if log_space:
            out[c] = ref_mi_one_filter_log(maps, T, alpha)
        else:
            out[c] = ref_mi_one_filter_direct(maps, T, alpha)
    return out


def ref_center(x, center):
    """Centre (mu_i, mu_j) of one (H, W) map."""
    H, W = x.shape
    if center == "argmax":
        best = -math.inf
        mu = (0, 0)
        for i in range(H):
            for j in range(W):
                if float(x[i, j]) > best:  # strict: first maximum wins
                    best = float(x[i, j])
                    mu = (i, j)
        return mu
    if center == "centroid":
        tot = 0.0
        si = 0.0
        sj = 0.0
        for i in range(H):
            for j in range(W):
                v = float(x[i, j])
                tot += v
                si += i * v
                sj += j * v
        den = max(tot, 1e-9)
        ci = si / den + 0.5
        cj = sj / den + 0.5
        # Guard the *test data*: float32 vs float64 could disagree right at a
        # rounding boundary.  Exact halves (frac == 0) are representable
        # exactly and are tested on purpose elsewhere.
        for v in (ci, cj):
            frac = v - math.floor(v)
            assert frac == 0.0 or min(frac, 1.0 - frac) > 1e-4, (
                "test data too close to a rounding boundary; change the seed"
            )
        return (int(math.floor(ci)), int(math.floor(cj)))
    raise ValueError(center)


def ref_mask(fm, beta=4.0, center="argmax", lower=0.0):
    """max(1 - beta*(|i-mi|/H + |j-mj|/W), lower) for every (b, c) map."""
    fm = np.asarray(fm, dtype=np.float64)
    B, H, W, C = fm.shape
    betas = per_filter(beta, C)
    out = np.zeros_like(fm)
    for b in range(B):
        for c in range(C):
            mi, mj = ref_center(fm[b, :, :, c], center)
            for i in range(H):
                for j in range(W):
                    d = abs(i - mi) / H + abs(j - mj) / W
                    out[b, i, j, c] = max(1.0 - betas[c] * d, lower)
    return out


def ref_category_mi(
    fm, positives, beta=4.0, tau=None, alpha=None, center="argmax"
):
    fm = np.asarray(fm, dtype=np.float64)
    B, H, W, C = fm.shape
    HW = H * W
    betas = per_filter(beta, C)
    pos = np.asarray(positives).astype(bool)
    out = np.zeros(C)
    priors = ref_priors(HW, alpha)
    for c in range(C):
        T = ref_templates(H, W, betas[c], tau)
        maps = [fm[b, :, :, c] for b in range(B)]
        logpxT = ref_log_likelihoods(maps, T)
        logpx = ref_log_px(logpxT, priors)
        val = 0.0
        for b in range(B):
            if pos[b, c]:
                mi, mj = ref_center(maps[b], center)
                k = mi * W + mj
            else:
                k = HW
            lp = logpxT[k][b]
            val += priors[k] * math.exp(lp) * (lp - logpx[b])
        out[c] = val
    return out


def ref_authors_gradient(
    fm,
    positives,
    beta=4.0,
    center="centroid",
    epoch=1.0,
    positive_weight=1.0,
    negative_weight=1.0,
    check_conditioning=True,
):
    fm = np.asarray(fm, dtype=np.float64)
    B, H, W, C = fm.shape
    pos = np.asarray(positives).astype(bool)
    a_t = 0.5
    K = 10.0 * epoch
    w_pos = per_filter(positive_weight, C)
    w_neg = per_filter(negative_weight, C)
    m = ref_mask(fm, beta, center, lower=-1.0)  # unclipped mask in [-1, 1]
    n = H * W

    s = np.zeros((B, C))
    s2 = np.zeros((B, C))
    xbar = np.zeros((B, C))
    for b in range(B):
        for c in range(C):
            acc = acc2 = accx = 0.0
            for i in range(H):
                for j in range(W):
                    x = fm[b, i, j, c]
                    acc += x * m[b, i, j, c]
                    acc2 += x * m[B - 1 - b, i, j, C - 1 - c]
                    accx += x
            s[b, c] = acc / n
            s2[b, c] = acc2 / n
            xbar[b, c] = accx / n

    G = np.zeros_like(fm)
    for c in range(C):
        e_plus = 0.0
        e_minus = 0.0
        for b in range(B):
            e_plus += math.exp(s2[b, c] / a_t)
            e_minus += math.exp(-xbar[b, c] / a_t)
        A_plus = a_t * math.log(e_plus / B)
        A_minus = a_t * math.log(e_minus / B)

        g_plus = {}
        g_minus = {}
        for b in range(B):
            if pos[b, c]:
                g_plus[b] = math.exp(s[b, c] / a_t) * (s[b, c] - A_plus + a_t)
            else:
                g_minus[b] = math.exp(-xbar[b, c] / a_t) * (
                    -xbar[b, c] - A_minus + a_t
                )

        for group, sign, w in (
            (g_plus, -1.0, w_pos[c]),
            (g_minus, 1.0, w_neg[c]),
        ):
            if not group:
                continue
            mean_g = sum(group.values()) / len(group)
            if check_conditioning:
                mean_abs = sum(abs(v) for v in group.values()) / len(group)
                assert abs(mean_g) > 0.05 * mean_abs, (
                    "ill-conditioned test data (mean g ~ 0); change the seed"
                )
            for b, g in group.items():
                gh = g / (mean_g * K)
                for i in range(H):
                    for j in range(W):
                        if sign < 0:
                            G[b, i, j, c] = -1e-5 * w * gh * m[b, i, j, c]
                        else:
                            G[b, i, j, c] = 1e-5 * w * gh
    return G


# --------------------------------------------------------------------------
# 1. part_templates
# --------------------------------------------------------------------------


# (The project's conftest clears the Keras session after every test, ~0.2 s
# each, so cheap cases are looped inside one test instead of parametrized.)


def test_part_templates_default_matches_reference():
    for H, W in SIZES:
        got = to_np(keras_interp.part_templates(H, W))
        assert got.shape == (H * W + 1, H, W)
        np.testing.assert_allclose(
            got, ref_templates(H, W), rtol=RTOL, atol=ATOL, err_msg=f"{H}x{W}"
        )


def test_part_templates_explicit_beta_tau():
    for H, W, beta, tau in [
        (3, 3, 2.5, 0.3),
        (3, 5, 1.0, 1.0),
        (5, 2, 6.0, 0.05),
        (7, 7, 4.0, 2.0),
    ]:
        got = to_np(keras_interp.part_templates(H, W, beta=beta, tau=tau))
        assert got.shape == (H * W + 1, H, W)
        np.testing.assert_allclose(
            got,
            ref_templates(H, W, beta, tau),
            rtol=RTOL,
            atol=ATOL,
            err_msg=f"{H}x{W} beta={beta} tau={tau}",
        )


def test_part_templates_hand_values():
    # 2x2, beta=4, tau=0.5/4=0.125.
    # Centre (0,0): cell (0,1) -> 1 - 4*(1/2) = -1.
    got = to_np(keras_interp.part_templates(2, 2))
    t = 0.125
    np.testing.assert_allclose(
        got[0], [[t, -t], [-t, -t]], rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        got[3], [[-t, -t], [-t, t]], rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        got[4], [[-t, -t], [-t, -t]], rtol=RTOL, atol=ATOL
    )
    # 3x5, beta=1, tau=1: centre index k=7 -> (1, 2).
    # Cell (0, 0): 1 - (1/3 + 2/5).
    got = to_np(keras_interp.part_templates(3, 5, beta=1.0, tau=1.0))
    assert got[7, 1, 2] == pytest.approx(1.0, rel=RTOL)
    assert got[7, 0, 0] == pytest.approx(
        1.0 - (1.0 / 3.0 + 2.0 / 5.0), rel=RTOL
    )
    assert got[7, 2, 4] == pytest.approx(
        1.0 - (1.0 / 3.0 + 2.0 / 5.0), rel=RTOL
    )
    # row-major order with W = 5: k = 5 is centre (1, 0)
    assert got[5, 1, 0] == pytest.approx(1.0, rel=RTOL)
    assert got[5, 0, 1] == pytest.approx(
        1.0 - (1.0 / 3.0 + 1.0 / 5.0), rel=RTOL
    )
    # 1x1 default: tau = 0.5, positive = +0.5, negative = -0.5
    got = to_np(keras_interp.part_templates(1, 1))
    np.testing.assert_allclose(
        got.reshape(-1), [0.5, -0.5], rtol=RTOL, atol=ATOL
    )


def test_part_templates_per_filter_beta():
    for H, W, betas, tau in [
        (3, 3, [4.0, 2.0, 7.5], None),
        (3, 5, [1.0, 3.0], 0.2),
        (2, 2, [4.0], None),
    ]:
        got = to_np(
            keras_interp.part_templates(
                H, W, beta=np.array(betas, dtype=np.float32), tau=tau
            )
        )
        assert got.shape == (len(betas), H * W + 1, H, W)
        for c, b in enumerate(betas):
            np.testing.assert_allclose(
                got[c],
                ref_templates(H, W, b, tau),
                rtol=RTOL,
                atol=ATOL,
                err_msg=f"{H}x{W} filter {c}",
            )


# --------------------------------------------------------------------------
# 2. mutual_information (Eq. 1)
# --------------------------------------------------------------------------

MI_CASES = [
    # (H, W, B, C, seed, scale, kind)
    (1, 1, 3, 2, 0, 3.0, "uniform"),
    (2, 2, 4, 3, 1, 3.0, "uniform"),
    (3, 3, 5, 2, 2, 6.0, "relu"),
    (3, 3, 6, 4, 3, 3.0, "exponential"),
    (3, 5, 4, 2, 4, 4.0, "uniform"),
    (5, 2, 3, 3, 5, 4.0, "relu"),
    (7, 7, 3, 2, 6, 10.0, "uniform"),
    (14, 14, 2, 1, 7, 20.0, "uniform"),
    (14, 14, 3, 1, 8, 10.0, "relu"),
]


@pytest.mark.parametrize("H,W,B,C,seed,scale,kind", MI_CASES)
def test_mutual_information_matches_reference(H, W, B, C, seed, scale, kind):
    fm = make_maps(seed, B, H, W, C, scale, kind)
    ref = ref_mutual_information(fm)
    # the reference itself: direct and log-space forms must agree
    np.testing.assert_allclose(
        ref, ref_mutual_information(fm, log_space=True), rtol=1e-10, atol=1e-12
    )
    assert np.all(ref > 1e-4), ref  # make sure the comparison is not vacuous
    got = to_np(keras_interp.mutual_information(fm, **PAPER))
    assert got.shape == (C,)
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "H,W,B,C,seed,alpha,tau",
    [
        (3, 3, 4, 2, 10, 0.5, None),
        (3, 3, 4, 2, 11, None, 0.2),
        (3, 5, 5, 3, 12, 0.3, 0.1),
        (2, 2, 3, 1, 13, 0.95, 1.0),
        (5, 2, 4, 2, 14, 0.1, 0.25),
    ],
)
def test_mutual_information_explicit_alpha_tau(H, W, B, C, seed, alpha, tau):
    fm = make_maps(seed, B, H, W, C, 3.0)
    kwargs = {}
    if alpha is not None:
        kwargs["alpha"] = alpha
    if tau is not None:
        kwargs["tau"] = tau
    ref = ref_mutual_information(fm, tau=tau, alpha=alpha)
    default = ref_mutual_information(fm)
    # the explicit arguments must matter for this data
    assert np.max(np.abs(ref - default)) > 1e-3
    got = to_np(keras_interp.mutual_information(fm, **kwargs, **PAPER))
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "H,W,B,betas,seed",
    [
        (3, 3, 4, [4.0, 1.0, 8.0], 20),
        (3, 5, 5, [1.0, 8.0], 21),
        (7, 7, 3, [0.5, 4.0], 22),
    ],
)
def test_mutual_information_per_filter_beta(H, W, B, betas, seed):
    C = len(betas)
    # identical maps for every filter, so only beta distinguishes the outputs
    one = make_maps(seed, B, H, W, 1, 6.0)
    fm = np.repeat(one, C, axis=3)
    ref = ref_mutual_information(fm, beta=betas)
    assert np.ptp(ref) > 1e-4
    got = to_np(
        keras_interp.mutual_information(
            fm, beta=np.array(betas, dtype=np.float32), **PAPER
        )
    )
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)


def test_mutual_information_batch_of_one_is_zero():
    for H, W, C, seed in [
        (1, 1, 1, 30),
        (3, 3, 2, 31),
        (3, 5, 3, 32),
        (14, 14, 2, 33),
    ]:
        fm = make_maps(seed, 1, H, W, C, 5.0)
        got = to_np(keras_interp.mutual_information(fm, **PAPER))
        assert got.shape == (C,)
        np.testing.assert_allclose(
            got, np.zeros(C), rtol=0, atol=ATOL, err_msg=f"{H}x{W}"
        )


@pytest.mark.parametrize(
    "H,W,B,C,seed",
    [
        (1, 1, 3, 2, 40),
        (2, 2, 4, 2, 41),
        (3, 3, 5, 2, 42),
        (3, 5, 4, 3, 43),
        (7, 7, 3, 1, 44),
    ],
)
def test_mutual_information_large_activations(H, W, B, C, seed):
    fm = (make_maps(seed, B, H, W, C, 1.0) * 1e4).astype(np.float32)
    fm[0, 0, 0, 0] = 1e4  # at least one activation at exactly 1e4
    ref = ref_mutual_information(fm, log_space=True)
    assert np.all(np.isfinite(ref))
    got = to_np(keras_interp.mutual_information(fm, **PAPER))
    assert np.all(np.isfinite(got)), got
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("seeds", [range(50, 56), range(56, 62)])
def test_mutual_information_nonnegative_and_bounded(seeds):
    for seed in seeds:
        rng = np.random.default_rng(seed)
        H, W = [(2, 2), (3, 3), (3, 5), (5, 2), (1, 1), (7, 7)][seed % 6]
        B = int(rng.integers(2, 7))
        C = int(rng.integers(1, 5))
        fm = make_maps(seed, B, H, W, C, float(rng.uniform(0.5, 20.0)), "relu")
        got = to_np(keras_interp.mutual_information(fm, **PAPER))
        assert np.all(got >= -ATOL), (seed, got)
        # sum_b p(x_b) = 1, so MI <= min(H(X), H(T)) <= min(log B, log(HW + 1))
        bound = min(math.log(B), math.log(H * W + 1))
        assert np.all(got <= bound + ATOL), (seed, got, bound)
        np.testing.assert_allclose(
            got,
            ref_mutual_information(fm, log_space=True),
            rtol=RTOL,
            atol=ATOL,
            err_msg=f"seed {seed}",
        )


# --------------------------------------------------------------------------
# 3. part_mask
# --------------------------------------------------------------------------

MASK_CASES = [
    # (H, W, B, C, seed)
    (1, 1, 2, 2, 60),
    (2, 2, 3, 1, 61),
    (3, 3, 4, 3, 62),
    (7, 7, 2, 4, 63),
    (14, 14, 2, 2, 64),
    (3, 5, 5, 2, 65),
    (5, 2, 6, 3, 66),
]


@pytest.mark.parametrize("H,W,B,C,seed", MASK_CASES)
def test_part_mask_matches_reference(H, W, B, C, seed):
    fm = make_maps(seed, B, H, W, C, 3.0, "exponential")
    ref_a = ref_mask(fm, 4.0, "argmax")
    ref_c = ref_mask(fm, 4.0, "centroid")
    for center, ref in (("argmax", ref_a), ("centroid", ref_c)):
        got = to_np(keras_interp.part_mask(fm, center=center))
        assert got.shape == fm.shape
        assert np.all(got >= 0.0) and np.all(got <= 1.0 + 1e-6)
        np.testing.assert_allclose(
            got, ref, rtol=RTOL, atol=ATOL, err_msg=center
        )


@pytest.mark.parametrize(
    "H,W,betas,seed",
    [
        (7, 7, [4.0, 1.0, 2.5], 70),
        (3, 5, [0.5, 6.0], 71),
        (14, 14, [3.0, 1.5], 72),
    ],
)
def test_part_mask_vector_and_scalar_beta(H, W, betas, seed):
    C = len(betas)
    fm = make_maps(seed, 3, H, W, C, 2.0, "uniform")
    for center in ("argmax", "centroid"):
        got = to_np(
            keras_interp.part_mask(
                fm, beta=np.array(betas, dtype=np.float32), center=center
            )
        )
        np.testing.assert_allclose(
            got,
            ref_mask(fm, betas, center),
            rtol=RTOL,
            atol=ATOL,
            err_msg=center,
        )
        got = to_np(keras_interp.part_mask(fm, beta=1.25, center=center))
        np.testing.assert_allclose(
            got,
            ref_mask(fm, 1.25, center),
            rtol=RTOL,
            atol=ATOL,
            err_msg=center,
        )


def test_part_mask_argmax_ties_and_zero_maps():
    H, W = 3, 5
    fm = np.zeros((3, H, W, 2), dtype=np.float32)
    # b=0,c=0: tie between (1,3) and (2,0); first in row-major order is (1,3)
    fm[0, 1, 3, 0] = 2.0
    fm[0, 2, 0, 0] = 2.0
    fm[0, 0, 0, 0] = 1.0
    # b=0,c=1: tie on the same row (2,1) and (2,4) -> (2,1)
    fm[0, 2, 4, 1] = 5.0
    fm[0, 2, 1, 1] = 5.0
    # b=1: all-zero maps -> first cell (0, 0)
    # b=2: integer-valued random maps with many ties
    rng = np.random.default_rng(80)
    fm[2] = rng.integers(0, 3, size=(H, W, 2)).astype(np.float32)
    ref = ref_mask(fm, 4.0, "argmax")
    assert (
        ref[0, 1, 3, 0] == 1.0
        and ref[0, 2, 1, 1] == 1.0
        and ref[1, 0, 0, 0] == 1.0
    )
    got = to_np(keras_interp.part_mask(fm, center="argmax"))
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)


def test_part_mask_centroid_round_half_up_and_zero_map():
    H, W = 5, 6
    fm = np.zeros((4, H, W, 1), dtype=np.float32)
    # centroid (0, 0.5) -> (0, 1)   [round-half-even would give (0, 0)]
    fm[0, 0, 0, 0] = 3.0
    fm[0, 0, 1, 0] = 3.0
    # centroid (1.5, 2.5) -> (2, 3)   [round-half-even would give (2, 2)]
    fm[1, 1, 2, 0] = 1.0
    fm[1, 2, 3, 0] = 1.0
    # all-zero map -> (0, 0)
    # mass 0.75 at (4, 5) and 0.25 at (0, 0):
    fm[3, 4, 5, 0] = 0.75
    fm[3, 0, 0, 0] = 0.25  # -> (3.0, 3.75) -> (3, 4)
    expected_centres = [(0, 1), (2, 3), (0, 0), (3, 4)]
    for b, mu in enumerate(expected_centres):
        assert ref_center(fm[b, :, :, 0].astype(np.float64), "centroid") == mu
    got = to_np(keras_interp.part_mask(fm, center="centroid"))
    ref = ref_mask(fm, 4.0, "centroid")
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
    for b, (mi, mj) in enumerate(expected_centres):
        assert got[b, mi, mj, 0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("center", ["argmax", "centroid"])
def test_part_mask_has_no_gradient(center):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("gradient check written for the TensorFlow backend")
    import tensorflow as tf

    fm = tf.constant(make_maps(90, 3, 7, 7, 2, 3.0))
    with tf.GradientTape() as tape:
        tape.watch(fm)
        total = tf.reduce_sum(keras_interp.part_mask(fm, center=center))
    grad = tape.gradient(total, fm)
    assert float(total.numpy()) > 0.0
    assert grad is None or np.all(grad.numpy() == 0.0)


# --------------------------------------------------------------------------
# 4. category_mutual_information
# --------------------------------------------------------------------------

CMI_CASES = [
    # (H, W, B, C, seed, mode, center, scale)
    (1, 1, 3, 2, 100, "mixed", "argmax", 3.0),
    (2, 2, 4, 3, 101, "mixed", "argmax", 3.0),
    (3, 3, 5, 2, 102, "mixed", "centroid", 6.0),
    (3, 3, 4, 2, 103, "all", "argmax", 6.0),
    (3, 3, 4, 2, 104, "none", "argmax", 6.0),
    (3, 5, 6, 3, 105, "one", "centroid", 4.0),
    (5, 2, 3, 4, 106, "mixed", "argmax", 4.0),
    (7, 7, 3, 2, 107, "mixed", "centroid", 60.0),
    (14, 14, 2, 1, 108, "mixed", "argmax", 60.0),
]


def _assert_cmi_close(got, ref):
    # Each term carries a prior 1/(HW+1), so values are often O(1e-4); tighten
    # the absolute tolerance accordingly so the comparison is not vacuous.
    atol = min(ATOL, 1e-3 * float(np.max(np.abs(ref))))
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=atol)


@pytest.mark.parametrize("H,W,B,C,seed,mode,center,scale", CMI_CASES)
def test_category_mutual_information_matches_reference(
    H, W, B, C, seed, mode, center, scale
):
    fm = make_maps(seed, B, H, W, C, scale)
    pos = make_positives(seed, B, C, mode)
    ref = ref_category_mi(fm, pos, center=center)
    assert np.max(np.abs(ref)) > 1e-5
    kwargs = {"center": center}
    got = to_np(
        keras_interp.category_mutual_information(fm, pos, **kwargs, **PAPER)
    )
    assert got.shape == (C,)
    _assert_cmi_close(got, ref)
    # 0/1 float positives must behave like booleans
    got01 = to_np(
        keras_interp.category_mutual_information(
            fm, pos.astype(np.float32), **kwargs, **PAPER
        )
    )
    _assert_cmi_close(got01, ref)


@pytest.mark.parametrize(
    "H,W,B,seed,beta,tau,alpha,center",
    [
        (3, 3, 4, 110, [4.0, 1.5], 0.2, 0.5, "argmax"),
        (3, 5, 5, 111, 2.0, None, 0.25, "centroid"),
        (5, 2, 4, 112, [6.0, 3.0], 0.3, None, "centroid"),
    ],
)
def test_category_mutual_information_explicit_args(
    H, W, B, seed, beta, tau, alpha, center
):
    C = 2
    fm = make_maps(seed, B, H, W, C, 4.0)
    pos = make_positives(seed, B, C, "mixed")
    ref = ref_category_mi(
        fm, pos, beta=beta, tau=tau, alpha=alpha, center=center
    )
    default = ref_category_mi(fm, pos, center=center)
    assert np.max(np.abs(ref - default)) > 1e-5
    kwargs = {"center": center}
    if tau is not None:
        kwargs["tau"] = tau
    if alpha is not None:
        kwargs["alpha"] = alpha
    beta_arg = (
        np.array(beta, dtype=np.float32) if isinstance(beta, list) else beta
    )
    got = to_np(
        keras_interp.category_mutual_information(
            fm, pos, beta=beta_arg, **kwargs, **PAPER
        )
    )
    _assert_cmi_close(got, ref)


def test_category_mutual_information_depends_on_positives():
    fm = make_maps(120, 4, 3, 3, 2, 6.0)
    pos_a = make_positives(120, 4, 2, "all")
    pos_b = make_positives(120, 4, 2, "none")
    args = {"center": "argmax", **PAPER}
    got_a = to_np(keras_interp.category_mutual_information(fm, pos_a, **args))
    got_b = to_np(keras_interp.category_mutual_information(fm, pos_b, **args))
    ref_a = ref_category_mi(fm, pos_a, center="argmax")
    ref_b = ref_category_mi(fm, pos_b, center="argmax")
    assert np.max(np.abs(ref_a - ref_b)) > 1e-4
    _assert_cmi_close(got_a, ref_a)
    _assert_cmi_close(got_b, ref_b)


# --------------------------------------------------------------------------
# 5. authors_filter_gradient (MatConvNet surrogate)
# --------------------------------------------------------------------------

GRAD_CASES = [
    # (H, W, B, C, seed, mode, epoch, center, beta)
    (3, 3, 4, 2, 200, "mixed", 1.0, "centroid", 4.0),
    (7, 7, 6, 3, 201, "mixed", 1.0, "centroid", 4.0),
    (3, 5, 5, 2, 202, "all", 1.0, "centroid", 4.0),
    (5, 2, 4, 3, 203, "one", 1.0, "centroid", 4.0),
    (14, 14, 3, 2, 204, "mixed", 3.0, "centroid", 4.0),
    (2, 2, 3, 1, 205, "mixed", 3.0, "argmax", 2.0),
    (1, 1, 4, 2, 206, "mixed", 1.0, "centroid", 4.0),
    (7, 7, 5, 4, 207, "none", 2.0, "argmax", 4.0),
]


def _assert_grad_close(got, ref):
    assert got.shape == ref.shape
    scale = float(np.max(np.abs(ref)))
    assert scale > 0.0
    # values are O(1e-6); use an absolute tolerance relative to their size
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL * scale)


@pytest.mark.parametrize("H,W,B,C,seed,mode,epoch,center,beta", GRAD_CASES)
def test_authors_filter_gradient_matches_reference(
    H, W, B, C, seed, mode, epoch, center, beta
):
    fm = make_maps(seed, B, H, W, C, 2.0, "uniform")
    pos = make_positives(seed, B, C, mode)
    ref = ref_authors_gradient(fm, pos, beta=beta, center=center, epoch=epoch)
    kwargs = {"epoch": epoch}
    if center != "centroid":
        kwargs["center"] = center
    if beta != 4.0:
        kwargs["beta"] = beta
    got = to_np(
        keras_interp.authors_filter_gradient(fm, pos, **kwargs, **PAPER)
    )
    _assert_grad_close(got, ref)


def test_authors_filter_gradient_weights_vectors_and_float_positives():
    H, W, B, C = 3, 5, 5, 3
    fm = make_maps(210, B, H, W, C, 2.0, "uniform")
    pos = make_positives(210, B, C, "mixed")
    wp = np.array([1.0, 0.5, 2.0], dtype=np.float32)
    wn = np.array([0.25, 3.0, 1.0], dtype=np.float32)
    ref = ref_authors_gradient(fm, pos, positive_weight=wp, negative_weight=wn)
    got = to_np(
        keras_interp.authors_filter_gradient(
            fm,
            pos.astype(np.float32),
            positive_weight=wp,
            negative_weight=wn,
            **PAPER,
        )
    )
    _assert_grad_close(got, ref)
    # scalar weights
    ref = ref_authors_gradient(
        fm, pos, positive_weight=0.7, negative_weight=1.9, epoch=2.0
    )
    got = to_np(
        keras_interp.authors_filter_gradient(
            fm,
            pos,
            positive_weight=0.7,
            negative_weight=1.9,
            epoch=2.0,
            **PAPER,
        )
    )
    _assert_grad_close(got, ref)


def test_authors_filter_gradient_single_positive_is_one_over_k():
    # With one positive image, gh+ = g+/(g+ * K) = 1/K, so G = -1e-5/K * m
    # there.
    H, W, B, C = 7, 7, 4, 2
    fm = make_maps(220, B, H, W, C, 2.0, "uniform")
    pos = make_positives(220, B, C, "one")
    epoch = 3.0
    got = to_np(
        keras_interp.authors_filter_gradient(fm, pos, epoch=epoch, **PAPER)
    )
    m = ref_mask(fm, 4.0, "centroid", lower=-1.0)
    for c in range(C):
        b = int(np.argmax(pos[:, c]))
        expected = -1e-5 / (10.0 * epoch) * m[b, :, :, c]
        np.testing.assert_allclose(
            got[b, :, :, c], expected, rtol=RTOL, atol=1e-12
        )
    _assert_grad_close(got, ref_authors_gradient(fm, pos, epoch=epoch))


def test_authors_gradient_negatives_uniform_and_reversed_mask_matters():
    # Negative images get the same value at every position; positive images get
    # a multiple of their own unclipped mask (including negative mask values).
    H, W, B, C = 7, 7, 5, 2
    fm = make_maps(230, B, H, W, C, 2.0, "uniform")
    pos = make_positives(230, B, C, "mixed")
    got = to_np(keras_interp.authors_filter_gradient(fm, pos, **PAPER))
    m = ref_mask(fm, 4.0, "centroid", lower=-1.0)
    for b in range(B):
        for c in range(C):
            g = got[b, :, :, c]
            if pos[b, c]:
                k = g[np.unravel_index(np.argmax(m[b, :, :, c]), (H, W))]
                np.testing.assert_allclose(
                    g, k * m[b, :, :, c], rtol=1e-4, atol=1e-12
                )
                assert np.any(m[b, :, :, c] < 0)  # mask really unclipped here
            else:
                np.testing.assert_allclose(
                    g, np.full((H, W), g[0, 0]), rtol=1e-5, atol=1e-14
                )
    _assert_grad_close(got, ref_authors_gradient(fm, pos))


# --------------------------------------------------------------------------
# 6. The scale-free default: Eq. 1 on x_hat = x * H*W / m_f
# --------------------------------------------------------------------------


def ref_normalized_maps(fm):
    """x_hat = x * H*W / m_f, m_f = mean over images of each map's maximum.

    A filter whose maps are all zero (m_f = 0) maps to zeros.
    """
    fm = np.asarray(fm, dtype=np.float64)
    B, H, W, C = fm.shape
    out = np.zeros_like(fm)
    for c in range(C):
        m = 0.0
        for b in range(B):
            m += max(float(v) for v in fm[b, :, :, c].ravel())
        m /= B
        if m <= 0.0:
            continue
        for b in range(B):
            for i in range(H):
                for j in range(W):
                    out[b, i, j, c] = fm[b, i, j, c] * (H * W) / m
    return out


def make_peaked_maps(seed, B, H, W, C, scale):
    """Maps with one clear, unique maximum each (the normalisation is then
    smooth around them, so central differences see its exact derivative)."""
    rng = np.random.default_rng(seed)
    fm = rng.uniform(0.0, 0.5 * scale, size=(B, H, W, C))
    for b in range(B):
        for c in range(C):
            i, j = rng.integers(H), rng.integers(W)
            fm[b, i, j, c] = scale * rng.uniform(1.0, 2.0)
    return fm.astype(np.float32)


NORMALIZED_CASES = [
    # (H, W, B, C, seed, scale)
    (3, 3, 4, 2, 300, 0.05),
    (3, 5, 5, 3, 301, 1.0),
    (7, 7, 3, 2, 302, 40.0),
    (5, 2, 6, 2, 303, 1e3),
    (1, 1, 4, 2, 304, 2.0),
]


@pytest.mark.parametrize("H,W,B,C,seed,scale", NORMALIZED_CASES)
def test_default_mutual_information_is_eq1_on_normalized_maps(
    H, W, B, C, seed, scale
):
    fm = make_maps(seed, B, H, W, C, scale)
    ref = ref_mutual_information(ref_normalized_maps(fm), log_space=True)
    if H * W > 1:
        assert np.all(ref > 1e-4), ref  # not vacuous
    got = to_np(keras_interp.mutual_information(fm))
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
    # The explicit default is the same.
    explicit = keras_interp.mutual_information(fm, normalization="mean_max")
    np.testing.assert_allclose(to_np(explicit), got, rtol=1e-6)
    # Other arguments apply to x_hat as the paper defines them.
    ref = ref_mutual_information(
        ref_normalized_maps(fm), beta=2.0, tau=0.1, alpha=0.4, log_space=True
    )
    got = to_np(
        keras_interp.mutual_information(fm, beta=2.0, tau=0.1, alpha=0.4)
    )
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("H,W,B,C,seed,scale", NORMALIZED_CASES[:4])
def test_default_category_mutual_information_on_normalized_maps(
    H, W, B, C, seed, scale
):
    fm = make_maps(seed, B, H, W, C, scale)
    pos = make_positives(seed, B, C, "mixed")
    for center in ("argmax", "centroid"):
        ref = ref_category_mi(ref_normalized_maps(fm), pos, center=center)
        got = to_np(
            keras_interp.category_mutual_information(fm, pos, center=center)
        )
        _assert_cmi_close(got, ref)


def test_default_loss_is_the_same_for_every_scale():
    # The paper-literal MI of the same maps swings by orders of magnitude
    # with the scale (the reason for the default); the default does not.
    fm = make_maps(310, 6, 4, 4, 3, 1.0)
    paper = [ref_mutual_information(fm * c, log_space=True) for c in (1, 30)]
    assert np.max(np.abs(np.log(paper[0] / paper[1]))) > 1.0
    ref = ref_mutual_information(ref_normalized_maps(fm), log_space=True)
    for c in (1e-3, 0.5, 30.0, 1e4):
        got = to_np(keras_interp.mutual_information(fm * np.float32(c)))
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)


def test_dead_filter_has_zero_normalized_loss():
    fm = make_maps(311, 4, 3, 3, 3, 2.0)
    fm[..., 1] = 0.0  # filter 1 never fires on this batch
    got = to_np(keras_interp.mutual_information(fm))
    assert np.all(np.isfinite(got))
    assert got[1] == 0.0
    ref = ref_mutual_information(ref_normalized_maps(fm), log_space=True)
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)


def ref_chain_by_differences(fm, grad_hat, eps=1e-4):
    """sum_j G_j d x_hat_j / d x_k for every k, by central differences of
    `ref_normalized_maps` in float64 (G held fixed)."""
    fm = np.asarray(fm, dtype=np.float64)
    out = np.zeros_like(fm)
    for k in np.ndindex(*fm.shape):
        step = eps * max(abs(fm[k]), 1e-3)
        up, down = fm.copy(), fm.copy()
        up[k] += step
        down[k] -= step
        diff = ref_normalized_maps(up) - ref_normalized_maps(down)
        out[k] = float(np.sum(grad_hat * diff)) / (2 * step)
    return out


@pytest.mark.parametrize(
    "H,W,B,C,seed,scale,mode",
    [
        (3, 3, 4, 2, 320, 1.0, "mixed"),
        (3, 4, 5, 2, 321, 0.02, "all"),
        (4, 3, 4, 3, 322, 300.0, "mixed"),
    ],
)
def test_default_authors_gradient_is_chained_through_the_normalization(
    H, W, B, C, seed, scale, mode
):
    # The surrogate is taken as dL/dx_hat on the normalized maps and carried
    # to dL/dx by the chain rule through x_hat = x * H*W / m_f, m_f included.
    fm = make_peaked_maps(seed, B, H, W, C, scale)
    pos = make_positives(seed, B, C, mode)
    grad_hat = ref_authors_gradient(
        ref_normalized_maps(fm), pos, check_conditioning=False
    )
    ref = ref_chain_by_differences(fm, grad_hat)
    got = to_np(keras_interp.authors_filter_gradient(fm, pos))
    scale_ref = float(np.max(np.abs(ref)))
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4 * scale_ref)
    # It cannot change a filter's overall scale: sum_k x_k dL/dx_k = 0.
    along = np.sum(got * fm.astype(np.float64), axis=(0, 1, 2))
    size = np.sum(np.abs(got * fm.astype(np.float64)), axis=(0, 1, 2))
    assert np.all(np.abs(along) <= 1e-5 * size), (along, size)
