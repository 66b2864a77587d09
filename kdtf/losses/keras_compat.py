"""Keras's own distillation losses (`keras.distillation`) inside `kdtf.Distiller`.

`kdtf.Distiller` takes `keras.distillation.LogitsDistillation`,
`FeatureDistillation` and user subclasses of `keras.distillation.
DistillationLoss` as they are, so a keras.distillation user switches by
changing one import. `KerasDistillationLoss` is the bridge: it wraps such an
object into the call the Distiller's loss math makes,
`loss(teacher_outputs, student_outputs, sample_weight=None)`, and reads its
`teacher_layer_name` / `student_layer_name` like kdtf's feature losses.

One behaviour differs from keras.distillation on purpose. There, the default
`LogitsDistillation(loss="kl_divergence")` applies the KL divergence to the
temperature-scaled *logits* (its softmax branch runs only for a
`keras.losses.KLDivergence` object, not for the string or the function), which
is not a divergence between distributions at all. Here every KL divergence of a
`LogitsDistillation` is Hinton's KD, `tau^2 * KL(softmax(t / tau) ||
softmax(s / tau))` (`kdtf.losses.KD`), and a categorical cross-entropy on
probabilities gets the softened probabilities it expects. A one-time warning
says so. Every other loss runs exactly as keras.distillation runs it.
"""
import warnings

import keras
from keras import ops

from kdtf.losses.kd import KD

_WARNED = set()


def is_keras_distillation_loss(obj):
    """Whether `obj` is a `keras.distillation.DistillationLoss` (or subclass)."""
    try:
        from keras.src.distillation.distillation_loss import DistillationLoss
    except ImportError:  # pragma: no cover - Keras without keras.distillation
        return False
    return isinstance(obj, DistillationLoss)


def _is_kl(fn):
    if isinstance(fn, keras.losses.KLDivergence):
        return True
    return getattr(fn, "__name__", None) in ("kl_divergence", "kld", "kullback_leibler_divergence")


def _is_probability_cce(fn):
    if isinstance(fn, keras.losses.CategoricalCrossentropy):
        return not fn.fn_kwargs.get("from_logits", False)
    return getattr(fn, "__name__", None) == "categorical_crossentropy"


def _warn_once(key, message):
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, UserWarning, stacklevel=4)


class KerasDistillationLoss:
    """A `keras.distillation.DistillationLoss` as a kdtf distillation loss.

    Built by `kdtf.Distiller` for every Keras distillation loss it is given;
    `Distiller.distillation_losses` keeps the user's own objects.

    Args:
        keras_loss: a `keras.distillation.DistillationLoss` instance
            (`LogitsDistillation`, `FeatureDistillation` or a subclass).

    Returns:
        Called as `loss(teacher_outputs, student_outputs, sample_weight=None)`,
        a float32 scalar, scaled for `tf.distribute` as Keras losses are.
        `sample_weight` weighs the examples of the KD form of
        `LogitsDistillation`; other Keras losses ignore it, as in
        keras.distillation.

    Example:

    ```python
    loss = KerasDistillationLoss(keras.distillation.LogitsDistillation(3.0))
    value = loss(teacher_logits, student_logits)   # == kdtf.losses.KD(3.0)
    ```
    """

    def __init__(self, keras_loss):
        from keras.src.distillation.distillation_loss import LogitsDistillation

        self.keras_loss = keras_loss
        self.name = type(keras_loss).__name__
        self.teacher_layer_name = getattr(keras_loss, "teacher_layer_name", None)
        self.student_layer_name = getattr(keras_loss, "student_layer_name", None)
        self._kd = None
        self._soft_ce = None
        self.logit_loss = False
        # Softmax outputs: "log_probabilities" (converted, exact), "refuse"
        # (the loss needs the raw logits) or "as_is" (given the output).
        self.softmax_outputs = "as_is"
        if isinstance(keras_loss, LogitsDistillation):
            fn = keras_loss.loss
            if isinstance(fn, (list, tuple, dict)):
                raise ValueError(
                    f"{self.name}(loss={fn!r}): kdtf distils one output per loss; pass one "
                    "loss (not a structure), and for a multi-output model distil each output "
                    "with its own single-output Distiller."
                )
            if _is_kl(fn):
                self._kd = KD(temperature=keras_loss.temperature, name="logits_distillation")
                self.logit_loss = True
                self.softmax_outputs = "log_probabilities"
                _warn_once("kl", (
                    "kdtf: LogitsDistillation(loss='kl_divergence') is computed as Hinton's KD, "
                    "T^2 * KL(softmax(teacher/T) || softmax(student/T)). keras.distillation "
                    "applies the KL divergence to the scaled logits themselves unless the loss is "
                    "a keras.losses.KLDivergence object, so its values differ from kdtf's."
                ))
            elif _is_probability_cce(fn):
                self._soft_ce = fn
                self.logit_loss = True
                self.softmax_outputs = "log_probabilities"
                _warn_once("cce", (
                    "kdtf: LogitsDistillation(loss='categorical_crossentropy') gets "
                    "softmax(teacher/T) and softmax(student/T); keras.distillation passes the "
                    "scaled logits to a loss that expects probabilities."
                ))
            else:
                self.softmax_outputs = "refuse"

    def validate(self, teacher, student):
        """Runs the Keras loss's own `validate_model_compatibility` check."""
        check = getattr(self.keras_loss, "validate_model_compatibility", None)
        if check is not None:
            check(teacher, student)

    def __call__(self, teacher_outputs, student_outputs, sample_weight=None):
        cast = lambda t: ops.cast(t, "float32")  # noqa: E731
        teacher_outputs = keras.tree.map_structure(cast, teacher_outputs)
        student_outputs = keras.tree.map_structure(cast, student_outputs)
        self.keras_loss.validate_outputs(teacher_outputs, student_outputs)
        if self._kd is not None:
            return self._kd(teacher_outputs, student_outputs, sample_weight=sample_weight)
        if self._soft_ce is not None:
            tau = self.keras_loss.temperature
            value = ops.mean(self._soft_ce(ops.softmax(teacher_outputs / tau, axis=-1),
                                           ops.softmax(student_outputs / tau, axis=-1)))
        else:
            value = self.keras_loss.compute_loss(teacher_outputs, student_outputs)
        value = ops.cast(value, "float32")
        if len(value.shape) > 0:
            raise ValueError(
                f"{self.name}.compute_loss returned a tensor of shape {tuple(value.shape)}; a "
                "distillation loss must return a scalar (reduce it, e.g. with keras.ops.mean)."
            )
        from keras.src.losses import loss as keras_loss_lib

        return keras_loss_lib.scale_loss_for_distribution(value)
