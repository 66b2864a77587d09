"""Logit standardization (Sun et al., CVPR 2024), shared by KD, DKD and DIST.

"Logit Standardization in Knowledge Distillation" replaces each example's
logits `z` by their Z-score over the classes before the temperature softmax,

    z' = (z - mean_c z) / (std_c z + eps),    p = softmax(z' / tau_base),

so the student matches the teacher's logit *relations* instead of their range:
the loss becomes invariant to a shift and a positive scale of either model's
logits. It is an option of the logit losses (`KD`, `DKD`, `DIST`:
`logit_standardization=True`), not a loss of its own.

Conventions follow the authors' code (github.com/sunshangquan/
logit-standardization-KD, `normalize` in mdistiller/distillers/KD.py): the
standard deviation is the unbiased one (divides by `C - 1`, as `torch.std`),
`eps = 1e-7` is added to it, and the temperature applied after it is the
"base temperature" (2 in their CIFAR-100 and ImageNet runs, with the
`tau^2` factor of KD kept).
"""
from keras import ops

# Added to the standard deviation, as in the authors' code.
EPS = 1e-7


def standardize(logits, eps=EPS):
    """Z-scores logits over the last (class) axis.

    Args:
        logits: float tensor `[..., C]` with `C >= 2` known statically.
        eps: added to the standard deviation. Defaults to `1e-7`.

    Returns:
        `(logits - mean) / (std + eps)` per row, where `std` is the unbiased
        (`C - 1`) standard deviation. A constant row maps to zeros (with a
        zero, not NaN, gradient).

    Raises:
        ValueError: the class axis has fewer than 2 entries.

    Example:

    >>> standardize(keras.ops.array([[1.0, 2.0, 3.0]]))  # [[-1, 0, 1]]
    """
    num_classes = logits.shape[-1]
    if num_classes is None or num_classes < 2:
        raise ValueError(
            "logit_standardization Z-scores the logits over the class axis and needs "
            f"at least 2 classes known statically; got logits of shape {tuple(logits.shape)}."
        )
    centered = logits - ops.mean(logits, axis=-1, keepdims=True)
    variance = ops.sum(ops.square(centered), axis=-1, keepdims=True) / float(num_classes - 1)
    # The floor only keeps sqrt's gradient finite on a constant row; it is far
    # below eps, so the value is unchanged.
    std = ops.sqrt(ops.maximum(variance, 1e-30))
    return centered / (std + eps)


def check_flag(value):
    """Validates the `logit_standardization` constructor argument."""
    if not isinstance(value, bool):
        raise TypeError(
            f"`logit_standardization` must be True or False; got {value!r}."
        )
    return value
