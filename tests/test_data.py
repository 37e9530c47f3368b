"""Tests for `keras_interp.data`: CUB reader, pipeline, synthetic set, TFDS."""

import logging
import os
import pathlib
import shutil
import sys

import numpy as np
import pytest
from helpers.files import tree_digest
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


def _replace_line(path, number, text):
    """Replaces the 1-based line `number` of `path` with `text`."""
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def _truncate(path):
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


@pytest.mark.parametrize("class_id", ["99", "0", "-1", "1.5", "3"])
def test_read_cub_rejects_invalid_class_id(fake_cub, class_id):
    path = fake_cub / "CUB_200_2011" / "image_class_labels.txt"
    _replace_line(path, 3, f"3 {class_id}")
    with pytest.raises(ValueError) as info:
        data.read_cub(fake_cub)
    message = str(info.value)
    assert f"{path}:3: '3 {class_id}'" in message
    assert f"got '{class_id}'" in message
    assert "integers in 1..2" in message
    assert "classes.txt" in message


@pytest.mark.parametrize(
    "relative, line, match",
    [
        ("train_test_split.txt", "2 2", r"train_test_split\.txt:2: '2 2'"),
        ("train_test_split.txt", "2 0.5", r"train_test_split\.txt:2: '2 0\.5'"),
        (
            "parts/part_locs.txt",
            "1 1 35.0 10.0 2",
            r"part_locs\.txt:1: '1 1 35\.0 10\.0 2'",
        ),
    ],
)
def test_read_cub_rejects_flags_other_than_0_or_1(
    fake_cub, relative, line, match
):
    path = fake_cub / "CUB_200_2011" / relative
    number = int(line.split()[0]) if "split" in relative else 1
    _replace_line(path, number, line)
    with pytest.raises(ValueError, match=match + r".*1.*0"):
        data.read_cub(fake_cub)


def test_read_cub_records_image_sizes(fake_cub):
    index = data.read_cub(fake_cub)
    assert index.image_sizes.dtype == np.int32
    np.testing.assert_array_equal(
        index.image_sizes, [[IMAGE_WIDTH, IMAGE_HEIGHT]] * 5
    )
    assert index.images_checked
    assert not data.read_cub(fake_cub, check_images=False).images_checked


@pytest.mark.parametrize(
    "box",
    [
        "1000.0 1000.0 50.0 50.0",  # entirely outside: a blank 1-px crop
        "10.0 5.0 35.0 10.0",  # right edge 45 > 40 + 1
        "-2.0 5.0 20.0 10.0",  # left edge -2 < -1
    ],
)
def test_read_cub_rejects_box_outside_image(fake_cub, box):
    path = fake_cub / "CUB_200_2011" / "bounding_boxes.txt"
    _replace_line(path, 1, f"1 {box}")
    with pytest.raises(ValueError) as info:
        data.read_cub(fake_cub)
    message = str(info.value)
    assert f"{path}:1: '1 {box}'" in message
    image = fake_cub / "CUB_200_2011" / "images" / "001.Aa" / "Aa_0001.jpg"
    assert f"{image} is {IMAGE_WIDTH} x {IMAGE_HEIGHT} pixels" in message
    # The check reads image headers only, so it runs without check_images.
    with pytest.raises(ValueError, match="outside their image"):
        data.read_cub(fake_cub, check_images=False)


def test_box_within_one_pixel_of_the_border_is_clipped(fake_cub):
    path = fake_cub / "CUB_200_2011" / "bounding_boxes.txt"
    _replace_line(path, 1, "1 -0.5 5.0 41.0 25.5")  # [-0.5, 40.5) x [5, 30.5)
    index = data.read_cub(fake_cub)
    batch = _first_batch(
        data.make_dataset(index, split="train", image_size=8, batch_size=3)
    )
    # Cropped to the whole width and rows 5..30: x' = x * 8 / 40,
    # y' = (y - 5) * 8 / 25.
    np.testing.assert_allclose(
        batch["parts"][0, 1], [15.0 * 8 / 40, 2.5 * 8 / 25], rtol=1e-6
    )


def test_landmark_outside_image_is_invisible(fake_cub, caplog):
    path = fake_cub / "CUB_200_2011" / "parts" / "part_locs.txt"
    # Image 1 (40 x 30): back at x = 45 (outside), left eye at x = 40 (the
    # right border: outside [0, 40)), right eye at x = 39.5 (inside).
    _replace_line(path, 1, "1 1 45.0 10.0 1")
    _replace_line(path, 2, "1 2 40.0 7.5 1")
    _replace_line(path, 3, "1 3 39.5 10.0 1")
    with caplog.at_level(logging.WARNING):
        index = data.read_cub(fake_cub)
    np.testing.assert_array_equal(index.part_visible[0], [False, False, True])
    np.testing.assert_array_equal(index.part_locs[0, :2], np.zeros((2, 2)))
    np.testing.assert_array_equal(index.part_locs[0, 2], [39.5, 10.0])
    assert "2 visible landmark(s)" in caplog.text
    assert f"{path}" in caplog.text and "line 1" in caplog.text
    # The pipeline agrees: the uncropped image shows the same visibility.
    whole = _first_batch(
        data.make_dataset(
            index, split="train", image_size=8, batch_size=3, crop_to_box=False
        )
    )
    np.testing.assert_array_equal(
        whole["part_visible"][0], [False, False, True]
    )


def test_read_cub_rejects_corrupt_image(fake_cub):
    image = fake_cub / "CUB_200_2011" / "images" / "002.Bb" / "Bb_0002.jpg"
    _truncate(image)
    with pytest.raises(ValueError, match="1 of 5 images") as info:
        data.read_cub(fake_cub)
    message = str(info.value)
    assert f"{image}: OSError" in message
    assert "Replace these files" in message
    # The header is intact: without the full decode the file passes.
    index = data.read_cub(fake_cub, check_images=False)
    assert not index.images_checked


def test_read_cub_rejects_files_that_are_no_image(fake_cub):
    root = fake_cub / "CUB_200_2011" / "images"
    (root / "001.Aa" / "Aa_0002.jpg").write_text("<html>Not found</html>")
    pixels = np.zeros((IMAGE_HEIGHT, IMAGE_WIDTH, 3), "uint8")
    Image.fromarray(pixels).save(root / "002.Bb" / "Bb_0001.jpg", "TIFF")
    for check_images in (True, False):
        with pytest.raises(ValueError, match="2 of 5 images") as info:
            data.read_cub(fake_cub, check_images=check_images)
        message = str(info.value)
        assert str(root / "001.Aa" / "Aa_0002.jpg") in message
        tiff = root / "002.Bb" / "Bb_0001.jpg"
        assert f"{tiff}: ValueError: format TIFF" in message


def test_read_cub_check_images_must_be_bool(fake_cub):
    with pytest.raises(ValueError, match="check_images='yes'"):
        data.read_cub(fake_cub, check_images="yes")


def test_read_cub_checks_part_masks(tiny_synthetic, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_synthetic, root)
    index = data.read_cub(root)
    mask = index.part_mask_paths[3]
    Image.fromarray(np.zeros((10, 12), "uint8")).save(mask)
    with pytest.raises(ValueError, match="differ in size") as info:
        data.read_cub(root, check_images=False)
    assert f"{mask} is [12, 10]" in str(info.value)
    corrupt = index.part_mask_paths[5]
    _truncate(pathlib.Path(corrupt))
    with pytest.raises(ValueError, match="1 of 12 part masks") as info:
        data.read_cub(root)
    assert f"{corrupt}: " in str(info.value)


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


def _batches(dataset, count=None):
    dataset = dataset if count is None else dataset.take(count)
    return [{k: v.numpy() for k, v in b.items()} for b in dataset]


@pytest.mark.parametrize(
    "position, kwargs",
    [
        (0, dict(split="all")),
        (4, dict(split="all")),  # the last example of the epoch
        (4, dict(split="test")),  # the last test example
        (2, dict(split="all", shuffle=True, augment=True, repeat=True)),
    ],
)
def test_make_dataset_names_file_that_fails_to_decode(
    fake_cub, position, kwargs
):
    tf = pytest.importorskip("tensorflow")
    index = data.read_cub(fake_cub, check_images=False)
    bad = index.image_paths[position]
    _truncate(pathlib.Path(bad))
    dataset = data.make_dataset(
        index, image_size=8, batch_size=3, drop_remainder=False, **kwargs
    )
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        _batches(dataset, count=8)
    message = str(info.value)
    assert f"Could not read or decode {bad}." in message
    assert "check_images=True" in message


def test_make_dataset_names_corrupt_negative(fake_cub, tmp_path):
    tf = pytest.importorskip("tensorflow")
    folder = tmp_path / "negatives"
    folder.mkdir()
    for i in range(2):
        pixels = np.full((20, 25, 3), 40 * i, "uint8")
        Image.fromarray(pixels).save(folder / f"n{i}.jpg")
    (folder / "n0.jpg").write_bytes(b"")
    index = data.read_cub(fake_cub)  # every object image checked
    dataset = data.make_dataset(
        index, split="train", image_size=8, batch_size=4, negatives=folder
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="n0.jpg"):
        _batches(dataset)


@pytest.mark.parametrize("repeat", [False, True])
def test_naming_failures_changes_no_example(tiny_synthetic, repeat):
    # The checked index takes the plain pipeline, the unchecked one the
    # pipeline that numbers examples to name a failing file: the same
    # seed gives the same batches, none skipped or reordered.
    kwargs = dict(
        split="all",
        image_size=16,
        batch_size=5,
        shuffle=True,
        augment=True,
        seed=2,
        include_part_masks=True,
        drop_remainder=False,
        repeat=repeat,
    )
    count = 6 if repeat else None  # 12 images: 3 batches per epoch
    plain = _batches(
        data.make_dataset(data.read_cub(tiny_synthetic), **kwargs), count
    )
    named = _batches(
        data.make_dataset(
            data.read_cub(tiny_synthetic, check_images=False), **kwargs
        ),
        count,
    )
    assert len(named) == len(plain) == (6 if repeat else 3)
    for a, b in zip(plain, named, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


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
        os.path.join(tiny_synthetic, data.NEGATIVES_DIR)
    )
    assert negatives.shape == (4,)


def test_synthetic_is_deterministic(tmp_path, tiny_synthetic):
    kwargs = dict(
        num_classes=2, images_per_class=6, image_size=64, num_negatives=4
    )
    again = synthetic.write_synthetic_parts(tmp_path / "a", seed=0, **kwargs)
    other = synthetic.write_synthetic_parts(tmp_path / "b", seed=1, **kwargs)
    reference = tree_digest(tiny_synthetic)
    assert len(reference) > 30
    assert tree_digest(again) == reference
    different = tree_digest(other)
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
            negatives=os.path.join(tiny_synthetic, data.NEGATIVES_DIR),
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


def test_module_docstring_shows_the_layout_the_errors_print():
    from keras_interp.data import cub
    from keras_interp.data import cub_tables

    for line in cub_tables.LAYOUT.splitlines():
        assert line in cub.__doc__, line
    assert cub.PART_MASKS_DIR in cub_tables.LAYOUT
