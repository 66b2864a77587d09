import keras
import numpy as np
import pytest

from kdtf import losses


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def kd_reference(t, s, tau):
    """tau^2 * mean_n sum_c p_T (log p_T - log p_S), float64."""
    lt, ls = _log_softmax(t / tau), _log_softmax(s / tau)
    return tau**2 * np.mean(np.sum(np.exp(lt) * (lt - ls), axis=-1))


@pytest.mark.parametrize("tau", [1.0, 4.0, 0.5])
def test_matches_numpy_reference(tau):
    rng = np.random.default_rng(1)
    t = rng.normal(size=(16, 10)) * 3
    s = rng.normal(size=(16, 10)) * 3
    got = float(losses.KD(temperature=tau)(t.astype("float32"), s.astype("float32")))
    np.testing.assert_allclose(got, kd_reference(t, s, tau), rtol=1e-6, atol=1e-6)


def test_extreme_logits_are_finite_and_exact():
    # Probabilities underflow to 0 here; log-softmax keeps the loss exact.
    t = np.array([[100.0, -100.0, 0.0]], "float32")
    s = np.array([[-100.0, 100.0, 0.0]], "float32")
    got = float(losses.KD(temperature=1.0)(t, s))
    np.testing.assert_allclose(got, kd_reference(t.astype(float), s.astype(float), 1.0), rtol=1e-6)
    assert got > 100


def test_identical_inputs_give_zero():
    z = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    assert abs(float(losses.KD(2.0)(z, z))) < 1e-6


def test_sample_weight():
    rng = np.random.default_rng(2)
    t, s = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    w = np.array([1, 0, 2, 0, 1, 1], "float32")
    per = [kd_reference(t[i : i + 1], s[i : i + 1], 2.0) for i in range(6)]
    want = np.sum(np.array(per) * w) / 6
    got = float(losses.KD(2.0)(t.astype("float32"), s.astype("float32"), sample_weight=w))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_gradient_matches_closed_form(gradients):
    # d/ds of tau^2 KL = tau * (p_S - p_T) / B for each row.
    rng = np.random.default_rng(3)
    tau = 3.0
    t = rng.normal(size=(4, 6)).astype("float32")
    s = rng.normal(size=(4, 6)).astype("float32")
    _, (grad,) = gradients(lambda s_: losses.KD(tau)(t, s_), [s])
    p_s = np.exp(_log_softmax(s / tau))
    p_t = np.exp(_log_softmax(t / tau))
    np.testing.assert_allclose(grad, tau * (p_s - p_t) / 4, rtol=1e-5, atol=1e-7)


def test_float32_under_mixed_precision_inputs():
    rng = np.random.default_rng(4)
    t = rng.normal(size=(8, 10)) * 5
    s = rng.normal(size=(8, 10)) * 5
    got = losses.KD(4.0)(
        keras.ops.convert_to_tensor(t, "float16"),
        keras.ops.convert_to_tensor(s, "float16"),
    )
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    ref = kd_reference(t.astype("float16").astype(float), s.astype("float16").astype(float), 4.0)
    np.testing.assert_allclose(float(got), ref, rtol=1e-5)


def test_config_round_trip():
    loss = losses.KD(temperature=3.0, name="my_kd")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(clone, losses.KD)
    assert clone.temperature == 3.0 and clone.name == "my_kd"


@pytest.mark.parametrize("bad", [0, -1.0, "4"])
def test_bad_temperature(bad):
    with pytest.raises((ValueError, TypeError), match="temperature"):
        losses.KD(temperature=bad)


def test_shape_mismatch_names_arguments():
    with pytest.raises(ValueError, match="teacher_outputs and student_outputs"):
        losses.KD()(np.zeros((2, 10), "float32"), np.zeros((2, 5), "float32"))


def test_get_by_name():
    assert isinstance(losses.get("kd", temperature=2.0), losses.KD)
    assert isinstance(losses.get("DIST"), losses.DIST)
    with pytest.raises(ValueError, match="valid names"):
        losses.get("nope")
