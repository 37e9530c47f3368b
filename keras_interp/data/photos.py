"""Real-photo backgrounds for the embedded scenes dataset.

Nine public-domain / CC0 photos (two portraits, a photographer on a lawn,
a cat, a coffee cup, a rocket launch, deep sky, and grass, gravel and brick
textures) ship in `background_photos/` (sources and licences in its
README.md). A background is a random square crop of one of them (its side
35-100 % of the photo's shorter side), resized to the image, mirrored with
probability 1/2 and tinted by a random per-channel gain, so grey photos
become coloured and no two backgrounds are alike.
"""

import functools
import os

import numpy as np
from PIL import Image
from PIL import ImageDraw

from keras_interp.data import renderer

PHOTO_DIR = os.path.join(os.path.dirname(__file__), "background_photos")
PHOTO_FILES = (
    "astronaut.jpg",
    "brick.jpg",
    "camera.jpg",
    "chelsea.jpg",
    "coffee.jpg",
    "grass.jpg",
    "gravel.jpg",
    "hubble_deep_field.jpg",
    "rocket.jpg",
)
# Side of the square crop, as a fraction of the photo's shorter side.
CROP_RANGE = (0.35, 1.0)
# Per-channel gain applied to the crop (a random tint).
GAIN_RANGE = (0.7, 1.3)


@functools.lru_cache(maxsize=1)
def load_photos() -> tuple:
    """The decoded photos of `PHOTO_FILES`, RGB PIL images, in order.

    Raises:
        FileNotFoundError: if a photo is missing from `PHOTO_DIR` (an
            install without the package data).
    """
    photos = []
    for name in PHOTO_FILES:
        path = os.path.join(PHOTO_DIR, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Background photo not found: {path!r}. The embedded scenes "
                "dataset needs the photos shipped in "
                "keras_interp/data/background_photos/; reinstall "
                "keras_interp with its package data."
            )
        with Image.open(path) as image:
            photos.append(image.convert("RGB"))
    return tuple(photos)


def photo_background(rng, size):
    """A random photo crop at the supersampled size: image and its Draw.

    Args:
        rng: `numpy.random.Generator`.
        size: output image side; the crop is `renderer.SUPERSAMPLING` times
            larger, as `renderer.render_object` expects.

    Returns:
        `(image, draw)`: a new RGB PIL image and an `ImageDraw` on it.
    """
    photos = load_photos()
    photo = photos[int(rng.integers(len(photos)))]
    width, height = photo.size
    side = rng.uniform(*CROP_RANGE) * min(width, height)
    x0 = rng.uniform(0, width - side)
    y0 = rng.uniform(0, height - side)
    big = size * renderer.SUPERSAMPLING
    image = photo.resize(
        (big, big), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side)
    )
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    gain = rng.uniform(*GAIN_RANGE, size=3).astype("float32")
    pixels = np.asarray(image, dtype="float32") * gain
    image = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype("uint8"))
    return image, ImageDraw.Draw(image)
