"""Top-activating images of a filter, with its map laid over the image."""

import os
from typing import Any
from typing import Sequence

import numpy as np

from keras_interp.evaluation.peaks import peaks_from_maps
from keras_interp.evaluation.receptive_field import PIXEL_CENTER
from keras_interp.evaluation.receptive_field import ReceptiveField
from keras_interp.evaluation.receptive_field import check_receptive_field

# Images: pixel values above this are taken as 0..255, else as 0..1.
_UNIT_RANGE_MAX = 1.0
_UINT8_MAX = 255.0
# Layout of the saved grids: panel edge (inches), panels per row, font
# sizes (points) and the size of the peak marker.
PANEL_INCHES = 2.5
MAX_COLUMNS = 4
TITLE_FONT_SIZE = 8
SUPTITLE_FONT_SIZE = 10
PEAK_MARKER_SIZE = 10


def _even_grid(image_shape, map_shape) -> ReceptiveField:
    """Cells tiling the image evenly, when no receptive field is given."""
    stride = tuple(s / m for s, m in zip(image_shape, map_shape))
    return ReceptiveField(stride, tuple(s / 2.0 for s in stride), (1, 1))


def upsample_map(
    feature_map: Any, image_shape: Sequence, receptive_field: Any = None
) -> np.ndarray:
    """Bilinear upsampling of one `(h, w)` map onto the image pixels.

    Cell `(i, j)` is placed at its receptive-field centre and values are
    interpolated linearly between centres (held constant beyond the outer
    centres), evaluated at pixel centres `k + 0.5`.

    Args:
        feature_map: `(h, w)` array.
        image_shape: `(H, W)` of the image.
        receptive_field: the layer's `ReceptiveField`; default: cells tile
            the image evenly.

    Returns:
        `(H, W)` float array.

    Raises:
        ValueError: if `feature_map` is not 2-D.
    """
    values = np.asarray(feature_map, dtype="float64")
    if values.ndim != 2:
        raise ValueError(
            "`feature_map` must be one 2-D map (height, width). Received "
            f"shape {values.shape}."
        )
    height, width = (int(s) for s in image_shape[:2])
    if receptive_field is None:
        rf = _even_grid((height, width), values.shape)
    else:
        rf = check_receptive_field(receptive_field)
    ys, xs = rf.centers(np.arange(values.shape[0]), np.arange(values.shape[1]))
    rows = np.arange(height) + PIXEL_CENTER
    cols = np.arange(width) + PIXEL_CENTER
    along_x = np.stack([np.interp(cols, xs, row) for row in values])
    return np.stack(
        [np.interp(rows, ys, along_x[:, c]) for c in range(width)], axis=1
    )


def _display(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype="float64")
    if image.max(initial=0.0) > _UNIT_RANGE_MAX:
        image = image / _UINT8_MAX
    return np.clip(image, 0.0, 1.0)


def plot_top_images(
    images: Any,
    maps: Any,
    filter_ids: Sequence,
    out_dir: str,
    top_k: int = 8,
    *,
    receptive_field: Any = None,
    alpha: float = 0.5,
    cmap: str = "jet",
) -> list:
    """Saves, per filter, a PNG grid of its top images with heatmaps.

    For each filter, the `top_k` images with the highest map peak are shown
    in decreasing order, each with the filter's map upsampled over it
    (`upsample_map`, one colour scale per filter) and the peak cell's RF
    centre marked. Peaks are `peaks_from_maps`'s, the cells the location
    instability reads. Drawn with matplotlib's Agg canvas, without pyplot.

    Args:
        images: `(N, H, W, 3)` images, 0..255 (the data pipeline) or 0..1.
        maps: `(N, h, w, F)` feature maps of those images.
        filter_ids: filters to plot.
        out_dir: directory for `filter_XXXX.png` (created if needed).
        top_k: images per filter (default 8).
        receptive_field: the layer's `ReceptiveField`, to place cells;
            default: cells tile the image evenly.
        alpha: heatmap opacity.
        cmap: matplotlib colormap name.

    Returns:
        The list of written file paths, in `filter_ids` order.

    Raises:
        ValueError: for inconsistent shapes, a bad filter id or `top_k`,
            or non-finite `maps` (a diverged model).
        ImportError: if matplotlib is not installed.

    Example:

    >>> plot_top_images(images, maps, [0, 3], "out")  # doctest: +SKIP
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "plot_top_images needs matplotlib: pip install matplotlib"
        ) from error
    images = np.asarray(images)
    maps = np.asarray(maps)
    if images.ndim != 4 or maps.ndim != 4 or len(images) != len(maps):
        raise ValueError(
            "`images` must be (N, H, W, channels) and `maps` (N, h, w, F) "
            f"with the same N. Received shapes {images.shape} and "
            f"{maps.shape}."
        )
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(
            f"`top_k` must be a positive int. Received: top_k={top_k!r}."
        )
    filters = maps.shape[-1]
    for f in filter_ids:
        if not 0 <= int(f) < filters:
            raise ValueError(
                f"`filter_ids` must be in [0, {filters}). Received {f!r}."
            )
    rf = (
        _even_grid(images.shape[1:3], maps.shape[1:3])
        if receptive_field is None
        else check_receptive_field(receptive_field)
    )
    os.makedirs(out_dir, exist_ok=True)
    count = min(top_k, len(images))
    columns = min(count, MAX_COLUMNS)
    rows = -(-count // columns)
    paths = []
    peak_index, peak_value = peaks_from_maps(maps)
    for f in filter_ids:
        f = int(f)
        filter_maps = maps[..., f]
        peaks = peak_value[:, f]
        order = np.argsort(-peaks, kind="stable")[:count]
        heats = [
            upsample_map(filter_maps[n], images.shape[1:3], rf) for n in order
        ]
        low = min(h.min() for h in heats)
        high = max(h.max() for h in heats)
        high = high if high > low else low + 1.0
        figure = Figure(figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows))
        FigureCanvasAgg(figure)
        for slot, (n, heat) in enumerate(zip(order, heats)):
            axis = figure.add_subplot(rows, columns, slot + 1)
            axis.imshow(_display(images[n]).squeeze())
            axis.imshow(heat, cmap=cmap, alpha=alpha, vmin=low, vmax=high)
            y, x = rf.centers(*peak_index[n, f])
            # imshow puts pixel k's centre at k; ours is at k + 0.5.
            axis.plot(
                x - PIXEL_CENTER,
                y - PIXEL_CENTER,
                "w+",
                markersize=PEAK_MARKER_SIZE,
            )
            axis.set_title(
                f"image {n}: {peaks[n]:.3g}", fontsize=TITLE_FONT_SIZE
            )
            axis.axis("off")
        figure.suptitle(f"filter {f}", fontsize=SUPTITLE_FONT_SIZE)
        figure.tight_layout()
        path = os.path.join(out_dir, f"filter_{f:04d}.png")
        figure.savefig(path)
        paths.append(path)
    return paths
