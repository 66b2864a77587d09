"""Synthetic-input samplers for extracurricular learning.

Samplers draw extra inputs `x~` from a TensorFlow-Probability model of the
input distribution, on the device and inside a compiled train step. See
`Sampler` for the call convention. `Pool` draws real unlabelled inputs
from a fixed pool (the "oracle", or distilling on unlabelled data).

XLA (`tf.function(jit_compile=True)`) support, checked in
tests/samplers: Mixup, CutMix, GaussianNoise, GaussianMixture (all
covariance types), UniformBox, Pool and Mixture all compile with XLA on the
TensorFlow backend.

JAX backend (`KERAS_BACKEND=jax`): the same samplers run eagerly and under
`jax.jit` (tests/samplers with `KERAS_BACKEND=jax`, tests/backend), through
TFP's JAX substrate (see `kdtf.backend.tfp`). Under `jax.jit` a sampler that
draws from its own `SeedGenerator` must run statelessly, as in the
`Distiller`'s JAX train step or `sampler.stateless_call(...)`, so that the
advanced seed comes back as state.
"""

import keras

from kdtf.samplers.base import Sampler
from kdtf.samplers.cutmix import CutMix
from kdtf.samplers.gmm import GaussianMixture
from kdtf.samplers.mixture import Compose
from kdtf.samplers.mixture import Mixture
from kdtf.samplers.mixup import Mixup
from kdtf.samplers.noise import GaussianNoise
from kdtf.samplers.pool import Pool
from kdtf.samplers.uniform import UniformBox

_NAMES = {
    "mixup": Mixup,
    "cutmix": CutMix,
    "noise": GaussianNoise,
    "gmm": GaussianMixture,
    "uniform": UniformBox,
    "pool": Pool,
}
_ALIASES = {
    "gaussian_noise": "noise",
    "gaussian_mixture": "gmm",
    "uniform_box": "uniform",
}


def get(identifier, **kwargs):
    """Returns a sampler from a name, a config dict or a `Sampler`.

    Args:
        identifier: one of "mixup", "cutmix", "noise", "gmm", "uniform",
            "pool" (aliases: "gaussian_noise", "gaussian_mixture",
            "uniform_box");
            a dict from `keras.saving.serialize_keras_object`; or a `Sampler`
            instance (returned as is).
        **kwargs: constructor arguments when `identifier` is a name.

    Returns:
        A `Sampler`.

    Raises:
        ValueError: for an unknown name (the message lists valid names).

    Example:

    >>> sampler = get("mixup", alpha=0.4, seed=0)
    """
    if isinstance(identifier, Sampler):
        if kwargs:
            raise ValueError(
                "Keyword arguments are only accepted with a sampler name; "
                f"received a {type(identifier).__name__} instance and "
                f"{sorted(kwargs)}."
            )
        return identifier
    if isinstance(identifier, dict):
        sampler = keras.saving.deserialize_keras_object(identifier)
        if not isinstance(sampler, Sampler):
            raise ValueError(
                f"The config does not describe a Sampler: {identifier!r}."
            )
        return sampler
    if isinstance(identifier, str):
        key = identifier.lower()
        key = _ALIASES.get(key, key)
        if key in _NAMES:
            return _NAMES[key](**kwargs)
    raise ValueError(
        f"Unknown sampler {identifier!r}. Valid names: {sorted(_NAMES)} "
        f"(aliases: {sorted(_ALIASES)}); or pass a Sampler instance or a "
        "serialized sampler config."
    )


__all__ = [
    "Sampler",
    "Mixup",
    "CutMix",
    "GaussianNoise",
    "GaussianMixture",
    "UniformBox",
    "Pool",
    "Mixture",
    "Compose",
    "get",
]
