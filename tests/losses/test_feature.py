import keras
import numpy as np
import pytest

import kdtf
from kdtf.losses.feature import FeatureMSE


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_equal_shapes_match_numpy_reference():
    t = _rng(0).normal(size=(4, 10, 3)).astype("float32")
    s = _rng(1).normal(size=(4, 10, 3)).astype("float32")
    loss = FeatureMSE("a", "b", reduction=None)
    assert loss.build_adapter((10, 3), (10, 3)) is None and loss.adapter is None
    per_example = ((s - t) ** 2).mean(axis=(1, 2))
    np.testing.assert_allclose(loss(t, s), per_example, rtol=1e-6)
    mean = FeatureMSE("a", "b")
    mean.build_adapter((10, 3), (10, 3))
    np.testing.assert_allclose(mean(t, s), per_example.mean(), rtol=1e-6)
    w = np.array([1.0, 0.0, 2.0, 1.0], "float32")
    np.testing.assert_allclose(
        mean(t, s, sample_weight=w), (per_example * w).sum() / 4, rtol=1e-6
    )


def test_flat_features_and_zero_for_identical():
    t = _rng(0).normal(size=(5, 7)).astype("float32")
    loss = FeatureMSE("a", "b", reduction=None)
    np.testing.assert_allclose(loss(t, t), np.zeros(5), atol=0)
    np.testing.assert_allclose(loss(t, t + 1.0), np.ones(5), rtol=1e-6)


def test_adapter_applied_before_the_mse():
    t = _rng(0).normal(size=(3, 6)).astype("float32")
    s = _rng(1).normal(size=(3, 4)).astype("float32")
    loss = FeatureMSE("a", "b", reduction=None)
    adapter = loss.build_adapter((6,), (4,))
    assert adapter is loss.adapter and adapter.teacher_shape == (6,)
    kernel, bias = adapter.project.get_weights()
    eps = adapter.norm.epsilon
    adapted = (s @ kernel + bias) / np.sqrt(1 + eps)  # BN at initial stats
    expected = ((adapted - t) ** 2).mean(axis=1)
    np.testing.assert_allclose(loss(t, s, training=False), expected, rtol=1e-5)
    # training=True: BN normalises with batch statistics.
    z = s @ kernel + bias
    z = (z - z.mean(0)) / np.sqrt(z.var(0) + eps)
    np.testing.assert_allclose(
        loss(t, s, training=True), ((z - t) ** 2).mean(axis=1), rtol=1e-4, atol=1e-5
    )


def test_gradients_reach_the_adapter_and_student_features(gradients):
    t = _rng(0).normal(size=(8, 5, 6)).astype("float32")
    s = _rng(1).normal(size=(8, 5, 2)).astype("float32")
    loss = FeatureMSE("a", "b")
    loss.build_adapter((5, 6), (5, 2))
    weights = loss.adapter.trainable_weights
    _, grads = gradients(lambda s_: loss(t, s_, training=True), [s], weights)
    assert len(grads) == 1 + len(weights)
    assert all(np.isfinite(g).all() for g in grads)
    assert np.abs(grads[0]).sum() > 0
    # The conv kernel before the adapter's BatchNorm gets a gradient (its
    # bias does not: BatchNorm removes the mean).
    kernel = [i for i, w in enumerate(weights) if "kernel" in w.path]
    assert kernel and all(np.abs(grads[1 + i]).sum() > 0 for i in kernel)


def test_mixed_precision_inputs_computed_in_float32():
    t = np.full((2, 3), 1000.0, "float32")
    s = np.full((2, 3), 1000.5, "float16")
    loss = FeatureMSE("a", "b")
    value = loss(t.astype("float16"), s)
    assert value.dtype == "float32"
    np.testing.assert_allclose(value, 0.25, rtol=1e-6)


def test_shape_mismatch_needs_adapter():
    loss = FeatureMSE("a", "b", adapter=False)
    with pytest.raises(ValueError, match="adapter=False"):
        loss.build_adapter((4, 8), (4, 2))
    unbuilt = FeatureMSE("a", "b")
    with pytest.raises(ValueError, match="build_adapter"):
        unbuilt(np.zeros((2, 8), "float32"), np.zeros((2, 4), "float32"))


def test_bad_arguments():
    with pytest.raises(TypeError, match="teacher_layer_name"):
        FeatureMSE(None, "b")
    with pytest.raises(TypeError, match="student_layer_name"):
        FeatureMSE("a", "")
    with pytest.raises(TypeError, match="adapter"):
        FeatureMSE("a", "b", adapter="yes")


def test_config_round_trip():
    loss = FeatureMSE("stage2", "stage1", adapter=False, name="hint")
    config = loss.get_config()
    assert config["teacher_layer_name"] == "stage2"
    assert config["student_layer_name"] == "stage1"
    assert config["adapter"] is False
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(clone, FeatureMSE)
    assert (clone.teacher_layer_name, clone.student_layer_name, clone.use_adapter, clone.name) == (
        "stage2", "stage1", False, "hint")


def _tiny(width, name):
    inp = keras.Input((12,))
    h = keras.layers.Dense(width, activation="relu", name="hidden")(inp)
    return keras.Model(inp, keras.layers.Dense(4, name="logits")(h), name=name)


def test_fitnets_through_the_distiller_trains_and_saves(tmp_path):
    """The Distiller's feature protocol: adapter built, trained, saved, not in the student."""
    from kdtf import distiller as distiller_lib
    import inspect

    if "teacher_layer_name" not in inspect.getsource(distiller_lib) and "_layer_name" not in inspect.getsource(distiller_lib):
        pytest.skip("Distiller has no feature-loss protocol yet")
    x = _rng(0).normal(size=(64, 12)).astype("float32")
    y = (x[:, :4].argmax(1)).astype("int32")
    teacher, student = _tiny(16, "t"), _tiny(6, "s")
    loss = FeatureMSE("hidden", "hidden")
    d = kdtf.Distiller(teacher, student, [loss], [1.0])
    assert loss.adapter is not None and loss.adapter.student_shape == (6,)
    d.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = loss.adapter.project.kernel.numpy().copy()
    d.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert not np.allclose(before, loss.adapter.project.kernel.numpy())
    assert all("adapter" not in w.path for w in student.weights)
    path = str(tmp_path / "d.keras")
    d.save(path)
    loaded = keras.saving.load_model(path)
    adapter = loaded.distillation_losses[0].adapter
    np.testing.assert_allclose(
        adapter.project.kernel.numpy(), loss.adapter.project.kernel.numpy()
    )
