"""Vanilla knowledge distillation (Hinton et al., 2015)."""
import keras
from keras import ops

from kdtf.losses import logit_standardization as ls
from kdtf.losses.base import DistillationLoss, check_temperature


@keras.saving.register_keras_serializable(package="kdtf")
class KD(DistillationLoss):
    """Hinton's KD: `tau^2 * KL(softmax(t / tau) || softmax(s / tau))`.

    Computed with log-softmax in float32, so it is exact for any logits: no
    clipping of probabilities, no `log(0)`.

    Args:
        temperature: softening temperature `tau > 0`. Defaults to 4.0, the
            common CIFAR setting.
        name: name of the loss. Defaults to `"kd"`.
        reduction: `keras.losses.Loss` reduction over the per-example values.
        logit_standardization: Z-score both models' logits over the classes
            before the softmax (Sun et al., CVPR 2024; see
            `kdtf.losses.logit_standardization`); `temperature` is then the
            paper's base temperature (2 in its experiments, which also weigh
            KD by 9 and the task loss by 0.1). The loss becomes invariant to a
            shift and a positive scale of either model's logits. Defaults to
            False.

    Returns:
        Called as `loss(teacher_logits, student_logits, sample_weight=None)`
        with logits of shape `[B, C]` (or `[B, ..., C]`), it returns the
        (weighted) batch mean of the per-example KL times `tau^2`.

    Example:
    >>> loss = kdtf.losses.KD(temperature=4.0)
    >>> loss(teacher_logits, student_logits)
    """

    logit_loss = True

    def __init__(self, temperature=4.0, name="kd", reduction="sum_over_batch_size",
                 logit_standardization=False):
        super().__init__(name=name, reduction=reduction)
        self.temperature = check_temperature(temperature)
        self.logit_standardization = ls.check_flag(logit_standardization)

    def call(self, teacher_outputs, student_outputs):
        if self.logit_standardization:
            teacher_outputs = ls.standardize(teacher_outputs)
            student_outputs = ls.standardize(student_outputs)
        tau = self.temperature
        log_p_t = ops.log_softmax(teacher_outputs / tau, axis=-1)
        log_p_s = ops.log_softmax(student_outputs / tau, axis=-1)
        kl = ops.sum(ops.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
        return (tau * tau) * kl

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature,
                "logit_standardization": self.logit_standardization}
