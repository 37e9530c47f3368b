"""Tests for keras_interp.evaluation: geometry, metrics and plots.

Expected values are computed by hand in the comments, or by brute force: the
receptive field (RF) is checked against the support of the gradient of one
output unit with respect to the input image.
"""

import importlib
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_interp
from keras_interp import evaluation
from keras_interp.evaluation import ReceptiveField

# --- Receptive field --------------------------------------------------------


def positive_linear(layer):
    """Clone function: same geometry, every path positive (no ReLU, no max).

    Max pooling routes the gradient to one input and ReLU can cut paths, so
    the gradient support of the real network can be smaller than its RF.
    With average pooling, no activation and positive averaging kernels the
    support is exactly the RF clipped to the image.
    """
    config = layer.get_config()
    if isinstance(layer, keras.layers.MaxPooling2D):
        return keras.layers.AveragePooling2D.from_config(config)
    if isinstance(layer, keras.layers.Conv2D):
        fan_in = int(np.prod(layer.kernel.shape[:3]))
        config.update(
            activation=None,
            kernel_initializer=keras.initializers.Constant(1.0 / fan_in),
            bias_initializer="zeros",
        )
        return type(layer).from_config(config)
    return layer.__class__.from_config(config)


def gradient_support(model, units, input_shape, seed=0):
    """`(len(units), H, W)` bool: pixels where d y[unit, 0] / d x != 0."""
    rng = np.random.default_rng(seed)
    x = tf.constant(
        rng.uniform(0.5, 1.0, (len(units),) + input_shape).astype("float32")
    )
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = model(x)
        picked = [y[b, i, j, 0] for b, (i, j) in enumerate(units)]
        total = tf.add_n(picked)
    grad = tape.gradient(total, x).numpy()
    return np.abs(grad).sum(axis=-1) > 0


def rf_interval(rf, axis, index, length=None):
    """Pixels [lo, hi) of the theoretical RF of cell `index`.

    Clipped to the image [0, length) when `length` is given.
    """
    center = rf.offset[axis] + index * rf.stride[axis]
    lo = center - rf.size[axis] / 2.0
    hi = center + rf.size[axis] / 2.0
    if length is None:
        return lo, hi
    return max(lo, 0.0), min(hi, float(length))


def support_interval(support, axis):
    """[first, last + 1) of the non-zero support along an axis."""
    hits = np.flatnonzero(support.any(axis=1 - axis))
    return float(hits[0]), float(hits[-1] + 1)


def check_against_gradients(model, layer_model, rf, units, exact=True):
    """Gradient support vs the computed RF, for each unit `(i, j)`.

    Always: the support lies inside the RF clipped to the image. With
    `exact` (a positive network), a unit whose RF lies inside the image has
    exactly the RF as support: same centre, same size. At the border the
    support can be smaller than the clipped RF: zero-padded cells (and
    dilated taps on them) depend on no pixel.
    """
    input_shape = tuple(model.input.shape[1:])
    supports = gradient_support(layer_model, units, input_shape)
    # A ReLU unit can be dead (empty support); a positive one never is.
    assert supports.any()
    interior = 0
    for (i, j), support in zip(units, supports):
        intervals = [
            rf_interval(rf, axis, index, input_shape[axis])
            for axis, index in ((0, i), (1, j))
        ]
        inside = True
        for axis, index in ((0, i), (1, j)):
            lo, hi = rf_interval(rf, axis, index)
            inside = inside and lo >= 0.0 and hi <= input_shape[axis]
        if not support.any():
            assert not (exact and inside), (i, j)
            continue
        for axis, (lo, hi) in enumerate(intervals):
            got_lo, got_hi = support_interval(support, axis)
            assert lo <= got_lo and got_hi <= hi, (i, j, axis)
            if exact and inside:
                # Same interval, hence same centre and size as computed.
                assert (got_lo, got_hi) == (lo, hi), (i, j, axis)
        interior += inside
    return interior


def hand_model(input_shape=(43, 23, 2), name="hand"):
    """'same' with stride (2, 1), padding, dilation, a pool and a merge."""
    init = {"kernel_initializer": "ones", "bias_initializer": "zeros"}
    inputs = keras.Input(input_shape)
    # rows: 43 -> 22, pad_before = ((22 - 1) * 2 + 3 - 43) // 2 = 1
    x = keras.layers.Conv2D(
        3, 3, strides=(2, 1), padding="same", name="c1", **init
    )(inputs)
    x = keras.layers.ZeroPadding2D(((1, 0), (2, 1)), name="pad")(x)
    x = keras.layers.Conv2D(3, 3, dilation_rate=2, name="c2", **init)(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    # 'same' pool of odd size (19 rows): the extra padding goes after.
    x = keras.layers.AveragePooling2D(2, padding="same", name="pool")(x)
    a = keras.layers.DepthwiseConv2D(
        3,
        padding="same",
        name="dw",
        depthwise_initializer="ones",
        bias_initializer="zeros",
    )(x)
    b = keras.layers.Conv2D(3, 1, name="c1x1", **init)(x)
    x = keras.layers.Add(name="add")([a, b])
    x = keras.layers.Cropping2D(((1, 0), (0, 1)), name="crop")(x)
    x = keras.layers.SeparableConv2D(
        2,
        2,
        name="top",
        depthwise_initializer="ones",
        pointwise_initializer="ones",
    )(x)
    return keras.Model(inputs, x, name=name)


def all_units(layer_model):
    h, w = layer_model.output.shape[1:3]
    return [(i, j) for i in range(h) for j in range(w)]


def test_receptive_field_vgg16_known_values():
    # Standard VGG-16 values (Araujo et al., Distill 2019): conv5_3 has
    # stride 16 and RF 196; the authors' getConvNetPara gives c = 8.5
    # (1-based) for conv6, i.e. offset 8.0 in pixel-interval coordinates.
    vgg = keras.applications.VGG16(
        weights=None, include_top=False, input_shape=(64, 64, 3)
    )
    assert evaluation.receptive_field(vgg, "block5_conv3") == ReceptiveField(
        (16, 16), (8.0, 8.0), (196, 196)
    )
    assert evaluation.receptive_field(vgg, "block5_pool") == ReceptiveField(
        (32, 32), (16.0, 16.0), (212, 212)
    )
    assert evaluation.receptive_field(vgg, "block1_conv1") == ReceptiveField(
        (1, 1), (0.5, 0.5), (3, 3)
    )


def test_receptive_field_vgg16_matches_gradient_support():
    vgg = keras.applications.VGG16(
        weights=None, include_top=False, input_shape=(64, 64, 3)
    )
    linear = keras.models.clone_model(vgg, clone_function=positive_linear)
    for name in ("block3_conv3", "block5_conv3"):
        rf = evaluation.receptive_field(vgg, name)
        assert evaluation.receptive_field(linear, name) == rf
        probe = keras.Model(linear.input, linear.get_layer(name).output)
        h = probe.output.shape[1]
        # block3_conv3: RF 40 at stride 4 is interior for cells 5..10.
        picks = sorted({0, 1, h // 2, h - 1} | ({5, 7, 10} & set(range(h))))
        units = [(i, j) for i in picks for j in picks]
        interior = check_against_gradients(linear, probe, rf, units)
        # 64 px is smaller than conv5_3's RF (196): no unit is interior.
        assert interior == (16 if name == "block3_conv3" else 0)
    # The real (ReLU, max-pool) network only uses part of the RF.
    probe = keras.Model(vgg.input, vgg.get_layer("block3_conv3").output)
    rf = evaluation.receptive_field(vgg, "block3_conv3")
    check_against_gradients(
        vgg, probe, rf, [(5, 5), (7, 10), (0, 15), (9, 6), (12, 3)], exact=False
    )


def test_receptive_field_hand_model_every_unit():
    model = hand_model()
    for name in ("c1", "pad", "c2", "pool", "add", "crop", "top"):
        rf = evaluation.receptive_field(model, name)
        probe = keras.Model(model.input, model.get_layer(name).output)
        interior = check_against_gradients(model, probe, rf, all_units(probe))
        assert interior > 0, name


def test_receptive_field_hand_values():
    model = hand_model()
    rf = evaluation.receptive_field
    # c1: k = 3, stride (2, 1), same: pad_before 1 on both axes, so cell 0
    # covers pixels [-1, 2): centre 0.5.
    assert rf(model, "c1") == ReceptiveField((2, 1), (0.5, 0.5), (3, 3))
    # The 1x1 branch is inside the 3x3 depthwise branch: the merge takes
    # the larger RF with the common centre.
    dw = rf(model, "dw")
    assert rf(model, "add") == dw


def test_receptive_field_nested_models():
    inner = hand_model(input_shape=(43, 23, 2), name="inner")
    inputs = keras.Input((41, 21, 2))
    x = keras.layers.ZeroPadding2D(1, name="outer_pad")(inputs)
    x = inner(x)
    x = keras.layers.Conv2D(1, (2, 1), name="head", kernel_initializer="ones")(
        x
    )
    outer = keras.Model(inputs, x)
    for name in ("head", "inner/top", "c2"):
        rf = evaluation.receptive_field(outer, name)
        probe = evaluation.feature_map_model(outer, name)
        interior = check_against_gradients(outer, probe, rf, all_units(probe))
        assert interior > 0, name
    # Padding one pixel shifts every centre back by one pixel.
    inside = evaluation.receptive_field(inner, "top")
    shifted = evaluation.receptive_field(outer, "top")
    assert shifted.offset == (inside.offset[0] - 1, inside.offset[1] - 1)
    assert (shifted.stride, shifted.size) == (inside.stride, inside.size)


def test_receptive_field_backbone_as_layer_and_flat_graph():
    vgg = keras.applications.VGG16(
        weights=None, include_top=False, input_shape=(64, 64, 3)
    )
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = vgg(x)
    x = keras_interp.InterpretableConv2D(4, 3, padding="same", name="conv6")(x)
    nested = keras.Model(inputs, x)
    # conv6 (3x3 same, pad 1) on block5_pool (stride 32, offset 16, 212):
    # size 212 + 2 * 32 = 276, offset 16 + (1.5 - 1 - 0.5) * 32 = 16.
    assert evaluation.receptive_field(nested, "conv6") == ReceptiveField(
        (32, 32), (16.0, 16.0), (276, 276)
    )
    assert evaluation.receptive_field(
        nested, "block5_conv3"
    ) == evaluation.receptive_field(vgg, "block5_conv3")
    # A model built from the backbone's own tensors (flat graph).
    top = vgg.get_layer("block5_conv3").output
    y = keras_interp.InterpretableConv2D(4, 3, padding="same", name="conv6")(
        top
    )
    flat = keras.Model(vgg.input, y)
    assert evaluation.receptive_field(flat, "conv6") == ReceptiveField(
        (16, 16), (8.0, 8.0), (228, 228)
    )


def test_receptive_field_of_the_project_models():
    from keras_interp.models.builders import build_part_classifier

    # The training view feeds labels to the layers (labels=...), the
    # inference view does not; both share "part_conv" and "top_mask".
    views = build_part_classifier("tiny_vgg", num_classes=3, image_size=64)
    for model in views:
        # tiny_vgg: 4 blocks of two 3x3 'same' convs with 2x2 pools between:
        # RF 5, 6, 14, 16, 32, 36, 68 at strides 1, 2, 2, 4, 4, 8, 8, and
        # the 3x3 part_conv adds 2 * 8. Offsets 0.5 -> 1 -> 2 -> 4.
        assert evaluation.receptive_field(model, "top_mask") == (
            ReceptiveField((8, 8), (4.0, 4.0), (68, 68))
        )
        assert evaluation.receptive_field(model, "part_conv") == (
            ReceptiveField((8, 8), (4.0, 4.0), (84, 84))
        )
    raw = evaluation.feature_map_model(views.training, "part_conv", "raw")
    assert tuple(raw.output.shape) == (None, 8, 8, 128)


@pytest.mark.parametrize(
    "constructor,layer",
    [
        # Depthwise convs, asymmetric ZeroPadding, Add, ReLU6.
        (keras.applications.MobileNetV2, "out_relu"),
        # Patchify conv, depthwise 7x7, LayerScale, StochasticDepth, Dense.
        (keras.applications.ConvNeXtTiny, None),
    ],
)
def test_receptive_field_keras_applications_smoke(constructor, layer):
    model = constructor(
        weights=None, include_top=False, input_shape=(64, 64, 3)
    )
    rf = evaluation.receptive_field(model, layer or model.layers[-1].name)
    assert rf.stride == (32, 32)
    assert rf.size[0] > 64 and rf.offset[0] == rf.offset[1]


def test_receptive_field_ops_and_squeeze_excitation_branch():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
    x = keras.ops.relu(x) * 2.0
    se = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    se = keras.layers.Conv2D(4, 1, activation="sigmoid")(se)
    x = keras.layers.Multiply(name="scaled")([x, se])
    model = keras.Model(inputs, x)
    # 16 -> 8, pad_total = 7 * 2 + 3 - 16 = 1, pad_before = 0: cell 0
    # covers [0, 3).
    assert evaluation.receptive_field(model, "scaled") == ReceptiveField(
        (2, 2), (1.5, 1.5), (3, 3)
    )


def test_receptive_field_errors():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.UpSampling2D(name="up")(inputs)
    x = keras.layers.Conv2D(2, 3, name="after")(x)
    g = keras.layers.Conv2D(2, 3, name="before")(inputs)
    g = keras.layers.GlobalMaxPooling2D(name="gmp")(g)
    model = keras.Model(inputs, [x, g])
    with pytest.raises(ValueError, match="'up' \\(UpSampling2D\\).*identity"):
        evaluation.receptive_field(model, "after")
    with pytest.raises(ValueError, match="No layer named 'missing'.*after"):
        evaluation.receptive_field(model, "missing")
    with pytest.raises(ValueError, match="no spatial map"):
        evaluation.receptive_field(model, "gmp")
    with pytest.raises(ValueError, match="changes the spatial map"):
        evaluation.receptive_field(
            model, "after", identity_layers=["UpSampling2D"]
        )

    class Elementwise(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    y = Elementwise(name="custom")(inputs)
    y = keras.layers.Conv2D(2, 3, name="conv")(y)
    custom = keras.Model(inputs, y)
    with pytest.raises(ValueError, match="identity_layers=\\['custom'\\]"):
        evaluation.receptive_field(custom, "conv")
    rf = evaluation.receptive_field(custom, "conv", identity_layers=["custom"])
    assert rf == ReceptiveField((1, 1), (1.5, 1.5), (3, 3))
    assert rf == evaluation.receptive_field(
        custom, "conv", identity_layers=[Elementwise]
    )


# --- Feature-map probes -----------------------------------------------------


def small_interpretable_model():
    # Argmax centres: the mask is 1 at each map's peak.
    argmax = {"loss": None, "center": "argmax"}
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras_interp.InterpretableMask(name="mask", **argmax)(x)
    x = keras_interp.InterpretableConv2D(
        5, 3, padding="same", name="conv6", **argmax
    )(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


def images(n=6, size=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 255.0, (n, size, size, 3)).astype("float32")


def test_feature_map_model_masked_and_raw():
    model = small_interpretable_model()
    x = images() / 255.0
    conv6 = model.get_layer("conv6")
    before = keras.Model(model.input, model.get_layer("mask").output)(x)
    # Raw conv6: conv + bias of the layer's own weights, no ReLU, no mask.
    conv6.bias.assign(np.linspace(-0.3, 0.3, 5).astype("float32"))
    expected_raw = keras.ops.convert_to_numpy(
        keras.ops.conv(before, conv6.kernel, padding="same") + conv6.bias
    )
    raw = evaluation.feature_map_model(model, "conv6", "raw").predict_on_batch(
        x
    )
    np.testing.assert_allclose(raw, expected_raw, rtol=1e-5, atol=1e-5)
    assert (raw < 0).any()
    masked = evaluation.feature_map_model(model, "conv6").predict_on_batch(x)
    # Masked = relu(raw) * mask with the mask in [0, 1] and 1 at the peak.
    relu = np.maximum(raw, 0.0)
    assert np.all(masked <= relu + 1e-5)
    np.testing.assert_allclose(
        masked.max(axis=(1, 2)), relu.max(axis=(1, 2)), rtol=1e-5
    )
    assert (masked < relu - 1e-3).any()
    # InterpretableMask: raw is its input; plain Conv2D: pre-activation.
    mask_raw = evaluation.feature_map_model(model, "mask", "raw")
    conv_out = keras.Model(model.input, model.get_layer("conv").output)
    np.testing.assert_allclose(
        mask_raw.predict_on_batch(x), conv_out.predict_on_batch(x), atol=1e-6
    )
    conv_raw = evaluation.feature_map_model(model, "conv", "raw")
    pre = conv_raw.predict_on_batch(x)
    np.testing.assert_allclose(
        np.maximum(pre, 0.0), conv_out.predict_on_batch(x), atol=1e-5
    )


def test_feature_map_model_errors():
    model = small_interpretable_model()
    with pytest.raises(ValueError, match="map='raw' is defined.*'pool'"):
        evaluation.feature_map_model(model, "pool", "raw")
    with pytest.raises(ValueError, match="`map` must be one of.*'pre'"):
        evaluation.feature_map_model(model, "conv6", "pre")
    with pytest.raises(ValueError, match="No layer named 'conv7'.*conv6"):
        evaluation.feature_map_model(model, "conv7")


# --- Location instability ---------------------------------------------------

RF16 = ReceptiveField((16, 16), (8.0, 8.0), (196, 196))
DIAGONAL_224 = math.hypot(224, 224)


def test_peaks_from_maps_matches_loop():
    rng = np.random.default_rng(3)
    maps = rng.normal(size=(4, 5, 6, 3))
    index, value = evaluation.peaks_from_maps(maps)
    for n in range(4):
        for f in range(3):
            i, j = np.unravel_index(np.argmax(maps[n, :, :, f]), (5, 6))
            assert tuple(index[n, f]) == (i, j)
            assert value[n, f] == maps[n, i, j, f]
    first = evaluation.peaks_from_maps(
        np.moveaxis(maps, -1, 1), data_format="channels_first"
    )
    np.testing.assert_array_equal(first[0], index)
    # Ties: first cell in row-major order.
    index, _ = evaluation.peaks_from_maps(np.ones((1, 3, 3, 1)))
    assert index.tolist() == [[[0, 0]]]


def test_peaks_are_the_layers_argmax_on_ties_and_blank_maps():
    # The evaluation's peak is the layers' own argmax centre: the same cell
    # on ties (first in row-major order, not column-major) and on blank
    # maps ((0, 0)), whose peak value is the blank value.
    maps = np.zeros((4, 3, 4, 3), "float32")
    maps[0, 0, 3, 0] = maps[0, 2, 0, 0] = 2.0  # row-major first: (0, 3)
    maps[0, 1, 1, 1] = maps[0, 1, 2, 1] = 1.0  # same row: (1, 1)
    maps[1] = -1.0  # constant negative (raw map of a silent filter)
    maps[1, 2, 3, 2] = -0.5
    maps[2, 1:, :, :] = 7.0  # a tie over whole rows: (1, 0)
    index, value = evaluation.peaks_from_maps(maps)
    layers = np.asarray(
        keras_interp.templates.part_centers(maps, center="argmax")
    )
    np.testing.assert_array_equal(index, layers)
    assert index[0].tolist() == [[0, 3], [1, 1], [0, 0]]
    assert value[0].tolist() == [2.0, 1.0, 0.0]
    assert index[1].tolist() == [[0, 0], [0, 0], [2, 3]]
    assert value[1].tolist() == [-1.0, -1.0, -0.5]
    assert index[2].tolist() == [[1, 0]] * 3
    assert index[3].tolist() == [[0, 0]] * 3  # all-zero: a dead map
    assert value[3].tolist() == [0.0] * 3
    assert index.dtype == np.int64 and value.dtype == np.float32


def on_centres(index, rf=RF16):
    """Landmarks `[x, y]` exactly on the RF centres of `index` (N, 2)."""
    y, x = rf.centers(index[:, 0], index[:, 1])
    return np.stack([x, y], axis=-1)


def test_location_instability_perfect_filter_is_zero():
    rng = np.random.default_rng(0)
    index = rng.integers(0, 14, (30, 1, 2))
    value = rng.uniform(size=(30, 1))
    landmarks = on_centres(index[:, 0])[:, None, :]
    score = evaluation.location_instability(
        index,
        value,
        landmarks,
        np.ones((30, 1), bool),
        image_size=224,
        receptive_field=RF16,
    )
    assert score == 0.0


def test_location_instability_known_shifts():
    # Filter peaks at cell (3, 4): centre (y, x) = (56, 72). Landmark 0 is
    # shifted by +3, -3, +5, -5 px in x: distances 3, 3, 5, 5, whose std
    # (N - 1) is sqrt(((-1)^2 * 4) / 3) = sqrt(4 / 3). Landmark 1 sits 4 px
    # below the centre in every image: std 0.
    index = np.tile([[[3, 4]]], (4, 1, 1))
    value = np.array([[4.0], [3.0], [2.0], [1.0]])
    shifts = np.array([3.0, -3.0, 5.0, -5.0])
    landmarks = np.zeros((4, 2, 2))
    landmarks[:, 0] = np.stack([72.0 + shifts, np.full(4, 56.0)], axis=-1)
    landmarks[:, 1] = [72.0, 60.0]
    score, per_filter, per_landmark = evaluation.location_instability(
        index,
        value,
        landmarks,
        np.ones((4, 2), bool),
        image_size=224,
        receptive_field=RF16,
        return_per_filter=True,
    )
    expected = math.sqrt(4.0 / 3.0) / DIAGONAL_224
    np.testing.assert_allclose(per_landmark, [[expected, 0.0]], atol=1e-15)
    np.testing.assert_allclose(per_filter, [expected / 2.0])
    assert score == pytest.approx(expected / 2.0)
    # Non-square images use their own diagonal sqrt(H^2 + W^2).
    wide = evaluation.location_instability(
        index,
        value,
        landmarks,
        np.ones((4, 2), bool),
        image_size=(224, 448),
        receptive_field=RF16,
    )
    assert wide == pytest.approx(
        math.sqrt(4.0 / 3.0) / math.hypot(224, 448) / 2.0
    )


def test_location_instability_top_k_uses_highest_peaks_only():
    rng = np.random.default_rng(1)
    n = 10
    index = rng.integers(0, 14, (n, 2, 2))
    value = np.zeros((n, 2))
    value[:, 0] = np.arange(n)  # images 6..9 are filter 0's top 4
    value[:, 1] = np.arange(n)[::-1]  # images 0..3 are filter 1's top 4
    landmarks = on_centres(index[:, 0])[:, None, :].copy()
    landmarks[:, 0, 0] += [0, 1, 2, 3, 4, 0, 0, 0, 0, 0]  # outliers low
    # Filter 1 peaks elsewhere, except on its own top images.
    index[:4, 1] = index[:4, 0]
    visible = np.ones((n, 1), bool)
    score, per_filter, _ = evaluation.location_instability(
        index,
        value,
        landmarks,
        visible,
        image_size=224,
        receptive_field=RF16,
        top_k=4,
        return_per_filter=True,
    )
    # Filter 0's top 4 (images 6..9) are exact; filter 1's top 4 (images
    # 0..3) are 0, 1, 2, 3 px off: std sqrt(5/3).
    np.testing.assert_allclose(
        per_filter, [0.0, math.sqrt(5.0 / 3.0) / DIAGONAL_224]
    )
    everything = evaluation.location_instability(
        index,
        value,
        landmarks,
        visible,
        image_size=224,
        receptive_field=RF16,
        top_k=n,
    )
    assert everything > score


def test_location_instability_ignores_invisible_landmarks():
    rng = np.random.default_rng(2)
    index = rng.integers(0, 14, (8, 1, 2))
    value = rng.uniform(size=(8, 1))
    landmarks = on_centres(index[:, 0])[:, None, :].copy()
    visible = np.ones((8, 1), bool)
    # Far-off points, but marked invisible (CUB stores them as [0, 0]).
    landmarks[[1, 4], 0] = 0.0
    visible[[1, 4], 0] = False
    score = evaluation.location_instability(
        index,
        value,
        landmarks,
        visible,
        image_size=224,
        receptive_field=RF16,
    )
    assert score == 0.0


def test_location_instability_leaves_out_landmarks_seen_once():
    # Landmark 1 is visible in one image only: no filter can be scored on
    # it, so D_f is the mean over landmark 0 alone (before: every filter
    # was dropped and the result was NaN).
    index = np.zeros((3, 2, 2), int)
    value = np.ones((3, 2))
    landmarks = np.full((3, 2, 2), 8.0)
    landmarks[:, 0, 0] += [0.0, 2.0, 4.0]  # std 2 px
    visible = np.ones((3, 2), bool)
    visible[1:, 1] = False
    score, per_filter, per_landmark = evaluation.location_instability(
        index,
        value,
        landmarks,
        visible,
        image_size=224,
        receptive_field=RF16,
        return_per_filter=True,
    )
    np.testing.assert_allclose(per_filter, [2.0 / DIAGONAL_224] * 2)
    assert score == pytest.approx(2.0 / DIAGONAL_224)
    assert np.isnan(per_landmark[:, 1]).all()
    with pytest.warns(RuntimeWarning, match="no landmark is visible in at"):
        nothing = evaluation.location_instability(
            index,
            value,
            landmarks,
            visible & [False, True],
            image_size=224,
            receptive_field=RF16,
        )
    assert math.isnan(nothing)


def test_location_instability_drops_filters_without_two_live_images():
    # Filter 1 is live on one image only: dropped (authors' rule), while
    # filter 0 is scored.
    index = np.zeros((3, 2, 2), int)
    value = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 2.0]])
    landmarks = np.full((3, 1, 2), 8.0)
    visible = np.ones((3, 1), bool)
    score, per_filter, _ = evaluation.location_instability(
        index,
        value,
        landmarks,
        visible,
        image_size=224,
        receptive_field=RF16,
        return_per_filter=True,
    )
    assert score == 0.0
    assert per_filter[0] == 0.0 and np.isnan(per_filter[1])
    with pytest.warns(RuntimeWarning, match="no filter has a live map"):
        evaluation.location_instability(
            index[:, 1:],
            value[:, 1:],
            landmarks,
            visible,
            image_size=224,
            receptive_field=RF16,
        )


def test_location_instability_invariant_to_image_order():
    rng = np.random.default_rng(4)
    n, f, k = 40, 6, 3
    index = rng.integers(0, 14, (n, f, 2))
    value = rng.uniform(size=(n, f))
    landmarks = rng.uniform(0, 224, (n, k, 2))
    visible = rng.uniform(size=(n, k)) > 0.2
    kwargs = dict(image_size=224, receptive_field=RF16, top_k=15)
    score = evaluation.location_instability(
        index, value, landmarks, visible, **kwargs
    )
    order = rng.permutation(n)
    permuted = evaluation.location_instability(
        index[order], value[order], landmarks[order], visible[order], **kwargs
    )
    assert permuted == pytest.approx(score, rel=1e-12)
    # Flat indices with map_shape give the same value.
    flat = evaluation.location_instability(
        index[..., 0] * 14 + index[..., 1],
        value,
        landmarks,
        visible,
        map_shape=(14, 14),
        **kwargs,
    )
    assert flat == pytest.approx(score, rel=1e-12)


def test_location_instability_multi_category_rules():
    # Filter 0 fires exactly on the landmarks of category 0 and misses by
    # 0, 2, 4 px on category 1; its activation is higher on category 1.
    # The paper keeps the category with the lowest deviation (0), the
    # authors' code the one with the highest mean activation (1).
    index = np.zeros((6, 1, 2), int)
    value = np.array([[1.0], [1.0], [1.0], [5.0], [5.0], [5.0]])
    landmarks = np.full((6, 1, 2), 8.0)
    landmarks[3:, 0, 0] += [0.0, 2.0, 4.0]
    labels = np.array([0, 0, 0, 1, 1, 1])
    common = dict(image_size=224, receptive_field=RF16, labels=labels)
    visible = np.ones((6, 1), bool)
    paper = evaluation.location_instability(
        index, value, landmarks, visible, **common
    )
    authors = evaluation.location_instability(
        index, value, landmarks, visible, category_rule="activation", **common
    )
    assert paper == 0.0
    assert authors == pytest.approx(2.0 / DIAGONAL_224)  # std(0, 2, 4) = 2


def test_location_instability_errors():
    index = np.zeros((3, 2, 2), int)
    value = np.ones((3, 2))
    landmarks = np.zeros((3, 1, 2))
    visible = np.ones((3, 1), bool)
    kwargs = dict(image_size=224, receptive_field=RF16)
    with pytest.raises(ValueError, match="`top_k` must be an int >= 2.*1"):
        evaluation.location_instability(
            index, value, landmarks, visible, top_k=1, **kwargs
        )
    with pytest.raises(ValueError, match="`map_shape=\\(h, w\\)` is needed"):
        evaluation.location_instability(
            index[..., 0], value, landmarks, visible, **kwargs
        )
    with pytest.raises(
        ValueError, match="`visible` must have shape \\(3, 1\\)"
    ):
        evaluation.location_instability(
            index, value, landmarks, visible[:2], **kwargs
        )
    with pytest.raises(ValueError, match="`image_size` must be.*-1"):
        evaluation.location_instability(
            index,
            value,
            landmarks,
            visible,
            image_size=-1,
            receptive_field=RF16,
        )
    with pytest.raises(ValueError, match="`category_rule` must be.*'best'"):
        evaluation.location_instability(
            index, value, landmarks, visible, category_rule="best", **kwargs
        )
    with pytest.raises(ValueError, match="`receptive_field` must be"):
        evaluation.location_instability(
            index,
            value,
            landmarks,
            visible,
            image_size=224,
            receptive_field=(16, 8.0),
        )


def reference_instability(
    index, value, points, visible, labels, rf, size, top_k, rule, drop
):
    """Plain-loop location instability and its fixed-cell reference.

    Written from the definitions, one filter, category and landmark at a
    time: top-k by (-peak, image) among the visible images (live ones only
    with `drop`), std (N - 1) of the distances, mean over the landmarks
    visible twice in the category, category by `rule`. The fixed cell
    tries every cell of a 14 x 14 grid on the same selected images.
    Returns `(per_filter, fixed_per_filter)`.
    """
    n, f = value.shape
    diag = math.hypot(size, size)
    categories = [None] if labels is None else sorted(set(labels.tolist()))
    cells = [
        (rf.offset[0] + i * rf.stride[0], rf.offset[1] + j * rf.stride[1])
        for i in range(14)
        for j in range(14)
    ]
    per_filter, fixed_per_filter = [], []
    for filt in range(f):
        options = []
        for category in categories:
            images = [
                i for i in range(n) if category is None or labels[i] == category
            ]
            deviations, selections = [], []
            for part in range(points.shape[1]):
                seen = [i for i in images if visible[i, part]]
                if len(seen) < 2:
                    continue
                pool = [i for i in seen if value[i, filt] > 0 or not drop]
                chosen = sorted(pool, key=lambda i: (-value[i, filt], i))
                chosen = chosen[:top_k]
                selections.append((part, chosen))
                if len(chosen) < 2:
                    deviations.append(math.nan)
                    continue
                y = [
                    rf.offset[0] + index[i, filt, 0] * rf.stride[0]
                    for i in chosen
                ]
                x = [
                    rf.offset[1] + index[i, filt, 1] * rf.stride[1]
                    for i in chosen
                ]
                d = [
                    math.hypot(points[i, part, 0] - xi, points[i, part, 1] - yi)
                    / diag
                    for i, yi, xi in zip(chosen, y, x)
                ]
                deviations.append(np.std(d, ddof=1))
            if not selections:
                options.append((math.nan, math.nan, -math.inf))
                continue
            fixed = math.inf
            for cy, cx in cells:
                terms = []
                for part, chosen in selections:
                    if len(chosen) < 2:
                        terms.append(math.nan)
                        continue
                    d = [
                        math.hypot(
                            points[i, part, 0] - cx, points[i, part, 1] - cy
                        )
                        / diag
                        for i in chosen
                    ]
                    terms.append(np.std(d, ddof=1))
                fixed = min(fixed, np.mean(terms))  # NaN-safe: NaN < x False
                if math.isnan(np.mean(terms)):
                    fixed = math.nan
                    break
            activation = np.mean([value[i, filt] for i in images])
            options.append((np.mean(deviations), fixed, activation))
        if rule == "deviation":
            keyed = [
                o[0] if not math.isnan(o[0]) else math.inf for o in options
            ]
            fixed_keyed = [
                o[1] if not math.isnan(o[1]) else math.inf for o in options
            ]
            pick = int(np.argmin(keyed))
            fixed_pick = int(np.argmin(fixed_keyed))
        else:
            pick = fixed_pick = int(np.argmax([o[2] for o in options]))
        per_filter.append(options[pick][0])
        fixed_per_filter.append(options[fixed_pick][1])
    return np.array(per_filter), np.array(fixed_per_filter)


def random_peaks(seed, n=36, f=5, k=3, categories=3):
    """Random peaks with dead maps, per-category landmark sets and ties."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, 14, (n, f, 2))
    value = rng.choice([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0], size=(n, f))
    value += rng.uniform(0, 0.1, (n, f)) * (value > 0)
    points = rng.uniform(0, 224, (n, k, 2))
    visible = rng.uniform(size=(n, k)) > 0.2
    labels = rng.integers(0, categories, n)
    visible[labels == 0, 0] = False  # category 0 has no landmark 0
    visible[labels == 1, 1:] = False  # category 1 has landmark 0 only
    return index, value, points, visible, labels


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("rule", ["deviation", "activation"])
@pytest.mark.parametrize("drop", [True, False])
@pytest.mark.parametrize("with_labels", [True, False])
def test_location_instability_matches_plain_loops(
    seed, rule, drop, with_labels
):
    index, value, points, visible, labels = random_peaks(seed)
    labels = labels if with_labels else None
    kwargs = dict(
        image_size=224,
        receptive_field=RF16,
        top_k=5,
        labels=labels,
        category_rule=rule,
        drop_dead_maps=drop,
    )
    report = evaluation.location_instability_report(
        index, value, points, visible, map_shape=(14, 14), **kwargs
    )
    expected, expected_fixed = reference_instability(
        index, value, points, visible, labels, RF16, 224, 5, rule, drop
    )
    np.testing.assert_allclose(report.per_filter, expected, rtol=1e-10)
    np.testing.assert_allclose(
        report.fixed_cell_per_filter, expected_fixed, rtol=1e-8, atol=1e-12
    )
    assert np.isfinite(expected).sum() >= 2
    assert report.value == pytest.approx(np.nanmean(expected), rel=1e-10)
    assert report.fixed_cell == pytest.approx(
        np.nanmean(np.where(np.isfinite(expected), expected_fixed, np.nan)),
        rel=1e-8,
    )
    # The per-landmark terms of the fixed cell average to its value.
    terms = report.fixed_cell_per_landmark
    finite = np.isfinite(report.fixed_cell_per_filter)
    np.testing.assert_allclose(
        np.nanmean(terms[finite], axis=1),
        report.fixed_cell_per_filter[finite],
        rtol=1e-12,
    )
    score, per_filter, _ = evaluation.location_instability(
        index, value, points, visible, return_per_filter=True, **kwargs
    )
    assert score == report.value
    np.testing.assert_array_equal(per_filter, report.per_filter)
    # "Shuffled landmarks" is the metric on the shuffled annotations.
    shuffled = evaluation.shuffle_landmarks(
        points, visible, labels=labels, seed=0
    )
    _, shuffled_per_filter, shuffled_per_landmark = (
        evaluation.location_instability(
            *(index, value), *shuffled, return_per_filter=True, **kwargs
        )
    )
    np.testing.assert_array_equal(
        report.shuffled_per_filter, shuffled_per_filter
    )
    np.testing.assert_array_equal(
        report.shuffled_per_landmark, shuffled_per_landmark
    )
    expected_shuffled, _ = reference_instability(
        index, value, *shuffled, labels, RF16, 224, 5, rule, drop
    )
    assert report.shuffled == pytest.approx(
        np.nanmean(expected_shuffled), rel=1e-10
    )


def test_location_instability_scores_each_category_on_its_own_landmarks():
    # Category 0 (faces) annotates landmark 0 only, category 1 (animals)
    # landmark 1 only: no image shows both. Before, every filter was NaN.
    # Filter 0 sits on category 0's landmark (std 0) and is 0, 2, 4 px
    # off category 1's (std 2): it keeps category 0 (lowest deviation).
    index = np.zeros((6, 1, 2), int)
    value = np.ones((6, 1))
    landmarks = np.full((6, 2, 2), 8.0)
    landmarks[3:, 1, 0] += [0.0, 2.0, 4.0]
    visible = np.zeros((6, 2), bool)
    visible[:3, 0] = visible[3:, 1] = True
    labels = np.array([0, 0, 0, 1, 1, 1])
    common = dict(image_size=224, receptive_field=RF16, labels=labels)
    score, _, per_landmark = evaluation.location_instability(
        index, value, landmarks, visible, return_per_filter=True, **common
    )
    assert score == 0.0
    assert per_landmark[0, 0] == 0.0 and np.isnan(per_landmark[0, 1])
    authors = evaluation.location_instability(
        index,
        value * [[1], [1], [1], [5], [5], [5]],
        landmarks,
        visible,
        category_rule="activation",
        **common,
    )
    assert authors == pytest.approx(2.0 / DIAGONAL_224)


def test_location_instability_drops_dead_maps():
    # Filter 0 is exact on images 0-2 (peaks 3, 2, 1) and dead on 3-4
    # (peak 0, argmax cell (0, 0) by the tie rule, 40 and 80 px from the
    # landmark). Dropping the dead maps leaves std 0; the paper's rule
    # fills its top 5 with them: distances 0, 0, 0, 40, 80 px.
    index = np.array([[[2, 2]], [[2, 2]], [[2, 2]], [[0, 0]], [[0, 0]]])
    value = np.array([[3.0], [2.0], [1.0], [0.0], [0.0]])
    landmarks = np.array([[[40.0, 40.0]]] * 3 + [[[48.0, 8.0]], [[88.0, 8.0]]])
    visible = np.ones((5, 1), bool)
    kwargs = dict(image_size=224, receptive_field=RF16, top_k=5)
    dropped = evaluation.location_instability(
        index, value, landmarks, visible, **kwargs
    )
    paper = evaluation.location_instability(
        index, value, landmarks, visible, drop_dead_maps=False, **kwargs
    )
    assert dropped == 0.0
    assert paper == pytest.approx(
        np.std([0.0, 0.0, 0.0, 40.0, 80.0], ddof=1) / DIAGONAL_224
    )
    report = evaluation.location_instability_report(
        index, value, landmarks, visible, map_shape=(14, 14), **kwargs
    )
    # The paper's top 5 would hold 2 dead maps of 5.
    assert report.dead_dropped_fraction == pytest.approx(2 / 5)
    assert report.pool_images.tolist() == [5]
    assert report.selected_images.tolist() == [[3]]
    top3 = evaluation.location_instability_report(
        index,
        value,
        landmarks,
        visible,
        map_shape=(14, 14),
        image_size=224,
        receptive_field=RF16,
        top_k=3,
    )
    # top 3 < 3 live images: nothing dead is selected, nothing dropped.
    assert top3.dead_dropped_fraction == 0.0
    assert top3.selected_images.tolist() == [[3]]


def test_location_instability_report_counts_per_category():
    # Landmark 0: 4 images of category 0, 2 of category 1; top_k 3. The
    # pool is the largest per-category count; the filter (one category
    # scored better) uses min(3, live images) of its category.
    index = np.zeros((6, 1, 2), int)
    value = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]])
    landmarks = np.full((6, 1, 2), 8.0)
    landmarks[4:, 0, 0] += [0.0, 4.0]  # category 1 is worse
    visible = np.ones((6, 1), bool)
    labels = np.array([0, 0, 0, 0, 1, 1])
    report = evaluation.location_instability_report(
        index,
        value,
        landmarks,
        visible,
        map_shape=(2, 2),
        labels=labels,
        image_size=32,
        receptive_field=RF16,
        top_k=3,
    )
    assert report.pool_images.tolist() == [4]
    assert report.selected_images.tolist() == [[3]]
    assert report.value == 0.0
    assert report.dead_dropped_fraction == 0.0
    # Category 0's landmarks all sit on cell (0, 0)'s centre: fixed 0.
    assert report.fixed_cell == 0.0
    assert report.reason is None


def test_fixed_cell_reference_by_hand():
    # One row of 3 cells (centres x = 8, 24, 40). The filter follows a
    # landmark that moves one cell per image: exact, so 0. A fixed cell at
    # either end is 0, 16, 32 px away (std 16); the middle one 16, 0, 16
    # px (mean 32/3, squares 2 (16/3)^2 + (32/3)^2 = 512/3, std (N - 1)
    # sqrt(256/3) = 9.24 px): the best fixed cell.
    index = np.array([[[0, 0]], [[0, 1]], [[0, 2]]])
    points = np.array([[[8.0, 8.0]], [[24.0, 8.0]], [[40.0, 8.0]]])
    common = dict(
        image_size=48,
        receptive_field=RF16,
        map_shape=(1, 3),
    )
    report = evaluation.location_instability_report(
        index, np.ones((3, 1)), points, np.ones((3, 1), bool), **common
    )
    assert report.value == 0.0
    diagonal = math.hypot(48, 48)
    assert report.fixed_cell == pytest.approx(math.sqrt(256 / 3) / diagonal)
    np.testing.assert_allclose(
        report.fixed_cell_per_filter, [math.sqrt(256 / 3) / diagonal]
    )
    np.testing.assert_allclose(
        report.fixed_cell_per_landmark, [[math.sqrt(256 / 3) / diagonal]]
    )
    # A filter stuck at the best cell scores exactly the reference.
    stuck = evaluation.location_instability_report(
        np.array([[[0, 1]]] * 3),
        np.ones((3, 1)),
        points,
        np.ones((3, 1), bool),
        **common,
    )
    assert stuck.value == pytest.approx(stuck.fixed_cell, rel=1e-12)
    # The reference is a std of distances, not of positions: a cell far
    # from every landmark can be steadier. On a 3 x 3 grid, cell (2, 1)
    # (y = 40, x = 24) is 35.8, 32, 35.8 px away: std 2.18 px.
    grid = evaluation.location_instability_report(
        index,
        np.ones((3, 1)),
        points,
        np.ones((3, 1), bool),
        image_size=48,
        receptive_field=RF16,
        map_shape=(3, 3),
    )
    far = math.hypot(16, 32)
    assert grid.fixed_cell == pytest.approx(
        np.std([far, 32.0, far], ddof=1) / diagonal
    )


def test_shuffle_landmarks_permutes_within_categories():
    rng = np.random.default_rng(5)
    points = rng.uniform(0, 64, (20, 2, 2))
    visible = rng.uniform(size=(20, 2)) > 0.3
    labels = np.repeat([0, 1, 2, 3], 5)
    shuffled, seen = evaluation.shuffle_landmarks(
        points, visible, labels=labels, seed=3
    )
    again = evaluation.shuffle_landmarks(points, visible, labels=labels, seed=3)
    np.testing.assert_array_equal(again[0], shuffled)
    assert not np.array_equal(shuffled, points)
    for i in range(20):
        # Image i now has the points and visibility of one image j of its
        # own category.
        matches = [
            j
            for j in range(20)
            if labels[j] == labels[i]
            and np.array_equal(points[j], shuffled[i])
            and np.array_equal(visible[j], seen[i])
        ]
        assert matches
    np.testing.assert_array_equal(
        np.sort(shuffled.reshape(20, -1), axis=0),
        np.sort(points.reshape(20, -1), axis=0),
    )


def test_dead_map_fractions_by_hand():
    value = np.array([[0.0, 2.0, -1.0], [0.0, -3.0, 0.0], [1.0, 0.0, 0.0]])
    dead = evaluation.dead_map_fractions(value)
    # 7 of 9 maps are <= 0; filter 2 is dead on every image.
    assert dead == evaluation.DeadMaps(
        map_fraction=7 / 9, filter_fraction=1 / 3
    )
    with pytest.raises(ValueError, match="`peak_value` must have shape"):
        evaluation.dead_map_fractions(np.zeros((0, 3)))


def test_non_finite_inputs_are_refused():
    maps = np.ones((2, 3, 3, 2))
    maps[1, 0, 0, 1] = np.nan
    with pytest.raises(
        ValueError, match="`feature_maps` must be finite.*1 NaN"
    ):
        evaluation.peaks_from_maps(maps)
    index = np.zeros((2, 1, 2), int)
    value = np.array([[1.0], [np.inf]])
    with pytest.raises(
        ValueError, match="`peak_value` must be finite.*1 infinite"
    ):
        evaluation.location_instability(
            index,
            value,
            np.zeros((2, 1, 2)),
            np.ones((2, 1), bool),
            image_size=224,
            receptive_field=RF16,
        )
    with pytest.raises(ValueError, match="`peak_value` must be finite"):
        evaluation.dead_map_fractions(value)
    with pytest.raises(ValueError, match="`maps` must be finite.*diverged"):
        evaluation.part_interpretability(
            maps, np.zeros((2, 12, 12), "uint8"), RF4, quantile=0.25
        )


def test_location_instability_report_errors():
    index = np.zeros((3, 1, 2), int)
    args = (index, np.ones((3, 1)), np.zeros((3, 1, 2)), np.ones((3, 1), bool))
    kwargs = dict(image_size=224, receptive_field=RF16)
    with pytest.raises(ValueError, match="`map_shape` must be.*None"):
        evaluation.location_instability_report(*args, map_shape=None, **kwargs)
    with pytest.raises(ValueError, match="cells outside the map of shape"):
        evaluation.location_instability_report(
            np.full((3, 1, 2), 5), *args[1:], map_shape=(3, 3), **kwargs
        )


def pipeline_like_dataset(n=6, size=12, parts=2, batch=4, seed=0):
    """Batches shaped like the data pipeline's (image 0..255, parts...)."""
    rng = np.random.default_rng(seed)
    data = {
        "image": images(n, size, seed),
        "label": rng.integers(0, 2, n).astype("int32"),
        "parts": rng.uniform(0, size, (n, parts, 2)).astype("float32"),
        "part_visible": rng.uniform(size=(n, parts)) > 0.3,
        "part_mask": rng.integers(0, 3, (n, size, size)).astype("uint8"),
    }
    return tf.data.Dataset.from_tensor_slices(data).batch(batch), data


@pytest.mark.parametrize("map", ["masked", "raw"])
def test_collect_peaks_matches_full_maps(map):
    model = small_interpretable_model()
    dataset, data = pipeline_like_dataset()
    peaks = evaluation.collect_peaks(
        model, "conv6", dataset, map=map, preprocess=lambda x: x / 255.0
    )
    probe = evaluation.feature_map_model(model, "conv6", map)
    maps = probe.predict_on_batch(data["image"] / 255.0)
    index, value = evaluation.peaks_from_maps(maps)
    np.testing.assert_array_equal(peaks.index, index)
    np.testing.assert_allclose(peaks.value, value, rtol=1e-6)
    np.testing.assert_array_equal(peaks.landmarks, data["parts"])
    np.testing.assert_array_equal(peaks.visible, data["part_visible"])
    np.testing.assert_array_equal(peaks.labels, data["label"])
    assert peaks.image_size == (12, 12) and peaks.map_size == (10, 10)
    score = evaluation.location_instability(
        peaks.index,
        peaks.value,
        peaks.landmarks,
        peaks.visible,
        image_size=peaks.image_size,
        receptive_field=evaluation.receptive_field(model, "conv6"),
        top_k=4,
    )
    assert np.isfinite(score) and score > 0


# --- Part interpretability --------------------------------------------------

RF4 = ReceptiveField((4, 4), (2.0, 2.0), (6, 6))


def test_activation_thresholds_by_hand():
    # 400 values 0..399, q = 0.01: m = floor(4) = 4 values may lie above
    # T, so T is the 5th largest, 395.
    maps = np.arange(400.0).reshape(4, 10, 10, 1)
    np.testing.assert_array_equal(
        evaluation.activation_thresholds(maps, quantile=0.01), [395.0]
    )
    # Per filter, 200 values, q = 0.005: m = 1, T is the 2nd largest (198
    # for 0..199). A mostly-zero (post-ReLU) map gives T = 0.
    two = np.zeros((2, 10, 10, 2))
    two[0, 0, 0, 1] = 7.0
    two[..., 0] = np.arange(200.0).reshape(2, 10, 10)
    np.testing.assert_array_equal(
        evaluation.activation_thresholds(two, quantile=0.005), [198.0, 0.0]
    )


def hand_part_case():
    """4 images of 8x8, 2x2 maps (cell centres 2 and 6), 2 filters.

    Filter 0 fires on cell (0, 0) in every image; filter 1 never fires.
    With radius 2 px, a disc at (2, 2) holds the 12 pixels of the top-left
    4x4 block whose centres are within 2 px (all but its 4 corners).
    Part 1 is the top-left block in images 0-2 (IoU 12/16 = 0.75) and the
    bottom-right block in image 3 (IoU 0). Part 2 is the top-right block
    in images 0 and 1 (IoU 0).
    """
    maps = np.zeros((4, 2, 2, 2))
    maps[:, 0, 0, 0] = 10.0
    maps[:, 1, 1, 0] = [0.1, 0.2, 0.3, 0.4]
    masks = np.zeros((4, 8, 8), "uint8")
    masks[:3, :4, :4] = 1
    masks[3, 4:, 4:] = 1
    masks[:2, :4, 4:] = 2
    return maps, masks


def test_part_interpretability_by_hand():
    maps, masks = hand_part_case()
    # 16 values per filter, q = 0.25: m = 4 above T. Filter 0: T = 0.4
    # (5th largest), so only the four 10s fire. Filter 1: all zero.
    score, per_filter, per_part = evaluation.part_interpretability(
        maps,
        masks,
        RF4,
        quantile=0.25,
        radius=2.0,
        return_per_filter=True,
    )
    np.testing.assert_allclose(per_part, [[0.75, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(per_filter, [0.75, 0.0])
    assert score == pytest.approx(0.375)
    # IoU 0.75 fails a 0.8 threshold.
    strict = evaluation.part_interpretability(
        maps, masks, RF4, quantile=0.25, radius=2.0, iou_threshold=0.8
    )
    assert strict == 0.0
    # Scoring part 2 only: no filter matches it.
    only_two = evaluation.part_interpretability(
        maps, masks, RF4, quantile=0.25, radius=2.0, part_ids=[2]
    )
    assert only_two == 0.0


def test_part_interpretability_multi_category():
    maps, masks = hand_part_case()
    # Filter 1 now fires on cell (1, 1) of images 2 and 3, more than
    # filter 0 there. Images 0-1 are category 0, images 2-3 category 1.
    # Mean map sums: filter 0, 10.15 (cat. 0) vs 10.35 (cat. 1); filter 1,
    # 0 vs 25. Both filters are assigned to category 1.
    maps[2:, 1, 1, 1] = [20.0, 30.0]
    labels = np.array([0, 0, 1, 1])
    _, per_filter, per_part = evaluation.part_interpretability(
        maps,
        masks,
        RF4,
        quantile=0.25,
        radius=2.0,
        labels=labels,
        return_per_filter=True,
    )
    # Filter 0 on images 2, 3: part 1 hit in image 2 only -> 1/2; part 2
    # absent there -> NaN. Filter 1 (disc at (6, 6)) hits part 1 in image 3.
    np.testing.assert_allclose(per_part[0], [0.5, np.nan])
    np.testing.assert_allclose(per_part[1], [0.5, np.nan])
    np.testing.assert_allclose(per_filter, [0.5, 0.5])


def test_filter_categories_is_the_mean_activation_argmax():
    # One assignment rule for the pure metric and the streaming one.
    # Means per category (3, 7): filter 0 (1, 0.5) -> 3; filter 1 (0, 2)
    # -> 7; filter 2 is never active: a tie, the first category; filter 3 has
    # raw (negative) maps: the least negative mean, (-2, -1) -> 7.
    labels = np.array([7, 3, 3, 7])
    sums = np.array(
        [
            [0.5, 4.0, 0.0, -1.0],
            [1.0, 0.0, 0.0, -2.0],
            [1.0, 0.0, 0.0, -2.0],
            [0.5, 0.0, 0.0, -1.0],
        ]
    )
    assigned = evaluation.filter_categories(labels, sums)
    assert assigned.tolist() == [3, 7, 3, 7]
    # Labels need not be 0..C-1 (they are the category ids of the data).
    assert evaluation.filter_categories(["b", "a"], [[1.0], [2.0]]) == ["a"]
    # Means too close for a shift-to-positive to keep apart (1e-20 apart
    # near 0; 1 apart at 3e8, below float32's resolution, as JAX computes)
    # still pick the larger one, on every backend.
    tiny = evaluation.filter_categories(
        [0, 1], [[1e-20, 3e8], [2e-20, 3e8 + 1]]
    )
    assert tiny.tolist() == [1, 1]


def test_part_interpretability_too_few_cells_is_nan_with_reason():
    # 4 images x 2 x 2 cells = 16 < 1 / 0.005: T_f leaves floor(0.08) = 0
    # cells above it, so every filter would score 0 (before: 0.0, no
    # reason). It is undefined instead, and the warning says why.
    maps, masks = hand_part_case()
    with pytest.warns(RuntimeWarning, match="too few map cells: 16 per"):
        score, per_filter, per_part = evaluation.part_interpretability(
            maps, masks, RF4, return_per_filter=True
        )
    assert math.isnan(score)
    assert per_filter.shape == (2,) and np.isnan(per_filter).all()
    assert per_part.shape == (2, 2)
    assert evaluation.too_few_cells_reason(199) is not None
    assert evaluation.too_few_cells_reason(200) is None
    assert "at least 4 cells" in evaluation.too_few_cells_reason(3, 0.25)
    assert evaluation.too_few_cells_reason(16, 0.25) is None


def brute_force_ious(maps, masks, thresholds, rf, radii, part_ids):
    """Full-resolution union of discs, IoU per (image, filter, part)."""
    n, h, w, f = maps.shape
    height, width = masks.shape[1:]
    py = np.arange(height)[:, None] + 0.5
    px = np.arange(width)[None, :] + 0.5
    ious = np.zeros((n, f, len(part_ids)))
    for b in range(n):
        for c in range(f):
            region = np.zeros((height, width), bool)
            for i, j in zip(*np.nonzero(maps[b, :, :, c] > thresholds[c])):
                y, x = rf.centers(i, j)
                d = ((py - y) / radii[0]) ** 2 + ((px - x) / radii[1]) ** 2
                region |= d <= 1.0 + 1e-9
            for k, part in enumerate(part_ids):
                truth = masks[b] == part
                union = (region | truth).sum()
                inter = (region & truth).sum()
                ious[b, c, k] = inter / union if union else 0.0
    return ious


@pytest.mark.parametrize(
    "rf,radius",
    [
        (ReceptiveField((4, 4), (2.0, 2.0), (10, 10)), "cell"),
        (ReceptiveField((3, 2), (1.5, 0.5), (9, 7)), 2.5),
        (ReceptiveField((3, 2), (-0.5, 3.0), (9, 7)), "receptive_field"),
        (ReceptiveField((1, 1), (0.5, 0.5), (1, 1)), 0.6),
    ],
)
def test_part_iou_blocks_match_brute_force(rf, radius):
    module = importlib.import_module("keras_interp.evaluation._regions")
    rng = np.random.default_rng(5)
    maps = rng.uniform(size=(3, 5, 6, 4))
    masks = rng.integers(0, 4, (3, 13, 11)).astype("uint8")
    masks[:, 4:9, 3:8] = 3  # one compact part, among noisy ones
    thresholds = np.quantile(maps.reshape(-1, 4), 0.7, axis=0)
    part_ids = np.array([1, 2, 3])
    regions = module.Regions(rf, masks.shape[1:], maps.shape[1:3], radius)
    iou, present = module.ious(maps, masks, thresholds, regions, part_ids)
    radii = module.radii(rf, radius)
    expected = brute_force_ious(maps, masks, thresholds, rf, radii, part_ids)
    np.testing.assert_allclose(iou, expected, atol=1e-6)
    assert present.all()
    assert (expected > 0).any()


def test_part_interpretability_streaming_equals_pure():
    model = small_interpretable_model()
    dataset, data = pipeline_like_dataset(n=7, batch=3)
    # Part 1 is a fixed block, so some filters can match it.
    data["part_mask"][:, 2:7, 2:7] = 1
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(3)
    probe = evaluation.feature_map_model(model, "conv6")
    maps = probe.predict_on_batch(data["image"] / 255.0)
    rf = evaluation.receptive_field(model, "conv6")
    kwargs = dict(quantile=0.05, radius=1.5, return_per_filter=True)
    expected = evaluation.part_interpretability(
        maps, data["part_mask"], rf, **kwargs
    )
    for num_images in (None, 7):
        got = evaluation.collect_part_interpretability(
            model,
            "conv6",
            dataset,
            preprocess=lambda x: x / 255.0,
            num_images=num_images,
            **kwargs,
        )
        assert got[0] == pytest.approx(expected[0])
        np.testing.assert_allclose(got[1], expected[1])
        np.testing.assert_allclose(got[2], expected[2])
    assert 0.0 < expected[0] <= 1.0
    labelled = evaluation.collect_part_interpretability(
        model,
        "conv6",
        dataset,
        preprocess=lambda x: x / 255.0,
        label_key="label",
        **kwargs,
    )
    pure = evaluation.part_interpretability(
        maps, data["part_mask"], rf, labels=data["label"], **kwargs
    )
    np.testing.assert_allclose(labelled[2], pure[2])
    with pytest.raises(ValueError, match="one-shot iterator"):
        evaluation.collect_part_interpretability(
            model, "conv6", iter(dataset.as_numpy_iterator())
        )


def test_part_interpretability_errors():
    maps, masks = hand_part_case()
    with pytest.raises(ValueError, match="`quantile` must be in \\(0, 1\\)"):
        evaluation.part_interpretability(maps, masks, RF4, quantile=5)
    with pytest.raises(ValueError, match="`part_masks` must have shape \\(4,"):
        evaluation.part_interpretability(maps, masks[:2], RF4)
    with pytest.raises(ValueError, match="`radius` must be one of.*'big'"):
        evaluation.part_interpretability(maps, masks, RF4, radius="big")
    with pytest.raises(ValueError, match="`maps` must have shape"):
        evaluation.part_interpretability(maps[0], masks, RF4)
    with pytest.warns(RuntimeWarning, match="no image contains any"):
        score = evaluation.part_interpretability(
            maps, np.zeros_like(masks), RF4, part_ids=[1], quantile=0.25
        )
    assert math.isnan(score)


# --- Visualisation ----------------------------------------------------------


def test_upsample_map_interpolates_between_rf_centres():
    rf = ReceptiveField((4, 4), (2.0, 2.0), (6, 6))
    ramp = np.array([[0.0, 4.0], [0.0, 4.0]])
    up = evaluation.upsample_map(ramp, (8, 8), rf)
    # x centres at 2 and 6; pixel centres 0.5..7.5: clamped to 0 up to
    # pixel 1 (centre 1.5), then +1 per pixel, clamped to 4 from pixel 6.
    np.testing.assert_allclose(up[3], [0.0, 0.0, 0.5, 1.5, 2.5, 3.5, 4.0, 4.0])
    np.testing.assert_allclose(up, up[:1].repeat(8, axis=0))
    # Without a receptive field the cells tile the image evenly.
    np.testing.assert_allclose(evaluation.upsample_map(ramp, (8, 8)), up)


def test_plot_top_images_writes_pngs(tmp_path):
    # matplotlib is an optional dependency, needed only for the plots.
    pytest.importorskip("matplotlib")
    from PIL import Image

    rng = np.random.default_rng(6)
    pictures = rng.uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    maps = rng.uniform(size=(5, 4, 4, 3))
    paths = evaluation.plot_top_images(
        pictures,
        maps,
        [0, 2],
        str(tmp_path / "grids"),
        top_k=3,
        receptive_field=ReceptiveField((8, 8), (4.0, 4.0), (12, 12)),
    )
    assert [os.path.basename(p) for p in paths] == [
        "filter_0000.png",
        "filter_0002.png",
    ]
    for path in paths:
        image = np.asarray(Image.open(path).convert("RGB"))
        # 3 panels of 2.5 in at 100 dpi in one row.
        assert image.shape[0] >= 200 and image.shape[1] >= 600
        assert image.reshape(-1, 3).std(axis=0).max() > 10.0
    with pytest.raises(ValueError, match="`filter_ids` must be in \\[0, 3\\)"):
        evaluation.plot_top_images(pictures, maps, [3], str(tmp_path))
    with pytest.raises(ValueError, match="same N"):
        evaluation.plot_top_images(pictures[:2], maps, [0], str(tmp_path))
    # Its peaks are `peaks_from_maps`'s: a diverged model's maps are refused.
    maps[1, 0, 0, 2] = np.nan
    with pytest.raises(ValueError, match="`feature_maps` must be finite"):
        evaluation.plot_top_images(pictures, maps, [0], str(tmp_path))
