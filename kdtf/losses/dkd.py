"""Decoupled knowledge distillation (Zhao et al., CVPR 2022)."""
import keras
from keras import ops

from kdtf.losses import logit_standardization as ls
from kdtf.losses.base import DistillationLoss, check_temperature


@keras.saving.register_keras_serializable(package="kdtf")
class DKD(DistillationLoss):
    """DKD: KD split into a target-class and a non-target-class term.

    With `p = softmax(z / tau)` and `t` the label of an example,

        TCKD = KL(b_T || b_S),  b = [p_t, 1 - p_t]
        NCKD = KL(q_T || q_S),  q = softmax over the classes other than t
        loss = tau^2 * (alpha * TCKD + beta * NCKD) * min(step / warmup_steps, 1)

    KD is `TCKD + (1 - p_t^T) * NCKD`: DKD weighs the non-target knowledge
    with its own `beta` instead of the teacher's target confidence. Every
    term is computed from log-softmaxes in float32 (no `log(0)`).

    DKD needs the labels (`needs = ("labels", "step")`, so `kdtf.Distiller`
    passes them). On rows without labels (synthetic inputs, unlabelled
    batches) the teacher's top class stands in for the label.

    Args:
        alpha: weight of the target-class term. Defaults to 1.0.
        beta: weight of the non-target-class term. Defaults to 8.0 (the
            paper's CIFAR-100 setting; it tunes beta per pair).
        temperature: `tau > 0`. Defaults to 4.0.
        warmup_steps: the loss grows linearly from 0 over this many optimizer
            steps (the paper warms up over 20 epochs); 0 for none.
        name: name of the loss. Defaults to "dkd".
        reduction: `keras.losses.Loss` reduction over the per-example values.
        logit_standardization: Z-score both models' logits over the classes
            before every softmax (Sun et al., CVPR 2024; see
            `kdtf.losses.logit_standardization`); `temperature` is then the
            base temperature (the paper: 2, with alpha and beta multiplied
            by 9). Defaults to False.

    Returns:
        Called as `loss(teacher_logits, student_logits, labels=y, step=s)`
        on `[B, C]` logits with `[B]` integer (or `[B, C]` one-hot) labels,
        the batch mean of the per-example loss.

    Example:

    >>> loss = kdtf.losses.DKD(alpha=1.0, beta=8.0, temperature=4.0)
    >>> loss(teacher_logits, student_logits, labels=y)
    """

    logit_loss = True
    needs = ("labels", "step")

    def __init__(self, alpha=1.0, beta=8.0, temperature=4.0, warmup_steps=0, name="dkd",
                 reduction="sum_over_batch_size", logit_standardization=False):
        super().__init__(name=name, reduction=reduction)
        self.logit_standardization = ls.check_flag(logit_standardization)
        for arg, value in (("alpha", alpha), ("beta", beta)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{arg}` must be a number >= 0; got {arg}={value!r}.")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"`warmup_steps` must be an int >= 0; got {warmup_steps!r}.")
        self.alpha, self.beta = float(alpha), float(beta)
        self.temperature = check_temperature(temperature)
        self.warmup_steps = warmup_steps

    def call(self, teacher_outputs, student_outputs, labels=None, step=None):
        if len(teacher_outputs.shape) != 2:
            raise ValueError(
                f"DKD takes logits of shape [batch, classes]; got {tuple(teacher_outputs.shape)}."
            )
        num_classes = teacher_outputs.shape[-1]
        target = _target_mask(labels, teacher_outputs, num_classes)
        if self.logit_standardization:
            teacher_outputs = ls.standardize(teacher_outputs)
            student_outputs = ls.standardize(student_outputs)
        tau = self.temperature
        log_p_t = ops.log_softmax(teacher_outputs / tau, axis=-1)
        log_p_s = ops.log_softmax(student_outputs / tau, axis=-1)
        tckd = _binary_kl(_log_target(log_p_t, target), _log_target(log_p_s, target))
        # Non-target distributions: the softmax with the target logit masked out.
        log_q_t = ops.log_softmax(teacher_outputs / tau - _MASK * target, axis=-1)
        log_q_s = ops.log_softmax(student_outputs / tau - _MASK * target, axis=-1)
        others = 1.0 - target
        nckd = ops.sum(others * ops.exp(log_q_t) * (log_q_t - log_q_s), axis=-1)
        loss = (tau * tau) * (self.alpha * tckd + self.beta * nckd)
        if self.warmup_steps and step is not None:
            ramp = ops.minimum(ops.cast(step, "float32") / float(self.warmup_steps), 1.0)
            loss = loss * ramp
        return loss

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta,
                "temperature": self.temperature, "warmup_steps": self.warmup_steps,
                "logit_standardization": self.logit_standardization}


# Subtracted from a logit to take its class out of a softmax.
_MASK = 1e9


def _target_mask(labels, teacher_outputs, num_classes):
    """One-hot float32 `[B, C]` of the labels, or of the teacher's top class."""
    if labels is None:
        index = ops.argmax(teacher_outputs, axis=-1)
    else:
        labels = ops.convert_to_tensor(labels)
        if len(labels.shape) == 2 and labels.shape[-1] == num_classes and num_classes > 1:
            index = ops.argmax(labels, axis=-1)
        else:
            index = ops.reshape(ops.cast(labels, "int32"), (-1,))
    return ops.one_hot(index, num_classes, dtype="float32")


def _log_target(log_p, target):
    """`(log p_t, log(1 - p_t))` per row, stable for p_t near 0 or 1."""
    log_pt = ops.sum(log_p * target, axis=-1)
    # log(1 - p_t) = logsumexp over the other classes.
    log_rest = ops.logsumexp(log_p - _MASK * target, axis=-1)
    return log_pt, log_rest


def _binary_kl(teacher, student):
    (t_pos, t_neg), (s_pos, s_neg) = teacher, student
    return ops.exp(t_pos) * (t_pos - s_pos) + ops.exp(t_neg) * (t_neg - s_neg)
