"""Evaluation metrics for distillation: accuracy, teacher agreement, KL, ECE,
per-class accuracy and (teacher vs student) confusion matrices.

NumPy functions (`accuracy`, `agreement`, `kl_to_teacher`,
`expected_calibration_error`, `reliability_curve`, `per_class_accuracy`,
`confusion_matrix`, `teacher_student_confusion`) take arrays and return
Python floats / numpy arrays, computed in float64. Streaming Keras metrics
(`TeacherAgreement`, `KLToTeacher`, `ExpectedCalibrationError`) compute the same
quantities batch by batch inside `model.evaluate` / training loops; they take
`(y_true, y_pred)` = `(teacher_logits, student_logits)` or `(labels, logits)`.
"""
import keras
import numpy as np
from keras import ops


def _logits(value, name, ndim=2):
    a = np.asarray(value)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must be numeric; got dtype {a.dtype}.")
    if a.ndim != ndim:
        raise ValueError(
            f"`{name}` must have shape [N, num_classes]; got shape {a.shape}."
        )
    if a.shape[0] == 0:
        raise ValueError(f"`{name}` is empty (shape {a.shape}).")
    return a.astype(np.float64)


def _labels(y, logits, name="y"):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == logits.shape[1] and y.shape[1] > 1:
        y = np.argmax(y, axis=-1)  # One-hot or soft labels.
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"`{name}` must be integer labels [N] or one-hot [N, C]; got "
            f"shape {y.shape}."
        )
    if y.shape[0] != logits.shape[0]:
        raise ValueError(
            f"`{name}` has {y.shape[0]} labels but `logits` has "
            f"{logits.shape[0]} rows."
        )
    return y.astype(np.int64)


def _same_shape(a, b, name_a, name_b):
    if a.shape != b.shape:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same shape; got "
            f"{a.shape} and {b.shape}."
        )


def _log_softmax(z):
    z = z - np.max(z, axis=-1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def _softmax(z):
    return np.exp(_log_softmax(z))


def _check_num_bins(num_bins):
    if isinstance(num_bins, bool) or not isinstance(
        num_bins, (int, np.integer)
    ) or num_bins < 1:
        raise ValueError(f"`num_bins` must be an int >= 1; got {num_bins!r}.")
    return int(num_bins)


def accuracy(y, logits):
    """Top-1 accuracy.

    Args:
        y: Integer labels `[N]` (or one-hot `[N, C]`).
        logits: `[N, C]` logits (or probabilities).

    Returns:
        Float in `[0, 1]`.

    Example:

    >>> accuracy([0, 1], [[2.0, 1.0], [3.0, 0.0]])
    0.5
    """
    logits = _logits(logits, "logits")
    y = _labels(y, logits)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def agreement(teacher_logits, student_logits):
    """Top-1 agreement: share of examples where student and teacher agree.

    Args:
        teacher_logits: `[N, C]`.
        student_logits: `[N, C]`.

    Returns:
        Float in `[0, 1]`; 1 for identical logits.

    Example:

    >>> agreement([[1.0, 0.0], [0.0, 1.0]], [[5.0, 1.0], [2.0, 1.0]])
    0.5
    """
    t = _logits(teacher_logits, "teacher_logits")
    s = _logits(student_logits, "student_logits")
    _same_shape(t, s, "teacher_logits", "student_logits")
    return float(np.mean(np.argmax(t, axis=-1) == np.argmax(s, axis=-1)))


def kl_to_teacher(teacher_logits, student_logits, temperature=1.0):
    """Mean KL(p_T || p_S) between softened teacher and student outputs.

    `p = softmax(logits / temperature)`; computed in float64 with a stable
    log-softmax. No `temperature**2` factor (that belongs to the KD loss).

    Args:
        teacher_logits: `[N, C]`.
        student_logits: `[N, C]`.
        temperature: Positive float.

    Returns:
        Float >= 0, averaged over examples (nats); 0 for identical logits.

    Example:

    >>> round(kl_to_teacher([[0.0, 0.0]], [[0.0, 2.0]]), 4)
    0.4338
    """
    t = _logits(teacher_logits, "teacher_logits")
    s = _logits(student_logits, "student_logits")
    _same_shape(t, s, "teacher_logits", "student_logits")
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(
            f"`temperature` must be a positive float; got {temperature!r}."
        )
    log_p_t = _log_softmax(t / temperature)
    log_p_s = _log_softmax(s / temperature)
    p_t = np.exp(log_p_t)
    # Classes the teacher rules out (p_T = 0) contribute 0, even if -inf.
    with np.errstate(invalid="ignore"):
        terms = np.where(p_t > 0, p_t * (log_p_t - log_p_s), 0.0)
    return float(np.mean(np.sum(terms, axis=-1)))


def _bin_stats(y, logits, num_bins, from_logits):
    logits = _logits(logits, "logits")
    y = _labels(y, logits)
    num_bins = _check_num_bins(num_bins)
    probs = _softmax(logits) if from_logits else logits
    confidence = np.max(probs, axis=-1)
    correct = (np.argmax(probs, axis=-1) == y).astype(np.float64)
    # Bins (k/B, (k+1)/B]; confidence 0 goes to the first bin.
    bins = np.clip(np.ceil(confidence * num_bins).astype(np.int64) - 1, 0,
                   num_bins - 1)
    count = np.bincount(bins, minlength=num_bins).astype(np.int64)
    conf_sum = np.bincount(bins, weights=confidence, minlength=num_bins)
    acc_sum = np.bincount(bins, weights=correct, minlength=num_bins)
    return count, conf_sum, acc_sum


def reliability_curve(y, logits, num_bins=15, from_logits=True):
    """Per-bin confidence and accuracy for a reliability diagram.

    Examples are binned by max-probability confidence into `num_bins`
    equal-width bins `(k/B, (k+1)/B]` of `[0, 1]`.

    Args:
        y: Integer labels `[N]` (or one-hot `[N, C]`).
        logits: `[N, C]` logits, or probabilities with `from_logits=False`.
        num_bins: Int >= 1.
        from_logits: Bool, apply softmax to `logits` first.

    Returns:
        `(bin_confidence, bin_accuracy, bin_count)`: arrays of length
        `num_bins`; mean confidence and accuracy per bin (NaN for empty
        bins, which matplotlib skips) and the int count per bin.

    Example:

    ```python
    conf, acc, count = reliability_curve(y_test, model.predict(x_test))
    plt.plot(conf, acc, "o-")
    plt.plot([0, 1], [0, 1], "k--")
    ```
    """
    count, conf_sum, acc_sum = _bin_stats(y, logits, num_bins, from_logits)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_confidence = np.where(count > 0, conf_sum / count, np.nan)
        bin_accuracy = np.where(count > 0, acc_sum / count, np.nan)
    return bin_confidence, bin_accuracy, count


def expected_calibration_error(y, logits, num_bins=15, from_logits=True):
    """Expected calibration error on max-probability confidence.

    `ECE = sum_k (n_k / N) * |acc_k - conf_k|` over `num_bins` equal-width
    bins `(k/B, (k+1)/B]` (Guo et al., 2017).

    Args:
        y: Integer labels `[N]` (or one-hot `[N, C]`).
        logits: `[N, C]` logits, or probabilities with `from_logits=False`.
        num_bins: Int >= 1.
        from_logits: Bool, apply softmax to `logits` first.

    Returns:
        Float in `[0, 1]`.

    Example:

    >>> round(expected_calibration_error([0, 1], [[3.0, 0.0], [3.0, 0.0]]), 4)
    0.4526
    """
    count, conf_sum, acc_sum = _bin_stats(y, logits, num_bins, from_logits)
    return float(np.sum(np.abs(acc_sum - conf_sum)) / np.sum(count))


# --------------------------------------------------------------------------
# Streaming Keras metrics.


def _top1_agreement(y_true, y_pred):
    return ops.cast(
        ops.equal(ops.argmax(y_true, axis=-1), ops.argmax(y_pred, axis=-1)),
        "float32",
    )


@keras.saving.register_keras_serializable(package="kdtf")
class TeacherAgreement(keras.metrics.MeanMetricWrapper):
    """Streaming top-1 agreement between teacher and student.

    `update_state(teacher_logits, student_logits, sample_weight=None)`.

    Args:
        name: Metric name.
        dtype: Metric dtype.

    Example:

    >>> m = TeacherAgreement()
    >>> m.update_state([[1.0, 0.0]], [[2.0, 1.0]])
    >>> float(m.result())
    1.0
    """

    def __init__(self, name="teacher_agreement", dtype=None):
        super().__init__(_top1_agreement, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="kdtf")
class KLToTeacher(keras.metrics.Metric):
    """Streaming mean KL(p_T || p_S) at a temperature, in float32.

    `update_state(teacher_logits, student_logits, sample_weight=None)`.
    Matches `kl_to_teacher` up to float32 rounding.

    Args:
        temperature: Positive float.
        name: Metric name.
        dtype: Metric dtype.

    Example:

    >>> m = KLToTeacher(temperature=1.0)
    >>> m.update_state([[0.0, 0.0]], [[0.0, 2.0]])
    >>> round(float(m.result()), 4)
    0.4338
    """

    def __init__(self, temperature=1.0, name="kl_to_teacher", dtype=None):
        super().__init__(name=name, dtype=dtype)
        if not temperature > 0:
            raise ValueError(
                f"`temperature` must be a positive float; got {temperature!r}."
            )
        self.temperature = float(temperature)
        self.total = self.add_variable(
            shape=(), initializer="zeros", name="total"
        )
        self.count = self.add_variable(
            shape=(), initializer="zeros", name="count"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        t = ops.cast(y_true, "float32") / self.temperature
        s = ops.cast(y_pred, "float32") / self.temperature
        log_p_t = ops.log_softmax(t, axis=-1)
        log_p_s = ops.log_softmax(s, axis=-1)
        p_t = ops.exp(log_p_t)
        terms = ops.where(p_t > 0, p_t * (log_p_t - log_p_s), 0.0)
        kl = ops.sum(terms, axis=-1)
        kl = ops.reshape(kl, (-1,))
        if sample_weight is None:
            weight = ops.ones_like(kl)
        else:
            weight = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        self.total.assign_add(ops.cast(ops.sum(kl * weight), self.dtype))
        self.count.assign_add(ops.cast(ops.sum(weight), self.dtype))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {
            "temperature": self.temperature,
            "name": self.name,
            "dtype": self.dtype,
        }


@keras.saving.register_keras_serializable(package="kdtf")
class ExpectedCalibrationError(keras.metrics.Metric):
    """Streaming expected calibration error (equal-width bins).

    `update_state(labels, logits, sample_weight=None)`; labels are integer
    `[N]` / `[N, 1]` or one-hot `[N, C]`. Accumulates per-bin count,
    confidence and accuracy over batches; `result()` equals
    `expected_calibration_error` on the concatenated data.

    Args:
        num_bins: Int >= 1.
        from_logits: Bool, apply softmax to predictions first.
        name: Metric name.
        dtype: Metric dtype.

    Example:

    ```python
    model.compile(..., metrics=[ExpectedCalibrationError(num_bins=15)])
    ```
    """

    def __init__(self, num_bins=15, from_logits=True, name="ece", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_bins = _check_num_bins(num_bins)
        self.from_logits = bool(from_logits)
        self.bin_count = self.add_variable(
            shape=(self.num_bins,), initializer="zeros", name="bin_count"
        )
        self.bin_conf = self.add_variable(
            shape=(self.num_bins,), initializer="zeros", name="bin_conf"
        )
        self.bin_correct = self.add_variable(
            shape=(self.num_bins,), initializer="zeros", name="bin_correct"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(y_pred, "float32")
        probs = ops.softmax(y_pred, axis=-1) if self.from_logits else y_pred
        confidence = ops.max(probs, axis=-1)
        pred = ops.argmax(probs, axis=-1)
        y_true = ops.convert_to_tensor(y_true)
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] != 1:
            labels = ops.argmax(y_true, axis=-1)
        else:
            labels = ops.reshape(y_true, (-1,))
        correct = ops.cast(
            ops.equal(ops.cast(labels, "int32"), ops.cast(pred, "int32")),
            "float32",
        )
        bins = ops.cast(ops.ceil(confidence * self.num_bins), "int32") - 1
        bins = ops.clip(bins, 0, self.num_bins - 1)
        one_hot = ops.one_hot(bins, self.num_bins, dtype="float32")  # [N, B]
        if sample_weight is not None:
            w = ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1))
            one_hot = one_hot * w
        self.bin_count.assign_add(
            ops.cast(ops.sum(one_hot, axis=0), self.dtype)
        )
        self.bin_conf.assign_add(ops.cast(
            ops.sum(one_hot * confidence[:, None], axis=0), self.dtype
        ))
        self.bin_correct.assign_add(ops.cast(
            ops.sum(one_hot * correct[:, None], axis=0), self.dtype
        ))

    def result(self):
        gap = ops.sum(ops.abs(self.bin_correct - self.bin_conf))
        return ops.divide_no_nan(gap, ops.sum(self.bin_count))

    def reset_state(self):
        for v in (self.bin_count, self.bin_conf, self.bin_correct):
            v.assign(ops.zeros_like(v))

    def get_config(self):
        return {
            "num_bins": self.num_bins,
            "from_logits": self.from_logits,
            "name": self.name,
            "dtype": self.dtype,
        }


# --------------------------------------------------------------------------
# Per-class views (NumPy), for reports.


def _num_classes(num_classes, *arrays):
    if num_classes is None:
        return int(max(int(a.max()) for a in arrays if a.size) + 1)
    if isinstance(num_classes, bool) or not isinstance(
        num_classes, (int, np.integer)
    ) or num_classes < 1:
        raise ValueError(
            f"`num_classes` must be an int >= 1; got {num_classes!r}."
        )
    for a in arrays:
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(
                f"class indices must be in [0, {num_classes}); got values in "
                f"[{a.min()}, {a.max()}]."
            )
    return int(num_classes)


def per_class_accuracy(y, logits, num_classes=None):
    """Top-1 accuracy of each true class (recall per class).

    Args:
        y: Integer labels `[N]` (or one-hot `[N, C]`).
        logits: `[N, C]` logits (or probabilities).
        num_classes: Int; defaults to `logits.shape[1]`.

    Returns:
        `(accuracy, count)`: float64 array `[C]` (NaN for classes with no
        example) and the int64 number of examples of each class.

    Example:

    >>> acc, n = per_class_accuracy([0, 0, 1], [[2.0, 1.0], [0.0, 1.0], [0.0, 3.0]])
    >>> acc.tolist(), n.tolist()
    ([0.5, 1.0], [2, 1])
    """
    logits = _logits(logits, "logits")
    y = _labels(y, logits)
    c = _num_classes(logits.shape[1] if num_classes is None else num_classes, y)
    correct = (np.argmax(logits, axis=-1) == y).astype(np.float64)
    count = np.bincount(y, minlength=c).astype(np.int64)
    hits = np.bincount(y, weights=correct, minlength=c)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, hits / np.maximum(count, 1), np.nan)
    return acc, count


def confusion_matrix(rows, cols, num_classes=None):
    """Counts of `(rows[i], cols[i])` pairs: `m[a, b] = #{i: rows_i = a, cols_i = b}`.

    With `rows` = true labels and `cols` = predictions this is the usual
    confusion matrix; with the teacher's and the student's predictions it
    shows where they disagree (its trace over N is their agreement).

    Args:
        rows: Integer class indices `[N]`.
        cols: Integer class indices `[N]`.
        num_classes: Int; defaults to 1 + the largest index.

    Returns:
        An int64 array `[C, C]`.

    Example:

    >>> confusion_matrix([0, 1, 1], [0, 0, 1]).tolist()
    [[1, 0], [1, 1]]
    """
    rows, cols = (np.asarray(a) for a in (rows, cols))
    rows, cols = (a.astype(np.int64) if a.size == 0 else a for a in (rows, cols))
    for name, a in (("rows", rows), ("cols", cols)):
        if a.ndim != 1 or a.dtype.kind not in "biu":
            raise ValueError(
                f"`{name}` must be integer class indices of shape [N]; got "
                f"dtype {a.dtype}, shape {a.shape}."
            )
    if rows.shape != cols.shape:
        raise ValueError(
            f"`rows` and `cols` must have the same length; got {rows.shape[0]} "
            f"and {cols.shape[0]}."
        )
    if rows.size == 0 and num_classes is None:
        raise ValueError("`rows` is empty; pass `num_classes`.")
    c = _num_classes(num_classes, rows, cols)
    flat = rows.astype(np.int64) * c + cols.astype(np.int64)
    return np.bincount(flat, minlength=c * c).reshape(c, c).astype(np.int64)


def teacher_student_confusion(teacher_logits, student_logits):
    """Confusion matrix of the teacher's (rows) vs the student's (columns) top-1 predictions.

    Args:
        teacher_logits: `[N, C]`.
        student_logits: `[N, C]`.

    Returns:
        An int64 array `[C, C]`; `trace / N` equals `agreement`.

    Example:

    >>> teacher_student_confusion([[2.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]).tolist()
    [[1, 0], [1, 0]]
    """
    t = _logits(teacher_logits, "teacher_logits")
    s = _logits(student_logits, "student_logits")
    _same_shape(t, s, "teacher_logits", "student_logits")
    return confusion_matrix(
        np.argmax(t, axis=-1), np.argmax(s, axis=-1), num_classes=t.shape[1]
    )
