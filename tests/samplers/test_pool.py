"""Pool: draws rows of a fixed pool of real unlabelled inputs."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdtf
from kdtf import samplers

RNG = np.random.default_rng(0)
POOL = RNG.normal(size=(20, 6)).astype("float32")
IMAGES = RNG.uniform(size=(12, 4, 5, 3)).astype("float32")


def _rows(out, pool):
    """Index of the pool row equal to each output row (-1 if none)."""
    flat_out = out.reshape(len(out), -1)
    flat_pool = pool.reshape(len(pool), -1)
    eq = np.all(flat_out[:, None] == flat_pool[None], axis=-1)
    return np.where(eq.any(axis=1), eq.argmax(axis=1), -1)


def test_samples_are_pool_rows_and_every_row_is_reachable():
    sampler = samplers.Pool(seed=0).fit(POOL)
    assert sampler.pool_shape == (20, 6) and sampler.pool_size == 20
    out = np.asarray(sampler(POOL[:4], seed=1, num_samples=4000))
    assert out.shape == (4000, 6) and out.dtype == np.float32
    index = _rows(out, POOL)
    assert np.all(index >= 0)
    counts = np.bincount(index, minlength=20)
    assert np.all(counts > 0)
    # Uniform with replacement: 200 expected per row.
    assert counts.min() > 140 and counts.max() < 260
    # Images keep their per-example shape; the batch values are unused.
    images = samplers.Pool(seed=0).fit(IMAGES)
    out = np.asarray(images(np.zeros((3, 4, 5, 3), "float32"), seed=2))
    assert out.shape == (3, 4, 5, 3)
    assert np.all(_rows(out, IMAGES) >= 0)


def test_shape_dtype_determinism_and_seed_kinds():
    sampler = samplers.Pool(seed=3).fit(POOL)
    a = np.asarray(sampler(POOL[:8], seed=7))
    assert a.shape == (8, 6)
    np.testing.assert_array_equal(a, np.asarray(sampler(POOL[:8], seed=7)))
    assert not np.array_equal(a, np.asarray(sampler(POOL[:8], seed=8)))
    seed = keras.ops.convert_to_tensor(np.array([3, 4], "int32"))
    t = np.asarray(sampler(POOL[:8], seed=seed))
    np.testing.assert_array_equal(
        t, np.asarray(sampler(POOL[:8], seed=np.array([3, 4], "int64")))
    )
    # Same constructor seed, same own-generator sequence; calls differ.
    other = samplers.Pool(seed=3).fit(POOL)
    own1 = [np.asarray(sampler(POOL[:8])) for _ in range(2)]
    own2 = [np.asarray(other(POOL[:8])) for _ in range(2)]
    np.testing.assert_array_equal(own1[0], own2[0])
    assert not np.array_equal(own1[0], own1[1])
    out16 = sampler(keras.ops.convert_to_tensor(POOL[:8], "float16"), seed=0)
    assert keras.backend.standardize_dtype(out16.dtype) == "float16"
    # uint8 pools come back exactly in the input dtype.
    pixels = (IMAGES * 255).astype("uint8")
    out = np.asarray(samplers.Pool().fit(pixels)(pixels[:5], seed=0))
    assert out.dtype == np.uint8 and np.all(_rows(out, pixels) >= 0)


def test_fit_inputs_dataset_tuple_and_max_samples():
    y = np.arange(20)
    ds = tf.data.Dataset.from_tensor_slices((POOL, y)).batch(6)
    from_ds = samplers.Pool(seed=0).fit(ds)
    np.testing.assert_array_equal(from_ds.pool, POOL)
    np.testing.assert_array_equal(samplers.Pool().fit((POOL, y)).pool, POOL)
    small = samplers.Pool().fit(ds, max_samples=10)
    np.testing.assert_array_equal(small.pool, POOL[:10])
    # Refit to another shape replaces the variable.
    small.fit(IMAGES)
    assert [tuple(v.shape) for v in small.non_trainable_weights] == [
        (12, 4, 5, 3)
    ]


def test_get_config_round_trip_and_registry():
    sampler = samplers.Pool(seed=2).fit(POOL)
    config = sampler.get_config()
    json.dumps(config)
    assert config["pool_shape"] == [20, 6]
    assert "pool" not in config  # the values live in the weights
    clone = samplers.Pool.from_config(config)
    assert clone.get_config() == config
    np.testing.assert_array_equal(clone.pool, np.zeros((20, 6)))
    clone.set_weights(sampler.get_weights())
    np.testing.assert_array_equal(
        np.asarray(clone(POOL, seed=4)), np.asarray(sampler(POOL, seed=4))
    )
    assert isinstance(samplers.get("pool"), samplers.Pool)
    assert samplers.Pool.from_config(samplers.Pool().get_config()).pool is None


def test_errors():
    with pytest.raises(ValueError, match="not fitted.*x_unlabeled"):
        samplers.Pool()(POOL, seed=0)
    sampler = samplers.Pool().fit(POOL)
    match = r"x_unlabeled.*\(6,\).*x_real.*\(5,\)"
    with pytest.raises(ValueError, match=match):
        sampler(np.zeros((3, 5), "float32"))
    with pytest.raises(ValueError, match="x_real"):
        sampler.validate((2, 3))
    sampler.validate((None,))  # unknown dims are not checked
    with pytest.raises(ValueError, match="x_unlabeled"):
        samplers.Pool().fit(np.zeros(5))
    with pytest.raises(ValueError, match="x_unlabeled"):
        samplers.Pool().fit(np.zeros((0, 5)))
    with pytest.raises(ValueError, match="non-finite"):
        samplers.Pool().fit(np.full((3, 2), np.nan))
    with pytest.raises(TypeError, match="x_unlabeled"):
        samplers.Pool().fit({"a": 1})
    with pytest.raises(ValueError, match="max_samples"):
        samplers.Pool().fit(POOL, max_samples=0)
    with pytest.raises(ValueError, match="pool_shape"):
        samplers.Pool(pool_shape=[5])
    # The Distiller validates the sampler against the student's inputs.
    with pytest.raises(ValueError, match="x_unlabeled"):
        kdtf.Distiller(_teacher(d=5), _student(d=5), sampler=sampler)


@pytest.mark.tf_only(reason="tf.function(jit_compile=True); on JAX the Pool runs in the jitted train step of test_keras_round_trip_of_distiller_restores_pool")
def test_xla():
    """Same pattern as tests/samplers/test_samplers_xla.py."""
    sampler = samplers.Pool(seed=0).fit(POOL)

    @tf.function(jit_compile=True)
    def draw(x, seed):
        return sampler(x, seed=seed), sampler(x, num_samples=10)

    seed = tf.constant([1, 2], tf.int32)
    a, own_a = draw(POOL[:16], seed)
    b, own_b = draw(POOL[:16], seed)
    assert a.shape == (16, 6) and own_a.shape == (10, 6)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(own_a), np.asarray(own_b))
    # XLA's stateless RNG stream differs from eager's: check the rows only.
    assert np.all(_rows(np.asarray(a), POOL) >= 0)
    assert np.all(_rows(np.asarray(own_a), POOL) >= 0)


def _teacher(d=6, c=3):
    return keras.Sequential(
        [keras.Input((d,)), keras.layers.Dense(c)], name="teacher"
    )


def _student(d=6, c=3):
    return keras.Sequential(
        [keras.Input((d,)), keras.layers.Dense(c)], name="student"
    )


def test_keras_round_trip_of_distiller_restores_pool(tmp_path):
    x = RNG.normal(size=(32, 6)).astype("float32")
    y = RNG.integers(0, 3, size=32).astype("int32")
    d = kdtf.Distiller(
        _teacher(), _student(), sampler=samplers.Pool(seed=1).fit(POOL)
    )
    d.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    d.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "distiller.keras")
    d.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.sampler, samplers.Pool)
    np.testing.assert_array_equal(loaded.sampler.pool, POOL)
    np.testing.assert_array_equal(
        np.asarray(loaded.sampler(x, seed=3)), np.asarray(d.sampler(x, seed=3))
    )
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), d.predict(x, verbose=0), atol=1e-6
    )
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0)  # still trains


def test_load_own_variables_without_pool_shape():
    sampler = samplers.Pool().fit(POOL)
    store = {}
    sampler.save_own_variables(store)
    fresh = samplers.Pool()
    fresh.load_own_variables(store)
    np.testing.assert_array_equal(fresh.pool, POOL)
