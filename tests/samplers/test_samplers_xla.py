"""Samplers inside `tf.function(jit_compile=True)` (XLA) on the TF backend.

Result (TF 2.21, TFP 0.25, CPU): all samplers compile with XLA. The Beta
draws of Mixup and CutMix (TFP's rejection-sampled Gamma) are slow to
compile (about 10-40 s on 2 CPU cores), so this file compiles each
Beta-based sampler once; Mixture reuses the same code paths and is compiled
with cheap sub-samplers only.
"""

import numpy as np
import pytest
import tensorflow as tf

from kdtf import samplers

pytestmark = pytest.mark.tf_only(
    reason="tf.function(jit_compile=True); on JAX every sampler runs under "
    "jax.jit in test_samplers_common.py::test_jax_jit_advances_own_seed"
)

RNG = np.random.default_rng(0)
FLAT = RNG.normal(size=(16, 12)).astype("float32")
IMAGES = RNG.uniform(size=(6, 8, 8, 3)).astype("float32")


def _compiled(sampler):
    @tf.function(jit_compile=True)
    def draw(x, seed):
        return sampler(x, seed=seed), sampler(x, num_samples=10)

    return draw


def _check(sampler, x):
    draw = _compiled(sampler)
    seed = tf.constant([1, 2], tf.int32)
    (a, own_a) = draw(x, seed)
    (b, own_b) = draw(x, seed)
    assert a.shape == x.shape and own_a.shape == (10,) + x.shape[1:]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The sampler's own SeedGenerator advances between compiled calls.
    assert not np.allclose(np.asarray(own_a), np.asarray(own_b))
    assert np.all(np.isfinite(np.asarray(a)))
    return np.asarray(a)


def test_mixup_xla():
    x = np.stack([np.zeros(12), np.ones(12)]).astype("float32")
    out = _check(samplers.Mixup(alpha=0.5, seed=0), x)
    # Still convex combinations of the two points under XLA.
    assert np.all(out >= 0.0) and np.all(out <= 1.0)
    assert np.allclose(out, out[:, :1])


@pytest.mark.slow  # XLA compile of the Beta draw, ~11-40 s; test_mixup_xla compiles it in CI
def test_cutmix_xla():
    out = _check(samplers.CutMix(seed=0), IMAGES)
    flat = IMAGES.reshape(len(IMAGES), -1, 3)
    # Each output pixel equals the same pixel of some real image.
    per_pixel = out.reshape(len(out), -1, 3)
    match = np.all(per_pixel[:, None] == flat[None], axis=-1).any(axis=1)
    assert match.all()


@pytest.mark.parametrize(
    "make",
    [
        lambda: samplers.GaussianNoise(0.1, seed=0),
        lambda: samplers.UniformBox(margin=0.1, seed=0),
        lambda: samplers.GaussianMixture(2, seed=0).fit(FLAT, iterations=3),
        lambda: samplers.Mixture(
            [samplers.GaussianNoise(seed=1), samplers.UniformBox(seed=2)],
            weights=[0.5, 0.5],
            seed=0,
        ),
    ],
    ids=["noise", "uniform", "gmm", "mixture"],
)
def test_cheap_samplers_xla(make):
    _check(make(), FLAT)
