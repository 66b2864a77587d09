import keras
import numpy as np
import pytest

from kdtf import losses


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _pearson_rows(a, b, eps=1e-8):
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + eps)


def dist_reference(t, s, tau=1.0, beta=1.0, gamma=1.0):
    """methods.md, written out with plain NumPy loops-free float64 code."""
    c = t.shape[-1]
    yt, ys = _softmax(t.reshape(-1, c) / tau), _softmax(s.reshape(-1, c) / tau)
    inter = 1 - _pearson_rows(ys, yt).mean()
    intra = 1 - _pearson_rows(ys.T, yt.T).mean()
    return tau**2 * (beta * inter + gamma * intra)


@pytest.mark.parametrize("tau,beta,gamma", [(1.0, 1.0, 1.0), (4.0, 1.0, 1.0), (2.0, 0.5, 2.0)])
def test_matches_numpy_reference(tau, beta, gamma):
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(32, 10)) * 2, rng.normal(size=(32, 10)) * 2
    got = float(losses.DIST(tau, beta, gamma)(t.astype("float32"), s.astype("float32")))
    np.testing.assert_allclose(got, dist_reference(t, s, tau, beta, gamma), rtol=1e-6, atol=1e-6)


def test_dense_outputs_flatten():
    rng = np.random.default_rng(1)
    t, s = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5))
    got = float(losses.DIST(1.0)(t.astype("float32"), s.astype("float32")))
    np.testing.assert_allclose(got, dist_reference(t, s), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_identical_inputs_give_zero(tau):
    # Zero up to the 1e-8 the formula adds to the norm product (tau^2-scaled).
    z = np.random.default_rng(2).normal(size=(16, 7))
    got = float(losses.DIST(tau)(z.astype("float32"), z.astype("float32")))
    np.testing.assert_allclose(got, dist_reference(z, z, tau), atol=1e-5)
    assert abs(got) < 1e-4


def test_positive_affine_invariance():
    rng = np.random.default_rng(3)
    t, s = rng.normal(size=(12, 6)), rng.normal(size=(12, 6))
    ys, yt = _softmax(s), _softmax(t)
    # Inter term: a positive affine change of one row of Y_S leaves it unchanged.
    ys2 = ys.copy()
    ys2[3] = 2.5 * ys2[3] + 0.7
    np.testing.assert_allclose(_pearson_rows(ys2, yt), _pearson_rows(ys, yt), rtol=1e-6)
    # Through the loss: log of a positive multiple shifts logits only, softmax unchanged.
    base = float(losses.DIST()(t.astype("float32"), s.astype("float32")))
    shifted = float(losses.DIST()(t.astype("float32"), (s + 5.0).astype("float32")))
    np.testing.assert_allclose(base, shifted, rtol=1e-5)


def test_each_term_bounded_by_two():
    rng = np.random.default_rng(4)
    t = rng.normal(size=(8, 5)) * 5
    for beta, gamma in ((1.0, 0.0), (0.0, 1.0)):
        value = float(losses.DIST(1.0, beta, gamma)(t.astype("float32"), (-t).astype("float32")))
        assert 0 <= value <= 2 + 1e-6


def test_gradient_matches_finite_difference(gradients):
    rng = np.random.default_rng(5)
    t = rng.normal(size=(6, 4))
    s0 = rng.normal(size=(6, 4))
    _, (grad,) = gradients(
        lambda s: losses.DIST(2.0)(t.astype("float32"), s), [s0]
    )
    eps = 1e-4
    num = np.zeros_like(s0)
    for i in range(6):
        for j in range(4):
            up, dn = s0.copy(), s0.copy()
            up[i, j] += eps
            dn[i, j] -= eps
            num[i, j] = (dist_reference(t, up, 2.0) - dist_reference(t, dn, 2.0)) / (2 * eps)
    np.testing.assert_allclose(grad, num, atol=2e-4)


def test_batch_of_one_raises():
    with pytest.raises(ValueError, match="batch of at least 2"):
        losses.DIST()(np.zeros((1, 10), "float32"), np.zeros((1, 10), "float32"))


def test_gamma_zero_takes_a_batch_of_one():
    # The fix the batch-size error recommends must work: the inter-class term alone.
    rng = np.random.default_rng(3)
    t, s = rng.normal(size=(1, 10)).astype("float32"), rng.normal(size=(1, 10)).astype("float32")
    got = float(losses.DIST(temperature=2.0, gamma=0.0)(t, s))
    want = float(losses.DIST(temperature=2.0, beta=1.0, gamma=0.0)(np.repeat(t, 2, 0),
                                                                  np.repeat(s, 2, 0)))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got > 0


def test_float32_output_for_half_inputs():
    z = keras.ops.convert_to_tensor(np.random.default_rng(6).normal(size=(4, 3)), "bfloat16")
    assert keras.backend.standardize_dtype(losses.DIST()(z, z * 2).dtype) == "float32"


def test_config_round_trip():
    loss = losses.DIST(temperature=4.0, beta=2.0, gamma=0.5)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert (clone.temperature, clone.beta, clone.gamma) == (4.0, 2.0, 0.5)


def test_gradient_is_finite_for_identical_student_rows(gradients):
    # Identical student rows make every class column constant over the batch:
    # the intra-class correlation is 0/eps, and its gradient must stay finite
    # (it was NaN on JAX through sqrt'(0)).
    rng = np.random.default_rng(6)
    t = rng.normal(size=(8, 5)).astype("float32")
    s0 = np.tile(rng.normal(size=(1, 5)), (8, 1)).astype("float32")
    value, (grad,) = gradients(lambda s: losses.DIST(1.0)(t, s), [s0])
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(np.asarray(grad)))


def test_global_batch_config_round_trip_and_single_device_value():
    loss = losses.DIST(2.0, global_batch=True)
    again = losses.DIST.from_config(loss.get_config())
    assert again.global_batch is True
    rng = np.random.default_rng(7)
    t, s = rng.normal(size=(16, 5)).astype("float32"), rng.normal(size=(16, 5)).astype("float32")
    # Outside a tf.distribute replica context the global batch is the batch.
    np.testing.assert_allclose(float(again(t, s)), float(losses.DIST(2.0)(t, s)), rtol=1e-6)
    with pytest.raises(ValueError, match="global_batch"):
        losses.DIST(global_batch="yes")
