"""DIST: knowledge distillation from a stronger teacher (Huang et al., 2022)."""
import keras
from keras import ops

from kdtf import distribute
from kdtf.losses import logit_standardization as ls
from kdtf.losses.base import DistillationLoss, check_temperature

_EPS = 1e-8


def _rowwise_pearson(a, b):
    """Pearson correlation of each row of `a` with the same row of `b`."""
    a = a - ops.mean(a, axis=-1, keepdims=True)
    b = b - ops.mean(b, axis=-1, keepdims=True)
    num = ops.sum(a * b, axis=-1)
    # The clamp keeps the gradient of sqrt finite for a constant row (the
    # value is unchanged: 1e-15 is far below _EPS).
    den = _norm(a) * _norm(b)
    return num / (den + _EPS)


def _norm(a):
    return ops.sqrt(ops.maximum(ops.sum(a * a, axis=-1), 1e-30))


@keras.saving.register_keras_serializable(package="kdtf")
class DIST(DistillationLoss):
    """DIST: match inter- and intra-class relations by Pearson correlation.

    With `Y = softmax(z / tau)` for teacher and student (`[B, C]`):
    `tau^2 * (beta * (1 - mean_n rho(Y_S[n], Y_T[n])) +
    gamma * (1 - mean_c rho(Y_S[:, c], Y_T[:, c])))`, where `rho` is the
    Pearson correlation with `1e-8` added to the product of the norms.
    Dense outputs `[B, ..., C]` are flattened to `[B * ..., C]`.

    The intra-class term correlates each class column over the batch, so it
    needs at least 2 examples. Under `tf.distribute` it is by default
    computed over each replica's own batch, as the reference implementation
    does (each replica sees `global_batch / replicas` examples, so its
    correlations are noisier than on one device with the same global batch).
    With `global_batch=True` the softened outputs are gathered from all
    replicas (of all workers) before the intra-class term, which then equals
    the single-device value for the same global batch, at the cost of one
    all-gather of `[batch, classes]` per step; gradients flow back to each
    replica's own rows.

    Args:
        temperature: softening temperature `tau > 0`. Defaults to 1.0
            (ImageNet setting; the paper uses 4.0 on CIFAR-100).
        beta: weight of the inter-class (per-example) term. Defaults to 1.0.
        gamma: weight of the intra-class (per-class) term. Defaults to 1.0.
        global_batch: compute the intra-class term over the global batch
            under `tf.distribute` (see above). Defaults to False.
        name: name of the loss. Defaults to `"dist"`.
        reduction: `keras.losses.Loss` reduction. The per-example value is
            `tau^2 * (beta * (1 - rho_n) + gamma * L_intra)`, so the mean
            over the batch equals the formula above; sample weights weight the
            inter-class term of each example.
        logit_standardization: Z-score both models' logits over the classes
            before the softmax (Sun et al., CVPR 2024; see
            `kdtf.losses.logit_standardization`); `temperature` is then the
            base temperature. The authors' code applies it to KD, DKD and
            MLKD; for DIST it is the same pre-process. Defaults to False.

    Returns:
        Called as `loss(teacher_logits, student_logits)`, a scalar.

    Example:
    >>> loss = kdtf.losses.DIST(temperature=4.0)
    >>> loss(teacher_logits, student_logits)
    """

    logit_loss = True

    def __init__(
        self,
        temperature=1.0,
        beta=1.0,
        gamma=1.0,
        name="dist",
        reduction="sum_over_batch_size",
        global_batch=False,
        logit_standardization=False,
    ):
        super().__init__(name=name, reduction=reduction)
        self.logit_standardization = ls.check_flag(logit_standardization)
        self.temperature = check_temperature(temperature)
        for arg, value in (("beta", beta), ("gamma", gamma)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{arg}` must be a number >= 0; got {value!r}.")
        self.beta = float(beta)
        self.gamma = float(gamma)
        if not isinstance(global_batch, bool):
            raise ValueError(f"`global_batch` must be True or False; got {global_batch!r}.")
        self.global_batch = global_batch

    def call(self, teacher_outputs, student_outputs):
        num_classes = teacher_outputs.shape[-1]
        batch = teacher_outputs.shape[0]
        if batch is not None and len(teacher_outputs.shape) == 2 and batch < 2 and self.gamma:
            raise ValueError(
                "DIST's intra-class term correlates each class over the batch "
                f"and needs a batch of at least 2 examples; got a batch of "
                f"{batch}. Use a larger batch_size (or gamma=0 to drop the "
                "intra-class term)."
            )
        z_t = ops.reshape(teacher_outputs, (-1, num_classes))
        z_s = ops.reshape(student_outputs, (-1, num_classes))
        if self.logit_standardization:
            z_t, z_s = ls.standardize(z_t), ls.standardize(z_s)
        tau = self.temperature
        y_t = ops.softmax(z_t / tau, axis=-1)
        y_s = ops.softmax(z_s / tau, axis=-1)
        inter = 1.0 - _rowwise_pearson(y_s, y_t)
        if self.gamma:
            if self.global_batch:
                y_s_all, y_t_all = distribute.all_gather(y_s), distribute.all_gather(y_t)
            else:
                y_s_all, y_t_all = y_s, y_t
            intra = 1.0 - ops.mean(
                _rowwise_pearson(ops.transpose(y_s_all), ops.transpose(y_t_all))
            )
        else:  # no intra-class term: any batch size, even 1
            intra = 0.0
        per_row = (tau * tau) * (self.beta * inter + self.gamma * intra)
        # One value per example: average the rows that belong to it.
        per_example_shape = ops.shape(teacher_outputs)[:-1]
        per_row = ops.reshape(per_row, per_example_shape)
        extra_axes = tuple(range(1, len(teacher_outputs.shape) - 1))
        if extra_axes:
            per_row = ops.mean(per_row, axis=extra_axes)
        return per_row

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "beta": self.beta,
            "gamma": self.gamma,
            "global_batch": self.global_batch,
            "logit_standardization": self.logit_standardization,
        }
