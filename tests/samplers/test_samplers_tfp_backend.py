"""Tests for kdtf/backend/tfp.py (TensorFlow backend only)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from kdtf.backend import tfp as tfp_backend


def test_distributions_is_tfp_for_tensorflow():
    assert keras.backend.backend() == "tensorflow"
    assert tfp_backend.distributions() is tfp.distributions


def test_to_tfp_seed_kinds():
    gen = keras.random.SeedGenerator(3)
    seed = tfp_backend.to_tfp_seed(gen.next())
    assert seed.dtype == tf.int32 and seed.shape == (2,)
    np.testing.assert_array_equal(seed, [3, 0])
    np.testing.assert_array_equal(tfp_backend.to_tfp_seed(5), [5, 0])
    big = tfp_backend.to_tfp_seed(2**32 - 1)
    np.testing.assert_array_equal(big, [-1, 0])
    u = tfp_backend.to_tfp_seed(tf.constant([2**32 - 1, 1], tf.uint32))
    np.testing.assert_array_equal(u, [-1, 1])
    with pytest.raises(TypeError, match="seed"):
        tfp_backend.to_tfp_seed(None)


def test_seeds_are_stateless_and_split():
    tfd = tfp_backend.distributions()
    seed = tfp_backend.to_tfp_seed(7)
    a = tfd.Normal(0.0, 1.0).sample(4, seed=seed)
    b = tfd.Normal(0.0, 1.0).sample(4, seed=seed)
    np.testing.assert_array_equal(a, b)
    s1, s2 = tfp_backend.split_seed(seed, 2)
    assert not np.array_equal(s1, s2)
    c = tfd.Normal(0.0, 1.0).sample(4, seed=s1)
    assert not np.allclose(a, c)
