"""Gaussian-noise sampler: a Gaussian kernel density estimate of the batch."""

import keras
from keras import ops

from kdtf.backend import tfp as tfp_backend
from kdtf.samplers.base import Sampler
from kdtf.samplers.base import pair_indices


@keras.saving.register_keras_serializable(package="kdtf")
class GaussianNoise(Sampler):
    """Real inputs plus Gaussian noise (a kernel-density sample).

    Picks real examples `x_i` (a random permutation of the batch, cycled if
    more samples are requested) and draws `x~ ~ Normal(x_i, sigma^2)` from a
    TFP `Normal`, where `sigma = stddev * std_batch` per feature if
    `relative`, else `sigma = stddev`. `std_batch` is each feature's standard
    deviation over the real batch, so features that are constant in the
    batch get no noise. XLA (`jit_compile=True`): supported.

    Args:
        stddev: float >= 0, noise scale (relative or absolute).
        relative: bool, scale the noise by the per-feature batch std.
        seed: int or None, seed of the sampler's own `SeedGenerator`.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> sampler = GaussianNoise(stddev=0.1, seed=0)
    >>> sampler(np.random.rand(16, 40).astype("float32"), seed=1).shape
    TensorShape([16, 40])
    """

    def __init__(self, stddev=0.1, relative=True, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        stddev = float(stddev)
        if not stddev >= 0:
            raise ValueError(
                f"`stddev` must be >= 0; received stddev={stddev}."
            )
        if not isinstance(relative, bool):
            raise TypeError(
                f"`relative` must be a bool; received relative={relative!r}."
            )
        self.stddev = stddev
        self.relative = relative

    def sample(self, x, num_samples, seed):
        tfd = tfp_backend.distributions()
        pair_seed, noise_seed = tfp_backend.split_seed(seed, 2)
        index, _ = pair_indices(ops.shape(x)[0], num_samples, pair_seed)
        centres = ops.take(x, index, axis=0)
        if self.relative:
            scale = self.stddev * ops.std(x, axis=0)
        else:
            scale = ops.full(ops.shape(x)[1:], self.stddev, dtype="float32")
        return tfd.Normal(loc=centres, scale=scale).sample(seed=noise_seed)

    def get_config(self):
        config = super().get_config()
        config.update({"stddev": self.stddev, "relative": self.relative})
        return config
