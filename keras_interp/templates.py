"""Part templates, part centres and the forward mask, in pure `keras.ops`.

Paper: Zhang, Wu, Zhu, "Interpretable Convolutional Neural Networks",
CVPR 2018, Section 3 ("Part templates"). Authors' code: `getMu.m`,
`getMask.m` (see `docs/method_notes.md`).

Conventions used throughout `keras_interp`:

* feature maps are channels-last, `[batch, height, width, filters]`;
* grid indices are 0-based, `i` is the row and `j` the column;
* distances are the paper's normalised L1 distance
  `d(i, j; mu) = |i - mu_i| / height + |j - mu_j| / width`, which for a square
  `n x n` map is the paper's `||[i, j] - mu||_1 / n`;
* `beta` is in these paper units (the authors' code uses coordinates in
  `[-1, 1]`; `beta_code ~= beta_paper * (n - 1) / (2 n)`).
"""

from typing import Any

import numpy as np
from keras import ops

# Paper, Section 5 "Implementation details": tau = 0.5 / n^2, beta = 4.
DEFAULT_BETA = 4.0
TAU_NUMERATOR = 0.5
# `getMu.m` floors the centroid denominator at this value.
CENTROID_EPSILON = 1e-9
CENTERS = ("argmax", "centroid")
# The one default of `center` across layers, builders, the training driver and
# its flags (docs/method_notes.md, item 1): the authors' centroid, the centre
# the study in experiments/RESULTS.md trained with.
DEFAULT_CENTER = "centroid"


def _check_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"`{name}` must be a positive integer (the static size of the "
            f"feature map). Received: {name}={value!r}. Build the layer on an "
            "input with known spatial dimensions."
        )
    if value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value}."
        )
    return int(value)


def check_center(center: str) -> str:
    """Validates the `center` argument and returns it."""
    if center not in CENTERS:
        raise ValueError(
            f"`center` must be one of {CENTERS}: 'argmax' (the paper) or "
            f"'centroid' (the authors' code). Received: center={center!r}."
        )
    return center


def check_beta(beta: Any) -> Any:
    """Validates a fixed `beta` (positive scalar or 1-D per-filter vector).

    Tensors and variables (e.g. a learned beta) are passed through unchecked
    so that the check never forces a value out of a compiled graph.
    """
    if isinstance(beta, (bool, str)) or beta is None:
        raise ValueError(
            "`beta` must be a positive number or a 1-D vector with one value "
            f"per filter. Received: beta={beta!r}."
        )
    if isinstance(beta, (int, float, np.integer, np.floating, list, tuple)) or (
        isinstance(beta, np.ndarray)
    ):
        array = np.asarray(beta, dtype="float64")
        if array.ndim > 1:
            raise ValueError(
                "`beta` must be a scalar or a 1-D vector with one value per "
                f"filter. Received an array of shape {array.shape}."
            )
        if not np.all(np.isfinite(array)) or np.any(array <= 0):
            raise ValueError(
                "`beta` must be positive and finite (the paper uses 4). "
                f"Received: beta={beta!r}."
            )
    return beta


def default_tau(height: int, width: int) -> float:
    """The paper's template scale tau = 0.5 / n^2, here 0.5 / (H * W)."""
    return TAU_NUMERATOR / (height * width)


def _grid_distances(height: int, width: int):
    """Distances from every centre to every cell, shape `[H*W, H, W]`.

    `out[k, i, j] = |i - k // W| / H + |j - k % W| / W`, with the centres `k`
    in row-major order.
    """
    rows = ops.arange(height, dtype="float32")
    cols = ops.arange(width, dtype="float32")
    row_d = ops.abs(rows[:, None] - rows[None, :]) / height  # [mu_i, i]
    col_d = ops.abs(cols[:, None] - cols[None, :]) / width  # [mu_j, j]
    dist = row_d[:, None, :, None] + col_d[None, :, None, :]
    return ops.reshape(dist, (height * width, height, width))


def part_templates(height: int, width: int, *, beta=DEFAULT_BETA, tau=None):
    """Builds the paper's `H*W + 1` part templates for an `H x W` map.

    The positive template for centre `mu` is

    ```
    t_ij = tau * max(1 - beta * (|i - mu_i| / H + |j - mu_j| / W), -1)
    ```

    (paper Section 3, "Part templates"; for a square `n x n` map the distance
    is `||[i, j] - mu||_1 / n`). The `H*W` positive templates come in row-major
    order of `mu` (index `mu_i * W + mu_j`); the negative template
    `t_ij = -tau` comes last.

    Args:
        height: int, the feature-map height `H`.
        width: int, the feature-map width `W`.
        beta: positive float, or a 1-D tensor of shape `[filters]` for one
            template set per filter. Defaults to the paper's 4.
        tau: positive float, the template scale. Defaults to the paper's
            `0.5 / (H * W)`.

    Returns:
        A float32 tensor of shape `[H*W + 1, H, W]`, or
        `[filters, H*W + 1, H, W]` when `beta` is a vector.

    Example:

    >>> t = keras_interp.part_templates(3, 3)
    >>> tuple(t.shape)
    (10, 3, 3)
    """
    height = _check_size("height", height)
    width = _check_size("width", width)
    check_beta(beta)
    tau = default_tau(height, width) if tau is None else tau
    if isinstance(tau, (int, float)) and not tau > 0:
        raise ValueError(
            f"`tau` must be positive (the paper uses 0.5 / (H * W)). "
            f"Received: tau={tau!r}."
        )
    dist = _grid_distances(height, width)  # [K-1, H, W]
    beta = ops.cast(beta, "float32")
    if len(beta.shape) == 1:
        dist = dist[None]  # [1, K-1, H, W]
        beta = beta[:, None, None, None]
    positive = tau * ops.maximum(1.0 - beta * dist, -1.0)
    negative = ops.full(positive.shape[:-3] + (1, height, width), -tau)
    return ops.concatenate([positive, ops.cast(negative, "float32")], axis=-3)


def part_centers(feature_maps, *, center: str = DEFAULT_CENTER):
    """Finds each feature map's inferred part location `mu`.

    * `"argmax"` (paper, Section 3): the strongest unit; ties go to the first
      unit in row-major order (an all-zero map gives `(0, 0)`). This is
      also the peak the evaluation reads (`evaluation.peaks`), whatever
      centre a model trained with.
    * `"centroid"` (authors' `getMu.m`): the activation-weighted centroid,
      rounded half up to the nearest cell,
      `mu_i = floor(sum_ij i x_ij / max(sum_ij x_ij, 1e-9) + 0.5)`; an all-zero
      map gives `(0, 0)`.

    Args:
        feature_maps: tensor of shape `[batch, height, width, filters]`.
        center: `"argmax"` or `"centroid"`. Defaults to `DEFAULT_CENTER`,
            the layers' default.

    Returns:
        An int32 tensor of shape `[batch, filters, 2]` holding `(row, col)`.
        It carries no gradient.
    """
    check_center(center)
    x = ops.stop_gradient(ops.cast(feature_maps, "float32"))
    _, height, width, _ = x.shape
    if center == "argmax":
        flat = ops.reshape(
            ops.transpose(x, (0, 3, 1, 2)), (-1, x.shape[-1], height * width)
        )
        index = ops.cast(ops.argmax(flat, axis=-1), "int32")
        return ops.stack([index // width, index % width], axis=-1)
    rows = ops.arange(height, dtype="float32")[None, :, None, None]
    cols = ops.arange(width, dtype="float32")[None, None, :, None]
    mass = ops.maximum(ops.sum(x, axis=(1, 2)), CENTROID_EPSILON)
    mu_i = ops.floor(ops.sum(x * rows, axis=(1, 2)) / mass + 0.5)
    mu_j = ops.floor(ops.sum(x * cols, axis=(1, 2)) / mass + 0.5)
    mu_i = ops.clip(mu_i, 0, height - 1)
    mu_j = ops.clip(mu_j, 0, width - 1)
    return ops.cast(ops.stack([mu_i, mu_j], axis=-1), "int32")


def center_distances(feature_maps, centers):
    """Normalised L1 distance of every cell to its map's centre.

    Args:
        feature_maps: tensor of shape `[batch, height, width, filters]` (only
            its static spatial shape is used).
        centers: int tensor `[batch, filters, 2]` from `part_centers`.

    Returns:
        float32 tensor `[batch, height, width, filters]` with
        `|i - mu_i| / H + |j - mu_j| / W`.
    """
    _, height, width, _ = feature_maps.shape
    centers = ops.cast(centers, "float32")
    rows = ops.arange(height, dtype="float32")[None, :, None, None]
    cols = ops.arange(width, dtype="float32")[None, None, :, None]
    mu_i = centers[:, None, None, :, 0]  # [B, 1, 1, C]
    mu_j = centers[:, None, None, :, 1]
    return ops.abs(rows - mu_i) / height + ops.abs(cols - mu_j) / width


def _per_filter(beta):
    """Reshapes a scalar or `[filters]` beta to broadcast over maps."""
    beta = ops.cast(beta, "float32")
    if len(beta.shape) == 1:
        return beta[None, None, None, :]
    return beta


def unit_templates(distances, *, beta=DEFAULT_BETA, floor: float = -1.0):
    """`max(1 - beta * d, floor)`: the template without tau (maximum 1).

    With `floor=-1` this is the authors' mask `m` of `getMask.m`; with
    `floor=0` it is the forward mask.
    """
    return ops.maximum(1.0 - _per_filter(beta) * distances, floor)


def part_mask(feature_maps, *, beta=DEFAULT_BETA, center: str = DEFAULT_CENTER):
    """The multiplicative forward mask that keeps activations near the peak.

    ```
    mask_ij = max(1 - beta * (|i - mu_i| / H + |j - mu_j| / W), 0)
    ```

    with `mu` from `part_centers`. This is the part template scaled to a
    maximum of 1 and clipped at 0, as in the authors' code (`getMask.m`
    followed by ReLU). The paper's literal `max(x * T_mu, 0)` would also
    multiply by `tau = 0.5 / n^2` and shrink the features about 400-fold at
    `n = 14`, a known bug of one port. The mask is a constant chosen online:
    no gradient flows through it (paper: "the mask operation supports
    gradient back-propagation").

    Args:
        feature_maps: non-negative tensor `[batch, height, width, filters]`.
        beta: positive float or `[filters]` tensor. Defaults to 4.
        center: `"argmax"` (paper) or `"centroid"` (authors' code).
            Defaults to `DEFAULT_CENTER`, the layers' default.

    Returns:
        float32 tensor with the shape of `feature_maps`, values in `[0, 1]`.

    Example:

    >>> x = np.zeros((1, 5, 5, 1), "float32"); x[0, 2, 2, 0] = 1.0
    >>> m = keras_interp.part_mask(x)
    >>> float(m[0, 2, 2, 0]), float(m[0, 0, 0, 0])
    (1.0, 0.0)
    """
    check_center(center)
    check_beta(beta)
    centers = part_centers(feature_maps, center=center)
    mask = unit_templates(
        center_distances(feature_maps, centers), beta=beta, floor=0.0
    )
    return ops.stop_gradient(mask)
