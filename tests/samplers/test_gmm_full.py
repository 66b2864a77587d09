"""GaussianMixture(covariance="full"): EM fit, sampling, configs and XLA."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdtf import samplers

MEANS = np.array([[-4.0, 0.5, 1.0], [4.0, -0.5, 1.0]])
COVS = np.array(
    [
        [[1.0, 0.8, 0.3], [0.8, 1.0, 0.4], [0.3, 0.4, 0.5]],
        [[0.6, -0.3, 0.0], [-0.3, 0.8, 0.5], [0.0, 0.5, 1.0]],
    ]
)
WEIGHTS = np.array([0.4, 0.6])


def _correlated_mixture(n=6000, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.choice(2, size=n, p=WEIGHTS)
    chol = np.linalg.cholesky(COVS)
    z = rng.normal(size=(n, 3))
    x = MEANS[labels] + np.einsum("nij,nj->ni", chol[labels], z)
    return x.astype("float32"), labels


X, LABELS = _correlated_mixture()
FULL = samplers.GaussianMixture(2, covariance="full", seed=0).fit(X)
DIAG = samplers.GaussianMixture(2, covariance="diag", seed=0).fit(X)


def _order(gmm):
    return np.argsort(gmm.means[:, 0])  # component near x0 = -4 first


def test_full_fit_recovers_means_covariances_and_weights():
    order = _order(FULL)
    np.testing.assert_allclose(FULL.means[order], MEANS, atol=0.08)
    np.testing.assert_allclose(FULL.covariances[order], COVS, atol=0.08)
    np.testing.assert_allclose(FULL.mixture_weights[order], WEIGHTS, atol=0.02)
    tril = FULL.scale_tril
    assert tril.shape == (2, 3, 3) and tril.dtype == np.float32
    assert np.all(np.triu(tril, k=1) == 0)
    assert np.all(np.diagonal(tril, axis1=1, axis2=2) > 0)
    # Marginal standard deviations, and the variables a model would save.
    np.testing.assert_allclose(
        FULL.scales[order], np.sqrt(np.diagonal(COVS, axis1=1, axis2=2)),
        atol=0.05,
    )
    shapes = [tuple(v.shape) for v in FULL.non_trainable_weights]
    assert shapes == [(2, 3), (2, 3, 3), (2,)]
    assert FULL.converged_
    # Modelling the correlations fits the data better than "diag".
    assert FULL.log_likelihood_ > DIAG.log_likelihood_ + 0.3


def test_full_samples_match_data_covariance_and_diag_does_not():
    data_cov = np.cov(X, rowvar=False)
    full = np.asarray(FULL(X[:8], seed=0, num_samples=40000))
    diag = np.asarray(DIAG(X[:8], seed=0, num_samples=40000))
    assert full.shape == (40000, 3) and full.dtype == np.float32
    np.testing.assert_allclose(np.cov(full, rowvar=False), data_cov, atol=0.12)
    np.testing.assert_allclose(full.mean(axis=0), X.mean(axis=0), atol=0.06)
    # Within each component (split at x0 = 0, far between the means) the
    # full samples keep the correlations; the diag samples have none.
    for j, sign in enumerate((-1.0, 1.0)):
        want = COVS[j]
        got_full = np.cov(full[np.sign(full[:, 0]) == sign], rowvar=False)
        got_diag = np.cov(diag[np.sign(diag[:, 0]) == sign], rowvar=False)
        off = ~np.eye(3, dtype=bool)
        np.testing.assert_allclose(got_full[off], want[off], atol=0.06)
        np.testing.assert_allclose(got_diag[off], 0.0, atol=0.06)
    # The diag mixture also misses the data's overall x1-x2 covariance,
    # which comes only from the within-component correlations (the means
    # have the same x2).
    assert abs(np.cov(diag, rowvar=False)[1, 2] - data_cov[1, 2]) > 0.2
    np.testing.assert_allclose(DIAG.covariances[:, 1, 2], 0.0)


def test_full_config_round_trip_gives_identical_samples():
    config = FULL.get_config()
    json.dumps(config)
    assert config["covariance"] == "full" and config["scales"] is None
    assert np.asarray(config["scale_tril"]).shape == (2, 3, 3)
    clone = samplers.GaussianMixture.from_config(config)
    assert clone.get_config() == config
    np.testing.assert_array_equal(
        np.asarray(clone(X[:4], seed=5, num_samples=64)),
        np.asarray(FULL(X[:4], seed=5, num_samples=64)),
    )
    clone = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(FULL)
    )
    np.testing.assert_array_equal(
        np.asarray(clone(X[:4], seed=5)), np.asarray(FULL(X[:4], seed=5))
    )
    # Diag configs carry no `scale_tril`.
    assert DIAG.get_config()["scale_tril"] is None


def test_full_determinism_images_and_refit():
    a = np.asarray(FULL(X[:8], seed=7))
    np.testing.assert_array_equal(a, np.asarray(FULL(X[:8], seed=7)))
    assert not np.allclose(a, np.asarray(FULL(X[:8], seed=8)))
    rng = np.random.default_rng(1)
    images = rng.normal(size=(300, 2, 2, 1)).astype("float32")
    gmm = samplers.GaussianMixture(2, covariance="full", seed=0)
    gmm.fit(tf.data.Dataset.from_tensor_slices(images).batch(64), iterations=5)
    assert gmm.feature_shape == (2, 2, 1)
    assert gmm.scale_tril.shape == (2, 4, 4)
    assert gmm(images[:5], seed=0).shape == (5, 2, 2, 1)
    gmm.fit(X[:500], iterations=5)  # another size replaces the variables
    shapes = [tuple(v.shape) for v in gmm.non_trainable_weights]
    assert shapes == [(2, 3), (2, 3, 3), (2,)]
    assert gmm(X[:3], seed=0).shape == (3, 3)


@pytest.mark.tf_only(reason="tf.function(jit_compile=True); on JAX a full-covariance GaussianMixture runs in the jitted train step in tests/backend/test_jax_step.py")
def test_full_xla():
    """Same pattern as tests/samplers/test_samplers_xla.py."""

    @tf.function(jit_compile=True)
    def draw(x, seed):
        return FULL(x, seed=seed), FULL(x, num_samples=10)

    seed = tf.constant([1, 2], tf.int32)
    a, own_a = draw(X[:16], seed)
    b, own_b = draw(X[:16], seed)
    assert a.shape == (16, 3) and own_a.shape == (10, 3)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(own_a), np.asarray(own_b))
    # XLA's stateless RNG stream differs from eager's, so compare the
    # distribution of the compiled samples rather than their values.
    many = tf.function(
        lambda s: FULL(X[:4], seed=s, num_samples=20000), jit_compile=True
    )(seed)
    np.testing.assert_allclose(
        np.cov(np.asarray(many), rowvar=False), np.cov(X, rowvar=False),
        atol=0.15,
    )


def test_full_bad_arguments():
    with pytest.raises(ValueError, match="covariance.*full"):
        samplers.GaussianMixture(covariance="tied")
    with pytest.raises(ValueError, match="covariance"):
        samplers.GaussianMixture(covariance=None)
    tril = FULL.scale_tril.tolist()
    means = FULL.means.tolist()
    weights = FULL.mixture_weights.tolist()
    with pytest.raises(ValueError, match="scale_tril"):
        samplers.GaussianMixture(
            2, covariance="full", means=means, scales=FULL.scales.tolist(),
            mixture_weights=weights,
        )
    with pytest.raises(ValueError, match="scale_tril"):
        samplers.GaussianMixture(
            2, covariance="diag", means=means, scale_tril=tril,
            mixture_weights=weights,
        )
    with pytest.raises(ValueError, match="scale_tril.*together"):
        samplers.GaussianMixture(2, covariance="full", means=means)
    with pytest.raises(ValueError, match="scale_tril.*shape"):
        samplers.GaussianMixture(
            2, covariance="full", means=means, scale_tril=np.ones((2, 3)),
            mixture_weights=weights,
        )
    with pytest.raises(ValueError, match="lower triangular"):
        samplers.GaussianMixture(
            2, covariance="full", means=means,
            scale_tril=np.ones((2, 3, 3)), mixture_weights=weights,
        )
    with pytest.raises(ValueError, match="positive diagonal"):
        samplers.GaussianMixture(
            2, covariance="full", means=means,
            scale_tril=np.zeros((2, 3, 3)), mixture_weights=weights,
        )
    # A constant feature still gives positive-definite covariances (reg).
    x = np.concatenate([X[:200], np.ones((200, 1), "float32")], axis=1)
    gmm = samplers.GaussianMixture(2, covariance="full", seed=0).fit(x)
    assert np.all(np.isfinite(np.asarray(gmm(x[:4], seed=0))))
