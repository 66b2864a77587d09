"""Argument and shape checks shared by the feature losses (AT, RKD, PKT), and
`EmbeddingLoss`, the base of the losses on one pair of embedding layers."""
from keras import ops

from kdtf.losses.base import DistillationLoss


def check_layer_name(arg, value):
    """A non-empty str, or a TypeError naming `arg`."""
    if not isinstance(value, str) or not value:
        raise TypeError(f"`{arg}` must be a non-empty str (a layer name); got {value!r}.")
    return value


def check_weight(arg, value):
    """A number >= 0, or a ValueError naming `arg`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"`{arg}` must be a number >= 0; got {arg}={value!r}.")
    return float(value)


def describe(loss, role):
    """`"teacher_outputs (layer 'stage2')"`: the argument and where it comes from."""
    return f"{role}_outputs (layer {getattr(loss, f'{role}_layer_name')!r})"


def check_batch(loss, teacher_outputs, student_outputs):
    """Raises a ValueError naming both arguments when static batch sizes differ."""
    t_batch, s_batch = teacher_outputs.shape[0], student_outputs.shape[0]
    if t_batch is not None and s_batch is not None and t_batch != s_batch:
        raise ValueError(
            f"{type(loss).__name__}: {describe(loss, 'teacher')} and "
            f"{describe(loss, 'student')} must have the same batch size; got shapes "
            f"{tuple(teacher_outputs.shape)} and {tuple(student_outputs.shape)}."
        )


def check_min_rank(loss, shape, role, min_rank, what):
    """Raises a ValueError naming the argument when `shape` has rank < `min_rank`."""
    if len(shape) < min_rank:
        raise ValueError(
            f"{type(loss).__name__} takes {what}; {describe(loss, role)} has shape "
            f"{tuple(shape)}."
        )


def flatten(x):
    """`[B, ...]` -> `[B, prod(...)]` (rank 2 is returned unchanged)."""
    if len(x.shape) == 2:
        return x
    size = 1
    for d in x.shape[1:]:
        if d is None:
            return ops.reshape(x, (ops.shape(x)[0], -1))
        size *= int(d)
    return ops.reshape(x, (-1, size))


class EmbeddingLoss(DistillationLoss):
    """Base of the losses that relate the examples of a batch through one pair of
    embedding layers (RKD, PKT).

    The `kdtf.Distiller` feeds it the outputs of `teacher_layer_name` and
    `student_layer_name`, each `[B, D, ...]` and flattened per example; the
    two widths may differ (the losses compare relations within the batch, so
    no adapter is needed). Subclasses implement `call` on `embeddings(...)`.

    Args:
        teacher_layer_name: the teacher layer whose output is the embedding.
        student_layer_name: the student layer to match.
        name: name of the loss.
        reduction: `keras.losses.Loss` reduction over the per-example values.
    """

    same_shape = False

    def __init__(self, teacher_layer_name, student_layer_name, name=None,
                 reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        self.teacher_layer_name = check_layer_name("teacher_layer_name", teacher_layer_name)
        self.student_layer_name = check_layer_name("student_layer_name", student_layer_name)

    def build_adapter(self, teacher_shape, student_shape):
        """Checks the per-example feature shapes (the `kdtf.Distiller` calls this
        once with the two layers' static shapes, without the batch axis), so a
        wrong layer fails when the Distiller is built; no adapter is needed.

        Returns:
            None.

        Raises:
            ValueError: a layer's output has no feature axis.
        """
        self._check_ranks((None, *teacher_shape), (None, *student_shape))
        return None

    def embeddings(self, teacher_outputs, student_outputs):
        """Both outputs checked (rank, batch) and flattened to `[B, D]`."""
        self._check_ranks(teacher_outputs.shape, student_outputs.shape)
        check_batch(self, teacher_outputs, student_outputs)
        return flatten(teacher_outputs), flatten(student_outputs)

    def _check_ranks(self, teacher_shape, student_shape):
        for role, shape in (("teacher", teacher_shape), ("student", student_shape)):
            check_min_rank(self, shape, role, 2, "embeddings [batch, features, ...]")

    def get_config(self):
        return {**super().get_config(), "teacher_layer_name": self.teacher_layer_name,
                "student_layer_name": self.student_layer_name}
