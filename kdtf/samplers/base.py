"""Base class for synthetic-input samplers (extracurricular learning)."""

import keras
import numpy as np
from keras import ops

from kdtf.backend import tfp as tfp_backend


@keras.saving.register_keras_serializable(package="kdtf")
class Sampler(keras.layers.Layer):
    """Base class of samplers that draw synthetic inputs `x~ ~ q(x)`.

    A sampler models the input distribution with TensorFlow-Probability
    distributions and draws extra inputs on the device, inside a compiled
    train step (`tf.function`, XLA where TFP allows; `jax.jit` on the JAX
    backend, through TFP's JAX substrate). It is a Keras layer so
    that its `SeedGenerator` state and fitted parameters are tracked by the
    model that owns it and saved in `.keras` files.

    Subclasses implement `sample(x, num_samples, seed)` on float32 inputs and
    may override `validate(input_shape)`.

    Inputs and outputs: `sampler(x_real)` returns a tensor of shape
    `[num_samples] + x_real.shape[1:]` with the dtype of `x_real`. Sampling
    itself runs in float32; float16/bfloat16/float64 inputs are cast to
    float32 and back, and integer inputs (e.g. uint8 images) are cast to
    float32, sampled, then rounded, clipped to the integer dtype's range and
    cast back.

    Args:
        seed: int or None, seed of the sampler's own
            `keras.random.SeedGenerator`, used when a call passes no seed.
        **kwargs: standard `keras.layers.Layer` arguments (e.g. `name`).

    Call arguments:
        x_real: tensor `[B, ...]` of real inputs.
        seed: None (use the sampler's own `SeedGenerator`, which advances on
            every call), a Python int, a `keras.random.SeedGenerator`, or a
            shape-`[2]` integer stateless seed tensor. The output is
            deterministic given an int or tensor seed.
        num_samples: number of synthetic inputs; defaults to `B`.

    Example:

    >>> sampler = kdtf.samplers.Mixup(alpha=0.4, seed=1)
    >>> x_syn = sampler(x_batch)                # advances the sampler's seed
    >>> x_syn = sampler(x_batch, seed=0)        # reproducible
    """

    def __init__(self, seed=None, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
        ):
            raise TypeError(
                f"`seed` must be an int or None; received seed={seed!r}."
            )
        self.seed = None if seed is None else int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    # Keep the documented signature visible; Layer.__call__ does the rest.
    def __call__(self, x_real, seed=None, num_samples=None, **kwargs):
        return super().__call__(
            x_real, seed=seed, num_samples=num_samples, **kwargs
        )

    def build_from_config(self, config):
        # Samplers create their state in `__init__`/`fit`, never in `build`.
        self.built = True

    def validate(self, input_shape):
        """Checks that the sampler applies to inputs of this shape.

        Args:
            input_shape: per-example input shape, without the batch
                dimension (e.g. `(28, 28, 1)` or `(40,)`).

        Raises:
            ValueError: if the sampler cannot produce inputs of this shape.
        """
        if len(tuple(input_shape)) < 1:
            raise ValueError(
                f"{type(self).__name__} needs inputs with at least one "
                f"feature dimension; got input shape {tuple(input_shape)}."
            )

    def call(self, x_real, seed=None, num_samples=None):
        x = ops.convert_to_tensor(x_real)
        self.validate(tuple(x.shape[1:]))
        dtype = keras.backend.standardize_dtype(x.dtype)
        xf = ops.cast(x, "float32") if dtype != "float32" else x
        if num_samples is None:
            num_samples = x.shape[0]
            if num_samples is None:
                num_samples = ops.shape(x)[0]
        elif isinstance(num_samples, (int, np.integer)) and num_samples < 1:
            raise ValueError(
                f"`num_samples` must be a positive int; received "
                f"num_samples={num_samples}."
            )
        out = self.sample(xf, num_samples, self._draw_seed(seed))
        return _cast_like(out, dtype)

    def sample(self, x, num_samples, seed):
        """Draws synthetic inputs. Implemented by subclasses.

        Args:
            x: float32 tensor `[B, ...]` of real inputs.
            num_samples: int or scalar int tensor.
            seed: a TFP stateless seed (see `kdtf.backend.tfp.to_tfp_seed`).

        Returns:
            float32 tensor `[num_samples] + x.shape[1:]`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement `sample()`."
        )

    def _draw_seed(self, seed):
        if seed is None:
            seed = self.seed_generator.next()
        elif isinstance(seed, keras.random.SeedGenerator):
            seed = seed.next()
        elif isinstance(seed, bool):
            raise TypeError(f"`seed` must not be a bool; received {seed!r}.")
        elif isinstance(seed, (int, np.integer)):
            return tfp_backend.to_tfp_seed(int(seed))
        return tfp_backend.to_tfp_seed(seed)

    def compute_output_shape(self, input_shape, num_samples=None):
        return (num_samples,) + tuple(input_shape)[1:]

    def get_config(self):
        config = super().get_config()
        config.update({"seed": self.seed})
        return config


def _cast_like(x, dtype):
    if dtype == "float32":
        return x
    if "float" in dtype:
        return ops.cast(x, dtype)
    if dtype == "bool":
        return ops.cast(ops.round(x), dtype)
    info = np.iinfo(dtype)
    x = ops.clip(ops.round(x), float(info.min), float(info.max))
    return ops.cast(x, dtype)


def uniform(shape, seed):
    """U[0, 1) float32 draws of `shape` from a TFP `Uniform`."""
    tfd = tfp_backend.distributions()
    return tfd.Uniform(low=0.0, high=1.0).sample(shape, seed=seed)


def pair_indices(batch_size, num_samples, seed):
    """Random real indices and distinct partners for mixing-type samplers.

    `index` walks a random permutation of the batch (cycled when
    `num_samples > batch_size`) so every real example is used about equally;
    `partner = (index + k) mod batch_size` with `k` uniform in
    `[1, batch_size - 1]`, so a partner differs from its example whenever
    `batch_size >= 2`.

    Args:
        batch_size: int or scalar int tensor, B.
        num_samples: int or scalar int tensor, N.
        seed: TFP stateless seed.

    Returns:
        `(index, partner)`, two int32 tensors of shape `[N]`.
    """
    perm_seed, offset_seed = tfp_backend.split_seed(seed, 2)
    perm = ops.cast(ops.argsort(uniform([batch_size], perm_seed)), "int32")
    b = ops.cast(batch_size, "int32")
    index = ops.take(perm, ops.mod(ops.arange(num_samples, dtype="int32"), b))
    u = uniform([num_samples], offset_seed)
    offset = ops.cast(ops.floor(u * ops.cast(b - 1, "float32")), "int32") + 1
    partner = ops.mod(index + offset, b)
    return index, partner


def expand_to(v, x):
    """Reshapes a per-sample vector `[N]` to broadcast against `[N, ...]`."""
    return ops.reshape(v, (-1,) + (1,) * (len(x.shape) - 1))
