"""A procedurally generated part dataset, written in the CUB folder format.

`write_synthetic_parts` draws small RGB images of composite objects with
annotated parts and writes them as a `CUB_200_2011`-format folder, so that
`read_cub` and `make_dataset` read it like the real data. `default_data_dir`
generates the default set once into a cache folder. It stands in for CUB in
tests, smoke runs and machines without the real data; it is not a benchmark.

What is drawn. Each object is one of five categories seen from above, facing
up: `Swallow`, `Moth`, `Beetle`, `Dragonfly` and `Plane`. All are built from
the same primitives (ellipses, rectangles, triangles, thick polylines).
Categories differ in the *shape and arrangement* of their parts, never in
colour:

| category | back | head | tail | wings | legs |
| --- | --- | --- | --- | --- | --- |
| Swallow | slim ellipse | disc | forked V | swept triangles | none |
| Moth | ellipse | square | short spike | fore + hind ellipses | one, forward |
| Beetle | hexagon | triangle | none | rear stubs | two, jointed |
| Dragonfly | thorax | wide oval | long, segmented | two thin bars | none |
| Plane | long rectangle | nose cone | T-tail | trapezoids | wheels |

The parts (`PART_NAMES`) are `back`, `head`, `tail`, `left wing`,
`right wing`, `left leg` and `right leg`; a category without a part always
marks it invisible. "Left" is the object's own left, which in the
upright view is image-left, so a horizontal flip must swap the left and
right labels (as in CUB). Every object is chiral (its right appendages are
8-20 % smaller than its left ones) so that a mirrored object looks different.
Each part has one landmark on its exposed surface (e.g. the head centre, a
point two thirds out on a wing, a foot).

What varies, per image: the category's shape parameters (about +-15 %), the
mirror (probability 1/2, labels swapped accordingly), rotation (+-30
degrees), scale (the object's longer box side is 35-80 % of the image),
position (the object may stick out of the image by up to 15 % of its size),
the colour of each part role (uniform RGB, the same distribution for every
category) and an optional stripe texture per part role.

Why it is hard. Backgrounds are textured and cluttered: a smooth random
colour field, optional stripes, random opaque blobs, pixel noise and JPEG
artefacts. Distractors are detached parts of random categories (loose wings,
heads, tails, legs) at object-like scales and any rotation, so the presence
of a part-like shape neither identifies the category nor locates the
object's parts; only the arrangement does. In 30 % of object images one or
two occluders are drawn over the object. A landmark is visible only if it
is inside the image and its pixel in the part mask shows that part, so
occluded and cropped-out parts are invisible, as in CUB. Background-only
negatives (same backgrounds and distractors, no object) support the
single-category task.

Files written under `root` (the `read_cub` layout, plus extras):

```
images.txt, image_class_labels.txt, classes.txt, train_test_split.txt,
bounding_boxes.txt, parts/parts.txt, parts/part_locs.txt,
images/<NNN.Category>/<Category>_<XXXX>.jpg
part_segmentations/<NNN.Category>/<Category>_<XXXX>.png  uint8, 0 = none,
                                                         k = part id k
negatives/negative_<XXXX>.jpg
synthetic_info.json                                      generator settings
```

Bounding boxes are the tight box of the object's pixels (occluded ones
included) clipped to the image. The split is deterministic: within each
category, images 0, 1, 2 of every 5 are train and 3, 4 test (60/40).

Determinism: image `i` is drawn from `numpy.random.default_rng([seed, kind,
i])`, with Pillow and a fixed JPEG quality, so the same seed gives
byte-identical files (for a given Pillow/libjpeg build), independent of
generation order.
"""

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time

import numpy as np
from PIL import Image
from PIL import ImageDraw

from keras_interp.data import cub

# Bump when the generator's output changes; it names the cache folder.
SYNTHETIC_VERSION = 1
CACHE_ENV_VAR = "KERAS_INTERP_CACHE"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "keras_interp")
PART_NAMES = (
    "back",
    "head",
    "tail",
    "left wing",
    "right wing",
    "left leg",
    "right leg",
)
CATEGORY_NAMES = ("Swallow", "Moth", "Beetle", "Dragonfly", "Plane")
NEGATIVES_DIR = "negatives"
# Fixed so that files are byte-identical for a seed; 90 keeps the part
# edges sharp at 128 px while the default set stays under 10 MB.
JPEG_QUALITY = 90
# Objects are drawn at this many times the output size and box-filtered
# down (anti-aliasing); part masks are drawn at the output size.
SUPERSAMPLING = 2
# Range of the object's longer box side, as a fraction of the image side.
OBJECT_SCALE_RANGE = (0.35, 0.80)
# Object rotation is uniform in +-this many degrees.
MAX_ROTATION_DEGREES = 30.0
# The object may stick out of the image by this fraction of its box size.
MAX_OVERHANG = 0.15
# Probability that occluders are drawn over the object.
OCCLUSION_PROBABILITY = 0.3
# Within a category, image i is train iff i % SPLIT_PERIOD < SPLIT_TRAIN.
SPLIT_PERIOD = 5
SPLIT_TRAIN = 3
# Relative spread of the per-instance shape parameters (uniform, +-15 %).
SHAPE_JITTER = 0.15
# Scale of the object's right appendages relative to its left (chirality).
CHIRALITY_RANGE = (0.80, 0.92)
# Below this the thinnest parts (legs) vanish at the output resolution.
_MIN_IMAGE_SIZE = 32
_ELLIPSE_VERTICES = 24
_OBJECT_KIND = 0
_NEGATIVE_KIND = 1

_logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _Part:
    """One part in canonical object coordinates (object in ~[-1, 1]^2)."""

    name: str
    role: str
    polygons: list
    landmark: np.ndarray


def _ellipse(cx, cy, rx, ry, angle=0.0):
    t = np.linspace(0.0, 2.0 * np.pi, _ELLIPSE_VERTICES, endpoint=False)
    points = np.stack([rx * np.cos(t), ry * np.sin(t)], axis=-1)
    return _rotate(points, angle) + (cx, cy)


def _axis_point(cx, cy, rx, angle, fraction):
    """Point `fraction` of the way from an ellipse's centre along its x axis."""
    return np.array(
        [cx + fraction * rx * np.cos(angle), cy + fraction * rx * np.sin(angle)]
    )


def _rect(cx, cy, width, height, angle=0.0):
    half = np.array([width / 2, height / 2])
    points = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], "float64") * half
    return _rotate(points, angle) + (cx, cy)


def _segment(p0, p1, width):
    p0, p1 = np.asarray(p0, "float64"), np.asarray(p1, "float64")
    direction = p1 - p0
    normal = np.array([-direction[1], direction[0]])
    normal *= width / 2 / max(np.linalg.norm(normal), 1e-9)
    return np.stack([p0 + normal, p1 + normal, p1 - normal, p0 - normal])


def _polyline(points, width, foot_radius=0.0):
    polygons = [
        _segment(points[i], points[i + 1], width)
        for i in range(len(points) - 1)
    ]
    if foot_radius:
        polygons.append(_ellipse(*points[-1], foot_radius, foot_radius))
    return polygons


def _rotate(points, angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.asarray(points, "float64") @ np.array([[c, s], [-s, c]])


def _mirror_x(polygons, landmark, factor, anchor):
    """The right-side copy of a left-side part: mirrored, scaled at anchor."""
    anchor = np.array([-anchor[0], anchor[1]])

    def place(points):
        points = np.asarray(points) * (-1.0, 1.0)
        return anchor + (points - anchor) * factor

    return [place(p) for p in polygons], place(landmark)


def _paired(name, role, polygons, landmark, factor, anchor):
    """Left part as given, right part mirrored and `factor` times smaller."""
    right_polygons, right_landmark = _mirror_x(
        polygons, landmark, factor, anchor
    )
    return [
        _Part(f"left {name}", role, polygons, np.asarray(landmark, "float64")),
        _Part(f"right {name}", role, right_polygons, right_landmark),
    ]


def _jitter(rng):
    return rng.uniform(1.0 - SHAPE_JITTER, 1.0 + SHAPE_JITTER)


def _swallow(rng, chirality):
    span, sweep, fork = _jitter(rng), rng.uniform(0.1, 0.3), _jitter(rng)
    body = _Part("back", "body", [_ellipse(0, 0.05, 0.16, 0.48)], (0, 0.05))
    head = _Part("head", "head", [_ellipse(0, -0.55, 0.17, 0.17)], (0, -0.56))
    tail = _Part(
        "tail",
        "tail",
        [
            np.array(
                [
                    [-0.08, 0.42],
                    [0.08, 0.42],
                    [0.3 * fork, 1.0],
                    [0.0, 0.74],
                    [-0.3 * fork, 1.0],
                ]
            )
        ],
        (0, 0.62),
    )
    wing = np.array(
        [
            [-0.08, -0.25],
            [-0.95 * span, 0.15 + sweep],
            [-0.82 * span, 0.3 + sweep],
            [-0.08, 0.1],
        ]
    )
    wings = _paired(
        "wing", "wing", [wing], wing.mean(axis=0), chirality, (-0.08, 0.0)
    )
    return [tail, *wings, body, head]


def _moth(rng, chirality):
    fore, hind = _jitter(rng), _jitter(rng)
    fore_angle = rng.uniform(-0.5, -0.2)
    wing_polygons = [
        _ellipse(-0.45, -0.12, 0.42 * fore, 0.26, fore_angle),
        _ellipse(-0.32, 0.28, 0.26 * hind, 0.2, 0.3),
    ]
    wings = _paired(
        "wing",
        "wing",
        wing_polygons,
        _axis_point(-0.45, -0.12, 0.42 * fore, fore_angle, -0.3),
        chirality,
        (0.0, 0.0),
    )
    foot = np.array([-0.42, -0.62]) * _jitter(rng)
    legs = _paired(
        "leg",
        "leg",
        _polyline([(-0.1, -0.3), foot], 0.05, foot_radius=0.055),
        foot,
        chirality,
        (-0.1, -0.3),
    )
    tail = _Part(
        "tail",
        "tail",
        [np.array([[-0.09, 0.48], [0.09, 0.48], [0.0, 0.8 * _jitter(rng)]])],
        (0, 0.6),
    )
    body = _Part("back", "body", [_ellipse(0, 0.08, 0.12, 0.45)], (0, 0.05))
    head = _Part("head", "head", [_rect(0, -0.5, 0.26, 0.26)], (0, -0.52))
    return [*wings, *legs, tail, body, head]


def _beetle(rng, chirality):
    width = 0.42 * _jitter(rng)
    angles = np.deg2rad(np.arange(0, 360, 60))
    hexagon = np.stack(
        [width * np.cos(angles), 0.1 + 0.5 * np.sin(angles)], axis=-1
    )
    body = _Part("back", "body", [hexagon], (0, 0.1))
    head = _Part(
        "head",
        "head",
        [np.array([[-0.2, -0.36], [0.2, -0.36], [0.0, -0.8 * _jitter(rng)]])],
        (0, -0.5),
    )
    stub_angle = rng.uniform(0.3, 0.7)
    wings = _paired(
        "wing",
        "wing",
        [_rect(-0.4, 0.52, 0.15, 0.45 * _jitter(rng), stub_angle)],
        (-0.43, 0.56),
        chirality,
        (-0.25, 0.4),
    )
    reach = _jitter(rng)
    front = [(-0.3, -0.05), (-0.75 * reach, -0.22), (-0.85 * reach, -0.6)]
    rear = [(-0.3, 0.3), (-0.72 * reach, 0.42), (-0.8 * reach, 0.85)]
    legs = _paired(
        "leg",
        "leg",
        _polyline(front, 0.05, 0.05) + _polyline(rear, 0.05, 0.05),
        front[-1],
        chirality,
        (-0.3, 0.1),
    )
    return [*legs, *wings, body, head]


def _dragonfly(rng, chirality):
    length = _jitter(rng)
    a1, a2 = rng.uniform(-0.2, 0.0), rng.uniform(0.0, 0.2)
    wing_polygons = [
        _ellipse(-0.5, -0.58, 0.46 * length, 0.09, a1),
        _ellipse(-0.5, -0.36, 0.44 * length, 0.085, a2),
    ]
    wings = _paired(
        "wing",
        "wing",
        wing_polygons,
        _axis_point(-0.5, -0.58, 0.46 * length, a1, -0.3),
        chirality,
        (0.0, -0.47),
    )
    segments = np.linspace(-0.22, 1.0 * _jitter(rng), 7)
    tail = _Part(
        "tail",
        "tail",
        [_ellipse(0, y, 0.06, 0.1) for y in segments],
        (0, segments[3]),
    )
    body = _Part("back", "body", [_ellipse(0, -0.47, 0.11, 0.2)], (0, -0.47))
    head = _Part("head", "head", [_ellipse(0, -0.78, 0.17, 0.12)], (0, -0.8))
    return [*wings, tail, body, head]


def _plane(rng, chirality):
    span, chord = _jitter(rng), _jitter(rng)
    wing = np.array(
        [
            [-0.08, -0.2],
            [-0.95 * span, 0.12],
            [-0.95 * span, 0.12 + 0.16 * chord],
            [-0.08, 0.1 * chord],
        ]
    )
    wings = _paired(
        "wing",
        "wing",
        [wing],
        (wing[0] + wing[1] + wing[2] + wing[3]) / 4,
        chirality,
        (-0.08, 0.0),
    )
    legs = _paired(
        "leg",
        "leg",
        [
            _rect(-0.2, -0.45, 0.1, 0.16),
            _segment((-0.09, -0.45), (-0.2, -0.45), 0.03),
        ],
        (-0.2, -0.45),
        chirality,
        (-0.09, -0.45),
    )
    body = _Part("back", "body", [_rect(0, 0, 0.18, 1.5)], (0, 0.0))
    tail_span = _jitter(rng)
    tail = _Part(
        "tail",
        "tail",
        [_rect(0, 0.72, 0.6 * tail_span, 0.13), _rect(0, 0.68, 0.05, 0.2)],
        (0, 0.72),
    )
    head = _Part(
        "head",
        "head",
        [
            np.array([[-0.09, -0.74], [0.09, -0.74], [0.0, -1.0]]),
            _ellipse(0, -0.58, 0.055, 0.1),
        ],
        (0, -0.8),
    )
    return [*wings, *legs, body, tail, head]


_CATEGORY_BUILDERS = (_swallow, _moth, _beetle, _dragonfly, _plane)


def _random_colour(rng):
    return tuple(int(v) for v in rng.integers(0, 256, size=3))


def _darker(colour):
    return tuple(int(v * 0.45) for v in colour)


def _to_pillow(points, scale):
    """Continuous coordinates (pixel centre at j + 0.5) to Pillow's."""
    return [tuple(p) for p in np.asarray(points) * scale - 0.5]


def _background(rng, size):
    """Textured background at the supersampled size, float32 RGB."""
    big = size * SUPERSAMPLING
    grid = int(rng.integers(2, 6))
    field = rng.integers(0, 256, size=(grid, grid, 3), dtype="uint8")
    image = Image.fromarray(field).resize((big, big), Image.BILINEAR)
    pixels = np.asarray(image, dtype="float32")
    if rng.random() < 0.5:
        period = rng.uniform(6, 24) * SUPERSAMPLING
        angle = rng.uniform(0, np.pi)
        ys, xs = np.mgrid[0:big, 0:big].astype("float32")
        wave = np.sin(
            2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period
        )
        tint = rng.uniform(-1, 1, size=3).astype("float32")
        pixels += rng.uniform(20, 60) * wave[..., None] * tint
    image = Image.fromarray(np.clip(pixels, 0, 255).astype("uint8"))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 11))):
        centre = rng.uniform(0, size, size=2)
        radii = rng.uniform(0.05, 0.3, size=2) * size
        polygon = _ellipse(*centre, *radii, rng.uniform(0, np.pi))
        draw.polygon(
            _to_pillow(polygon, SUPERSAMPLING), fill=_random_colour(rng)
        )
    return image, draw


def _random_part_polygons(rng, size):
    """A detached part of a random category, placed anywhere: a distractor."""
    builder = _CATEGORY_BUILDERS[int(rng.integers(len(_CATEGORY_BUILDERS)))]
    parts = builder(rng, 1.0)
    part = parts[int(rng.integers(len(parts)))]
    scale = rng.uniform(*OBJECT_SCALE_RANGE) * size / 2
    angle = rng.uniform(-np.pi, np.pi)
    centre = rng.uniform(0, size, size=2)
    pivot = part.landmark
    return [
        _rotate(np.asarray(p) - pivot, angle) * scale + centre
        for p in part.polygons
    ]


def _draw_distractors(rng, draw, size, count, mask_draw=None):
    for _ in range(count):
        colour = _random_colour(rng)
        if rng.random() < 0.7:
            polygons = _random_part_polygons(rng, size)
        else:
            centre = rng.uniform(0, size, size=2)
            radii = rng.uniform(0.05, 0.2, size=2) * size
            polygons = [_ellipse(*centre, *radii, rng.uniform(0, np.pi))]
        for polygon in polygons:
            draw.polygon(
                _to_pillow(polygon, SUPERSAMPLING),
                fill=colour,
                outline=_darker(colour),
                width=SUPERSAMPLING,
            )
            if mask_draw is not None:
                mask_draw.polygon(_to_pillow(polygon, 1), fill=0)


def _finish_pixels(rng, image, mask, role_of_id, size):
    """Downsamples, applies part textures and pixel noise; uint8 RGB."""
    pixels = np.asarray(image.reduce(SUPERSAMPLING), dtype="float32")
    if mask is not None:
        ys, xs = np.mgrid[0:size, 0:size].astype("float32")
        for role in sorted(set(role_of_id.values())):
            if rng.random() < 0.5:
                continue
            ids = [k for k, r in role_of_id.items() if r == role]
            where = np.isin(mask, ids)
            angle = rng.uniform(0, np.pi)
            period = rng.uniform(2.5, 6)
            wave = np.sin(
                2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period
            )
            pixels[where] *= 1 + 0.3 * wave[where][:, None]
    pixels += rng.normal(0, rng.uniform(3, 10), size=pixels.shape)
    return np.clip(np.round(pixels), 0, 255).astype("uint8")


def _render_object(rng, category, size):
    """Draws one object image. Returns pixels, mask, box, locs, visible."""
    chirality = rng.uniform(*CHIRALITY_RANGE)
    parts = _CATEGORY_BUILDERS[category](rng, chirality)
    mirror = rng.random() < 0.5
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES))
    sign = np.array([-1.0 if mirror else 1.0, 1.0])

    def transform(points):
        return _rotate(np.asarray(points, "float64") * sign, angle)

    vertices = np.concatenate(
        [transform(p) for part in parts for p in part.polygons]
    )
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    scale = rng.uniform(*OBJECT_SCALE_RANGE) * size / (high - low).max()
    extent = (high - low) * scale
    slack = MAX_OVERHANG * extent
    offset = np.array(
        [rng.uniform(-slack[i], size - extent[i] + slack[i]) for i in range(2)]
    )

    def place(points):
        return (transform(points) - low) * scale + offset

    image, draw = _background(rng, size)
    _draw_distractors(rng, draw, size, int(rng.integers(2, 7)))
    mask = Image.new("L", (size, size), 0)
    mask_draw = ImageDraw.Draw(mask)
    part_id = {name: i + 1 for i, name in enumerate(PART_NAMES)}
    swap = {"left": "right", "right": "left"}
    role_colour = {}
    role_of_id = {}
    landmarks = {}
    for part in parts:
        name = part.name
        if mirror and name.split()[0] in swap:
            side, rest = name.split(maxsplit=1)
            name = f"{swap[side]} {rest}"
        if part.role not in role_colour:
            role_colour[part.role] = _random_colour(rng)
        colour = role_colour[part.role]
        for polygon in part.polygons:
            placed = place(polygon)
            draw.polygon(
                _to_pillow(placed, SUPERSAMPLING),
                fill=colour,
                outline=_darker(colour),
                width=SUPERSAMPLING,
            )
            mask_draw.polygon(_to_pillow(placed, 1), fill=part_id[name])
        role_of_id[part_id[name]] = part.role
        landmarks[name] = place(np.asarray(part.landmark)[None])[0]

    object_pixels = np.argwhere(np.asarray(mask) > 0)
    if rng.random() < OCCLUSION_PROBABILITY:
        _draw_distractors(
            rng, draw, size, int(rng.integers(1, 3)), mask_draw=mask_draw
        )
    mask_array = np.asarray(mask).copy()
    pixels = _finish_pixels(rng, image, mask_array, role_of_id, size)

    if object_pixels.size:
        (y0, x0), (y1, x1) = object_pixels.min(0), object_pixels.max(0) + 1
    else:  # Unreachable with the scale range above; keeps the box valid.
        x0, y0, x1, y1 = 0, 0, size, size
    box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))

    locs = np.zeros((len(PART_NAMES), 2))
    visible = np.zeros(len(PART_NAMES), dtype=bool)
    for name, point in landmarks.items():
        k = part_id[name]
        col, row = int(np.floor(point[0])), int(np.floor(point[1]))
        if 0 <= col < size and 0 <= row < size and mask_array[row, col] == k:
            locs[k - 1] = point
            visible[k - 1] = True
    return pixels, mask_array, box, locs, visible


def _render_negative(rng, size):
    image, draw = _background(rng, size)
    _draw_distractors(rng, draw, size, int(rng.integers(2, 9)))
    return _finish_pixels(rng, image, None, {}, size)


def _save_jpeg(pixels, path):
    Image.fromarray(pixels).save(path, format="JPEG", quality=JPEG_QUALITY)


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}. Received: "
            f"{name}={value!r}."
        )
    if value < minimum:
        raise ValueError(
            f"`{name}` must be >= {minimum}. Received: {name}={value}."
        )
    return int(value)


def write_synthetic_parts(
    root: str | os.PathLike,
    *,
    seed: int = 0,
    num_classes: int = 5,
    images_per_class: int = 120,
    image_size: int = 128,
    num_negatives: int = 200,
) -> str:
    """Writes the synthetic part dataset into `root` in the CUB layout.

    See the module docstring for what is drawn and why. The output reads
    with `read_cub(root)`; background-only negatives are in
    `os.path.join(root, NEGATIVES_DIR)` for `make_dataset(negatives=...)`.

    Args:
        root: output folder; created if missing, must be empty if present.
        seed: generator seed. The same seed writes byte-identical files.
        num_classes: number of categories, the first ones of
            `CATEGORY_NAMES` (1 to 5).
        images_per_class: images per category (60 % train, 40 % test).
        image_size: side of the square images in pixels (>= 32).
        num_negatives: number of background-only images.

    Returns:
        The absolute path of `root`.

    Raises:
        ValueError: if an argument is out of range or `root` is not empty.

    Example:

    >>> path = write_synthetic_parts("/tmp/parts", images_per_class=6,
    ...                              image_size=64)  # doctest: +SKIP
    >>> read_cub(path).part_names.tolist()  # doctest: +SKIP
    ['back', 'head', 'tail', 'left wing', 'right wing', 'left leg', ...]
    """
    if isinstance(num_classes, bool) or num_classes not in range(
        1, len(CATEGORY_NAMES) + 1
    ):
        raise ValueError(
            f"`num_classes` must be an integer in 1..{len(CATEGORY_NAMES)} "
            f"(the categories {CATEGORY_NAMES}). Received: "
            f"num_classes={num_classes!r}."
        )
    images_per_class = _check_count("images_per_class", images_per_class, 1)
    image_size = _check_count("image_size", image_size, _MIN_IMAGE_SIZE)
    num_negatives = _check_count("num_negatives", num_negatives, 0)
    seed = _check_count("seed", seed, 0)
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if os.path.isdir(root) and os.listdir(root):
        raise ValueError(
            f"`root` must be a new or empty folder. Received: {root!r}, "
            "which is not empty. Pass another folder or delete it."
        )
    os.makedirs(os.path.join(root, cub.PARTS_DIR), exist_ok=True)

    classes, images, labels, splits, boxes, locs = [], [], [], [], [], []
    image_id = 0
    for category in range(num_classes):
        name = CATEGORY_NAMES[category]
        folder = f"{category + 1:03d}.{name}"
        classes.append(f"{category + 1} {folder}")
        for folder_root in (cub.IMAGES_DIR, cub.PART_MASKS_DIR):
            os.makedirs(os.path.join(root, folder_root, folder), exist_ok=True)
        for i in range(images_per_class):
            image_id += 1
            rng = np.random.default_rng([seed, _OBJECT_KIND, image_id])
            pixels, mask, box, points, visible = _render_object(
                rng, category, image_size
            )
            relative = f"{folder}/{name}_{i + 1:04d}"
            _save_jpeg(
                pixels, os.path.join(root, cub.IMAGES_DIR, relative + ".jpg")
            )
            Image.fromarray(mask).save(
                os.path.join(
                    root,
                    cub.PART_MASKS_DIR,
                    relative + cub.PART_MASK_EXTENSION,
                )
            )
            images.append(f"{image_id} {relative}.jpg")
            labels.append(f"{image_id} {category + 1}")
            is_train = i % SPLIT_PERIOD < SPLIT_TRAIN
            splits.append(f"{image_id} {int(is_train)}")
            boxes.append(f"{image_id} " + " ".join(f"{v:.1f}" for v in box))
            for k, (point, flag) in enumerate(
                zip(points, visible, strict=True), start=1
            ):
                if flag:
                    locs.append(
                        f"{image_id} {k} {point[0]:.2f} {point[1]:.2f} 1"
                    )
                else:
                    locs.append(f"{image_id} {k} 0 0 0")

    negatives_dir = os.path.join(root, NEGATIVES_DIR)
    os.makedirs(negatives_dir, exist_ok=True)
    for i in range(num_negatives):
        rng = np.random.default_rng([seed, _NEGATIVE_KIND, i + 1])
        _save_jpeg(
            _render_negative(rng, image_size),
            os.path.join(negatives_dir, f"negative_{i + 1:04d}.jpg"),
        )

    tables = {
        "images.txt": images,
        "image_class_labels.txt": labels,
        "classes.txt": classes,
        "train_test_split.txt": splits,
        "bounding_boxes.txt": boxes,
        os.path.join(cub.PARTS_DIR, "parts.txt"): [
            f"{k} {name}" for k, name in enumerate(PART_NAMES, start=1)
        ],
        os.path.join(cub.PARTS_DIR, "part_locs.txt"): locs,
    }
    for filename, lines in tables.items():
        with open(os.path.join(root, filename), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    info = {
        "generator": "keras_interp.data.synthetic",
        "version": SYNTHETIC_VERSION,
        "seed": seed,
        "num_classes": num_classes,
        "images_per_class": images_per_class,
        "image_size": image_size,
        "num_negatives": num_negatives,
    }
    with open(os.path.join(root, "synthetic_info.json"), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.write("\n")
    return root


def default_data_dir(cache_dir: str | os.PathLike | None = None) -> str:
    """Returns the default synthetic dataset, generating it on first use.

    The dataset (`write_synthetic_parts` defaults, seed 0) lives in
    `<cache>/synthetic_parts_v<SYNTHETIC_VERSION>_seed0`, where `<cache>` is
    `cache_dir`, else the `KERAS_INTERP_CACHE` environment variable, else
    `~/.cache/keras_interp`. It is generated into a temporary sibling folder
    and renamed into place, so an interrupted generation never leaves a
    partial dataset; concurrent first uses are safe (the first rename wins).

    Args:
        cache_dir: cache folder; overrides the environment variable.

    Returns:
        Absolute path of the dataset folder, readable with `read_cub`.

    Example:

    >>> index = read_cub(default_data_dir())  # doctest: +SKIP
    """
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_DIR
    base = os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))
    path = os.path.join(base, f"synthetic_parts_v{SYNTHETIC_VERSION}_seed0")
    if os.path.isfile(os.path.join(path, "images.txt")):
        return path
    os.makedirs(base, exist_ok=True)
    temporary = tempfile.mkdtemp(
        prefix=f".{os.path.basename(path)}.partial-", dir=base
    )
    try:
        _logger.info("Generating the synthetic part dataset into %s", path)
        start = time.perf_counter()
        write_synthetic_parts(temporary, seed=0)
        try:
            os.rename(temporary, path)
        except OSError:
            if not os.path.isfile(os.path.join(path, "images.txt")):
                raise
        _logger.info(
            "Generated %s in %.1f s", path, time.perf_counter() - start
        )
    finally:
        if os.path.isdir(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
    return path
