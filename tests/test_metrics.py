"""Tests for kdtf.metrics against plain NumPy references."""
import keras
import numpy as np
import pytest

from kdtf import metrics


def _ref_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _ref_kl(t, s, tau):
    p, q = _ref_softmax(np.asarray(t) / tau), _ref_softmax(np.asarray(s) / tau)
    return np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))


def _ref_ece(y, logits, num_bins):
    p = _ref_softmax(logits)
    conf, pred = p.max(1), p.argmax(1)
    edges = np.linspace(0, 1, num_bins + 1)
    ece, out = 0.0, []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            acc, c = np.mean(pred[m] == y[m]), np.mean(conf[m])
            ece += m.mean() * abs(acc - c)
            out.append((c, acc, m.sum()))
        else:
            out.append((np.nan, np.nan, 0))
    return ece, np.array(out)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(200, 7)) * 3
    s = t + rng.normal(size=(200, 7)) * 2
    y = np.where(rng.random(200) < 0.7, t.argmax(1), rng.integers(0, 7, 200))
    return y, t, s


def test_accuracy(data):
    y, t, s = data
    assert metrics.accuracy(y, s) == pytest.approx(np.mean(s.argmax(1) == y))
    assert metrics.accuracy(np.eye(7)[y], s) == metrics.accuracy(y, s)
    assert metrics.accuracy(y[:, None], s) == metrics.accuracy(y, s)
    assert metrics.accuracy([0, 1], [[2.0, 1.0], [3.0, 0.0]]) == 0.5


def test_agreement(data):
    _, t, s = data
    ref = np.mean(t.argmax(1) == s.argmax(1))
    assert 0 < ref < 1
    assert metrics.agreement(t, s) == pytest.approx(ref)
    assert metrics.agreement(t, t) == 1.0
    assert metrics.agreement(t, 5 * t + 2) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        metrics.agreement(t, s[:, :3])


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_kl_to_teacher(data, tau):
    _, t, s = data
    got = metrics.kl_to_teacher(t, s, temperature=tau)
    assert isinstance(got, float) and got > 0
    assert got == pytest.approx(_ref_kl(t, s, tau), rel=1e-10)
    assert metrics.kl_to_teacher(t, t, tau) == pytest.approx(0.0, abs=1e-12)
    # Shift invariance per row.
    assert metrics.kl_to_teacher(t, s + 100.0, tau) == pytest.approx(got)


def test_kl_stable_for_extreme_logits():
    t = np.array([[1000.0, 0.0, -1000.0]])
    s = np.array([[0.0, 1000.0, 0.0]])
    got = metrics.kl_to_teacher(t, s)
    assert got == pytest.approx(1000.0)  # log p_T(0) - log p_S(0) = 0 + 1000.
    t_masked = np.array([[0.0, 0.0, -np.inf]])
    assert metrics.kl_to_teacher(t_masked, np.zeros((1, 3))) == pytest.approx(
        np.log(3 / 2))  # p_T = (1/2, 1/2, 0), p_S uniform.
    with pytest.raises(ValueError, match="temperature"):
        metrics.kl_to_teacher(t, s, temperature=0.0)


@pytest.mark.parametrize("num_bins", [1, 10, 15])
def test_ece_and_reliability_match_reference(data, num_bins):
    y, _, s = data
    ref_ece, ref_curve = _ref_ece(y, s, num_bins)
    assert metrics.expected_calibration_error(y, s, num_bins) == pytest.approx(
        ref_ece, rel=1e-10)
    conf, acc, count = metrics.reliability_curve(y, s, num_bins)
    assert conf.shape == acc.shape == count.shape == (num_bins,)
    np.testing.assert_allclose(conf, ref_curve[:, 0], rtol=1e-10)
    np.testing.assert_allclose(acc, ref_curve[:, 1], rtol=1e-10)
    np.testing.assert_array_equal(count, ref_curve[:, 2])
    assert count.sum() == len(y)


def test_ece_perfectly_calibrated_is_zero():
    # Two classes; in each group the confidence equals the accuracy exactly.
    logits, labels = [], []
    for conf, n in [(0.6, 50), (0.8, 100), (0.95, 200)]:
        z = np.log([conf, 1 - conf])
        n_right = int(round(conf * n))
        logits += [z] * n
        labels += [0] * n_right + [1] * (n - n_right)
    ece = metrics.expected_calibration_error(np.array(labels),
                                             np.array(logits))
    assert ece == pytest.approx(0.0, abs=1e-12)
    # Overconfident: always right-looking but 50% accurate -> ECE = 0.45.
    ece = metrics.expected_calibration_error(
        np.array([0, 1] * 50), np.tile(np.log([0.95, 0.05]), (100, 1)))
    assert ece == pytest.approx(0.45)


def test_ece_from_probabilities(data):
    y, _, s = data
    p = _ref_softmax(s)
    assert metrics.expected_calibration_error(
        y, p, from_logits=False) == pytest.approx(
            metrics.expected_calibration_error(y, s))


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_bins"):
        metrics.expected_calibration_error([0], [[1.0, 0.0]], num_bins=0)
    with pytest.raises(ValueError, match=r"\[N, num_classes\]"):
        metrics.accuracy([0], [1.0, 0.0])
    with pytest.raises(ValueError, match="2 labels"):
        metrics.accuracy([0, 1], [[1.0, 0.0]])
    with pytest.raises(TypeError, match="numeric"):
        metrics.agreement([["a", "b"]], [["a", "b"]])
    with pytest.raises(ValueError, match="empty"):
        metrics.accuracy([], np.zeros((0, 3)))


def test_keras_metrics_match_numpy(data):
    y, t, s = data
    t32, s32 = t.astype("float32"), s.astype("float32")
    agree = metrics.TeacherAgreement()
    kl = metrics.KLToTeacher(temperature=2.0)
    ece = metrics.ExpectedCalibrationError(num_bins=15)
    for i in range(0, 200, 64):  # Streaming over uneven batches.
        agree.update_state(t32[i:i + 64], s32[i:i + 64])
        kl.update_state(t32[i:i + 64], s32[i:i + 64])
        ece.update_state(y[i:i + 64], s32[i:i + 64])
    assert float(agree.result()) == pytest.approx(metrics.agreement(t, s))
    assert float(kl.result()) == pytest.approx(
        metrics.kl_to_teacher(t, s, 2.0), rel=1e-4)
    assert float(ece.result()) == pytest.approx(
        metrics.expected_calibration_error(y, s), abs=1e-5)
    ece.reset_state()
    kl.reset_state()
    assert float(ece.result()) == 0.0 and float(kl.result()) == 0.0
    # One-hot labels and sample weights.
    ece.update_state(np.eye(7)[y], s32, sample_weight=np.ones(200))
    assert float(ece.result()) == pytest.approx(
        metrics.expected_calibration_error(y, s), abs=1e-5)
    kl.update_state(t32, s32, sample_weight=np.r_[np.ones(100), np.zeros(100)])
    assert float(kl.result()) == pytest.approx(
        metrics.kl_to_teacher(t[:100], s[:100], 2.0), rel=1e-4)


def test_keras_metrics_serialize():
    for m in [metrics.TeacherAgreement(),
              metrics.KLToTeacher(temperature=3.0),
              metrics.ExpectedCalibrationError(num_bins=10, from_logits=False)]:
        back = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(m))
        assert type(back) is type(m)
        assert back.get_config() == m.get_config()


def test_bin_edges_are_right_closed():
    # softmax([0, 0]) = 0.5 exactly: bin (0, 0.5], not (0.5, 1].
    conf, acc, count = metrics.reliability_curve(
        [0, 1, 0], [[0.0, 0.0], [0.0, 0.0], [3.0, 0.0]], num_bins=2)
    np.testing.assert_array_equal(count, [2, 1])
    assert conf[0] == 0.5 and acc[0] == 0.5 and acc[1] == 1.0
    conf, acc, count = metrics.reliability_curve([0], [[5.0, 0.0]], 4)
    assert np.isnan(conf[:3]).all() and np.isnan(acc[:3]).all()
    np.testing.assert_array_equal(count, [0, 0, 0, 1])
