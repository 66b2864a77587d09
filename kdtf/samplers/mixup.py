"""Mixup sampler: convex combinations of two real inputs."""

import keras
from keras import ops

from kdtf.backend import tfp as tfp_backend
from kdtf.samplers.base import Sampler
from kdtf.samplers.base import expand_to
from kdtf.samplers.base import pair_indices


@keras.saving.register_keras_serializable(package="kdtf")
class Mixup(Sampler):
    """Synthetic inputs `lam * x_i + (1 - lam) * x_j` with `lam ~ Beta(a, a)`.

    Each synthetic sample mixes a real example `x_i` with a partner `x_j`
    (`j != i` whenever the batch has at least two examples) from the same
    batch, with its own `lam` drawn from a TFP `Beta(alpha, alpha)`. Every
    output lies on the segment between its two real inputs. Works for any
    input rank. XLA (`jit_compile=True`): supported.

    Args:
        alpha: float > 0, concentration of the Beta distribution. Small
            values (e.g. 0.2) keep samples near real points; 1.0 is uniform
            along the segment.
        seed: int or None, seed of the sampler's own `SeedGenerator`.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> sampler = Mixup(alpha=1.0, seed=0)
    >>> x_syn = sampler(np.random.rand(8, 40).astype("float32"), seed=3)
    >>> x_syn.shape
    TensorShape([8, 40])
    """

    def __init__(self, alpha=1.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        alpha = float(alpha)
        if not alpha > 0:
            raise ValueError(f"`alpha` must be > 0; received alpha={alpha}.")
        self.alpha = alpha

    def sample(self, x, num_samples, seed):
        tfd = tfp_backend.distributions()
        pair_seed, lam_seed = tfp_backend.split_seed(seed, 2)
        index, partner = pair_indices(ops.shape(x)[0], num_samples, pair_seed)
        lam = tfd.Beta(self.alpha, self.alpha).sample(
            [num_samples], seed=lam_seed
        )
        x_a = ops.take(x, index, axis=0)
        x_b = ops.take(x, partner, axis=0)
        lam = expand_to(lam, x_a)
        return lam * x_a + (1.0 - lam) * x_b

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha})
        return config
