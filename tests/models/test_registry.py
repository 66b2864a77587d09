"""kdtf.models registry: available(), get() arguments and errors, stage_endpoints()."""
import keras
import numpy as np
import pytest

from kdtf import models

EXPECTED_NAMES = [
    "mnist1d_cnn", "mnist1d_cnn_small", "mnist1d_cnn_wide", "mnist1d_mlp", "mnist1d_mlp256",
    "mnist_cnn", "mnist_cnn_small",
    "resnet8x4", "resnet32x4", "resnet20", "resnet56",
    "wrn_40_2", "wrn_16_2", "wrn_40_1", "vgg8", "vgg13",
    "mobilenetv2", "shufflenetv2",
]


def test_available_lists_every_name_sorted():
    names = models.available()
    assert names == sorted(EXPECTED_NAMES)
    assert all(n == n.lower() for n in names)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        models.get("resnet9000")
    message = str(info.value)
    assert "resnet9000" in message
    for name in EXPECTED_NAMES:
        assert name in message


def test_non_string_name_is_type_error():
    with pytest.raises(TypeError, match="name"):
        models.get(3)


def test_defaults_and_overrides():
    m = models.get("mnist1d_mlp")
    assert m.name == "mnist1d_mlp"
    assert m.input_shape == (None, 40)
    assert m.output_shape == (None, 10)
    m = models.get("mnist_cnn_small")
    assert m.input_shape == (None, 28, 28, 1)
    m = models.get("resnet20", input_shape=(16, 16, 3), num_classes=7)
    assert m.input_shape == (None, 16, 16, 3)
    assert m.output_shape == (None, 7)
    assert m.name == "resnet20"


def test_name_is_case_insensitive_and_repdistiller_aliases():
    assert models.get("MNIST1D_MLP").name == "mnist1d_mlp"
    assert models.get("mobile_half", num_classes=10).name == "mobilenetv2"


def test_mnist_flat_input_is_reshaped():
    m = models.get("mnist_cnn_small", input_shape=(784,))
    y = m(np.zeros((3, 784), "float32"))
    assert y.shape == (3, 10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"input_shape": (32, 32)}, "input_shape"),
        ({"input_dtype": "int64"}, "input_dtype"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.get("resnet20", **kwargs)


def test_uint8_rejected_for_signal_models():
    with pytest.raises(ValueError, match="input_dtype"):
        models.get("mnist1d_cnn", input_dtype="uint8")


def test_unknown_keyword_is_type_error():
    with pytest.raises(TypeError):
        models.get("vgg8", not_an_argument=1)


def test_stage_endpoints_on_zoo_model_in_order():
    m = models.get("mnist_cnn")
    assert models.stage_endpoints(m) == ["stage1", "stage2"]


def test_stage_endpoints_sorts_numerically():
    inputs = keras.Input((4,))
    x = inputs
    for i in range(1, 12):
        x = keras.layers.Dense(2, name=f"stage{i}")(x)
    m = keras.Model(inputs, x)
    assert models.stage_endpoints(m) == [f"stage{i}" for i in range(1, 12)]


def test_stage_endpoints_rejects_non_zoo_model():
    inputs = keras.Input((4,))
    m = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="plain")
    with pytest.raises(ValueError, match="stage"):
        models.stage_endpoints(m)


def test_stage_endpoints_rejects_gaps_and_non_models():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(2, name="stage1")(inputs)
    x = keras.layers.Dense(2, name="stage3")(x)
    with pytest.raises(ValueError, match="non-consecutive"):
        models.stage_endpoints(keras.Model(inputs, x))
    with pytest.raises(TypeError, match="model"):
        models.stage_endpoints("resnet20")
