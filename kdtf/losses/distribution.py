"""Distribution matching KL(teacher || student) for extracurricular learning."""
import math

import keras
from keras import ops

from kdtf.backend import tfp as tfp_backend
from kdtf.heads import FAMILIES
from kdtf.heads import split_gaussian
from kdtf.losses.base import DistillationLoss
from kdtf.losses.base import check_temperature

UNCERTAINTY_WEIGHTINGS = (None, "entropy", "variance")


@keras.saving.register_keras_serializable(package="kdtf")
class DistributionKL(DistillationLoss):
    """KL(teacher || student) between the models' output distributions.

    The matching loss of extracurricular learning (Pouransari et al., 2021):
    used on real and synthetic inputs alike, it asks the student to copy the
    teacher's whole predictive distribution, including where the teacher is
    uncertain. The KL is computed by TFP's `kl_divergence` in float32.

    - `family="categorical"`: outputs are logits; the distributions are
      `Categorical(logits / temperature)` and the KL is multiplied by
      `temperature**2`, exactly as `kdtf.losses.KD`.
    - `family="gaussian"`: outputs are `kdtf.heads.GaussianHead` tensors
      `[B, 2 * D]` = concat(mean, log-variance); per output dimension the
      closed form
      `log(s_S / s_T) + (s_T^2 + (m_T - m_S)^2) / (2 s_S^2) - 1/2`
      is summed over the `D` dimensions. `temperature` must be 1.

    The teacher is a fixed target: no gradient flows into its outputs.

    Non-finite teacher variances (a NaN/Inf teacher log-variance, or one so
    large that exp overflows) are a bug upstream, not something to average
    away. In eager mode the loss raises a `ValueError` at once. Inside a
    compiled train step (`tf.function`, as in `fit`) it adds
    `tf.debugging.assert_all_finite`, so the step fails with
    `tf.errors.InvalidArgumentError` whose message starts with
    "DistributionKL: non-finite teacher variances". (Under XLA,
    `jit_compile=True`, TensorFlow may drop that check; the `Distiller`'s
    non-finite guard then still stops training on the NaN loss.)

    Uncertainty weighting (optional) reweights the examples of each call by
    the teacher's uncertainty `u_i`, normalised over the batch:
    `w_i = u_i / mean_j(u_j)` (no gradient), so the weights average 1 and the
    loss keeps its scale while examples the teacher is unsure about count
    more. Meant for synthetic inputs, where the teacher is the only
    supervisor and confident regions carry little information:
    - `"entropy"`: categorical: `H(p_T) / log(C)` in [0, 1]; gaussian:
      `exp(mean_d H_d) / sqrt(2 pi e)`, i.e. the geometric mean of the teacher
      standard deviations (the differential entropy itself can be negative).
    - `"variance"`: categorical: `1 - sum_c p_c^2` (the total variance of the
      one-hot label under the teacher); gaussian: the mean teacher variance.
    The loss cannot tell real from synthetic rows: the `Distiller` calls it
    once on the real and once on the synthetic rows, so each part is weighted
    (and normalised) separately, and the real part is reweighted too.

    Args:
        family: "categorical" or "gaussian".
        temperature: softening temperature `tau > 0` of the categorical
            family. Defaults to 1.0.
        uncertainty_weighting: None, "entropy" or "variance".
        name: name of the loss. Defaults to `"distribution_kl"`.
        reduction: `keras.losses.Loss` reduction over the per-example values.

    Returns:
        Called as `loss(teacher_outputs, student_outputs, sample_weight=None)`,
        the (weighted) batch mean of the per-example KL.

    Raises:
        ValueError: for an unknown family or weighting, a temperature other
            than 1 with the gaussian family, or (gaussian family) outputs
            with an odd last dimension, i.e. classification logits.

    Example:

    >>> distiller = kdtf.Distiller(
    ...     teacher, student,
    ...     distillation_losses=kdtf.losses.DistributionKL("gaussian"),
    ...     sampler=kdtf.samplers.UniformBox(margin=0.1))
    """

    def __init__(
        self,
        family="categorical",
        temperature=1.0,
        uncertainty_weighting=None,
        name="distribution_kl",
        reduction="sum_over_batch_size",
    ):
        super().__init__(name=name, reduction=reduction)
        if family not in FAMILIES:
            raise ValueError(
                f"`family` must be one of {list(FAMILIES)}; got family={family!r}."
            )
        self.family = family
        self.temperature = check_temperature(temperature)
        if family == "gaussian" and self.temperature != 1.0:
            raise ValueError(
                "`temperature` applies to family='categorical' only; "
                f"family='gaussian' needs temperature=1.0, got {temperature}."
            )
        if uncertainty_weighting not in UNCERTAINTY_WEIGHTINGS:
            raise ValueError(
                "`uncertainty_weighting` must be one of "
                f"{list(UNCERTAINTY_WEIGHTINGS)}; got {uncertainty_weighting!r}."
            )
        self.uncertainty_weighting = uncertainty_weighting

    @property
    def logit_loss(self):
        """Categorical outputs are logits; Gaussian ones are not."""
        return self.family == "categorical"

    def call(self, teacher_outputs, student_outputs):
        teacher_outputs = ops.stop_gradient(teacher_outputs)
        if self.family == "categorical":
            kl, uncertainty = self._categorical(teacher_outputs, student_outputs)
        else:
            kl, uncertainty = self._gaussian(teacher_outputs, student_outputs)
        if self.uncertainty_weighting is None:
            return kl
        weights = uncertainty / (ops.mean(uncertainty) + 1e-12)
        return ops.stop_gradient(weights) * kl

    def _categorical(self, teacher_outputs, student_outputs):
        tfd = tfp_backend.distributions()
        tau = self.temperature
        p_t = tfd.Categorical(logits=teacher_outputs / tau)
        p_s = tfd.Categorical(logits=student_outputs / tau)
        kl = (tau * tau) * tfd.kl_divergence(p_t, p_s)
        uncertainty = None
        if self.uncertainty_weighting == "entropy":
            num_classes = teacher_outputs.shape[-1]
            uncertainty = p_t.entropy() / math.log(max(int(num_classes or 2), 2))
        elif self.uncertainty_weighting == "variance":
            probs = ops.softmax(teacher_outputs / tau, axis=-1)
            uncertainty = 1.0 - ops.sum(ops.square(probs), axis=-1)
        return kl, uncertainty

    def _gaussian(self, teacher_outputs, student_outputs):
        tfd = tfp_backend.distributions()
        mean_t, log_var_t = split_gaussian(teacher_outputs, arg="teacher_outputs")
        mean_s, log_var_s = split_gaussian(student_outputs, arg="student_outputs")
        log_var_t = check_finite_variances(log_var_t)
        p_t = tfd.Normal(loc=mean_t, scale=ops.exp(0.5 * log_var_t))
        p_s = tfd.Normal(loc=mean_s, scale=ops.exp(0.5 * log_var_s))
        kl = ops.sum(tfd.kl_divergence(p_t, p_s), axis=-1)
        uncertainty = None
        if self.uncertainty_weighting == "entropy":
            uncertainty = ops.exp(0.5 * ops.mean(log_var_t, axis=-1))
        elif self.uncertainty_weighting == "variance":
            uncertainty = ops.mean(ops.exp(log_var_t), axis=-1)
        return kl, uncertainty

    def get_config(self):
        return {
            **super().get_config(),
            "family": self.family,
            "temperature": self.temperature,
            "uncertainty_weighting": self.uncertainty_weighting,
        }


_NON_FINITE = (
    "DistributionKL: non-finite teacher variances (the teacher's "
    "log-variance is NaN/Inf or exp(log_var) overflows); check the teacher, "
    "e.g. give it a kdtf.heads.GaussianHead, which clamps the log-variance."
)


def check_finite_variances(log_var):
    """Raises on non-finite teacher variances; returns `log_var`.

    Eager tensors are checked with `keras.ops` and a `ValueError` is raised
    at once. Symbolic TensorFlow tensors (inside `tf.function`) get a
    `tf.debugging.assert_all_finite` on the variances, which fails the step
    with `tf.errors.InvalidArgumentError` carrying the same message. Other
    backends' traced values are returned unchecked.

    Args:
        log_var: teacher log-variances.

    Returns:
        `log_var` (in graph mode, with the check attached).
    """
    variance = ops.exp(log_var)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            variance = tf.debugging.assert_all_finite(variance, _NON_FINITE)
            log_var = tf.debugging.assert_all_finite(log_var, _NON_FINITE)
            with tf.control_dependencies([variance]):
                return tf.identity(log_var)
    try:
        finite = bool(
            ops.convert_to_numpy(
                ops.all(ops.isfinite(log_var)) & ops.all(ops.isfinite(variance))
            )
        )
    except TypeError:  # a tracer of another backend: leave it unchecked
        return log_var
    if not finite:
        raise ValueError(_NON_FINITE)
    return log_var
