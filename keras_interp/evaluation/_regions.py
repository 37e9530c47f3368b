"""The filter regions of part interpretability, and their IoU with parts.

Paper Section 5.2.1 (after Network Dissection, Bau et al., CVPR 2017):
every map cell above the filter's threshold gets a round receptive field,
a disc of radius `radius` around its RF centre in the image; the region
`S_f^I` is the union of those discs, and it is compared with each part's
ground-truth mask by IoU. This module computes the IoUs exactly without
ever building a full-resolution region (`Regions`).

Pixels use the convention of `receptive_field`: pixel `k` covers `[k, k+1)`,
and a pixel belongs to a disc when its centre does (boundary included).
"""

import math
from typing import Iterator

import numpy as np

from keras_interp.evaluation.receptive_field import PIXEL_CENTER

RADII = ("cell", "receptive_field")
# Absorbs float rounding in `q * n` and in the disc test at its boundary.
EPSILON = 1e-9
# Upper bound on the float32 elements of one sliding-window block.
_CHUNK_ELEMENTS = 1 << 23


def radii(rf, radius) -> tuple:
    if radius == "cell":
        return tuple(s / math.sqrt(2.0) for s in rf.stride)
    if radius == "receptive_field":
        return tuple(r / 2.0 for r in rf.size)
    if (
        isinstance(radius, (int, float))
        and not isinstance(radius, bool)
        and radius > 0
        and math.isfinite(radius)
    ):
        return (float(radius), float(radius))
    raise ValueError(
        f"`radius` must be one of {RADII} or a positive number of pixels. "
        f"Received: radius={radius!r}."
    )


class Regions:
    """Union of discs at the active cells, counted per block of pixels.

    Pixel row `r = q sy + u` (block `q`, phase `u`) is within the disc of
    cell row `i = q + di` iff its offset `u + 1/2 - cy - di sy` is; so the
    cells that can cover a pixel depend only on its phase `(u, v)`. Phases
    with the same neighbour pattern form a group `g`, and a pixel is in the
    region iff `O_g[q, p] = OR of the active cells in pattern g around
    (q, p)` is set. The IoU then needs only per-(group, block) pixel counts,
    never the full-resolution region.
    """

    def __init__(self, rf, image_shape, map_shape, radius):
        (sy, sx), (cy, cx) = rf.stride, rf.offset
        ry, rx = radii(rf, radius)
        height, width = image_shape
        self.map_shape = tuple(map_shape)
        self.blocks = (-(-height // sy), -(-width // sx))
        offsets = []
        for s, c, rad in ((sy, cy, ry), (sx, cx, rx)):
            low = math.ceil((PIXEL_CENTER - c - rad) / s)
            high = math.floor((s - PIXEL_CENTER - c + rad) / s)
            high = max(high, low)
            cells = np.arange(low, high + 1)
            phase = np.arange(s)
            delta = phase[:, None] + PIXEL_CENTER - c - cells[None, :] * s
            offsets.append((low, (delta / rad) ** 2))
        (self.di_min, dy2), (self.dj_min, dx2) = offsets
        inside = dy2[:, None, :, None] + dx2[None, :, None, :] <= 1 + EPSILON
        patterns = inside.reshape(sy * sx, -1)
        unique, group = np.unique(patterns, axis=0, return_inverse=True)
        group = group.reshape(sy, sx)
        keep = unique.any(axis=1)
        renumber = np.cumsum(keep) - 1
        group = np.where(keep[group], renumber[group], -1)
        self.kernels = (
            unique[keep]
            .reshape(-1, dy2.shape[1], dx2.shape[1])
            .astype("float32")
        )
        groups, (hq, wp) = len(self.kernels), self.blocks
        rows, cols = np.arange(height), np.arange(width)
        g = group[(rows % sy)[:, None], (cols % sx)[None, :]]
        flat = (g * hq + (rows // sy)[:, None]) * wp + (cols // sx)[None, :]
        self.pixel_index = np.where(g >= 0, flat, -1)
        self.size = groups * hq * wp
        self.pixels = np.bincount(
            self.pixel_index[self.pixel_index >= 0], minlength=self.size
        ).astype("float32")

    def covered(self, active: np.ndarray) -> Iterator[tuple]:
        """Yields `(start, stop, covered)` for chunks of filters.

        `covered` is `(B, stop - start, L)` float 0/1: whether each
        block-group cell lies in the filter's region. Chunks bound memory.
        """
        batch, h, w, filters = active.shape
        groups, kh, kw = self.kernels.shape
        hq, wp = self.blocks
        if groups == 0:
            yield 0, filters, np.zeros((batch, filters, 0), "float32")
            return
        i0, i1 = max(0, self.di_min), min(h, hq + self.di_min + kh - 1)
        j0, j1 = max(0, self.dj_min), min(w, wp + self.dj_min + kw - 1)
        per_filter = batch * hq * wp * max(kh * kw, groups)
        chunk = max(1, _CHUNK_ELEMENTS // per_filter)
        for start in range(0, filters, chunk):
            stop = min(filters, start + chunk)
            padded = np.zeros(
                (batch, stop - start, hq + kh - 1, wp + kw - 1), "float32"
            )
            if i1 > i0 and j1 > j0:
                part = active[:, i0:i1, j0:j1, start:stop]
                padded[
                    :,
                    :,
                    i0 - self.di_min : i1 - self.di_min,
                    j0 - self.dj_min : j1 - self.dj_min,
                ] = np.moveaxis(part, -1, 1)
            windows = np.lib.stride_tricks.sliding_window_view(
                padded, (kh, kw), axis=(2, 3)
            )
            hits = np.tensordot(windows, self.kernels, axes=([4, 5], [1, 2]))
            covered = np.moveaxis(hits > 0, -1, 2).astype("float32")
            yield start, stop, covered.reshape(batch, stop - start, -1)

    def part_counts(self, masks: np.ndarray, part_ids: np.ndarray) -> tuple:
        """Pixels of each part per block-group `(B, L, K)`, and areas."""
        batch = masks.shape[0]
        k = len(part_ids)
        part = np.full(masks.shape, -1, "int64")
        for position, part_id in enumerate(part_ids):
            part[masks == part_id] = position
        area = (
            np.stack(
                [(part == position).sum(axis=(1, 2)) for position in range(k)],
                axis=-1,
            ).astype("float32")
            if k
            else np.zeros((batch, 0), "float32")
        )
        index = np.broadcast_to(self.pixel_index, masks.shape)
        valid = (part >= 0) & (index >= 0)
        image = np.broadcast_to(np.arange(batch)[:, None, None], masks.shape)
        flat = (image[valid] * k + part[valid]) * self.size + index[valid]
        counts = np.bincount(flat, minlength=batch * k * self.size)
        counts = counts.reshape(batch, k, self.size).astype("float32")
        return np.moveaxis(counts, 1, 2), area


def ious(maps, masks, thresholds, regions, part_ids) -> tuple:
    """IoU `(B, F, K)` of each filter's region with each part, and presence."""
    counts, area = regions.part_counts(masks, part_ids)
    batch, filters = maps.shape[0], maps.shape[-1]
    inter = np.zeros((batch, filters, len(part_ids)), "float32")
    region = np.zeros((batch, filters), "float32")
    for start, stop, covered in regions.covered(maps > thresholds):
        inter[:, start:stop] = np.matmul(covered, counts)
        region[:, start:stop] = covered @ regions.pixels
    union = region[:, :, None] + area[:, None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1.0), 0.0)
    return iou, area > 0
