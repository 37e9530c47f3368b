"""TrainConfig, the flags generated from it, and the learning-rate schedules.

Fast: nothing here trains.
"""

import dataclasses
import json
import math

import keras
import numpy as np
import pytest
from absl import flags

from keras_interp import templates
from keras_interp.apps import config as config_lib
from keras_interp.apps import run_folder
from keras_interp.apps import schedules
from keras_interp.apps import train_flags
from keras_interp.apps.config import TrainConfig


def defined_flags(*argv):
    """Fresh flags of `define_flags`, parsed from `argv`."""
    flag_values = flags.FlagValues()
    train_flags.define_flags(flag_values)
    flag_values(["train_cub.py", *argv])
    return flag_values


def test_one_flag_per_field_with_the_field_default():
    flag_values = defined_flags()
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert set(flag_values) == set(fields)
    for name, default in fields.items():
        assert flag_values[name].default == default, name
    assert train_flags.config_from_flags(flag_values) == TrainConfig()


def test_enum_flags_take_the_public_choice_tuples():
    flag_values = defined_flags()
    assert set(config_lib.CHOICES) >= {"center", "loss", "eval_map", "task"}
    for name, choices in config_lib.CHOICES.items():
        expected = ["none" if c is None else c for c in choices]
        assert flag_values[name].parser.enum_values == expected, name
    assert config_lib.CHOICES["center"] is templates.CENTERS


@pytest.mark.parametrize("change", ["drop", "add"])
def test_flags_that_drift_from_the_fields_are_refused(monkeypatch, change):
    help_text = dict(train_flags._HELP)
    if change == "drop":
        del help_text["beta"]
        pattern = r"Fields without help text: \['beta'\]"
    else:
        help_text["gamma"] = "A setting TrainConfig does not have."
        pattern = r"help text without a field: \['gamma'\]"
    monkeypatch.setattr(train_flags, "_HELP", help_text)
    with pytest.raises(ValueError, match=pattern):
        train_flags.define_flags(flags.FlagValues())


def test_flags_map_onto_the_config():
    config = train_flags.config_from_flags(
        defined_flags(
            "--normalization=none",
            "--parts=back,tail",
            "--noapply_mask",
            "--center=argmax",
            "--loss_weight=0",
        )
    )
    assert config.normalization is None
    assert config.parts == ("back", "tail")
    assert config.apply_mask is False
    assert config.center == "argmax"
    assert config.loss_weight == 0.0


def test_center_and_beta_defaults_are_the_library_constants():
    config = TrainConfig()
    assert config.center == templates.DEFAULT_CENTER
    assert config.beta == templates.DEFAULT_BETA
    flag_values = defined_flags()
    assert flag_values["center"].value == templates.DEFAULT_CENTER
    assert flag_values["beta"].value == templates.DEFAULT_BETA


@pytest.mark.parametrize(
    "text,expected",
    [
        ("4", 4.0),
        ("2.5", 2.5),
        ("4,4,2", (4.0, 4.0, 2.0)),
        (" 3, 1 ", (3.0, 1.0)),
        ("learned", "learned"),
    ],
)
def test_beta_flag_takes_a_number_a_list_or_learned(text, expected):
    config = train_flags.config_from_flags(defined_flags(f"--beta={text}"))
    assert config.beta == expected


@pytest.mark.parametrize("text", ["abc", "4,", "0", "-1,2", "nan", "Learned"])
def test_bad_beta_flag_names_the_value_and_the_forms(text):
    with pytest.raises(flags.IllegalFlagValueError) as info:
        defined_flags(f"--beta={text}")
    message = str(info.value)
    assert message.startswith(f"flag --beta={text}:")
    assert "'learned'" in message and "Received" in message


@pytest.mark.parametrize(
    "beta", [0.0, -1.0, float("inf"), True, "4", [], [4.0, "x"], None]
)
def test_bad_beta_is_refused_by_the_config(beta):
    with pytest.raises(ValueError, match=r"`beta` must be .*Received: beta="):
        TrainConfig(beta=beta)


def test_config_is_frozen_and_stores_lists_as_tuples():
    config = TrainConfig(beta=[4, 2], parts=["back"])
    assert config.beta == (4.0, 2.0) and config.parts == ("back",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3
    longer = dataclasses.replace(config, epochs=3)
    assert longer.epochs == 3 and config.epochs == TrainConfig.epochs


@pytest.mark.parametrize(
    "overrides,pattern",
    [
        (dict(center="middle"), r"`center` must be one of .*'middle'"),
        (dict(loss="mse"), r"`loss` must be one of .*'mse'"),
        (dict(eval_map="both"), r"`eval_map` must be one of .*'both'"),
        (dict(backbone="vgg"), r"`backbone` must be one of .*'vgg'"),
        (dict(batch_size=True), r"`batch_size` must be a positive int"),
    ],
)
def test_bad_choices_are_refused_on_construction(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        TrainConfig(**overrides)


def test_config_json_round_trips(tmp_path):
    config = TrainConfig(
        model_dir=str(tmp_path / "run"), beta=(4.0, 2.0), parts=("back",)
    )
    path = run_folder.write_config(config)
    assert path == str(tmp_path / "run" / run_folder.CONFIG_FILE)
    assert TrainConfig.from_json(path) == config
    assert json.loads(open(path).read()) == json.loads(
        json.dumps(dataclasses.asdict(config))
    )
    assert not list((tmp_path / "run").glob("*partial*"))


def test_config_json_with_unknown_settings_is_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"epochs": 3, "gamma": 1}))
    with pytest.raises(ValueError, match=r"\['gamma'\]"):
        TrainConfig.from_json(str(path))


@pytest.mark.parametrize("name", schedules.LR_SCHEDULES)
def test_learning_rate_schedules(name):
    rate = schedules.learning_rate(
        name, initial=0.1, epochs=20, steps_per_epoch=5
    )
    at = {
        step: float(rate(step) if callable(rate) else rate)
        for step in (0, 25, 50, 100)
    }
    assert math.isclose(at[0], 0.1, rel_tol=1e-6)
    if name == "constant":
        assert at[100] == 0.1
    elif name == "cosine":  # Half-way: half the rate; the end: zero.
        assert math.isclose(at[50], 0.05, rel_tol=1e-5)
        assert at[100] == pytest.approx(0.0, abs=1e-7)
    else:  # 10x log-linearly over 10 epochs (50 steps), then constant.
        assert math.isclose(at[25], 0.1 * 0.1**0.5, rel_tol=1e-5)
        assert math.isclose(at[50], 0.01, rel_tol=1e-5)
        assert math.isclose(at[100], 0.01, rel_tol=1e-5)


def test_log_linear_decay_serializes():
    schedule = schedules.LogLinearDecay(0.1, 50)
    again = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule)
    )
    assert isinstance(again, schedules.LogLinearDecay)
    np.testing.assert_allclose(float(again(30)), float(schedule(30)))


def test_unknown_schedule_names_the_choices():
    with pytest.raises(ValueError, match=r"`lr_schedule`.*'step'"):
        schedules.learning_rate(
            "step", initial=0.1, epochs=1, steps_per_epoch=1
        )


@pytest.mark.parametrize("beta", ["learned", "per_filter"])
def test_beta_of_the_config_reaches_both_interpretable_layers(beta):
    tf = pytest.importorskip("tensorflow")
    from keras_interp import layers
    from keras_interp.apps import train

    channels = 128  # tiny_vgg's top conv; "part_conv" has as many filters.
    if beta == "per_filter":
        beta = tuple(1.0 + k % 4 for k in range(channels))
    config = TrainConfig(image_size=32, beta=beta)
    built, _, _ = train._build(config, tf.distribute.get_strategy(), 3, 1)
    found = layers.interpretable_layers(built.training)
    assert len(found) == 2
    expected = beta if beta == "learned" else list(beta)
    for layer in found:
        assert layer.get_config()["beta"] == expected, layer.name
