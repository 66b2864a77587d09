"""What each sampler draws: geometry and statistics of the samples."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdtf import samplers
from kdtf.backend import tfp as tfp_backend


def test_mixup_samples_lie_between_partners():
    a = np.linspace(-1.0, 2.0, 30).astype("float32")
    b = np.cos(np.arange(30)).astype("float32")
    x = np.stack([a, b])
    out = np.asarray(samplers.Mixup(alpha=0.5)(x, seed=0, num_samples=2000))
    # With two real points every partner is the other point: out = b + t(a-b).
    d = a - b
    t = (out - b) @ d / (d @ d)
    residual = out - (b[None] + t[:, None] * d[None])
    assert np.max(np.abs(residual)) < 1e-5
    assert t.min() >= -1e-6 and t.max() <= 1 + 1e-6
    assert abs(t.mean() - 0.5) < 0.03
    # Beta(0.5, 0.5) variance is 1/8 (U-shaped), Beta(1, 1) 1/12.
    assert abs(t.var() - 1 / 8) < 0.01
    t1 = np.asarray(samplers.Mixup(alpha=1.0)(x, seed=0, num_samples=2000))
    t1 = (t1 - b) @ d / (d @ d)
    assert abs(t1.var() - 1 / 12) < 0.01


def test_mixup_partners_are_distinct_and_cover_batch():
    x = np.diag(np.arange(1, 6, dtype="float32"))  # 5 orthogonal points.
    out = np.asarray(samplers.Mixup()(x, seed=3))
    support = out != 0
    # Each sample mixes exactly two distinct real points (lam in (0, 1)),
    # and every real point is used as a base at least once.
    assert np.all(support.sum(axis=1) == 2)
    assert np.all(support.any(axis=0))


def _cutmix_masks(alpha, n, seed, shape=(12, 16, 3)):
    rng = np.random.default_rng(seed)
    a = rng.uniform(size=shape).astype("float32")
    b = rng.uniform(size=shape).astype("float32") + 2.0  # disjoint ranges
    out = np.asarray(
        samplers.CutMix(alpha=alpha)(np.stack([a, b]), seed=seed, num_samples=n)
    )
    from_a = np.all(out == a, axis=-1)
    from_b = np.all(out == b, axis=-1)
    return out, from_a, from_b


def test_cutmix_pixels_come_from_the_two_images_in_one_box():
    out, from_a, from_b = _cutmix_masks(1.0, 200, 0)
    # Every pixel (all channels together) comes from exactly one image.
    assert np.all(from_a ^ from_b)
    # One of the two images fills an axis-aligned box, the other the rest.
    def is_box(m):
        rows, cols = m.any(axis=1), m.any(axis=0)
        if not np.array_equal(m, np.outer(rows, cols)):
            return False
        r, c = np.flatnonzero(rows), np.flatnonzero(cols)
        return r[-1] - r[0] + 1 == len(r) and c[-1] - c[0] + 1 == len(c)

    for ma, mb in zip(from_a, from_b):
        assert (not ma.any()) or (not mb.any()) or is_box(ma) or is_box(mb)
    # Both images contribute in most samples.
    assert np.mean(from_a.any(axis=(1, 2)) & from_b.any(axis=(1, 2))) > 0.8


# On JAX each eager Beta draw runs op by op (~0.6 s a call; see
# test_samplers_common.py): there this statistical check runs with the slow tests.
@pytest.mark.parametrize("alpha", [1.0, 0.3])
@(pytest.mark.slow if keras.backend.backend() == "jax" else (lambda test: test))
def test_cutmix_box_area_matches_beta(alpha):
    out, from_a, from_b = _cutmix_masks(alpha, 3000, 1, shape=(24, 24, 1))
    area = np.minimum(from_a.mean(axis=(1, 2)), from_b.mean(axis=(1, 2)))
    # Area ratio r ~ Beta(a, a): the pasted fraction is r (up to rounding),
    # and min(r, 1 - r) is what we can see without knowing the base image.
    r = np.random.default_rng(0).beta(alpha, alpha, 200000)
    expected = np.minimum(r, 1 - r)
    assert abs(area.mean() - expected.mean()) < 0.015
    assert abs(area.std() - expected.std()) < 0.015
    # The internal area agrees with the mask.
    sampler = samplers.CutMix(alpha=alpha)
    x = keras.ops.convert_to_tensor(
        np.random.default_rng(2).normal(size=(4, 24, 24, 1)), "float32"
    )
    seed = tfp_backend.to_tfp_seed(np.array([5, 6], "int32"))
    _, ratio = sampler._sample_with_area(x, 100, seed)
    assert abs(float(np.mean(ratio)) - 0.5) < 0.06


def test_cutmix_flat_input_error():
    sampler = samplers.CutMix()
    with pytest.raises(ValueError, match=r"CutMix needs image inputs of shape "
                       r"\[H, W, C\]; got input shape \(40,\)"):
        sampler.validate((40,))
    with pytest.raises(ValueError, match="CutMix needs image inputs"):
        sampler(np.zeros((4, 40), "float32"))
    with pytest.raises(ValueError, match="CutMix needs image inputs"):
        samplers.Mixture([samplers.Mixup(), sampler]).validate((40,))
    samplers.Mixup().validate((40,))  # Mixup applies to any shape.


def test_gaussian_noise_statistics():
    rng = np.random.default_rng(0)
    scales = np.array([0.1, 1.0, 10.0], "float32")
    x = (rng.normal(size=(4000, 3)) * scales + 3.0).astype("float32")
    out = np.asarray(samplers.GaussianNoise(stddev=0.5)(x, seed=0))
    # Centres are a permutation of the batch, so var(out) = var(x) * 1.25.
    ratio = out.var(axis=0) / x.var(axis=0)
    np.testing.assert_allclose(ratio, 1.25, atol=0.08)
    np.testing.assert_allclose(out.mean(axis=0), x.mean(axis=0),
                               atol=0.05 * scales.max())
    # Absolute noise around one repeated point.
    point = np.full((2000, 50), 2.0, "float32")
    out = np.asarray(
        samplers.GaussianNoise(stddev=0.3, relative=False)(point, seed=1)
    )
    assert abs(out.mean() - 2.0) < 0.01
    assert abs(out.std() - 0.3) < 0.01


def test_gaussian_noise_zero_is_a_resample_of_the_batch():
    x = np.random.default_rng(1).normal(size=(10, 4)).astype("float32")
    out = np.asarray(samplers.GaussianNoise(stddev=0.0)(x, seed=2))
    np.testing.assert_array_equal(
        np.sort(out, axis=0), np.sort(x, axis=0)
    )
    assert not np.array_equal(out, x)  # shuffled (for this seed)


def _two_clusters(n=400, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate(
        [rng.normal(-5.0, 0.5, size=(n, d)), rng.normal(5.0, 0.5, size=(n, d))]
    ).astype("float32")
    y = np.repeat([0, 1], n)
    return x, y


def test_gaussian_mixture_recovers_two_clusters():
    x, y = _two_clusters()
    gmm = samplers.GaussianMixture(num_components=2, seed=0).fit(x)
    order = np.argsort(gmm.means[:, 0])
    np.testing.assert_allclose(gmm.means[order], [[-5.0] * 4, [5.0] * 4],
                               atol=0.15)
    np.testing.assert_allclose(gmm.scales, 0.5, atol=0.08)
    np.testing.assert_allclose(gmm.mixture_weights, 0.5, atol=0.02)
    out = np.asarray(gmm(x[:8], seed=0, num_samples=2000))
    assert out.shape == (2000, 4)
    positive = out.mean(axis=1) > 0
    assert abs(positive.mean() - 0.5) < 0.05
    np.testing.assert_allclose(out[positive].mean(axis=0), 5.0, atol=0.1)
    np.testing.assert_allclose(out[positive].std(axis=0), 0.5, atol=0.05)


def test_gaussian_mixture_fit_from_dataset_and_images():
    x, y = _two_clusters(n=200, d=12)
    images = x.reshape(-1, 2, 2, 3)
    ds = tf.data.Dataset.from_tensor_slices((images, y)).shuffle(400).batch(32)
    gmm = samplers.GaussianMixture(2, covariance="spherical", seed=1).fit(ds)
    assert gmm.feature_shape == (2, 2, 3)
    order = np.argsort(gmm.means[:, 0])
    np.testing.assert_allclose(gmm.means[order, 0], [-5.0, 5.0], atol=0.2)
    assert np.allclose(gmm.scales, gmm.scales[:, :1])  # spherical
    out = gmm(images[:5], seed=0)
    assert out.shape == (5, 2, 2, 3)
    with pytest.raises(ValueError, match="fitted to inputs with 12 features"):
        gmm(np.zeros((3, 5), "float32"))
    # Refit on data of another size replaces the parameters.
    gmm.fit(x[:, :3])
    assert gmm.means.shape == (2, 3)
    shapes = [tuple(v.shape) for v in gmm.non_trainable_weights]
    assert shapes == [(2, 3), (2, 3), (2,)]


def test_gaussian_mixture_config_round_trip_and_unfitted_error():
    x, _ = _two_clusters()
    gmm = samplers.GaussianMixture(num_components=2, seed=0).fit(x)
    clone = samplers.GaussianMixture.from_config(gmm.get_config())
    np.testing.assert_array_equal(
        np.asarray(gmm(x, seed=9)), np.asarray(clone(x, seed=9))
    )
    unfitted = samplers.GaussianMixture(num_components=2)
    with pytest.raises(ValueError, match="not fitted"):
        unfitted(x, seed=0)
    clone = samplers.GaussianMixture.from_config(unfitted.get_config())
    assert not clone.fitted
    with pytest.raises(ValueError, match="at least num_components"):
        samplers.GaussianMixture(num_components=5).fit(x[:3])


def test_uniform_box_within_bounds():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32") * [1.0, 5.0, 0.1]
    lo, hi = x.min(axis=0), x.max(axis=0)
    out = np.asarray(samplers.UniformBox()(x, seed=0, num_samples=4000))
    assert np.all(out >= lo) and np.all(out <= hi)
    np.testing.assert_allclose(out.mean(axis=0), (lo + hi) / 2,
                               atol=0.03 * (hi - lo).max())
    out = np.asarray(samplers.UniformBox(margin=0.5)(x, seed=0, num_samples=4000))
    width = hi - lo
    assert np.all(out >= lo - 0.5 * width) and np.all(out <= hi + 0.5 * width)
    assert np.all(out.min(axis=0) < lo - 0.4 * width)
    fixed = samplers.UniformBox(low=[0.0, -1.0, 10.0], high=[1.0, 1.0, 20.0])
    out = np.asarray(fixed(x, seed=1, num_samples=4000))
    assert np.all(out >= [0.0, -1.0, 10.0]) and np.all(out <= [1.0, 1.0, 20.0])
    np.testing.assert_allclose(out.min(axis=0), [0.0, -1.0, 10.0], atol=0.05)
    with pytest.raises(ValueError, match="does not broadcast"):
        fixed.validate((5,))


def test_mixture_selects_by_weights():
    low = samplers.UniformBox(low=0.0, high=1.0)
    high = samplers.UniformBox(low=10.0, high=11.0)
    mix = samplers.Mixture([low, high], weights=[1.0, 4.0])
    out = np.asarray(mix(np.zeros((8, 6), "float32"), seed=0, num_samples=4000))
    from_high = out > 5
    # Whole examples come from one sampler.
    assert np.all(from_high.all(axis=1) | (~from_high).all(axis=1))
    assert abs(from_high[:, 0].mean() - 0.8) < 0.03
    assert mix.sampler_weights == pytest.approx([0.2, 0.8])


@keras.saving.register_keras_serializable(package="kdtf_tests")
class _Holder(keras.Model):
    def __init__(self, sampler, **kwargs):
        super().__init__(**kwargs)
        self.sampler = samplers.get(sampler)
        self.dense = keras.layers.Dense(2)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        return self.dense(x)

    def get_config(self):
        config = super().get_config()
        config["sampler"] = keras.saving.serialize_keras_object(self.sampler)
        return config


def test_keras_save_of_model_holding_samplers(tmp_path):
    x, _ = _two_clusters(n=50)
    gmm = samplers.GaussianMixture(num_components=2, seed=0).fit(x)
    model = _Holder(samplers.Mixture([gmm, samplers.Mixup(alpha=0.2)], seed=4))
    model(x[:2])
    path = str(tmp_path / "holder.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.sampler, samplers.Mixture)
    np.testing.assert_array_equal(
        np.asarray(loaded.sampler(x, seed=3)), np.asarray(model.sampler(x, seed=3))
    )
    np.testing.assert_allclose(loaded.sampler.samplers[0].means, gmm.means)
