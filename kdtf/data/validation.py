"""Input checks for arrays handed to kdtf: clear errors instead of NaN losses."""
import numpy as np


def _as_array(value, name):
    try:
        return np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise TypeError(
            f"`{name}` could not be converted to a numpy array: {e}"
        ) from e


def validate_arrays(x, y=None, num_classes=None, name="x"):
    """Checks inputs (and optionally integer class labels) before training.

    Args:
        x: Array-like of inputs, first axis = examples. Must be numeric
            (bool, integer or floating point), non-empty, and finite.
        y: Optional array-like of integer class labels, shape `(N,)` or
            `(N, 1)`. Integer-valued floats (e.g. `3.0`) are accepted.
        num_classes: Optional int. When given, every label must lie in
            `[0, num_classes - 1]`; otherwise labels must be `>= 0`.
        name: Name of `x` used in error messages (e.g. `"x_train"`). Labels
            are reported as `"y"` + the part of `name` after `"x"`.

    Returns:
        None. Raises on the first problem found.

    Raises:
        TypeError: non-numeric (or complex) `x`, or non-numeric labels.
        ValueError: empty `x`, NaN/Inf in `x` (with the count and the index
            of the first one), labels that are not integers, out of range,
            of the wrong rank, or a different number of labels than inputs.

    Example:

    >>> import numpy as np
    >>> validate_arrays(np.zeros((4, 3)), np.array([0, 1, 2, 1]), num_classes=3)
    >>> validate_arrays(np.zeros((4, 3)), np.array([0, 1, 5, 1]), num_classes=3)
    Traceback (most recent call last):
    ...
    ValueError: `y` contains label 5 at index 2, outside the valid range [0, 2] (num_classes=3).
    """
    y_name = "y" + name[1:] if name.startswith("x") else f"labels of {name}"
    x = _as_array(x, name)
    if x.dtype.kind not in "biuf":
        raise TypeError(
            f"`{name}` must have a numeric dtype (bool, int, uint or float); "
            f"got dtype {x.dtype}."
        )
    if x.ndim == 0:
        raise ValueError(
            f"`{name}` must have a leading example axis; got a scalar."
        )
    if x.shape[0] == 0 or x.size == 0:
        raise ValueError(f"`{name}` is empty (shape {x.shape}).")
    if x.dtype.kind == "f":
        finite = np.isfinite(x)
        if not finite.all():
            bad = ~finite
            n_nan = int(np.isnan(x).sum())
            n_inf = int(bad.sum()) - n_nan
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"`{name}` contains {int(bad.sum())} non-finite values "
                f"({n_nan} NaN, {n_inf} Inf); the first is at index {first} "
                f"(example {first[0]})."
            )
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(
            num_classes, (int, np.integer)
        ) or num_classes < 1:
            raise ValueError(
                f"`num_classes` must be a positive int; got {num_classes!r}."
            )
    if y is None:
        return None

    y = _as_array(y, y_name)
    if y.dtype.kind not in "iuf":
        raise TypeError(
            f"`{y_name}` must hold integer class labels (int, uint or "
            f"integer-valued float); got dtype {y.dtype}."
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"`{y_name}` must be integer class labels of shape (N,) or (N, 1); "
            f"got shape {y.shape}. For one-hot labels pass "
            f"`np.argmax(y, axis=-1)`."
        )
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"`{name}` and `{y_name}` have different lengths: "
            f"{x.shape[0]} inputs vs {y.shape[0]} labels."
        )
    if y.dtype.kind == "f":
        not_int = ~np.isfinite(y) | (y != np.round(y))
        if not_int.any():
            i = int(np.argmax(not_int))
            raise ValueError(
                f"`{y_name}` must hold integer class labels; found "
                f"{y[i].item()!r} at index {i} ({int(not_int.sum())} non-integer "
                f"values in total)."
            )
    if num_classes is not None:
        bad = (y < 0) | (y >= num_classes)
        valid = f"[0, {num_classes - 1}] (num_classes={num_classes})"
    else:
        bad = y < 0
        valid = "[0, inf) (labels must be non-negative)"
    if bad.any():
        i = int(np.argmax(bad))
        value = y[i].item()
        if isinstance(value, float):
            value = int(value)
        raise ValueError(
            f"`{y_name}` contains label {value} at index {i}, outside the "
            f"valid range {valid}."
        )
    return None
