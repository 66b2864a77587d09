"""AT (attention transfer, Zagoruyko & Komodakis 2017) against a NumPy reference of the paper."""
import keras
import numpy as np
import pytest

import kdtf
from kdtf import losses


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _adaptive_pool(f, axis, size_out):
    """PyTorch's adaptive average pooling along one axis, by loops."""
    size_in = f.shape[axis]
    parts = []
    for i in range(size_out):
        start, end = (i * size_in) // size_out, -((-(i + 1) * size_in) // size_out)
        parts.append(np.take(f, range(start, end), axis=axis).mean(axis=axis, keepdims=True))
    return np.concatenate(parts, axis=axis)


def at_reference(t, s, p=2):
    """Per-example AT in float64: a(F) = normalize(flatten(mean_c |F|^p)), mean squared gap."""
    for axis in range(1, t.ndim - 1):
        if t.shape[axis] > s.shape[axis]:
            t = _adaptive_pool(t, axis, s.shape[axis])
        elif s.shape[axis] > t.shape[axis]:
            s = _adaptive_pool(s, axis, t.shape[axis])

    def attention(f):
        a = (np.abs(f) ** p).mean(axis=-1).reshape(len(f), -1)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    return ((attention(s) - attention(t)) ** 2).mean(axis=1)


@pytest.mark.parametrize("t_shape,s_shape,scale", [
    ((2, 8, 8, 16), (2, 8, 8, 4), 1.0),
    ((64, 4, 4, 8), (64, 8, 8, 3), 50.0),     # the student is pooled down
    ((2, 6, 5, 3), (2, 4, 5, 2), 50.0),       # sizes that do not divide
    ((64, 10, 6), (64, 5, 2), 1.0),           # 1-D maps [B, L, C]
])
def test_matches_the_paper_formula(t_shape, s_shape, scale):
    rng = np.random.default_rng(sum(t_shape))
    t = (rng.normal(size=t_shape) * scale).astype("float32")
    s = (rng.normal(size=s_shape) * scale).astype("float32")
    loss = losses.AT("a", "b", reduction=None)
    want = at_reference(t.astype(np.float64), s.astype(np.float64))
    np.testing.assert_allclose(_np(loss(t, s)), want, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(float(losses.AT("a", "b")(t, s)), want.mean(), rtol=1e-5)
    want3 = at_reference(t.astype(np.float64), s.astype(np.float64), p=3)
    np.testing.assert_allclose(_np(losses.AT("a", "b", p=3, reduction=None)(t, s)), want3,
                               rtol=1e-5, atol=1e-9)


def test_zero_for_identical_and_invariant_to_positive_per_map_scaling():
    rng = np.random.default_rng(1)
    t = rng.normal(size=(8, 6, 6, 5)).astype("float32")
    s = rng.normal(size=(8, 6, 6, 3)).astype("float32")
    loss = losses.AT("a", "b", reduction=None)
    np.testing.assert_array_equal(_np(loss(t, t)), np.zeros(8))
    scale = rng.uniform(0.1, 50.0, size=(8, 1, 1, 1)).astype("float32")
    np.testing.assert_allclose(_np(loss(t * scale, s)), _np(loss(t, s)), rtol=1e-5)
    np.testing.assert_allclose(_np(loss(t, s * scale)), _np(loss(t, s)), rtol=1e-5)
    # Only the channel statistics matter: permuting channels changes nothing.
    np.testing.assert_allclose(_np(loss(t[..., ::-1], s)), _np(loss(t, s)), rtol=1e-6)
    # A zero map (dead ReLUs) gives a finite value.
    assert np.all(np.isfinite(_np(loss(t, np.zeros_like(s)))))


def test_gradient_is_finite_for_a_zero_student_map(gradients):
    t = np.random.default_rng(2).normal(size=(2, 4, 4, 3)).astype("float32")
    s = np.zeros((2, 4, 4, 2), "float32")
    value, (grad,) = gradients(lambda s_: losses.AT("a", "b")(t, s_), [s])
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_float32_under_mixed_precision():
    rng = np.random.default_rng(3)
    t = (rng.normal(size=(4, 8, 8, 6)) * 50).astype("float16")
    s = (rng.normal(size=(4, 4, 4, 3)) * 50).astype("float16")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        loss = losses.AT("a", "b")
        value = loss(t, s)
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    want = at_reference(t.astype(np.float64), s.astype(np.float64)).mean()
    np.testing.assert_allclose(float(value), want, rtol=1e-5)


def test_bad_shapes_and_arguments_name_the_argument():
    loss = losses.AT("t_layer", "s_layer")
    with pytest.raises(ValueError, match=r"student_outputs \(layer 's_layer'\) has shape \(4, 7\)"):
        loss(np.zeros((4, 3, 3, 2), "float32"), np.zeros((4, 7), "float32"))
    with pytest.raises(ValueError, match="same number of spatial axes"):
        loss(np.zeros((4, 3, 3, 2), "float32"), np.zeros((4, 3, 2), "float32"))
    with pytest.raises(ValueError, match="same batch size"):
        loss(np.zeros((4, 3, 3, 2), "float32"), np.zeros((5, 3, 3, 2), "float32"))
    with pytest.raises(ValueError, match=r"teacher_outputs \(layer 't_layer'\)"):
        loss.build_adapter((16,), (4, 4, 2))
    assert loss.build_adapter((8, 8, 16), (4, 4, 2)) is None
    with pytest.raises(TypeError, match="teacher_layer_name"):
        losses.AT("", "b")
    with pytest.raises(ValueError, match="`p`"):
        losses.AT("a", "b", p=0)


def test_config_round_trip():
    loss = losses.AT("stage1", "stage2", p=3, name="at1", reduction=None)
    config = loss.get_config()
    clone = losses.AT.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, losses.AT) and restored.get_config() == config


def _conv_net(width, pooled, name):
    """A tiny map model; 1x1 convolutions (Dense on the channels) keep it cheap to compile."""
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Dense(width, activation="relu", name="conv")(inp)
    if pooled:
        h = keras.layers.AveragePooling2D(2)(h)
    h = keras.layers.Dense(width, activation="relu", name="stage1")(h)
    out = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D()(h))
    return keras.Model(inp, out, name=name)


@pytest.mark.filterwarnings("ignore:Gradients do not exist")  # the logits: no task loss
def test_distiller_fit_reduces_the_attention_gap():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=32).astype("int32")
    teacher, student = _conv_net(8, False, "t"), _conv_net(4, True, "s")
    loss = losses.AT("stage1", "stage1")
    d = kdtf.Distiller(teacher, student, [loss], [1000.0], student_loss_weight=0.0)
    d.compile(keras.optimizers.Adam(1e-2),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # No task loss: the logged loss is the weighted distillation loss, epoch by epoch.
    history = d.fit(x, y, epochs=4, batch_size=16, verbose=0).history["loss"]
    assert np.all(np.isfinite(history)) and history[-1] < history[0]
    with pytest.raises(ValueError, match="student_layer_name='nope' is not a layer"):
        kdtf.Distiller(teacher, student, [losses.AT("stage1", "nope")])
    with pytest.raises(ValueError, match=r"student_outputs \(layer 'logits'\)"):
        kdtf.Distiller(teacher, student, [losses.AT("stage1", "logits")])


def test_registry_builds_one_at_per_stage_pair():
    from pipeline import experiment

    teacher, student = _conv_net(8, False, "t"), _conv_net(4, True, "s")
    cfg = experiment.RunConfig(method="at")
    d = experiment.make_distiller(cfg, teacher, student, "at", steps_per_epoch=10)
    (loss,) = d.distillation_losses
    assert isinstance(loss, losses.AT) and (loss.teacher_layer_name, loss.student_layer_name) == (
        "stage1", "stage1")
    assert d.distillation_loss_weights == [1000.0]
    cfg = experiment.RunConfig(method="at", stages="conv:stage1,stage1", at_weight=10.0)
    d = experiment.make_distiller(cfg, teacher, student, "at", steps_per_epoch=10)
    assert [(l.teacher_layer_name, l.student_layer_name) for l in d.distillation_losses] == [
        ("conv", "stage1"), ("stage1", "stage1")]
    assert d.distillation_loss_weights == [10.0, 10.0]
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(2, 3, name="stage1")(inp)
    h = keras.layers.Conv2D(2, 3, name="stage2")(h)
    deeper = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(h)), name="deeper")
    with pytest.raises(ValueError, match="stages: at pairs the models' stages one to one"):
        experiment.make_distiller(experiment.RunConfig(method="at"), deeper, student, "at",
                                  steps_per_epoch=10)
