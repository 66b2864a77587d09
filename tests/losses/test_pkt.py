"""PKT (probabilistic knowledge transfer, Passalis & Tefas 2018) against a NumPy reference."""
import keras
import numpy as np
import pytest

import kdtf
from kdtf import losses


def _np(x):
    return keras.ops.convert_to_numpy(x)


def pkt_reference(t, s, eps=1e-7):
    """Per-example PKT in float64: KL(P_T[i] || P_S[i]) / B, with the reference code's eps."""
    def conditional(e):
        e = e.reshape(len(e), -1)
        unit = e / (np.linalg.norm(e, axis=1, keepdims=True) + eps)
        k = (unit @ unit.T + 1) / 2
        return k / k.sum(1, keepdims=True)

    p_t, p_s = conditional(t), conditional(s)
    rows = [sum(p_t[i, j] * np.log((p_t[i, j] + eps) / (p_s[i, j] + eps)) for j in range(len(t)))
            for i in range(len(t))]
    return np.array(rows) / len(t)


@pytest.mark.parametrize("t_shape,s_shape,scale", [
    ((2, 8), (2, 3), 1.0),
    ((64, 32), (64, 16), 50.0),
    ((16, 4, 4, 3), (16, 10), 1.0),     # higher-rank features are flattened
])
def test_matches_the_paper_formula(t_shape, s_shape, scale):
    rng = np.random.default_rng(sum(t_shape))
    t = (rng.normal(size=t_shape) * scale).astype("float32")
    s = (rng.normal(size=s_shape) * scale).astype("float32")
    want = pkt_reference(t.astype(np.float64), s.astype(np.float64))
    np.testing.assert_allclose(_np(losses.PKT("a", "b", reduction=None)(t, s)), want, rtol=1e-5)
    np.testing.assert_allclose(float(losses.PKT("a", "b")(t, s)), want.mean(), rtol=1e-5)


def test_zero_for_identical_and_invariant_to_positive_scaling_and_rotation():
    rng = np.random.default_rng(1)
    t = rng.normal(size=(16, 8)).astype("float32")
    s = rng.normal(size=(16, 5)).astype("float32")
    loss = losses.PKT("a", "b", reduction=None)
    np.testing.assert_allclose(_np(loss(t, t)), np.zeros(16), atol=1e-9)
    scale = rng.uniform(0.5, 50.0, size=(16, 1)).astype("float32")     # per example, positive
    rotation, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    np.testing.assert_allclose(_np(loss(t * scale, s)), _np(loss(t, s)), rtol=1e-4)
    np.testing.assert_allclose(_np(loss(t, (s @ rotation).astype("float32") * scale)),
                               _np(loss(t, s)), rtol=1e-4)
    # Negating some rows flips their cosines: not invariant.
    signs = np.where(np.arange(16) % 2, -1.0, 1.0)[:, None].astype("float32")
    assert not np.allclose(_np(loss(t, s * signs)), _np(loss(t, s)), rtol=1e-2)


def test_gradient_finite_for_a_zero_row_and_sample_weights(gradients):
    rng = np.random.default_rng(2)
    t = rng.normal(size=(6, 4)).astype("float32")
    s = rng.normal(size=(6, 3)).astype("float32")
    s[0] = 0.0                                  # a dead embedding
    value, (g_s,) = gradients(lambda s_: losses.PKT("a", "b")(t, s_), [s])
    assert np.isfinite(value) and np.all(np.isfinite(g_s))
    w = np.array([1, 0, 2, 1, 1, 0], "float32")
    per_example = _np(losses.PKT("a", "b", reduction=None)(t, s))
    np.testing.assert_allclose(float(losses.PKT("a", "b")(t, s, sample_weight=w)),
                               (per_example * w).sum() / 6, rtol=1e-5)


def test_float32_under_mixed_precision():
    rng = np.random.default_rng(3)
    t = (rng.normal(size=(8, 16)) * 50).astype("float16")
    s = (rng.normal(size=(8, 4)) * 50).astype("float16")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        value = losses.PKT("a", "b")(t, s)
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    want = pkt_reference(t.astype(np.float64), s.astype(np.float64)).mean()
    np.testing.assert_allclose(float(value), want, rtol=1e-5)


def test_bad_shapes_and_arguments_name_the_argument():
    loss = losses.PKT("t_layer", "s_layer")
    with pytest.raises(ValueError, match=r"teacher_outputs \(layer 't_layer'\) has shape \(4,\)"):
        loss(np.zeros((4,), "float32"), np.zeros((4, 3), "float32"))
    with pytest.raises(ValueError, match="same batch size"):
        loss(np.zeros((4, 3), "float32"), np.zeros((5, 3), "float32"))
    with pytest.raises(ValueError, match=r"student_outputs \(layer 's_layer'\)"):
        loss.build_adapter((4,), ())
    assert loss.build_adapter((8,), (4, 4, 2)) is None
    with pytest.raises(TypeError, match="teacher_layer_name"):
        losses.PKT(3, "b")


def test_config_round_trip():
    loss = losses.PKT("features", "emb", name="pkt1", reduction=None)
    config = loss.get_config()
    assert losses.PKT.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, losses.PKT) and restored.get_config() == config


def _mlp(width, name):
    inp = keras.Input((12,))
    h = keras.layers.Dense(width, activation="tanh", name="features")(inp)
    return keras.Model(inp, keras.layers.Dense(4, name="logits")(h), name=name)


@pytest.mark.filterwarnings("ignore:Gradients do not exist")  # the logits: no task loss
def test_distiller_fit_reduces_the_similarity_gap():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 12)).astype("float32")
    y = rng.integers(0, 4, size=64).astype("int32")
    teacher, student = _mlp(16, "t"), _mlp(6, "s")
    loss = losses.PKT("features", "features")
    d = kdtf.Distiller(teacher, student, [loss], [30000.0], student_loss_weight=0.0)
    d.compile(keras.optimizers.Adam(1e-2),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # No task loss: the logged loss is the weighted distillation loss, epoch by epoch.
    history = d.fit(x, y, epochs=3, batch_size=32, verbose=0).history["loss"]
    assert np.all(np.isfinite(history)) and history[-1] < history[0]
    with pytest.raises(ValueError, match="student_layer_name='nope' is not a layer"):
        kdtf.Distiller(teacher, student, [losses.PKT("features", "nope")])


def test_registry_builds_pkt_on_the_penultimate_features():
    from pipeline import experiment

    cfg = experiment.RunConfig(method="pkt")
    d = experiment.make_distiller(cfg, _mlp(16, "t"), _mlp(6, "s"), "pkt", steps_per_epoch=10)
    (loss,) = d.distillation_losses
    assert isinstance(loss, losses.PKT) and loss.student_layer_name == "features"
    assert d.distillation_loss_weights == [30000.0]
