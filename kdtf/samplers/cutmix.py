"""CutMix sampler: paste a box from one real image into another."""

import keras
from keras import ops

from kdtf.backend import tfp as tfp_backend
from kdtf.samplers.base import Sampler
from kdtf.samplers.base import pair_indices
from kdtf.samplers.base import uniform


@keras.saving.register_keras_serializable(package="kdtf")
class CutMix(Sampler):
    """Synthetic images made of a real image with a box from a partner image.

    For each synthetic sample, the box's area ratio `r ~ Beta(alpha, alpha)`
    (TFP). Its height and width are `round(H * sqrt(r))` and
    `round(W * sqrt(r))` and its top-left corner is uniform over the positions
    that keep the whole box inside the image, so the pasted area is `r` up to
    rounding (unlike the original CutMix, whose boxes are clipped at the
    border). Pixels inside the box come from the partner image, all others
    from the base image. XLA (`jit_compile=True`): supported.

    Args:
        alpha: float > 0, Beta concentration of the box area ratio.
        seed: int or None, seed of the sampler's own `SeedGenerator`.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> sampler = CutMix(alpha=1.0, seed=0)
    >>> sampler(np.zeros((4, 32, 32, 3), "float32"), seed=1).shape
    TensorShape([4, 32, 32, 3])
    """

    def __init__(self, alpha=1.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        alpha = float(alpha)
        if not alpha > 0:
            raise ValueError(f"`alpha` must be > 0; received alpha={alpha}.")
        self.alpha = alpha

    def validate(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(
                "CutMix needs image inputs of shape [H, W, C]; got input "
                f"shape {input_shape}."
            )
        if input_shape[0] is None or input_shape[1] is None:
            raise ValueError(
                "CutMix needs static image height and width; got input "
                f"shape {input_shape}."
            )

    def sample(self, x, num_samples, seed):
        out, _ = self._sample_with_area(x, num_samples, seed)
        return out

    def _sample_with_area(self, x, num_samples, seed):
        tfd = tfp_backend.distributions()
        pair_seed, area_seed, y_seed, x_seed = tfp_backend.split_seed(seed, 4)
        height, width = int(x.shape[1]), int(x.shape[2])
        index, partner = pair_indices(ops.shape(x)[0], num_samples, pair_seed)
        ratio = tfd.Beta(self.alpha, self.alpha).sample(
            [num_samples], seed=area_seed
        )
        side = ops.sqrt(ratio)
        box_h = ops.cast(ops.round(side * height), "int32")
        box_w = ops.cast(ops.round(side * width), "int32")
        top = ops.cast(
            ops.floor(
                uniform([num_samples], y_seed)
                * ops.cast(height - box_h + 1, "float32")
            ),
            "int32",
        )
        left = ops.cast(
            ops.floor(
                uniform([num_samples], x_seed)
                * ops.cast(width - box_w + 1, "float32")
            ),
            "int32",
        )
        rows = ops.arange(height, dtype="int32")[None, :]
        cols = ops.arange(width, dtype="int32")[None, :]
        in_rows = ops.logical_and(
            rows >= top[:, None], rows < (top + box_h)[:, None]
        )
        in_cols = ops.logical_and(
            cols >= left[:, None], cols < (left + box_w)[:, None]
        )
        mask = ops.logical_and(in_rows[:, :, None], in_cols[:, None, :])
        mask = mask[..., None]
        out = ops.where(
            mask, ops.take(x, partner, axis=0), ops.take(x, index, axis=0)
        )
        area = ops.cast(box_h * box_w, "float32") / float(height * width)
        return out, area

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha})
        return config
