"""Tests for the embedded datasets' generator modules and the scenes variant.

The `"parts"` variant's reader-level tests live in tests/test_data.py; this
file covers the modules `keras_interp.data.synthetic` is split into and the
un-cropped `"scenes"` variant (`write_synthetic_scenes`).
"""

import ast
import dataclasses
import json
import os

import numpy as np
import pytest
from helpers.files import tree_digest
from PIL import Image
from PIL import ImageDraw

from keras_interp import data
from keras_interp.apps import train
from keras_interp.data import cub_writer
from keras_interp.data import photos
from keras_interp.data import renderer
from keras_interp.data import shapes
from keras_interp.data import synthetic

DATA_PACKAGE = os.path.dirname(data.__file__)
SMALL = dict(num_classes=2, images_per_class=8, image_size=64, num_negatives=6)
# Object layouts without distractors or occluders: every landmark of a part
# the object has should be visible and on the object.
CLEAN_SCENES = dataclasses.replace(
    renderer.SCENES_LAYOUT, occlusion_probability=0.0, object_distractors=(0, 1)
)


@pytest.fixture(scope="module")
def tiny_scenes(tmp_path_factory):
    """2 categories x 8 scenes of 64 px (8 train, 8 test), 6 negatives."""
    root = tmp_path_factory.mktemp("scenes") / "scenes"
    return synthetic.write_synthetic_scenes(root, seed=0, **SMALL)


def _flat_background(value):
    """A background of one grey level that draws nothing from the rng."""

    def background(rng, size):
        del rng
        big = size * renderer.SUPERSAMPLING
        image = Image.new("RGB", (big, big), (value,) * 3)
        return image, ImageDraw.Draw(image)

    return background


def _best_fixed_point_instability(points):
    """min over fixed points u of std_i ||points_i - u||, unit-square diag.

    The location instability (paper Sec. 5.2.2) of a filter that always
    fires at the same place `u`, over a 41 x 41 grid of places.
    """
    grid = np.stack(
        np.meshgrid(np.linspace(0, 1, 41), np.linspace(0, 1, 41)), axis=-1
    ).reshape(-1, 1, 2)
    distances = np.linalg.norm(points[None] - grid, axis=-1) / np.sqrt(2)
    return distances.std(axis=1).min()


# ------------------------------------------------------------ the files


def test_scenes_read_with_cub_reader(tiny_scenes):
    index = data.read_cub(tiny_scenes)
    assert index.num_images == 16 and index.num_classes == 2
    assert index.class_names.tolist() == ["001.Swallow", "002.Moth"]
    assert index.part_names.tolist() == list(synthetic.PART_NAMES)
    assert index.part_mask_paths is not None
    # 50/50 split within each category.
    for label in range(2):
        of_class = index.labels == label
        assert of_class.sum() == 8
        assert index.is_train[of_class].sum() == 4
    # The whole object is inside the image.
    boxes = index.boxes
    assert (boxes[:, :2] >= 0).all()
    assert (boxes[:, :2] + boxes[:, 2:] <= 64).all()
    assert (index.image_sizes == 64).all()
    with open(os.path.join(tiny_scenes, cub_writer.INFO_FILE)) as f:
        info = json.load(f)
    assert info["variant"] == "scenes"
    assert info["version"] == synthetic.SCENES_VERSION


def test_scenes_negatives_and_split_counts(tiny_scenes):
    folder = os.path.join(tiny_scenes, data.NEGATIVES_DIR)
    negatives = data.read_negatives(folder)
    assert negatives.shape == (6,)
    index = data.read_cub(tiny_scenes)
    sizes = data.dataset_sizes(index, split="test", negatives=folder)
    assert sizes == {"objects": 8, "negatives": 3, "examples": 11}
    # Negatives are background crops with distractors: all different.
    pixels = [np.asarray(Image.open(path)) for path in negatives]
    assert len({p.tobytes() for p in pixels}) == 6
    assert all(p.shape == (64, 64, 3) for p in pixels)


def test_scenes_are_deterministic(tmp_path, tiny_scenes):
    again = synthetic.write_synthetic_scenes(tmp_path / "a", seed=0, **SMALL)
    other = synthetic.write_synthetic_scenes(tmp_path / "b", seed=1, **SMALL)
    reference = tree_digest(tiny_scenes)
    assert len(reference) > 30
    assert tree_digest(again) == reference
    different = tree_digest(other)
    assert different.keys() == reference.keys()
    changed = [k for k in reference if different[k] != reference[k]]
    assert sum(k.endswith(".jpg") for k in changed) == 22  # 16 + 6 negatives


def test_scenes_differ_from_parts_with_the_same_seed(tmp_path, tiny_scenes):
    parts = synthetic.write_synthetic_parts(tmp_path / "parts", seed=0, **SMALL)
    first = os.path.join("images", "001.Swallow", "Swallow_0001.jpg")
    with open(os.path.join(parts, first), "rb") as a:
        with open(os.path.join(tiny_scenes, first), "rb") as b:
            assert a.read() != b.read()


def test_scene_landmarks_match_the_part_masks(tiny_scenes):
    index = data.read_cub(tiny_scenes)
    assert index.part_visible.sum() > 50
    for i in range(index.num_images):
        mask = np.asarray(Image.open(index.part_mask_paths[i]))
        for k in np.flatnonzero(index.part_visible[i]):
            x, y = index.part_locs[i, k]
            assert mask[int(y), int(x)] == k + 1
        # Left appendages stay image-left (rotation <= 20 degrees), so the
        # labels were swapped with every mirroring.
        for left, right in ((3, 4), (5, 6)):
            if index.part_visible[i, [left, right]].all():
                assert (
                    index.part_locs[i, left, 0] < index.part_locs[i, right, 0]
                )


# ------------------------------------------------------------ the renderer


def test_landmarks_lie_on_the_pasted_object():
    # The same object over two flat backgrounds: pixels of the object are
    # identical, background pixels differ by 160 grey levels. So a landmark
    # whose pixel agrees lies on the pasted object, wherever the placement
    # (scale, rotation, mirror, offset) put it.
    agree = total = 0
    for category in range(len(shapes.CATEGORY_NAMES)):
        for i in range(8):
            renders = [
                renderer.render_object(
                    np.random.default_rng([7, category, i]),
                    category,
                    96,
                    layout=CLEAN_SCENES,
                    background=_flat_background(value),
                )
                for value in (40, 200)
            ]
            (dark, mask, _, locs, visible), (light, *_, visible_b) = renders
            np.testing.assert_array_equal(visible, visible_b)
            present = np.isin(np.arange(1, 8), mask)
            # Nothing hides a part of the clean layout, nothing is cut off.
            assert visible.sum() >= present.sum() - 1
            assert (present | ~visible).all()
            assert (
                np.abs(dark.astype(int) - light)[mask == 0] > 100
            ).mean() > 0.9
            for k in np.flatnonzero(visible):
                x, y = locs[k].astype(int)
                agree += np.abs(dark[y, x].astype(int) - light[y, x]).max() <= 2
                total += 1
    assert total > 150
    assert agree / total > 0.97


def test_scenes_landmarks_spread_over_the_image():
    # A filter stuck at one place scores far worse on whole scenes than on
    # box-cropped parts images (see the module docstring of `synthetic`).
    scenes, cropped = [], []
    for category in range(len(shapes.CATEGORY_NAMES)):
        for i in range(16):
            rng = np.random.default_rng([3, category, i])
            *_, locs, visible = renderer.render_object(
                rng,
                category,
                64,
                layout=CLEAN_SCENES,
                background=_flat_background(128),
            )
            if visible[0]:
                scenes.append(locs[0] / 64)  # back, image frame
            rng = np.random.default_rng([3, category, i])
            _, _, box, locs, visible = renderer.render_object(
                rng,
                category,
                64,
                layout=renderer.PARTS_LAYOUT,
                background=renderer.textured_background,
            )
            if visible[0]:
                box = np.asarray(box)
                cropped.append((locs[0] - box[:2]) / box[2:])  # box frame
    assert len(scenes) > 70 and len(cropped) > 50
    on_scenes = _best_fixed_point_instability(np.array(scenes))
    on_crops = _best_fixed_point_instability(np.array(cropped))
    assert on_scenes > 0.06
    assert on_scenes > 1.5 * on_crops


# ------------------------------------------------------------ photos


def test_photo_backgrounds_are_distinct_crops():
    crops = []
    for i in range(12):
        image, _ = photos.photo_background(np.random.default_rng(i), 32)
        assert image.size == (64, 64) and image.mode == "RGB"
        crops.append(np.asarray(image))
    assert len({c.tobytes() for c in crops}) == 12
    again, _ = photos.photo_background(np.random.default_rng(0), 32)
    np.testing.assert_array_equal(np.asarray(again), crops[0])
    # Real photos, not flat fields: every crop has texture.
    assert all(c.std(axis=(0, 1)).max() > 5 for c in crops)


def test_every_photo_is_shipped_and_documented():
    with open(os.path.join(photos.PHOTO_DIR, "README.md")) as f:
        readme = f.read()
    for name in photos.PHOTO_FILES:
        assert os.path.isfile(os.path.join(photos.PHOTO_DIR, name)), name
        assert f"`{name}`" in readme, name
    assert len(photos.load_photos()) == len(photos.PHOTO_FILES)


def test_missing_photos_name_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(photos, "PHOTO_DIR", str(tmp_path))
    photos.load_photos.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="astronaut.jpg"):
            synthetic.write_synthetic_scenes(tmp_path / "out", **SMALL)
    finally:
        photos.load_photos.cache_clear()


# ------------------------------------------------------------ API


def test_scenes_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="num_classes=0"):
        synthetic.write_synthetic_scenes(tmp_path / "x", num_classes=0)
    with pytest.raises(ValueError, match="image_size=8"):
        synthetic.write_synthetic_scenes(tmp_path / "x", image_size=8)
    with pytest.raises(ValueError, match="num_negatives=-1"):
        synthetic.write_synthetic_scenes(tmp_path / "x", num_negatives=-1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("")
    with pytest.raises(ValueError, match="not empty"):
        synthetic.write_synthetic_scenes(tmp_path / "full")


def _small_scenes(calls):
    original = synthetic.write_synthetic_scenes

    def small(root, *, seed):
        calls.append(root)
        return original(
            root,
            seed=seed,
            num_classes=1,
            images_per_class=2,
            image_size=32,
            num_negatives=2,
        )

    return small


def test_default_data_dir_scenes_variant(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        synthetic, "write_synthetic_scenes", _small_scenes(calls)
    )
    path = data.default_data_dir(tmp_path, variant="scenes")
    assert path == str(tmp_path / "synthetic_scenes_v1_seed0")
    assert data.read_cub(path).num_images == 2
    assert data.default_data_dir(tmp_path, variant="scenes") == path
    assert len(calls) == 1
    assert os.listdir(tmp_path) == ["synthetic_scenes_v1_seed0"]
    with pytest.raises(ValueError, match="variant='cropped'"):
        data.default_data_dir(tmp_path, variant="cropped")


def test_train_config_selects_the_embedded_dataset(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        synthetic, "write_synthetic_scenes", _small_scenes(calls)
    )
    config = train.TrainConfig(
        embedded_dataset="scenes", task="single", cache_dir=str(tmp_path)
    ).validate()
    index, data_dir, negatives = train._load_data(config)
    assert data_dir == str(tmp_path / "synthetic_scenes_v1_seed0")
    assert index.num_images == 2 and negatives.shape == (2,)
    with pytest.raises(ValueError, match="embedded_dataset='other'"):
        train.TrainConfig(embedded_dataset="other").validate()
    with pytest.raises(ValueError, match="Unset one of them"):
        train.TrainConfig(embedded_dataset="scenes", data_dir="/d").validate()


def test_generator_modules_import_no_tensorflow():
    # The embedded datasets are written, read and their negatives listed
    # without TensorFlow (JAX-only machines); only the tf.data pipeline
    # needs it.
    for name in (
        "shapes",
        "renderer",
        "cub_writer",
        "photos",
        "synthetic",
        "cub",
        "cub_tables",
        "negatives",
    ):
        with open(os.path.join(DATA_PACKAGE, f"{name}.py")) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert not module.startswith(("tensorflow", "keras.")), (
                    name,
                    module,
                )
                assert module != "keras", (name, module)


def test_scenes_through_the_uncropped_pipeline(tiny_scenes):
    # Whole images (crop_to_box=False), resized: landmarks stay on their
    # parts' masks and spread over the image.
    index = data.read_cub(tiny_scenes)
    dataset = data.make_dataset(
        index,
        split="all",
        image_size=48,
        batch_size=16,
        crop_to_box=False,
        include_part_masks=True,
    )
    batch = {k: v.numpy() for k, v in next(iter(dataset)).items()}
    assert batch["image"].shape == (16, 48, 48, 3)
    hits = [
        batch["part_mask"][i, int(y), int(x)] == k + 1
        for i, k in np.argwhere(batch["part_visible"])
        for x, y in [batch["parts"][i, k]]
    ]
    assert len(hits) > 50 and np.mean(hits) > 0.85
    backs = batch["parts"][batch["part_visible"][:, 0], 0]
    assert (backs.max(axis=0) - backs.min(axis=0) > 16).all()
