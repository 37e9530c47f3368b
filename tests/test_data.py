"""Tests for `keras_interp.data`: CUB reader, pipeline, synthetic set, TFDS."""

import hashlib
import logging
import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from keras_interp import data
from keras_interp.data import pipeline
from keras_interp.data import synthetic

# The fake tree: 2 classes, 5 images of 40 x 30 pixels, 3 train / 2 test.
IMAGE_WIDTH, IMAGE_HEIGHT = 40, 30
FAKE_PARTS = ("back", "left eye", "right eye")
FAKE_IMAGES = (
    # id, relative path, class id, is_train, box [x, y, w, h]
    (1, "001.Aa/Aa_0001.jpg", 1, 1, (10.0, 5.0, 20.0, 10.0)),
    (2, "001.Aa/Aa_0002.jpg", 1, 0, (0.0, 0.0, 40.0, 30.0)),
    (3, "002.Bb/Bb_0001.jpg", 2, 1, (5.0, 5.0, 30.0, 20.0)),
    (4, "002.Bb/Bb_0002.jpg", 2, 1, (5.0, 5.0, 30.0, 20.0)),
    (5, "002.Bb/Bb_0003.jpg", 2, 0, (5.0, 5.0, 30.0, 20.0)),
)
# Landmarks of image 1: back lies outside its box (x > 10 + 20).
IMAGE_1_PARTS = {1: (35.0, 10.0), 2: (15.0, 7.5), 3: (25.0, 10.0)}
OTHER_PARTS = {1: (20.0, 15.0), 2: None, 3: (12.0, 9.0)}


def _write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


@pytest.fixture
def fake_cub(tmp_path):
    """A tiny CUB_200_2011 tree in the real formats; returns its parent."""
    root = tmp_path / "CUB_200_2011"
    rng = np.random.default_rng(0)
    for _, relative, _, _, _ in FAKE_IMAGES:
        path = root / "images" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (IMAGE_HEIGHT, IMAGE_WIDTH, 3))
        Image.fromarray(pixels.astype("uint8")).save(path, quality=95)
    _write_lines(
        root / "images.txt", [f"{i} {r}" for i, r, _, _, _ in FAKE_IMAGES]
    )
    _write_lines(
        root / "image_class_labels.txt",
        [f"{i} {c}" for i, _, c, _, _ in FAKE_IMAGES],
    )
    _write_lines(root / "classes.txt", ["1 001.Aa", "2 002.Bb"])
    _write_lines(
        root / "train_test_split.txt",
        [f"{i} {t}" for i, _, _, t, _ in FAKE_IMAGES],
    )
    _write_lines(
        root / "bounding_boxes.txt",
        [f"{i} " + " ".join(map(str, b)) for i, _, _, _, b in FAKE_IMAGES],
    )
    _write_lines(
        root / "parts" / "parts.txt",
        [f"{k} {name}" for k, name in enumerate(FAKE_PARTS, start=1)],
    )
    locs = []
    for image_id, *_ in FAKE_IMAGES:
        table = IMAGE_1_PARTS if image_id == 1 else OTHER_PARTS
        for k, point in table.items():
            if point is None:
                locs.append(f"{image_id} {k} 0.0 0.0 0")
            else:
                locs.append(f"{image_id} {k} {point[0]} {point[1]} 1")
    _write_lines(root / "parts" / "part_locs.txt", locs)
    return tmp_path


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory):
    """2 categories x 6 images of 64 px, 4 negatives (8 train, 4 test)."""
    root = tmp_path_factory.mktemp("synthetic") / "parts"
    return synthetic.write_synthetic_parts(
        root,
        seed=0,
        num_classes=2,
        images_per_class=6,
        image_size=64,
        num_negatives=4,
    )


def _first_batch(dataset):
    return {k: v.numpy() for k, v in next(iter(dataset)).items()}


def _tree_digest(root):
    digests = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, root)] = hashlib.sha256(
                    f.read()
                ).hexdigest()
    return digests


# ---------------------------------------------------------------- reader


def test_read_cub_fake_tree(fake_cub):
    index = data.read_cub(fake_cub)  # the parent of CUB_200_2011/
    assert index.data_dir == str(fake_cub / "CUB_200_2011")
    np.testing.assert_array_equal(index.image_ids, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(index.labels, [0, 0, 1, 1, 1])
    assert index.labels.dtype == np.int32
    assert index.class_names.tolist() == ["001.Aa", "002.Bb"]
    assert int(index.is_train.sum()) == 3
    assert int((~index.is_train).sum()) == 2
    np.testing.assert_array_equal(index.boxes[0], [10.0, 5.0, 20.0, 10.0])
    assert index.boxes.dtype == np.float32
    assert index.part_names.tolist() == list(FAKE_PARTS)
    assert index.has_parts and index.part_locs.shape == (5, 3, 2)
    np.testing.assert_array_equal(index.part_locs[0, 1], [15.0, 7.5])
    assert index.part_visible[0].all()
    assert not index.part_visible[1, 1]
    np.testing.assert_array_equal(index.part_locs[1, 1], [0.0, 0.0])
    assert index.part_mask_paths is None
    assert all(
        os.path.isabs(p) and os.path.isfile(p) for p in index.image_paths
    )
    # The CUB_200_2011 folder itself reads the same.
    direct = data.read_cub(fake_cub / "CUB_200_2011")
    np.testing.assert_array_equal(direct.image_paths, index.image_paths)


def test_read_cub_without_parts(fake_cub):
    shutil.rmtree(fake_cub / "CUB_200_2011" / "parts")
    index = data.read_cub(fake_cub)
    assert not index.has_parts
    assert index.part_names.shape == (0,)
    assert index.part_locs.shape == (5, 0, 2)
    assert index.part_visible.shape == (5, 0)
    batch = _first_batch(
        data.make_dataset(index, split="train", image_size=8, batch_size=3)
    )
    assert batch["parts"].shape == (3, 0, 2)
    assert batch["part_visible"].shape == (3, 0)


def test_read_cub_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="(?s)nowhere.*images.txt"):
        data.read_cub(missing)
    with pytest.raises(FileNotFoundError, match="No `images.txt`"):
        data.read_cub(tmp_path)


def test_read_cub_missing_file_names_path(fake_cub):
    os.remove(fake_cub / "CUB_200_2011" / "bounding_boxes.txt")
    with pytest.raises(FileNotFoundError) as info:
        data.read_cub(fake_cub)
    message = str(info.value)
    assert str(fake_cub / "CUB_200_2011" / "bounding_boxes.txt") in message
    assert "train_test_split.txt" in message  # the expected layout


def test_read_cub_malformed_line_names_file_and_line(fake_cub):
    path = fake_cub / "CUB_200_2011" / "bounding_boxes.txt"
    lines = path.read_text().splitlines()
    lines[2] = "3 5.0 five 30.0 20.0"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ValueError, match=r"bounding_boxes\.txt:3: '3 5\.0 five 30\.0 20\.0'"
    ):
        data.read_cub(fake_cub)


def test_read_cub_wrong_field_count_names_file_and_line(fake_cub):
    path = fake_cub / "CUB_200_2011" / "parts" / "part_locs.txt"
    lines = path.read_text().splitlines()
    lines[4] = "2 2 0 0"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ValueError, match=r"part_locs\.txt:5: '2 2 0 0'.*5 .*fields, got 4"
    ):
        data.read_cub(fake_cub)


def test_read_cub_image_without_label(fake_cub):
    path = fake_cub / "CUB_200_2011" / "image_class_labels.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"image_class_labels.*\[5\]"):
        data.read_cub(fake_cub)


def test_read_cub_missing_image_names_path(fake_cub):
    missing = fake_cub / "CUB_200_2011" / "images" / "002.Bb" / "Bb_0002.jpg"
    os.remove(missing)
    with pytest.raises(FileNotFoundError, match="1 of 5 images") as info:
        data.read_cub(fake_cub)
    assert str(missing) in str(info.value)


# -------------------------------------------------------------- pipeline


def test_make_dataset_shapes_and_dtypes(fake_cub):
    index = data.read_cub(fake_cub)
    dataset = data.make_dataset(
        index,
        split="train",
        image_size=8,
        batch_size=2,
        augment=True,
        shuffle=True,
    )
    spec = dataset.element_spec
    assert spec["image"].shape.as_list() == [2, 8, 8, 3]
    batch = _first_batch(dataset)
    assert set(batch) == {"image", "label", "parts", "part_visible"}
    assert batch["image"].dtype == np.float32
    assert batch["image"].shape == (2, 8, 8, 3)
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 255.0
    assert batch["image"].max() > 1.0  # not normalised
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (2,)
    assert batch["parts"].dtype == np.float32
    assert batch["parts"].shape == (2, 3, 2)
    assert batch["part_visible"].dtype == bool
    no_parts = data.make_dataset(
        index, split="test", image_size=8, batch_size=2, include_parts=False
    )
    assert set(no_parts.element_spec) == {"image", "label"}


def test_dataset_sizes(fake_cub):
    index = data.read_cub(fake_cub)
    assert data.dataset_sizes(index, split="train") == {
        "objects": 3,
        "negatives": 0,
        "examples": 3,
    }
    sizes = data.dataset_sizes(
        index, split="all", batch_size=2, drop_remainder=False
    )
    assert sizes["examples"] == 5 and sizes["batches"] == 3


def test_landmarks_follow_crop_and_resize(fake_cub):
    index = data.read_cub(fake_cub)
    size = 8
    batch = _first_batch(
        data.make_dataset(index, split="train", image_size=size, batch_size=3)
    )
    # Image 1, box [10, 5, 20, 10]: x' = (x - 10) * 8 / 20,
    # y' = (y - 5) * 8 / 10.
    np.testing.assert_allclose(batch["parts"][0, 1], [2.0, 2.0])  # (15, 7.5)
    np.testing.assert_allclose(batch["parts"][0, 2], [6.0, 4.0])  # (25, 10)
    np.testing.assert_array_equal(batch["label"], [0, 1, 1])
    whole = _first_batch(
        data.make_dataset(
            index,
            split="train",
            image_size=size,
            batch_size=3,
            crop_to_box=False,
        )
    )
    # Whole 40 x 30 image: x' = x * 8 / 40, y' = y * 8 / 30.
    np.testing.assert_allclose(whole["parts"][0, 1], [3.0, 2.0])
    np.testing.assert_allclose(whole["parts"][0, 0], [7.0, 80.0 / 30.0])


def test_landmark_outside_crop_becomes_invisible(fake_cub):
    index = data.read_cub(fake_cub)
    assert index.part_visible[0, 0]  # back, annotated at (35, 10)
    cropped = _first_batch(
        data.make_dataset(index, split="train", image_size=8, batch_size=3)
    )
    whole = _first_batch(
        data.make_dataset(
            index,
            split="train",
            image_size=8,
            batch_size=3,
            crop_to_box=False,
        )
    )
    assert whole["part_visible"][0, 0]
    assert not cropped["part_visible"][0, 0]
    np.testing.assert_array_equal(cropped["parts"][0, 0], [0.0, 0.0])
    assert cropped["part_visible"][0, 1:].all()


def test_flip_mirrors_x_and_swaps_left_right(fake_cub):
    index = data.read_cub(fake_cub)
    size = 8
    plain = _first_batch(
        data.make_dataset(index, split="train", image_size=size, batch_size=3)
    )
    augmented = data.make_dataset(
        index,
        split="train",
        image_size=size,
        batch_size=3,
        augment=True,
        repeat=True,
        seed=3,
    )
    # Hand values for image 1 (see the crop test): left eye (2, 2), right
    # eye (6, 4). Flipped: x -> 8 - x, then left and right swap, so the new
    # left eye is the mirrored right eye (8 - 6, 4) and vice versa.
    unflipped = np.array([[0.0, 0.0], [2.0, 2.0], [6.0, 4.0]])
    flipped = np.array([[0.0, 0.0], [2.0, 4.0], [6.0, 2.0]])
    seen = set()
    for batch in augmented.take(12):
        image = batch["image"].numpy()[0]
        parts = batch["parts"].numpy()[0]
        if np.array_equal(image, plain["image"][0]):
            np.testing.assert_allclose(parts, unflipped)
            seen.add("plain")
        else:
            np.testing.assert_array_equal(image, plain["image"][0][:, ::-1])
            np.testing.assert_allclose(parts, flipped)
            seen.add("flipped")
        np.testing.assert_array_equal(
            batch["part_visible"].numpy()[0], [False, True, True]
        )
    assert seen == {"plain", "flipped"}


def test_flip_permutation():
    names = [
        "back",
        "left eye",
        "Right Eye",
        "right eye",
        "LEFT LEG",
        "right leg",
        "left wing",
        "leftover",
    ]
    # Matching is case-preserving: "Right Eye", "LEFT LEG" and "right leg"
    # have no counterpart, nor "left wing"; "leftover" is not "left".
    np.testing.assert_array_equal(
        pipeline.flip_permutation(names), [0, 3, 2, 1, 4, 5, 6, 7]
    )
    np.testing.assert_array_equal(
        pipeline.flip_permutation(
            ["left wing", "right wing", "Left Leg", "Right Leg"]
        ),
        [1, 0, 3, 2],
    )


def test_shuffle_and_flips_are_seeded(fake_cub):
    index = data.read_cub(fake_cub)

    def run(seed):
        dataset = data.make_dataset(
            index,
            split="all",
            image_size=8,
            batch_size=5,
            shuffle=True,
            augment=True,
            seed=seed,
            repeat=True,
        )
        return [
            (b["label"].numpy().tolist(), b["parts"].numpy().round(4).tolist())
            for b in dataset.take(6)
        ]

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_make_dataset_argument_errors(fake_cub):
    index = data.read_cub(fake_cub)
    with pytest.raises(ValueError, match="split='val'"):
        data.make_dataset(index, split="val")
    with pytest.raises(ValueError, match="image_size=0"):
        data.make_dataset(index, image_size=0)
    with pytest.raises(ValueError, match="part_segmentations"):
        data.make_dataset(index, batch_size=1, include_part_masks=True)
    with pytest.raises(ValueError, match="3 examples.*batch_size=32"):
        data.make_dataset(index, split="train", batch_size=32)


def test_negatives_mix_labels(fake_cub, tmp_path):
    folder = tmp_path / "negatives"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i, ext in enumerate([".jpg", ".png", ".JPEG", ".jpg", ".jpg"]):
        pixels = rng.integers(0, 256, (20 + i, 25, 3)).astype("uint8")
        Image.fromarray(pixels).save(folder / f"n{i}{ext}")
    (folder / "notes.txt").write_text("not an image")
    paths = data.read_negatives(folder)
    assert [os.path.basename(p) for p in paths] == [
        "n0.jpg",
        "n1.png",
        "n2.JPEG",
        "n3.jpg",
        "n4.jpg",
    ]
    index = data.read_cub(fake_cub)
    # 5 negatives: first 3 train (rounded up), last 2 test.
    sizes = data.dataset_sizes(index, split="train", negatives=folder)
    assert sizes == {"objects": 3, "negatives": 3, "examples": 6}
    batch = _first_batch(
        data.make_dataset(
            index,
            split="train",
            image_size=8,
            batch_size=6,
            negatives=folder,
        )
    )
    np.testing.assert_array_equal(batch["label"], [1, 1, 1, 0, 0, 0])
    assert not batch["part_visible"][3:].any()
    assert batch["part_visible"][0, 1]
    test = _first_batch(
        data.make_dataset(
            index,
            split="test",
            image_size=8,
            batch_size=4,
            negatives=paths,
        )
    )
    np.testing.assert_array_equal(test["label"], [1, 1, 0, 0])


def test_read_negatives_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        data.read_negatives(tmp_path / "nothing_here")
    with pytest.raises(ValueError, match="holds no image"):
        data.read_negatives(tmp_path)


# ------------------------------------------------------------- synthetic


def test_synthetic_reads_with_cub_reader(tiny_synthetic):
    index = data.read_cub(tiny_synthetic)
    assert index.num_images == 12 and index.num_classes == 2
    assert int(index.is_train.sum()) == 8
    assert index.part_names.tolist() == list(synthetic.PART_NAMES)
    assert index.part_mask_paths is not None
    # Every category has at least 4 parts that are usually visible.
    for label in range(2):
        rate = index.part_visible[index.labels == label].mean(axis=0)
        assert (rate > 0.5).sum() >= 4
    boxes = index.boxes
    assert (boxes[:, :2] >= 0).all() and (
        boxes[:, :2] + boxes[:, 2:] <= 64
    ).all()
    # Visible landmarks lie inside the object's box.
    x, y = index.part_locs[..., 0], index.part_locs[..., 1]
    inside = (
        (x >= boxes[:, None, 0])
        & (x <= boxes[:, None, 0] + boxes[:, None, 2])
        & (y >= boxes[:, None, 1])
        & (y <= boxes[:, None, 1] + boxes[:, None, 3])
    )
    assert inside[index.part_visible].all()
    negatives = data.read_negatives(
        os.path.join(tiny_synthetic, synthetic.NEGATIVES_DIR)
    )
    assert negatives.shape == (4,)


def test_synthetic_is_deterministic(tmp_path, tiny_synthetic):
    kwargs = dict(
        num_classes=2, images_per_class=6, image_size=64, num_negatives=4
    )
    again = synthetic.write_synthetic_parts(tmp_path / "a", seed=0, **kwargs)
    other = synthetic.write_synthetic_parts(tmp_path / "b", seed=1, **kwargs)
    reference = _tree_digest(tiny_synthetic)
    assert len(reference) > 30
    assert _tree_digest(again) == reference
    different = _tree_digest(other)
    assert different.keys() == reference.keys()
    changed = [k for k in reference if different[k] != reference[k]]
    assert sum(k.endswith(".jpg") for k in changed) == 16  # 12 + 4 negatives
    assert "parts/part_locs.txt" in changed


def test_synthetic_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="num_classes=9"):
        synthetic.write_synthetic_parts(tmp_path / "x", num_classes=9)
    with pytest.raises(ValueError, match="image_size=8"):
        synthetic.write_synthetic_parts(tmp_path / "x", image_size=8)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("")
    with pytest.raises(ValueError, match="not empty"):
        synthetic.write_synthetic_parts(tmp_path / "full")


def test_part_masks_align_with_landmarks(tiny_synthetic):
    index = data.read_cub(tiny_synthetic)
    hits = total = 0
    for crop_to_box in (True, False):
        dataset = data.make_dataset(
            index,
            split="all",
            image_size=48,
            batch_size=12,
            augment=True,
            include_part_masks=True,
            crop_to_box=crop_to_box,
        )
        batch = _first_batch(dataset)
        assert batch["part_mask"].dtype == np.uint8
        assert batch["part_mask"].shape == (12, 48, 48)
        for i, k in np.argwhere(batch["part_visible"]):
            x, y = batch["parts"][i, k]
            hits += batch["part_mask"][i, int(y), int(x)] == k + 1
            total += 1
    assert total > 50
    assert hits / total > 0.9


def test_flip_swaps_part_mask_ids(tiny_synthetic):
    index = data.read_cub(tiny_synthetic)
    kwargs = dict(
        split="all", image_size=32, batch_size=12, include_part_masks=True
    )
    plain = _first_batch(data.make_dataset(index, **kwargs))
    augmented = _first_batch(
        data.make_dataset(index, augment=True, seed=1, **kwargs)
    )
    perm = pipeline.flip_permutation(index.part_names)
    lookup = np.concatenate([[0], perm + 1])
    num_flipped = 0
    for i in range(12):
        if np.array_equal(augmented["image"][i], plain["image"][i]):
            np.testing.assert_array_equal(
                augmented["part_mask"][i], plain["part_mask"][i]
            )
        else:
            num_flipped += 1
            np.testing.assert_array_equal(
                augmented["part_mask"][i],
                lookup[plain["part_mask"][i][:, ::-1]],
            )
    assert 0 < num_flipped < 12
    # The synthetic objects face up, so a left part stays image-left of its
    # right counterpart after a flip, only if the labels are swapped.
    left, right = 3, 4  # left wing, right wing
    both = (
        augmented["part_visible"][:, left] & augmented["part_visible"][:, right]
    )
    assert both.sum() >= 6
    assert (
        augmented["parts"][both, left, 0] < augmented["parts"][both, right, 0]
    ).all()


def test_negatives_from_synthetic_have_empty_masks(tiny_synthetic):
    index = data.read_cub(tiny_synthetic)
    batch = _first_batch(
        data.make_dataset(
            index,
            split="train",
            image_size=32,
            batch_size=10,
            include_part_masks=True,
            negatives=os.path.join(tiny_synthetic, synthetic.NEGATIVES_DIR),
        )
    )
    np.testing.assert_array_equal(batch["label"], [1] * 8 + [0] * 2)
    assert batch["part_mask"][:8].any(axis=(1, 2)).all()
    assert not batch["part_mask"][8:].any()


def test_default_data_dir_generates_once_atomically(tmp_path, monkeypatch):
    calls = []
    original = synthetic.write_synthetic_parts

    def small(root, *, seed):
        calls.append(root)
        return original(
            root,
            seed=seed,
            num_classes=1,
            images_per_class=2,
            image_size=32,
            num_negatives=1,
        )

    monkeypatch.setattr(synthetic, "write_synthetic_parts", small)
    monkeypatch.setenv(synthetic.CACHE_ENV_VAR, str(tmp_path / "cache"))
    path = data.default_data_dir()
    assert path == str(tmp_path / "cache" / "synthetic_parts_v1_seed0")
    assert data.read_cub(path).num_images == 2
    assert data.default_data_dir() == path
    assert len(calls) == 1
    assert os.listdir(tmp_path / "cache") == ["synthetic_parts_v1_seed0"]

    def broken(root, *, seed):
        os.makedirs(os.path.join(root, "images"))
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "write_synthetic_parts", broken)
    with pytest.raises(KeyboardInterrupt):
        data.default_data_dir(cache_dir=tmp_path / "other")
    assert os.listdir(tmp_path / "other") == []


# ------------------------------------------------------------------ TFDS


def test_load_tfds_cub_without_tfds_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match="pip install tensorflow-datasets"):
        data.load_tfds_cub(tmp_path, "train")


def test_load_tfds_cub_with_mock_data(tmp_path, caplog):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(
        num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE
    ):
        with caplog.at_level(logging.WARNING):
            dataset = data.load_tfds_cub(
                tmp_path,
                "train",
                image_size=16,
                batch_size=2,
                augment=True,
                shuffle=True,
            )
        batch = _first_batch(dataset)
    assert "no part landmarks" in caplog.text
    assert batch["image"].shape == (2, 16, 16, 3)
    assert batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32
    assert ((batch["label"] >= 0) & (batch["label"] < 200)).all()
    assert batch["parts"].shape == (2, 0, 2)
    assert batch["part_visible"].shape == (2, 0)


def test_load_tfds_cub_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="caltech_birds2011"):
        data.load_tfds_cub(tmp_path / "absent", "train")
