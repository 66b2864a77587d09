"""Mixture of samplers: each synthetic example from one chosen sampler."""

import keras
import numpy as np
from keras import ops

from kdtf.backend import tfp as tfp_backend
from kdtf.samplers.base import Sampler
from kdtf.samplers.base import expand_to


@keras.saving.register_keras_serializable(package="kdtf")
class Mixture(Sampler):
    """Combines samplers: each synthetic example comes from one of them.

    Every sub-sampler draws `num_samples` examples (with its own sub-seed);
    a TFP `Categorical(probs=weights)` picks, per example, which sampler's
    draw is kept. Compute is the sum of the sub-samplers' (fine for the cheap
    samplers here). XLA (`jit_compile=True`): supported when every
    sub-sampler supports it.

    Args:
        samplers: non-empty list of `Sampler` instances (or their serialized
            configs, or names accepted by `kdtf.samplers.get`).
        weights: None (equal weights) or a list of non-negative floats, one
            per sampler, with a positive sum; normalised to probabilities.
        seed: int or None, seed of the sampler's own `SeedGenerator`.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> sampler = Mixture([Mixup(0.4), GaussianNoise(0.1)], weights=[3, 1])
    >>> x_syn = sampler(x_batch, seed=0)
    """

    def __init__(self, samplers, weights=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        from kdtf.samplers import get  # Late import: avoids a cycle.

        if isinstance(samplers, (Sampler, str, dict)) or not samplers:
            raise ValueError(
                "`samplers` must be a non-empty list of samplers; received "
                f"samplers={samplers!r}."
            )
        resolved = []
        for s in samplers:
            s = get(s)
            resolved.append(s)
        self.samplers = resolved
        k = len(resolved)
        if weights is None:
            weights = [1.0] * k
        weights = np.asarray(weights, dtype="float64").reshape(-1)
        if weights.shape != (k,):
            raise ValueError(
                f"`weights` must have one entry per sampler ({k}); received "
                f"weights={weights.tolist()}."
            )
        if np.any(weights < 0) or not weights.sum() > 0:
            raise ValueError(
                "`weights` must be non-negative with a positive sum; "
                f"received weights={weights.tolist()}."
            )
        self.sampler_weights = (weights / weights.sum()).tolist()

    def validate(self, input_shape):
        super().validate(input_shape)
        for s in self.samplers:
            s.validate(input_shape)

    def sample(self, x, num_samples, seed):
        tfd = tfp_backend.distributions()
        k = len(self.samplers)
        seeds = tfp_backend.split_seed(seed, k + 1)
        draws = [
            s(x, seed=seeds[i], num_samples=num_samples)
            for i, s in enumerate(self.samplers)
        ]
        if k == 1:
            return draws[0]
        choice = tfd.Categorical(
            probs=ops.convert_to_tensor(self.sampler_weights, "float32")
        ).sample([num_samples], seed=seeds[k])
        out = draws[0]
        for i in range(1, k):
            out = ops.where(expand_to(choice == i, out), draws[i], out)
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "samplers": [
                    keras.saving.serialize_keras_object(s)
                    for s in self.samplers
                ],
                "weights": list(self.sampler_weights),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["samplers"] = [
            keras.saving.deserialize_keras_object(s)
            for s in config["samplers"]
        ]
        return cls(**config)


Compose = Mixture
