"""Tests for kdtf/backend/tfp.py on the active Keras backend."""

import keras
import numpy as np
import pytest

from kdtf.backend import tfp as tfp_backend


def test_distributions_follow_the_backend():
    if keras.backend.backend() == "jax":
        from tensorflow_probability.substrates import jax as tfp
    else:
        import tensorflow_probability as tfp
    assert tfp_backend.distributions() is tfp.distributions


def _seed_dtype():
    return "uint32" if keras.backend.backend() == "jax" else "int32"


def _bits(seed):
    """The seed's words as unsigned 32-bit ints, whatever their dtype."""
    return np.asarray(seed).astype("int64") & 0xFFFFFFFF


def test_to_tfp_seed_kinds():
    gen = keras.random.SeedGenerator(3)
    seed = tfp_backend.to_tfp_seed(gen.next())
    assert keras.backend.standardize_dtype(seed.dtype) == _seed_dtype()
    assert tuple(seed.shape) == (2,)
    np.testing.assert_array_equal(seed, [3, 0])
    np.testing.assert_array_equal(tfp_backend.to_tfp_seed(5), [5, 0])
    # Python ints, int32 and uint32 seeds keep their low 32 bits: the same
    # bits on both backends (int32 on TensorFlow, uint32 on JAX).
    big = tfp_backend.to_tfp_seed(2**32 - 1)
    np.testing.assert_array_equal(_bits(big), [2**32 - 1, 0])
    u = tfp_backend.to_tfp_seed(np.array([2**32 - 1, 1], "uint32"))
    np.testing.assert_array_equal(_bits(u), [2**32 - 1, 1])
    i = tfp_backend.to_tfp_seed(np.array([-1, 1], "int64"))
    np.testing.assert_array_equal(_bits(i), [2**32 - 1, 1])
    for kind in (big, u, i):
        assert keras.backend.standardize_dtype(kind.dtype) == _seed_dtype()
    with pytest.raises(TypeError, match="seed"):
        tfp_backend.to_tfp_seed(None)
    with pytest.raises(TypeError, match="seed"):
        tfp_backend.to_tfp_seed(True)


def test_seeds_are_stateless_and_split():
    tfd = tfp_backend.distributions()
    seed = tfp_backend.to_tfp_seed(7)
    a = tfd.Normal(0.0, 1.0).sample(4, seed=seed)
    b = tfd.Normal(0.0, 1.0).sample(4, seed=seed)
    np.testing.assert_array_equal(a, b)
    s1, s2 = tfp_backend.split_seed(seed, 2)
    # Split seeds are plain integer seeds like `to_tfp_seed`'s (on JAX, raw
    # key data rather than typed keys), so Keras layers accept them.
    for s in (s1, s2):
        assert keras.backend.standardize_dtype(s.dtype) == _seed_dtype()
        assert tuple(s.shape) == (2,)
    assert not np.array_equal(s1, s2)
    c = tfd.Normal(0.0, 1.0).sample(4, seed=s1)
    assert not np.allclose(a, c)


@pytest.mark.jax_only(reason="typed JAX PRNG keys exist only on JAX")
def test_typed_jax_keys_become_key_data():
    import jax

    key = jax.random.key(3)
    seed = tfp_backend.to_tfp_seed(key)
    np.testing.assert_array_equal(seed, jax.random.key_data(key))
    assert keras.backend.standardize_dtype(seed.dtype) == "uint32"
