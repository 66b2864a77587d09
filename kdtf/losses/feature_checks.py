"""Argument and shape checks shared by the feature losses (AT, RKD, PKT)."""
from keras import ops


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
