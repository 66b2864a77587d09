"""Losses on Gaussian (regression) outputs of `kdtf.heads.GaussianHead`."""
import math

import keras
from keras import ops

from kdtf.heads import split_gaussian
from kdtf.losses.base import DistillationLoss

_LOG_2PI = math.log(2.0 * math.pi)


@keras.saving.register_keras_serializable(package="kdtf")
class GaussianNLL(keras.losses.Loss):
    """Gaussian negative log-likelihood of labels under a `GaussianHead`.

    The task loss that trains a regression teacher (or an ERM student) to
    predict a mean *and* a variance, so that the teacher has an uncertainty
    to transfer. Per example, summed over the `D` output dimensions:

        0.5 * (log_var + (y - mean)^2 / exp(log_var) + log(2 pi))

    Computed in float32.

    Args:
        name: name of the loss. Defaults to `"gaussian_nll"`.
        reduction: `keras.losses.Loss` reduction over the per-example values.
            Defaults to the batch mean.

    Returns:
        Called as `loss(y_true, outputs, sample_weight=None)` with `y_true`
        of shape `[B, D]` (or `[B]` when `D == 1`) and `outputs` of shape
        `[B, 2 * D]` from a `GaussianHead`, the reduced NLL.

    Example:

    >>> model.compile(optimizer="adam", loss=kdtf.losses.GaussianNLL())
    """

    def __init__(self, name="gaussian_nll", reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction, dtype="float32")

    def call(self, y_true, y_pred):
        mean, log_var = split_gaussian(y_pred, arg="y_pred (outputs)")
        y_true = _match_targets(y_true, mean)
        nll = 0.5 * (log_var + ops.square(y_true - mean) * ops.exp(-log_var) + _LOG_2PI)
        return ops.sum(nll, axis=-1)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="kdtf")
class MeanMSE(DistillationLoss):
    """"KD on the means": mean squared error between teacher and student means.

    The regression analogue of matching logits: only the predicted means of
    two `GaussianHead`s are compared (averaged over the `D` output
    dimensions); the variances are ignored, so the student's variance is
    learnt from the task loss alone.

    Args:
        name: name of the loss. Defaults to `"mean_mse"`.
        reduction: `keras.losses.Loss` reduction over the per-example values.

    Returns:
        Called as `loss(teacher_outputs, student_outputs, sample_weight=None)`
        with `[B, 2 * D]` `GaussianHead` outputs, the reduced MSE of means.

    Example:

    >>> distiller = kdtf.Distiller(teacher, student,
    ...                            distillation_losses=kdtf.losses.MeanMSE())
    """

    family = "gaussian"

    def __init__(self, name="mean_mse", reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)

    def call(self, teacher_outputs, student_outputs):
        mean_t, _ = split_gaussian(teacher_outputs, arg="teacher_outputs")
        mean_s, _ = split_gaussian(student_outputs, arg="student_outputs")
        return ops.mean(ops.square(ops.stop_gradient(mean_t) - mean_s), axis=-1)


def _match_targets(y_true, mean):
    """Reshapes `[B]` targets to `[B, 1]`; checks the target dimension."""
    d = mean.shape[-1]
    if len(y_true.shape) == len(mean.shape) - 1 and d == 1:
        y_true = ops.expand_dims(y_true, -1)
    t = y_true.shape[-1] if len(y_true.shape) else None
    if len(y_true.shape) != len(mean.shape) or (t is not None and d is not None and t != d):
        raise ValueError(
            f"GaussianNLL: y_true of shape {tuple(y_true.shape)} does not match "
            f"GaussianHead outputs with {d} output dimension(s) (outputs of "
            f"shape [B, {2 * d if d else None}]); y_true must be [B, {d}]"
            + (" or [B]." if d == 1 else ".")
        )
    return y_true
