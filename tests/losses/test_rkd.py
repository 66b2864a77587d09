"""RKD (relational KD, Park et al. 2019) against a NumPy reference of the paper's formula."""
import keras
import numpy as np
import pytest

import kdtf
from kdtf import losses


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _huber(x):
    return np.where(np.abs(x) < 1, 0.5 * x**2, np.abs(x) - 0.5)


def rkd_reference(t, s, wd=25.0, wa=50.0):
    """Per-example RKD in float64: row means of the distance and angle Huber terms."""
    def relations(e):
        e = e.reshape(len(e), -1)
        diff = e[None, :, :] - e[:, None, :]                       # [i, j] = e_j - e_i
        dist = np.linalg.norm(diff, axis=-1)
        dist = dist / dist[~np.eye(len(e), dtype=bool)].mean()
        norm = np.linalg.norm(diff, axis=-1, keepdims=True)
        unit = np.divide(diff, norm, out=np.zeros_like(diff), where=norm > 0)
        return dist, np.einsum("ijd,ikd->ijk", unit, unit)          # cosine of the angle at e_i

    (d_t, a_t), (d_s, a_s) = relations(t), relations(s)
    return wd * _huber(d_s - d_t).mean(1) + wa * _huber(a_s - a_t).mean((1, 2))


@pytest.mark.parametrize("t_shape,s_shape,scale", [
    ((2, 8), (2, 3), 1.0),              # one pair: the loss is 0 (up to rounding)
    ((3, 5), (3, 7), 50.0),
    ((64, 32), (64, 16), 50.0),
    ((16, 4, 4, 3), (16, 10), 1.0),     # higher-rank features are flattened
    # Wider than MATMUL_MAX_WIDTH: the angles from the law of cosines.
    ((2, 300), (2, 200), 1.0),
    ((64, 784), (64, 130), 50.0),
    ((8, 7, 7, 16), (8, 3), 20.0),      # one side each way
])
def test_matches_the_paper_formula(t_shape, s_shape, scale):
    rng = np.random.default_rng(sum(t_shape))
    t = (rng.normal(size=t_shape) * scale).astype("float32")
    s = (rng.normal(size=s_shape) * scale).astype("float32")
    want = rkd_reference(t.astype(np.float64), s.astype(np.float64))
    np.testing.assert_allclose(_np(losses.RKD("a", "b", reduction=None)(t, s)), want, rtol=1e-5,
                               atol=1e-9)
    np.testing.assert_allclose(float(losses.RKD("a", "b")(t, s)), want.mean(), rtol=1e-5, atol=1e-9)
    only_distance = losses.RKD("a", "b", distance_weight=1.0, angle_weight=0.0, reduction=None)
    np.testing.assert_allclose(_np(only_distance(t, s)),
                               rkd_reference(t.astype(np.float64), s.astype(np.float64), 1.0, 0.0),
                               rtol=1e-5, atol=1e-9)


def test_zero_for_identical_and_invariant_to_scaling_rotation_translation():
    rng = np.random.default_rng(1)
    t = rng.normal(size=(16, 8)).astype("float32")
    s = rng.normal(size=(16, 5)).astype("float32")
    loss = losses.RKD("a", "b", reduction=None)
    np.testing.assert_array_equal(_np(loss(t, t)), np.zeros(16))
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    moved = (7.5 * t @ rotation + rng.normal(size=(1, 8)) * 3).astype("float32")
    np.testing.assert_allclose(_np(loss(moved, s)), _np(loss(t, s)), rtol=1e-4, atol=1e-6)
    # A student that is a scaled, rotated copy of the teacher (other width) learns nothing more.
    embed = np.linalg.qr(rng.normal(size=(12, 8)))[0]          # isometry R^8 -> R^12
    copy = (0.2 * t @ embed.T).astype("float32")
    np.testing.assert_allclose(_np(loss(t, copy)), np.zeros(16), atol=1e-4)


@pytest.mark.parametrize("width", [3, losses.rkd.MATMUL_MAX_WIDTH + 1])
def test_gradient_finite_with_duplicate_rows_and_teacher_gets_none(gradients, width):
    rng = np.random.default_rng(2)
    t = rng.normal(size=(6, 4)).astype("float32")
    s = rng.normal(size=(6, width)).astype("float32")
    s[1] = s[0]                                   # two examples with one embedding
    loss = losses.RKD("a", "b")
    value, (g_t, g_s) = gradients(lambda t_, s_: loss(t_, s_), [t, s])
    assert np.isfinite(value) and np.all(np.isfinite(g_s)) and np.any(g_s != 0)
    np.testing.assert_array_equal(g_t, np.zeros_like(t))


def test_float32_under_mixed_precision():
    rng = np.random.default_rng(3)
    t = (rng.normal(size=(8, 16)) * 50).astype("float16")
    s = (rng.normal(size=(8, 4)) * 50).astype("float16")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        value = losses.RKD("a", "b")(t, s)
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    want = rkd_reference(t.astype(np.float64), s.astype(np.float64)).mean()
    np.testing.assert_allclose(float(value), want, rtol=1e-5)


def test_bad_shapes_and_arguments_name_the_argument():
    loss = losses.RKD("t_layer", "s_layer")
    with pytest.raises(ValueError, match=r"student_outputs \(layer 's_layer'\) has shape \(4,\)"):
        loss(np.zeros((4, 3), "float32"), np.zeros((4,), "float32"))
    with pytest.raises(ValueError, match="same batch size"):
        loss(np.zeros((4, 3), "float32"), np.zeros((5, 3), "float32"))
    with pytest.raises(ValueError, match="at least 2"):
        loss(np.zeros((1, 3), "float32"), np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match=r"teacher_outputs \(layer 't_layer'\)"):
        loss.build_adapter((), (4,))
    assert loss.build_adapter((8,), (4, 4, 2)) is None
    with pytest.raises(TypeError, match="student_layer_name"):
        losses.RKD("a", None)
    with pytest.raises(ValueError, match="angle_weight"):
        losses.RKD("a", "b", angle_weight=-1.0)


def test_config_round_trip():
    loss = losses.RKD("features", "emb", distance_weight=1.0, angle_weight=2.0, reduction=None)
    config = loss.get_config()
    assert losses.RKD.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, losses.RKD) and restored.get_config() == config


def _mlp(width, name):
    inp = keras.Input((12,))
    h = keras.layers.Dense(width, activation="tanh", name="features")(inp)
    return keras.Model(inp, keras.layers.Dense(4, name="logits")(h), name=name)


@pytest.mark.filterwarnings("ignore:Gradients do not exist")  # the logits: no task loss
def test_distiller_fit_reduces_the_relational_gap():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 12)).astype("float32")
    y = rng.integers(0, 4, size=64).astype("int32")
    teacher, student = _mlp(16, "t"), _mlp(6, "s")
    loss = losses.RKD("features", "features")
    d = kdtf.Distiller(teacher, student, [loss], [1.0], student_loss_weight=0.0)
    d.compile(keras.optimizers.Adam(1e-2),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # No task loss: the logged loss is the weighted distillation loss, epoch by epoch.
    history = d.fit(x, y, epochs=3, batch_size=32, verbose=0).history["loss"]
    assert np.all(np.isfinite(history)) and history[-1] < history[0]
    with pytest.raises(ValueError, match="teacher_layer_name='nope' is not a layer"):
        kdtf.Distiller(teacher, student, [losses.RKD("nope", "features")])


def test_registry_builds_rkd_on_the_penultimate_features():
    from pipeline import experiment

    cfg = experiment.RunConfig(method="rkd", rkd_angle_weight=5.0)
    d = experiment.make_distiller(cfg, _mlp(16, "t"), _mlp(6, "s"), "rkd", steps_per_epoch=10)
    (loss,) = d.distillation_losses
    assert isinstance(loss, losses.RKD) and loss.teacher_layer_name == "features"
    assert (loss.distance_weight, loss.angle_weight) == (25.0, 5.0)
