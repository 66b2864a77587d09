"""TensorFlow Probability access that follows the active Keras backend.

TFP ships one API on several substrates. kdtf code asks this module for the
`distributions` namespace and for seeds in the form that substrate expects,
so the same sampler code runs on the TensorFlow backend
(`tensorflow_probability`) and the JAX backend
(`tensorflow_probability.substrates.jax`). Both are tested: the sampler tests
in tests/samplers run under either `KERAS_BACKEND`, and tests/backend runs
the samplers inside the JAX train step.

Seeds: on TensorFlow a stateless seed is an `int32[2]` tensor; on JAX it is
the raw `uint32[2]` data of a PRNG key (what `keras.random.SeedGenerator`
holds), never a typed `key<fry>` array, so seeds can pass through Keras
layer calls. The same Python int gives the same seed bits on both backends,
but TF's and JAX's random streams differ, so the samples do not.
"""

import keras

_SUPPORTED_BACKENDS = ("tensorflow", "jax")


def _backend():
    backend = keras.backend.backend()
    if backend not in _SUPPORTED_BACKENDS:
        raise ValueError(
            "kdtf's TensorFlow-Probability helpers support the Keras "
            f"backends {list(_SUPPORTED_BACKENDS)}; the active backend is "
            f"'{backend}'."
        )
    return backend


def _tfp():
    if _backend() == "jax":
        from tensorflow_probability.substrates import jax as tfp_jax

        return tfp_jax
    import tensorflow_probability as tfp

    return tfp


def distributions():
    """Returns the `tfp.distributions` module for the active Keras backend.

    Returns:
        `tensorflow_probability.distributions` for the TensorFlow backend, or
        `tensorflow_probability.substrates.jax.distributions` for JAX.

    Example:

    >>> tfd = distributions()
    >>> tfd.Normal(0.0, 1.0).sample(3, seed=to_tfp_seed(0)).shape
    TensorShape([3])
    """
    return _tfp().distributions


def to_tfp_seed(seed):
    """Turns a Keras seed into a stateless seed the TFP substrate accepts.

    Args:
        seed: a Python int, or a shape-`[2]` integer tensor such as the output
            of `keras.random.SeedGenerator.next()`.

    Returns:
        TensorFlow backend: a shape-`[2]` `int32` tensor (TFP's stateless
        seed). JAX backend: a `uint32[2]` array, the data of a raw PRNG key
        (typed keys are turned into their data).

    Example:

    >>> gen = keras.random.SeedGenerator(1)
    >>> to_tfp_seed(gen.next()).dtype
    tf.int32
    """
    if isinstance(seed, bool) or seed is None:
        raise TypeError(
            "`seed` must be an int or a shape-[2] integer seed tensor; "
            f"received seed={seed!r}."
        )
    if _backend() == "jax":
        import jax
        import jax.numpy as jnp
        import numpy as np

        if isinstance(seed, int):
            return jnp.asarray([seed & 0xFFFFFFFF, 0], dtype="uint32")
        if isinstance(seed, jax.Array) and jax.dtypes.issubdtype(
            seed.dtype, jax.dtypes.prng_key
        ):
            return jax.random.key_data(seed)
        if not isinstance(seed, jax.Array):
            # numpy or a foreign tensor (e.g. tf.int64): keep the low 32 bits
            # of each word, as for TensorFlow.
            seed = (np.asarray(seed).astype("int64") & 0xFFFFFFFF).astype(
                "uint32"
            )
        return jnp.asarray(seed).astype("uint32")

    import tensorflow as tf

    if isinstance(seed, int):
        # Reinterpret the low 32 bits as int32, like Keras's `draw_seed`.
        seed = (seed & 0xFFFFFFFF ^ 0x80000000) - 0x80000000
        return tf.constant([seed, 0], dtype=tf.int32)
    seed = tf.convert_to_tensor(seed)
    if seed.dtype == tf.uint32:
        return tf.bitcast(seed, tf.int32)
    if seed.dtype != tf.int32:
        # Keras's TF SeedGenerator yields int64; keep the low 32 bits.
        seed = tf.cast(seed, tf.int32)
    return seed


def split_seed(seed, n):
    """Splits a TFP stateless seed into `n` independent seeds.

    Args:
        seed: a seed returned by `to_tfp_seed`.
        n: Python int, number of seeds to return.

    Returns:
        A list of `n` seeds of the same kind as `seed`.

    Example:

    >>> a, b = split_seed(to_tfp_seed(0), 2)
    """
    seeds = _tfp().random.split_seed(seed, n=n)
    if _backend() == "jax":
        import jax

        # TFP-on-JAX splits into typed keys; hand back their raw uint32[2]
        # data like `to_tfp_seed`, which Keras layers accept as arguments.
        seeds = jax.random.key_data(seeds)
    return [seeds[i] for i in range(n)]
