"""GaussianNLL, MeanMSE and DistributionKL against NumPy references."""
import math

import numpy as np
import pytest

import keras

from kdtf.losses.distribution import DistributionKL
from kdtf.losses.gaussian import GaussianNLL, MeanMSE


def _gaussian_outputs(rng, batch=16, dim=3, scale=1.0):
    mean = rng.normal(size=(batch, dim)) * scale
    log_var = rng.uniform(-3.0, 3.0, size=(batch, dim))
    return np.concatenate([mean, log_var], -1).astype("float32")


def _np_nll(y, out):
    out = out.astype("float64")
    d = out.shape[-1] // 2
    m, lv = out[:, :d], out[:, d:]
    return (0.5 * (lv + (y - m) ** 2 / np.exp(lv) + math.log(2 * math.pi))).sum(-1)


def _np_gauss_kl(t, s):
    t, s = t.astype("float64"), s.astype("float64")
    d = t.shape[-1] // 2
    m_t, s_t = t[:, :d], np.exp(0.5 * t[:, d:])
    m_s, s_s = s[:, :d], np.exp(0.5 * s[:, d:])
    kl = np.log(s_s / s_t) + (s_t ** 2 + (m_t - m_s) ** 2) / (2 * s_s ** 2) - 0.5
    return kl.sum(-1)


def _np_cat_kl(t, s, tau):
    def log_softmax(z):
        z = z.astype("float64") / tau
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    lt, ls = log_softmax(t), log_softmax(s)
    return tau ** 2 * (np.exp(lt) * (lt - ls)).sum(-1)


def test_gaussian_nll_matches_numpy():
    rng = np.random.default_rng(0)
    out = _gaussian_outputs(rng)
    y = rng.normal(size=(16, 3)).astype("float32")
    np.testing.assert_allclose(float(GaussianNLL()(y, out)), _np_nll(y, out).mean(), rtol=1e-6)
    w = rng.uniform(size=16).astype("float32")
    np.testing.assert_allclose(
        float(GaussianNLL()(y, out, sample_weight=w)), (w * _np_nll(y, out)).mean(), rtol=1e-6)


def test_gaussian_nll_accepts_flat_targets_for_one_output():
    rng = np.random.default_rng(1)
    out = _gaussian_outputs(rng, dim=1)
    y = rng.normal(size=(16,)).astype("float32")
    np.testing.assert_allclose(
        float(GaussianNLL()(y, out)), _np_nll(y[:, None], out).mean(), rtol=1e-6)


def test_gaussian_nll_is_minimised_at_the_true_variance():
    # For y ~ N(0, 1) the expected NLL is smallest at mean 0, log_var 0.
    y = np.random.default_rng(2).normal(size=(20000, 1)).astype("float32")
    values = []
    for log_var in (-0.5, 0.0, 0.5):
        out = np.tile(np.array([[0.0, log_var]], "float32"), (len(y), 1))
        values.append(float(GaussianNLL()(y, out)))
    assert values[1] < values[0] and values[1] < values[2]


def test_gaussian_kl_equals_closed_form():
    rng = np.random.default_rng(3)
    t, s = _gaussian_outputs(rng), _gaussian_outputs(rng)
    value = float(DistributionKL("gaussian")(t, s))
    np.testing.assert_allclose(value, _np_gauss_kl(t, s).mean(), rtol=1e-6, atol=1e-6)
    # Zero for identical distributions, positive otherwise.
    assert abs(float(DistributionKL("gaussian")(t, t))) < 1e-6
    assert value > 0


def test_categorical_kl_matches_numpy_with_temperature():
    rng = np.random.default_rng(4)
    t = (3 * rng.normal(size=(8, 10))).astype("float32")
    s = (3 * rng.normal(size=(8, 10))).astype("float32")
    value = float(DistributionKL("categorical", temperature=4.0)(t, s))
    np.testing.assert_allclose(value, _np_cat_kl(t, s, 4.0).mean(), rtol=1e-5)


def test_mean_mse_ignores_variances():
    rng = np.random.default_rng(5)
    t, s = _gaussian_outputs(rng), _gaussian_outputs(rng)
    expected = ((t[:, :3].astype("float64") - s[:, :3]) ** 2).mean(-1).mean()
    np.testing.assert_allclose(float(MeanMSE()(t, s)), expected, rtol=1e-6)
    s2 = s.copy()
    s2[:, 3:] += 1.0
    assert float(MeanMSE()(t, s2)) == pytest.approx(float(MeanMSE()(t, s)))


def test_gradients_reach_the_student_only(gradients):
    rng = np.random.default_rng(6)
    t = _gaussian_outputs(rng)
    s = _gaussian_outputs(rng)
    for loss in (DistributionKL("gaussian"), MeanMSE()):
        _, (g_t, g_s) = gradients(loss, [t, s])
        assert not np.any(g_t)
        assert np.all(np.isfinite(g_s)) and np.any(g_s)


@pytest.mark.parametrize("weighting", ["entropy", "variance"])
def test_uncertainty_weighting_gaussian(weighting):
    rng = np.random.default_rng(7)
    t, s = _gaussian_outputs(rng), _gaussian_outputs(rng)
    var_t = np.exp(t[:, 3:].astype("float64"))
    if weighting == "variance":
        u = var_t.mean(-1)
    else:
        u = np.exp(0.5 * np.log(var_t).mean(-1))
    expected = (u / u.mean() * _np_gauss_kl(t, s)).mean()
    value = float(DistributionKL("gaussian", uncertainty_weighting=weighting)(t, s))
    np.testing.assert_allclose(value, expected, rtol=1e-5)


@pytest.mark.parametrize("weighting", ["entropy", "variance"])
def test_uncertainty_weighting_categorical(weighting):
    rng = np.random.default_rng(8)
    t = (2 * rng.normal(size=(8, 5))).astype("float32")
    s = (2 * rng.normal(size=(8, 5))).astype("float32")
    z = t.astype("float64") - t.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    if weighting == "entropy":
        u = -(p * np.log(p)).sum(-1) / math.log(5)
    else:
        u = 1 - (p ** 2).sum(-1)
    expected = (u / u.mean() * _np_cat_kl(t, s, 1.0)).mean()
    value = float(DistributionKL("categorical", uncertainty_weighting=weighting)(t, s))
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def _bad_teacher_outputs():
    rng = np.random.default_rng(9)
    t, s = _gaussian_outputs(rng), _gaussian_outputs(rng)
    bad = []
    for value in (np.inf, np.nan, 200.0):  # 200: exp overflows float32
        t_bad = t.copy()
        t_bad[0, 4] = value
        bad.append(t_bad)
    return t, s, bad


def test_non_finite_teacher_variance_raises_in_eager():
    _, s, bad = _bad_teacher_outputs()
    for t_bad in bad:
        with pytest.raises(ValueError, match="non-finite teacher variances"):
            DistributionKL("gaussian")(t_bad, s)


@pytest.mark.tf_only(reason="the in-graph check is tf.debugging.assert_all_finite inside tf.function")
def test_non_finite_teacher_variance_raises_in_graph():
    import tensorflow as tf

    t, s, bad = _bad_teacher_outputs()
    t_bad = bad[-1]
    loss = DistributionKL("gaussian")
    graph = tf.function(lambda a, b: loss(a, b))
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite teacher variances"):
        graph(t_bad, s)
    assert np.isfinite(float(graph(t, s)))


def test_classification_outputs_with_gaussian_losses_raise():
    logits = np.zeros((4, 5), "float32")  # odd last dimension: logits of 5 classes
    for loss in (DistributionKL("gaussian"), MeanMSE()):
        with pytest.raises(ValueError, match="GaussianHead"):
            loss(logits, logits)
    with pytest.raises(ValueError, match="GaussianHead"):
        GaussianNLL()(np.zeros((4, 2), "float32"), logits)


def test_bad_arguments():
    with pytest.raises(ValueError, match="'categorical', 'gaussian'"):
        DistributionKL("laplace")
    with pytest.raises(ValueError, match="temperature"):
        DistributionKL("gaussian", temperature=2.0)
    with pytest.raises(ValueError, match="temperature"):
        DistributionKL("categorical", temperature=0.0)
    with pytest.raises(ValueError, match="uncertainty_weighting"):
        DistributionKL("gaussian", uncertainty_weighting="margin")
    with pytest.raises(ValueError, match=r"y_true must be \[B, 2\]"):
        GaussianNLL()(np.zeros((4, 3), "float32"), np.zeros((4, 4), "float32"))
    with pytest.raises(ValueError, match="same shape"):
        DistributionKL("gaussian")(np.zeros((4, 2), "float32"), np.zeros((4, 4), "float32"))


@pytest.mark.parametrize("loss", [
    GaussianNLL(), MeanMSE(),
    DistributionKL("categorical", temperature=2.0, uncertainty_weighting="entropy"),
    DistributionKL("gaussian", uncertainty_weighting="variance"),
])
def test_config_round_trip(loss):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
