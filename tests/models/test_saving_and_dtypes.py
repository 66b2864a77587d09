"""Saving round trips, uint8 inputs, mixed precision and the ShuffleNet layers."""
import keras
import numpy as np
import pytest

from kdtf import models
from kdtf.models import ChannelShuffle
from kdtf.models import ChannelSplit


@pytest.mark.parametrize("name", ["mnist1d_cnn", "shufflenetv2"])
def test_keras_save_load_round_trip(tmp_path, name):
    model = models.get(name, num_classes=10)
    x = np.random.default_rng(1).random((4,) + model.input_shape[1:]).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode: no Lambda layers
    assert loaded.name == name
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x, training=False)), expected
    )
    assert models.stage_endpoints(loaded) == models.stage_endpoints(model)


@pytest.mark.parametrize("name", ["mnist_cnn_small", "resnet8x4", "mobilenetv2"])
def test_uint8_input_matches_float_input_scaled(name):
    m_u8 = models.get(name, input_dtype="uint8")
    m_f32 = models.get(name)
    m_f32.set_weights(m_u8.get_weights())
    assert m_u8.input.dtype == "uint8"
    assert isinstance(m_u8.get_layer("rescaling"), keras.layers.Rescaling)
    images = np.random.default_rng(2).integers(
        0, 256, (2,) + m_u8.input_shape[1:], dtype=np.uint8
    )
    out_u8 = keras.ops.convert_to_numpy(m_u8(images, training=False))
    out_f32 = keras.ops.convert_to_numpy(
        m_f32(images.astype("float32") / 255.0, training=False)
    )
    np.testing.assert_allclose(out_u8, out_f32, rtol=1e-5, atol=1e-5)


def test_mixed_precision_logits_stay_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = models.get("resnet20", num_classes=10, input_dtype="uint8")
        assert model.get_layer("stem_conv").compute_dtype == "float16"
        assert model.get_layer("logits").compute_dtype == "float32"
        images = np.zeros((2, 32, 32, 3), np.uint8)
        logits = model(images, training=False)
        assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_channel_shuffle_matches_pytorch_definition():
    # PyTorch (NCHW): x.view(N, g, C//g, H, W).permute(0, 2, 1, 3, 4).reshape(N, C, H, W)
    x = np.arange(2 * 3 * 3 * 6, dtype="float32").reshape(2, 3, 3, 6)
    nchw = x.transpose(0, 3, 1, 2)
    ref = nchw.reshape(2, 2, 3, 3, 3).transpose(0, 2, 1, 3, 4).reshape(2, 6, 3, 3)
    out = keras.ops.convert_to_numpy(ChannelShuffle(2)(x))
    np.testing.assert_array_equal(out, ref.transpose(0, 2, 3, 1))
    assert list(out[0, 0, 0]) == [0, 3, 1, 4, 2, 5]


def test_channel_split_and_configs():
    x = np.arange(10, dtype="float32").reshape(1, 1, 1, 10)
    a, b = ChannelSplit(0.5)(x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(a)[0, 0, 0], np.arange(5))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(b)[0, 0, 0], np.arange(5, 10))
    for layer in (ChannelSplit(0.25, name="s"), ChannelShuffle(4, name="h")):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="ratio"):
        ChannelSplit(1.5)
    with pytest.raises(ValueError, match="groups"):
        ChannelShuffle(0)
