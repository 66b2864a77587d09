"""Contract tests shared by every sampler: shapes, dtypes, seeds, configs."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdtf import samplers

RNG = np.random.default_rng(0)
FLAT = RNG.normal(size=(16, 12)).astype("float32")
IMAGES = RNG.uniform(size=(8, 10, 12, 3)).astype("float32")
GMM_FLAT = samplers.GaussianMixture(num_components=3, seed=0).fit(
    RNG.normal(size=(200, 12)), iterations=5
)


def _cases():
    return [
        ("mixup", lambda: samplers.Mixup(alpha=0.4, seed=1), FLAT),
        ("mixup_images", lambda: samplers.Mixup(seed=1), IMAGES),
        ("cutmix", lambda: samplers.CutMix(alpha=1.0, seed=1), IMAGES),
        ("noise", lambda: samplers.GaussianNoise(0.2, seed=1), FLAT),
        (
            "noise_abs",
            lambda: samplers.GaussianNoise(0.2, relative=False, seed=1),
            IMAGES,
        ),
        ("uniform", lambda: samplers.UniformBox(margin=0.1, seed=1), FLAT),
        (
            "uniform_fixed",
            lambda: samplers.UniformBox(low=-1.0, high=[2.0] * 12, seed=1),
            FLAT,
        ),
        (
            "gmm",
            lambda: samplers.GaussianMixture.from_config(GMM_FLAT.get_config()),
            FLAT,
        ),
        (
            "mixture",
            lambda: samplers.Mixture(
                [samplers.Mixup(seed=2), samplers.GaussianNoise(seed=3)],
                weights=[1.0, 3.0],
                seed=1,
            ),
            FLAT,
        ),
    ]


CASES = _cases()
IDS = [c[0] for c in CASES]
# On JAX an eager Beta draw (Mixup, CutMix) runs its Gamma sampler op by op:
# ~0.6 s a call, ~3 s for a new shape, on 2 cores. There the Beta-based cases of
# the eager contract tests run with the slow tests; the TF run keeps them in CI,
# and test_jax_jit_advances_own_seed checks them on JAX, compiled as in training.
_SLOW_ON_THIS_BACKEND = ({"mixup", "mixup_images", "cutmix", "mixture"}
                         if keras.backend.backend() == "jax" else set())
EAGER_CASES = [pytest.param(*c, id=c[0], marks=[pytest.mark.slow] if c[0] in _SLOW_ON_THIS_BACKEND
                            else []) for c in CASES]


@pytest.mark.parametrize("name,make,x", EAGER_CASES)
def test_shape_dtype_and_num_samples(name, make, x):
    sampler = make()
    out = sampler(x, seed=0)
    assert tuple(out.shape) == x.shape
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert np.all(np.isfinite(np.asarray(out)))
    out = sampler(x, seed=0, num_samples=21)
    assert tuple(out.shape) == (21,) + x.shape[1:]
    out16 = sampler(keras.ops.convert_to_tensor(x, "float16"), seed=0)
    assert keras.backend.standardize_dtype(out16.dtype) == "float16"


@pytest.mark.parametrize("name,make,x", EAGER_CASES)
def test_determinism_and_seed_kinds(name, make, x):
    sampler = make()
    a = np.asarray(sampler(x, seed=7))
    np.testing.assert_array_equal(a, np.asarray(sampler(x, seed=7)))
    assert not np.allclose(a, np.asarray(sampler(x, seed=8)))
    # A SeedGenerator gives reproducible sequences.
    g1, g2 = keras.random.SeedGenerator(5), keras.random.SeedGenerator(5)
    s1 = [np.asarray(sampler(x, seed=g1)) for _ in range(2)]
    s2 = [np.asarray(sampler(x, seed=g2)) for _ in range(2)]
    np.testing.assert_array_equal(s1[0], s2[0])
    np.testing.assert_array_equal(s1[1], s2[1])
    assert not np.allclose(s1[0], s1[1])
    # The sampler's own generator: same constructor seed, same sequence;
    # successive calls differ.
    other = make()
    own1 = [np.asarray(sampler(x)) for _ in range(2)]
    own2 = [np.asarray(other(x)) for _ in range(2)]
    np.testing.assert_array_equal(own1[0], own2[0])
    assert not np.allclose(own1[0], own1[1])
    # A stateless seed tensor works too, int32 or int64 (numpy).
    seed = keras.ops.convert_to_tensor(np.array([3, 4], "int32"))
    t = np.asarray(sampler(x, seed=seed))
    np.testing.assert_array_equal(
        t, np.asarray(sampler(x, seed=np.array([3, 4], "int64")))
    )


@pytest.mark.tf_only(reason="tf.function; see test_jax_jit_advances_own_seed")
@pytest.mark.parametrize("name,make,x", CASES, ids=IDS)
def test_tf_function_advances_own_seed(name, make, x):
    sampler = make()

    @tf.function(jit_compile=False)
    def draw(inputs):
        return sampler(inputs, num_samples=6)

    a, b = np.asarray(draw(x)), np.asarray(draw(x))
    assert a.shape == (6,) + x.shape[1:]
    assert not np.allclose(a, b)
    # Same seed inside and outside tf.function gives the same samples.
    fixed = tf.function(lambda inputs: sampler(inputs, seed=11))
    np.testing.assert_allclose(
        np.asarray(fixed(x)), np.asarray(sampler(x, seed=11)), atol=1e-5
    )


@pytest.mark.jax_only(reason="jax.jit; see test_tf_function_advances_own_seed")
@pytest.mark.parametrize("name,make,x", CASES, ids=IDS)
def test_jax_jit_advances_own_seed(name, make, x):
    import jax

    sampler = make()
    sampler(x, seed=0)  # builds the sampler and its sub-samplers
    assert sampler.non_trainable_variables  # the seed generators' states

    @jax.jit
    def draw(state, inputs):
        # The JAX way to run a stateful layer under jit, as Keras's JAX
        # trainer does: variables in, updated variables out.
        return sampler.stateless_call([], state, inputs, num_samples=6)

    state = [v.value for v in sampler.non_trainable_variables]
    a, state = draw(state, x)
    b, state = draw(state, x)
    assert a.shape == (6,) + x.shape[1:]
    assert not np.allclose(np.asarray(a), np.asarray(b))
    # The seed advanced in the returned state only, not in the variables.
    own = sampler.seed_generator.state
    index = next(
        i for i, v in enumerate(sampler.non_trainable_variables) if v is own
    )
    assert not np.array_equal(np.asarray(state[index]), np.asarray(own.value))
    # Same seed inside and outside jax.jit gives the same samples.
    fixed = jax.jit(lambda s, inputs: sampler.stateless_call([], s, inputs, seed=11)[0])
    np.testing.assert_allclose(
        np.asarray(fixed(state, x)), np.asarray(sampler(x, seed=11)), atol=1e-5
    )


@pytest.mark.parametrize("name,make,x", EAGER_CASES)
def test_get_config_round_trip(name, make, x):
    sampler = make()
    config = sampler.get_config()
    json.dumps(config)  # Plain JSON-compatible values only.
    clone = type(sampler).from_config(config)
    assert clone.get_config() == config
    np.testing.assert_allclose(
        np.asarray(clone(x, seed=4)), np.asarray(sampler(x, seed=4)), atol=1e-6
    )
    serialized = keras.saving.serialize_keras_object(sampler)
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is type(sampler)
    np.testing.assert_allclose(
        np.asarray(clone(x, seed=4)), np.asarray(sampler(x, seed=4)), atol=1e-6
    )


@pytest.mark.tf_only(reason="tf.function with a dynamic batch dimension (JAX traces static shapes)")
def test_dynamic_batch_in_tf_function():
    sampler = samplers.Mixture(
        [samplers.Mixup(), samplers.GaussianNoise(), samplers.UniformBox()],
        seed=0,
    )
    draw = tf.function(
        lambda x: sampler(x),
        input_signature=[tf.TensorSpec([None, 12], tf.float32)],
    )
    assert draw(FLAT).shape == FLAT.shape
    assert draw(FLAT[:5]).shape == (5, 12)


def test_uint8_images_round_trip_dtype():
    images = (IMAGES * 255).astype("uint8")
    for sampler in (
        samplers.Mixup(seed=0),
        samplers.CutMix(seed=0),
        samplers.GaussianNoise(stddev=2.0, seed=0),
    ):
        out = sampler(images, seed=1)
        assert keras.backend.standardize_dtype(out.dtype) == "uint8"
        assert out.shape == images.shape
        # Output is numpy-convertible in eager mode.
        assert np.asarray(out).dtype == np.uint8


def test_get_by_name_and_errors():
    assert isinstance(samplers.get("mixup", alpha=0.3), samplers.Mixup)
    assert samplers.get("mixup", alpha=0.3).alpha == 0.3
    assert isinstance(samplers.get("cutmix"), samplers.CutMix)
    assert isinstance(samplers.get("noise"), samplers.GaussianNoise)
    assert isinstance(samplers.get("gmm"), samplers.GaussianMixture)
    assert isinstance(samplers.get("uniform"), samplers.UniformBox)
    assert isinstance(samplers.get("Gaussian_Noise"), samplers.GaussianNoise)
    s = samplers.Mixup()
    assert samplers.get(s) is s
    assert isinstance(
        samplers.get(keras.saving.serialize_keras_object(s)), samplers.Mixup
    )
    with pytest.raises(ValueError, match="cutmix.*gmm.*mixup.*noise.*uniform"):
        samplers.get("mixupp")
    assert samplers.Compose is samplers.Mixture


def test_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        samplers.Mixup(alpha=0.0)
    with pytest.raises(ValueError, match="alpha"):
        samplers.CutMix(alpha=-1)
    with pytest.raises(ValueError, match="stddev"):
        samplers.GaussianNoise(stddev=-0.1)
    with pytest.raises(ValueError, match="covariance.*diag.*full"):
        samplers.GaussianMixture(covariance="tied")
    with pytest.raises(ValueError, match="num_components"):
        samplers.GaussianMixture(num_components=0)
    with pytest.raises(ValueError, match="high"):
        samplers.UniformBox(low=1.0, high=0.0)
    with pytest.raises(ValueError, match="weights"):
        samplers.Mixture([samplers.Mixup()], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="samplers"):
        samplers.Mixture([])
    with pytest.raises(TypeError, match="seed"):
        samplers.Mixup(seed="abc")
    with pytest.raises(ValueError, match="num_samples"):
        samplers.Mixup()(FLAT, num_samples=0)
