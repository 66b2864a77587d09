"""Shared machinery for distillation losses."""
import keras
from keras import ops
from keras.src.losses import loss as keras_loss


class DistillationLoss(keras.losses.Loss):
    """Base class for losses called as `loss(teacher_outputs, student_outputs)`.

    Subclasses implement `call(teacher_outputs, student_outputs)` and return one
    value per example (shape `[B]`); reduction, sample weights and the scaling of
    the loss under `tf.distribute` are handled by `keras.losses.Loss`. Both
    arguments are cast to float32 before `call`, so the loss is computed in
    float32 even when the models run in mixed precision.

    The loss contract: a loss declares in the class attribute `needs` what it
    needs besides the two outputs, from `CONTEXT` ("labels": the integer
    labels of the real rows, or None on synthetic or unlabelled rows;
    "step": the optimizer's update count, a scalar tensor, for schedules such
    as warm-ups (None in evaluation, where a warm-up counts as done); "training": True in train steps, for adapters with
    BatchNorm; "index": the examples' int positions in the training set, shape
    `[B]`, for per-example state such as CRD's memory bank (None on synthetic
    rows and on batches that carry none; see `kdtf.Distiller`)). `kdtf.Distiller` passes exactly those to `call` as keyword
    arguments, so a method needs no edit of the Distiller.

    Subclasses whose two inputs may differ in shape (feature losses with an
    adapter) set the class attribute `same_shape = False`; otherwise a shape
    mismatch raises a ValueError naming both arguments. Losses on
    classification logits set `logit_loss = True`: `kdtf.Distiller` then
    passes them `log p` for a model whose output is a softmax `p` (exact:
    `softmax(log p / T) == softmax(z / T)`).

    Args:
        name: name of the loss.
        reduction: a `keras.losses.Loss` reduction. Defaults to
            `"sum_over_batch_size"`: the mean over the batch.
    """

    same_shape = True
    # True for losses on classification logits (softmax distributions): the
    # Distiller gives them log-probabilities of softmax-output models (exact)
    # and refuses them on a one-output model.
    logit_loss = False
    # What the loss needs besides the two outputs, from `CONTEXT`; the
    # Distiller passes exactly these to `call` as keyword arguments.
    needs = ()

    def __init__(self, name=None, reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction, dtype="float32")

    def __call__(self, teacher_outputs, student_outputs, sample_weight=None, **context):
        teacher_outputs = _as_float32(teacher_outputs)
        student_outputs = _as_float32(student_outputs)
        if self.same_shape:
            check_same_shape(teacher_outputs, student_outputs, type(self).__name__)
        if not context:
            return super().__call__(
                teacher_outputs, student_outputs, sample_weight=sample_weight
            )
        unknown = sorted(set(context) - set(self.needs))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got {unknown}, which it does not declare in `needs` "
                f"({list(self.needs)}); valid context names: {list(CONTEXT)}."
            )
        values = self.call(teacher_outputs, student_outputs, **context)
        return keras_loss.reduce_weighted_values(
            values, sample_weight=sample_weight, reduction=self.reduction, dtype=self.dtype
        )

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}


# The names a loss may list in `needs`, and what the Distiller passes.
CONTEXT = ("labels", "step", "training", "index")


def _as_float32(x):
    return keras.tree.map_structure(
        lambda t: ops.cast(t, "float32"), x
    )


def shapes_compatible(a, b):
    """True when two static shapes agree wherever both dimensions are known."""
    a, b = tuple(a), tuple(b)
    return len(a) == len(b) and all(
        p is None or q is None or p == q for p, q in zip(a, b)
    )


def check_same_shape(teacher_outputs, student_outputs, loss_name):
    """Raises a ValueError when static teacher and student shapes disagree."""
    t_shape = tuple(teacher_outputs.shape)
    s_shape = tuple(student_outputs.shape)
    if not shapes_compatible(t_shape, s_shape):
        raise ValueError(
            f"{loss_name}: teacher_outputs and student_outputs must have the "
            f"same shape; got teacher_outputs {t_shape} and student_outputs "
            f"{s_shape}. Distilling logits needs a student with as many "
            "outputs (classes) as the teacher."
        )


def check_temperature(temperature):
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(
            f"`temperature` must be a positive number; got {temperature!r}."
        )
    if not temperature > 0:
        raise ValueError(
            f"`temperature` must be > 0; got temperature={temperature}."
        )
    return float(temperature)
