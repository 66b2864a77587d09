import keras
import numpy as np
import pytest

from kdtf import adapters


@pytest.mark.parametrize(
    "teacher_shape, student_shape, layers",
    [
        ((64,), (16,), {"dense", "bn"}),
        ((20, 64), (20, 16), {"conv", "bn"}),
        ((20, 64), (40, 16), {"pool", "conv", "bn"}),
        ((15, 32), (20, 8), {"conv", "bn"}),  # non-integer ratio: resize
        ((7, 7, 64), (14, 14, 16), {"pool", "conv", "bn"}),
        ((7, 7, 64), (7, 7, 16), {"conv", "bn"}),
        ((5, 5, 8), (7, 7, 8), {"conv", "bn"}),  # same channels, other size
    ],
)
def test_output_shape_and_parts(teacher_shape, student_shape, layers):
    adapter = adapters.make_adapter(teacher_shape, student_shape)
    x = np.random.default_rng(0).normal(size=(3,) + student_shape).astype("float32")
    out = adapter(x, training=True)
    assert tuple(out.shape) == (3,) + teacher_shape
    assert out.dtype == "float32"
    assert {layer.name for layer in adapter._layers} == layers
    assert adapter.trainable_weights


def test_equal_shapes_give_none():
    assert adapters.make_adapter((20, 16), (20, 16)) is None
    assert adapters.make_adapter([8], (8,)) is None


def test_matches_numpy_reference_in_inference_mode():
    # 1x1 conv after 2x average pooling, then BN with its initial statistics.
    adapter = adapters.make_adapter((4, 3), (8, 2))
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(1, 2, 3)).astype("float32")
    bias = rng.normal(size=(3,)).astype("float32")
    adapter.project.set_weights([kernel, bias])
    x = rng.normal(size=(2, 8, 2)).astype("float32")
    pooled = x.reshape(2, 4, 2, 2).mean(axis=2)
    expected = (pooled @ kernel[0] + bias) / np.sqrt(1.0 + adapter.norm.epsilon)
    np.testing.assert_allclose(adapter(x, training=False), expected, rtol=1e-5, atol=1e-5)


def test_bilinear_resize_of_constant_map_is_constant():
    adapter = adapters.make_adapter((5, 5, 1), (7, 7, 1))
    adapter.project.set_weights([np.ones((1, 1, 1, 1), "float32"), np.zeros(1, "float32")])
    out = adapter(np.full((1, 7, 7, 1), 2.0, "float32"), training=False)
    np.testing.assert_allclose(out, 2.0 / np.sqrt(1 + adapter.norm.epsilon), rtol=1e-5)


def test_config_round_trip_and_saving(tmp_path):
    adapter = adapters.make_adapter((20, 64), (40, 16), name="a")
    config = adapter.get_config()
    assert config["teacher_shape"] == [20, 64] and config["student_shape"] == [40, 16]
    clone = adapters.Adapter.from_config(config)
    assert clone.teacher_shape == (20, 64) and clone.student_shape == (40, 16)

    inp = keras.Input((40, 16))
    model = keras.Model(inp, adapters.Adapter((20, 64), (40, 16))(inp))
    x = np.random.default_rng(0).normal(size=(2, 40, 16)).astype("float32")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)


@pytest.mark.parametrize(
    "teacher_shape, student_shape, error",
    [
        ((8,), (4, 2), ValueError),       # rank mismatch
        ((0,), (4,), ValueError),         # non-positive
        ((4, 4, 4, 4), (4, 4, 4, 2), ValueError),  # rank 4
        ("abc", (4,), TypeError),
        ((4.5,), (4,), ValueError),
    ],
)
def test_bad_shapes(teacher_shape, student_shape, error):
    with pytest.raises(error, match="shape"):
        adapters.make_adapter(teacher_shape, student_shape)


def test_wrong_input_shape_is_an_error():
    adapter = adapters.Adapter((8,), (4,))
    with pytest.raises(ValueError, match="expects inputs of shape"):
        adapter(np.zeros((2, 5), "float32"))


def test_initialize_from_targets_matches_teacher_moments():
    adapter = adapters.make_adapter((10, 4), (10, 2))
    rng = np.random.default_rng(0)
    target = (rng.normal(size=(16, 10, 4)) * [0.1, 1.0, 3.0, 0.5] + [0.0, 2.0, -1.0, 5.0]).astype("float32")
    adapter.initialize_from_targets(target)
    out = adapter(rng.normal(size=(16, 10, 2)).astype("float32"), training=True).numpy()
    flat_t, flat_o = target.reshape(-1, 4), out.reshape(-1, 4)
    np.testing.assert_allclose(flat_o.mean(0), flat_t.mean(0), atol=1e-4)
    np.testing.assert_allclose(flat_o.std(0), flat_t.std(0), rtol=3e-2)  # BN eps
    with pytest.raises(ValueError, match="teacher_features"):
        adapter.initialize_from_targets(np.zeros((2, 10, 3), "float32"))
