"""Draws the embedded datasets' images: objects, distractors and negatives.

`render_object` places one object (`keras_interp.data.shapes`) on a
background, with distractors, optional occluders, part textures and pixel
noise, and returns its pixels, part mask, box and landmarks. A `Layout`
holds the placement and clutter ranges; `PARTS_LAYOUT` is the embedded part
dataset's and `SCENES_LAYOUT` the un-cropped scenes'. A background is a
function `background(rng, size) -> (PIL image, ImageDraw)` at the
supersampled size: `textured_background` (random colour fields, stripes and
blobs) or `keras_interp.data.photos.photo_background` (crops of real
photos).

Coordinates are continuous pixels with pixel `j` covering `[j, j + 1)`, so
a landmark at `(x, y)` lies in pixel `(floor(x), floor(y))`, as in
`part_locs.txt`. Objects are drawn at `SUPERSAMPLING` times the output
size and box-filtered down (anti-aliasing); part masks are drawn at the
output size.

Every function draws from `rng` in a fixed order; the generated files
depend on that order, so changing it changes the datasets (bump the version
constants in `keras_interp.data.synthetic`).
"""

import dataclasses

import numpy as np
from PIL import Image
from PIL import ImageDraw

from keras_interp.data import shapes

SUPERSAMPLING = 2


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where objects go and how much clutter surrounds them.

    Attributes:
        scale_range: range of the object's longer box side, as a fraction
            of the image side; distractors are drawn at the same scales.
        max_rotation_degrees: object rotation is uniform in +-this.
        max_overhang: the object may stick out of the image by this
            fraction of its box size (0: the object is inside the image).
        occlusion_probability: probability that occluders are drawn over
            the object.
        object_distractors: `[low, high)` range of the number of
            distractors behind the object.
        occluders: `[low, high)` range of the number of occluders, when
            there are any.
        negative_distractors: `[low, high)` range of the number of
            distractors in a background-only negative.
    """

    scale_range: tuple[float, float]
    max_rotation_degrees: float
    max_overhang: float
    occlusion_probability: float
    object_distractors: tuple[int, int]
    occluders: tuple[int, int]
    negative_distractors: tuple[int, int]


# The embedded part dataset: large objects (35-80 % of the image side) that
# may stick out of the image, rotated by up to 30 degrees, in heavy clutter.
PARTS_LAYOUT = Layout(
    scale_range=(0.35, 0.80),
    max_rotation_degrees=30.0,
    max_overhang=0.15,
    occlusion_probability=0.3,
    object_distractors=(2, 7),
    occluders=(1, 3),
    negative_distractors=(2, 9),
)
# The un-cropped scenes: smaller objects (25-60 % of the image side) anywhere
# inside the image, rotated by up to 20 degrees, in lighter clutter.
SCENES_LAYOUT = Layout(
    scale_range=(0.25, 0.60),
    max_rotation_degrees=20.0,
    max_overhang=0.0,
    occlusion_probability=0.2,
    object_distractors=(0, 4),
    occluders=(1, 3),
    negative_distractors=(1, 6),
)


def random_colour(rng):
    """A uniform random RGB colour, a tuple of three ints in [0, 255]."""
    return tuple(int(v) for v in rng.integers(0, 256, size=3))


def _darker(colour):
    return tuple(int(v * 0.45) for v in colour)


def to_pillow(points, scale):
    """Continuous coordinates (pixel centre at j + 0.5) to Pillow's."""
    return [tuple(p) for p in np.asarray(points) * scale - 0.5]


def textured_background(rng, size):
    """Textured background at the supersampled size: image and its Draw.

    A smooth random colour field, optional stripes, and 3-10 opaque blobs.
    """
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
        polygon = shapes.ellipse(*centre, *radii, rng.uniform(0, np.pi))
        draw.polygon(to_pillow(polygon, SUPERSAMPLING), fill=random_colour(rng))
    return image, draw


def _random_part_polygons(rng, size, layout):
    """A detached part of a random category, placed anywhere: a distractor."""
    builders = shapes.CATEGORY_BUILDERS
    parts = builders[int(rng.integers(len(builders)))](rng, 1.0)
    part = parts[int(rng.integers(len(parts)))]
    scale = rng.uniform(*layout.scale_range) * size / 2
    angle = rng.uniform(-np.pi, np.pi)
    centre = rng.uniform(0, size, size=2)
    pivot = part.landmark
    return [
        shapes.rotate(np.asarray(p) - pivot, angle) * scale + centre
        for p in part.polygons
    ]


def _draw_distractors(rng, draw, size, count, layout, mask_draw=None):
    """Draws `count` loose parts or blobs; clears them from `mask_draw`."""
    for _ in range(count):
        colour = random_colour(rng)
        if rng.random() < 0.7:
            polygons = _random_part_polygons(rng, size, layout)
        else:
            centre = rng.uniform(0, size, size=2)
            radii = rng.uniform(0.05, 0.2, size=2) * size
            polygons = [shapes.ellipse(*centre, *radii, rng.uniform(0, np.pi))]
        for polygon in polygons:
            draw.polygon(
                to_pillow(polygon, SUPERSAMPLING),
                fill=colour,
                outline=_darker(colour),
                width=SUPERSAMPLING,
            )
            if mask_draw is not None:
                mask_draw.polygon(to_pillow(polygon, 1), fill=0)


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


def render_object(rng, category, size, *, layout, background):
    """Draws one object image.

    The object (category index `category` of `shapes.CATEGORY_BUILDERS`)
    is mirrored with probability 1/2 (left/right labels swapped), rotated,
    scaled and placed as `layout` says, over `background(rng, size)` and
    its distractors; occluders may follow. A landmark is visible only if it
    is inside the image and its pixel in the part mask shows that part, so
    occluded and cropped-out parts are invisible, as in CUB.

    Args:
        rng: `numpy.random.Generator`, the only source of randomness.
        category: index into `shapes.CATEGORY_NAMES`.
        size: side of the square image in pixels.
        layout: a `Layout`.
        background: `background(rng, size) -> (image, draw)` at
            `SUPERSAMPLING * size`.

    Returns:
        `(pixels, mask, box, locs, visible)`: uint8 `(size, size, 3)`;
        uint8 `(size, size)` part mask (0 none, k part id k of
        `shapes.PART_NAMES`, 1-based); the tight `(x, y, w, h)` box of the
        object's pixels (occluded ones included) clipped to the image;
        float64 `(P, 2)` landmarks (0 where invisible); bool `(P,)`.
    """
    chirality = rng.uniform(*shapes.CHIRALITY_RANGE)
    parts = shapes.CATEGORY_BUILDERS[category](rng, chirality)
    mirror = rng.random() < 0.5
    max_angle = layout.max_rotation_degrees
    angle = np.deg2rad(rng.uniform(-max_angle, max_angle))
    sign = np.array([-1.0 if mirror else 1.0, 1.0])

    def transform(points):
        return shapes.rotate(np.asarray(points, "float64") * sign, angle)

    vertices = np.concatenate(
        [transform(p) for part in parts for p in part.polygons]
    )
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    scale = rng.uniform(*layout.scale_range) * size / (high - low).max()
    extent = (high - low) * scale
    slack = layout.max_overhang * extent
    offset = np.array(
        [rng.uniform(-slack[i], size - extent[i] + slack[i]) for i in range(2)]
    )

    def place(points):
        return (transform(points) - low) * scale + offset

    image, draw = background(rng, size)
    _draw_distractors(
        rng, draw, size, int(rng.integers(*layout.object_distractors)), layout
    )
    mask = Image.new("L", (size, size), 0)
    mask_draw = ImageDraw.Draw(mask)
    part_id = {name: i + 1 for i, name in enumerate(shapes.PART_NAMES)}
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
            role_colour[part.role] = random_colour(rng)
        colour = role_colour[part.role]
        for polygon in part.polygons:
            placed = place(polygon)
            draw.polygon(
                to_pillow(placed, SUPERSAMPLING),
                fill=colour,
                outline=_darker(colour),
                width=SUPERSAMPLING,
            )
            mask_draw.polygon(to_pillow(placed, 1), fill=part_id[name])
        role_of_id[part_id[name]] = part.role
        landmarks[name] = place(np.asarray(part.landmark)[None])[0]

    object_pixels = np.argwhere(np.asarray(mask) > 0)
    if rng.random() < layout.occlusion_probability:
        _draw_distractors(
            rng,
            draw,
            size,
            int(rng.integers(*layout.occluders)),
            layout,
            mask_draw=mask_draw,
        )
    mask_array = np.asarray(mask).copy()
    pixels = _finish_pixels(rng, image, mask_array, role_of_id, size)

    if object_pixels.size:
        (y0, x0), (y1, x1) = object_pixels.min(0), object_pixels.max(0) + 1
    else:  # Unreachable with the scale ranges above; keeps the box valid.
        x0, y0, x1, y1 = 0, 0, size, size
    box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))

    locs = np.zeros((len(shapes.PART_NAMES), 2))
    visible = np.zeros(len(shapes.PART_NAMES), dtype=bool)
    for name, point in landmarks.items():
        k = part_id[name]
        col, row = int(np.floor(point[0])), int(np.floor(point[1]))
        if 0 <= col < size and 0 <= row < size and mask_array[row, col] == k:
            locs[k - 1] = point
            visible[k - 1] = True
    return pixels, mask_array, box, locs, visible


def render_negative(rng, size, *, layout, background):
    """A background-only image: `background` plus distractors; uint8 RGB."""
    image, draw = background(rng, size)
    _draw_distractors(
        rng, draw, size, int(rng.integers(*layout.negative_distractors)), layout
    )
    return _finish_pixels(rng, image, None, {}, size)
