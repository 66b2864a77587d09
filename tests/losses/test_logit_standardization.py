"""Logit standardization (Sun et al., CVPR 2024) as an option of KD, DKD and DIST.

NumPy references in float64, written from the paper: z' = (z - mean) / std per
example, then the loss's own formula on softmax(z' / tau). The standard
deviation is the unbiased one plus 1e-7, as in the authors' code.
"""
import keras
import numpy as np
import pytest

from kdtf import losses
from kdtf.losses import logit_standardization as ls


def _z(z):
    return (z - z.mean(-1, keepdims=True)) / (z.std(-1, ddof=1, keepdims=True) + 1e-7)


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def kd_reference(t, s, tau):
    lt, ls_ = _log_softmax(_z(t) / tau), _log_softmax(_z(s) / tau)
    return tau**2 * (np.exp(lt) * (lt - ls_)).sum(-1)


def dkd_reference(t, s, y, alpha, beta, tau):
    t, s = _z(t), _z(s)
    pt, ps = np.exp(_log_softmax(t / tau)), np.exp(_log_softmax(s / tau))
    out = []
    for i, c in enumerate(y):
        bt, bs = np.array([pt[i, c], 1 - pt[i, c]]), np.array([ps[i, c], 1 - ps[i, c]])
        keep = np.arange(t.shape[1]) != c
        qt, qs = np.exp(_log_softmax(t[i, keep] / tau)), np.exp(_log_softmax(s[i, keep] / tau))
        out.append(tau**2 * (alpha * np.sum(bt * np.log(bt / bs)) + beta * np.sum(qt * np.log(qt / qs))))
    return np.array(out)


def _pearson_rows(a, b):
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8)


def dist_reference(t, s, tau):
    yt, ys = np.exp(_log_softmax(_z(t) / tau)), np.exp(_log_softmax(_z(s) / tau))
    return tau**2 * ((1 - _pearson_rows(ys, yt).mean()) + (1 - _pearson_rows(ys.T, yt.T).mean()))


def _logits(batch, classes, scale, seed):
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(batch, classes)) * scale + rng.normal(size=(batch, 1)) * scale
    s = rng.normal(size=(batch, classes)) * scale
    return t.astype("float32"), s.astype("float32"), rng.integers(0, classes, size=batch)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_standardize_matches_the_z_score():
    t, _, _ = _logits(4, 7, 50.0, 0)
    np.testing.assert_allclose(_np(ls.standardize(t)), _z(t.astype(np.float64)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(_np(ls.standardize(np.ones((2, 3), "float32"))), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="at least 2 classes"):
        ls.standardize(np.ones((2, 1), "float32"))


@pytest.mark.parametrize("batch,classes,scale", [(2, 3, 1.0), (64, 10, 50.0), (16, 100, 5.0)])
def test_each_loss_matches_its_numpy_reference(batch, classes, scale):
    t, s, y = _logits(batch, classes, scale, batch + classes)
    t64, s64 = t.astype(np.float64), s.astype(np.float64)
    kd = losses.KD(temperature=2.0, reduction=None, logit_standardization=True)
    np.testing.assert_allclose(_np(kd(t, s)), kd_reference(t64, s64, 2.0), rtol=1e-5, atol=1e-6)
    dkd = losses.DKD(alpha=1.0, beta=8.0, temperature=2.0, reduction=None, logit_standardization=True)
    np.testing.assert_allclose(_np(dkd(t, s, labels=y)), dkd_reference(t64, s64, y, 1.0, 8.0, 2.0),
                               rtol=1e-5, atol=1e-5)
    dist = losses.DIST(temperature=2.0, logit_standardization=True)
    np.testing.assert_allclose(float(dist(t, s)), dist_reference(t64, s64, 2.0), rtol=1e-5, atol=1e-6)


def test_kd_is_invariant_to_shift_and_positive_scale_of_the_logits():
    t, s, y = _logits(64, 10, 3.0, 1)
    shift = np.random.default_rng(2).normal(size=(64, 1)).astype("float32") * 20
    for loss in (losses.KD(logit_standardization=True, reduction=None),
                 losses.DKD(logit_standardization=True, reduction=None)):
        kwargs = {"labels": y} if isinstance(loss, losses.DKD) else {}
        base = _np(loss(t, s, **kwargs))
        moved = _np(loss(3.0 * t + shift, 0.5 * s - shift, **kwargs))
        np.testing.assert_allclose(moved, base, rtol=1e-4, atol=1e-6)
    # Without the option the loss depends on the scale.
    plain = losses.KD(reduction=None)
    assert not np.allclose(_np(plain(3.0 * t, s)), _np(plain(t, s)), rtol=1e-2)
    # Identical relations give zero: a student that is an affine copy of the teacher.
    np.testing.assert_allclose(_np(losses.KD(logit_standardization=True)(t, 2.0 * t + 1.0)), 0.0,
                               atol=1e-5)


def test_float32_for_half_inputs_and_config_round_trip():
    t, s, y = _logits(8, 10, 50.0, 3)
    t16, s16 = t.astype("float16"), s.astype("float16")
    kd = losses.KD(logit_standardization=True)
    value = kd(t16, s16)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    np.testing.assert_allclose(float(value), float(kd(t16.astype("float32"), s16.astype("float32"))),
                               rtol=1e-6)
    for loss in (kd, losses.DKD(logit_standardization=True), losses.DIST(logit_standardization=True)):
        config = loss.get_config()
        assert config["logit_standardization"] is True
        clone = type(loss).from_config(config)
        assert clone.logit_standardization is True
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
        assert restored.get_config() == config
    # Old configs (no key) still load, with the option off.
    config = losses.KD().get_config()
    config.pop("logit_standardization")
    assert losses.KD.from_config(config).logit_standardization is False
    with pytest.raises(TypeError, match="logit_standardization"):
        losses.KD(logit_standardization="yes")


def test_gradient_is_finite_for_a_constant_student_row(gradients):
    t, s, _ = _logits(4, 5, 1.0, 4)
    s[0] = 3.0
    loss = losses.KD(logit_standardization=True)
    value, (grad,) = gradients(lambda s_: loss(t, s_), [s])
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_registry_builds_kd_dkd_and_dist_with_the_setting():
    from pipeline import experiment

    teacher = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    student = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    for method, cls in (("kd", losses.KD), ("dkd", losses.DKD), ("dist", losses.DIST)):
        for flag in (False, True):
            cfg = experiment.RunConfig(method=method, logit_standardization=flag)
            d = experiment.make_distiller(cfg, teacher, student, method, steps_per_epoch=10)
            (loss,) = d.distillation_losses
            assert isinstance(loss, cls) and loss.logit_standardization is flag
