"""Uniform sampler over the input box, for low-dimensional inputs."""

import keras
import numpy as np
from keras import ops

from kdtf.backend import tfp as tfp_backend
from kdtf.samplers.base import Sampler


def _bound_to_config(value, name):
    if value is None:
        return None
    array = np.asarray(value, dtype="float32")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` must be finite; received {name}={value}.")
    return array.tolist()


@keras.saving.register_keras_serializable(package="kdtf")
class UniformBox(Sampler):
    """Uniform samples over an axis-aligned box of the input space.

    The box is `[low, high]` per feature, widened by `margin * (high - low)`
    on each side. When `low`/`high` are None they are the per-feature
    min/max of the real batch; otherwise they are fixed scalars or arrays
    broadcastable to the per-example input shape. Sampling uses a TFP
    `Uniform`. Meant for low-dimensional inputs: in high dimensions almost
    all of the box is far from the data. XLA (`jit_compile=True`): supported.

    Args:
        low: None, float, or array broadcastable to the per-example shape.
        high: None, float, or array broadcastable to the per-example shape.
        margin: float >= 0, fraction of the box width added on each side.
        seed: int or None, seed of the sampler's own `SeedGenerator`.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> sampler = UniformBox(low=-1.0, high=1.0, seed=0)
    >>> sampler(np.zeros((5, 2), "float32"), seed=1).shape
    TensorShape([5, 2])
    """

    def __init__(self, low=None, high=None, margin=0.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        margin = float(margin)
        if not margin >= 0:
            raise ValueError(
                f"`margin` must be >= 0; received margin={margin}."
            )
        self.low = _bound_to_config(low, "low")
        self.high = _bound_to_config(high, "high")
        if self.low is not None and self.high is not None:
            lo, hi = np.asarray(self.low), np.asarray(self.high)
            try:
                ok = np.all(np.broadcast_arrays(lo, hi)[1] >= lo)
            except ValueError:
                raise ValueError(
                    "`low` and `high` must broadcast together; received "
                    f"shapes {lo.shape} and {hi.shape}."
                )
            if not ok:
                raise ValueError("`high` must be >= `low` everywhere.")
        self.margin = margin

    def validate(self, input_shape):
        super().validate(input_shape)
        input_shape = tuple(input_shape)
        static = tuple(1 if d is None else d for d in input_shape)
        for name, bound in (("low", self.low), ("high", self.high)):
            if bound is None:
                continue
            shape = np.shape(bound)
            try:
                np.broadcast_shapes(shape, static)
                ok = len(shape) <= len(static)
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(
                    f"UniformBox `{name}` of shape {shape} does not "
                    f"broadcast to the input shape {input_shape}."
                )

    def sample(self, x, num_samples, seed):
        tfd = tfp_backend.distributions()
        feature_shape = ops.shape(x)[1:]
        if self.low is None:
            low = ops.min(x, axis=0)
        else:
            low = ops.broadcast_to(
                ops.convert_to_tensor(self.low, "float32"), feature_shape
            )
        if self.high is None:
            high = ops.max(x, axis=0)
        else:
            high = ops.broadcast_to(
                ops.convert_to_tensor(self.high, "float32"), feature_shape
            )
        if self.margin:
            pad = self.margin * (high - low)
            low, high = low - pad, high + pad
        return tfd.Uniform(low=low, high=high).sample(
            [num_samples], seed=seed
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {"low": self.low, "high": self.high, "margin": self.margin}
        )
        return config
