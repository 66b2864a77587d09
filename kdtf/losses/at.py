"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017)."""
import math

import keras
import numpy as np
from keras import ops

from kdtf.losses import feature_checks as checks
from kdtf.losses.base import DistillationLoss

# F.normalize's floor on the norm in the reference code, applied as a floor on
# the squared norm (the same value, and a finite gradient at zero).
_NORM_FLOOR_SQUARED = 1e-24


@keras.saving.register_keras_serializable(package="kdtf")
class AT(DistillationLoss):
    """Attention transfer: match the spatial attention maps of one stage pair.

    For a feature map `F` of shape `[B, *spatial, C]` (channels last), the
    attention map is `a(F) = l2_normalize(flatten(mean_c |F|^p))`, one unit
    vector over the spatial positions per example; the loss of an example is
    `mean((a(F_S) - a(F_T))^2)` over the positions. Because of the
    normalisation it is unchanged when a map is multiplied by a positive
    number (per example). The paper weighs each stage pair by `beta = 1000`
    and sums the pairs: give the `kdtf.Distiller` one `AT` per pair, each
    with weight 1000 (`--method=at` does).

    When the two maps have different spatial sizes, the larger one is
    average-pooled down to the smaller along each spatial axis (adaptive
    average pooling, as the reference code does) before the attention maps
    are taken. The channel counts may differ: the maps are means over
    channels, so no adapter is needed. 1-D (`[B, L, C]`), 2-D and 3-D maps
    are accepted; spatial sizes must be static when they differ.

    Conventions follow the reference implementations (github.com/szagoruyko/
    attention-transfer as re-implemented in HobbitLong/RepDistiller and
    megvii-research/mdistiller): `p = 2`, a mean over channels, the norm
    floored at `1e-12`, and a mean over positions and the batch.

    Args:
        teacher_layer_name: the teacher layer whose output is the target map,
            e.g. `"stage2"`. The `kdtf.Distiller` feeds this layer's output.
        student_layer_name: the student layer to match.
        p: the power of the activations, `> 0`. Defaults to 2 (the paper's).
        name: name of the loss. Defaults to `"at"`.
        reduction: `keras.losses.Loss` reduction over the per-example values.

    Call arguments:
        teacher_outputs: teacher features `[B, *spatial, C]`.
        student_outputs: student features `[B, *spatial', C']`, the same rank.
        sample_weight: optional per-example weights.

    Returns:
        The (weighted) batch mean of the per-example values, or the `[B]`
        values with `reduction=None`.

    Example:

    >>> losses = [kdtf.losses.AT(f"stage{k}", f"stage{k}") for k in (1, 2, 3)]
    >>> distiller = kdtf.Distiller(teacher, student, losses, [1000.0] * 3)
    """

    same_shape = False

    def __init__(self, teacher_layer_name, student_layer_name, p=2, name="at",
                 reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        self.teacher_layer_name = checks.check_layer_name("teacher_layer_name", teacher_layer_name)
        self.student_layer_name = checks.check_layer_name("student_layer_name", student_layer_name)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not p > 0:
            raise ValueError(f"`p` must be a number > 0; got p={p!r}.")
        self.p = p

    def build_adapter(self, teacher_shape, student_shape):
        """Checks the per-example feature shapes; AT needs no adapter.

        The `kdtf.Distiller` calls this once with the static shapes of the two
        layers (without the batch axis), so a wrong layer fails when the
        Distiller is built, not in the first train step.

        Args:
            teacher_shape: shape of one teacher feature, e.g. `(8, 8, 64)`.
            student_shape: shape of one student feature.

        Returns:
            None.

        Raises:
            ValueError: a shape is not a `[*spatial, C]` map, or the ranks differ.
        """
        self._check_ranks((None, *teacher_shape), (None, *student_shape))
        return None

    def call(self, teacher_outputs, student_outputs):
        self._check_ranks(teacher_outputs.shape, student_outputs.shape)
        checks.check_batch(self, teacher_outputs, student_outputs)
        teacher_outputs, student_outputs = _match_spatial(teacher_outputs, student_outputs)
        a_t = self._attention(teacher_outputs)
        a_s = self._attention(student_outputs)
        return ops.mean(ops.square(a_s - a_t), axis=-1)

    def _attention(self, features):
        if self.p == 2:
            powered = ops.square(features)
        else:
            powered = ops.power(ops.abs(features), float(self.p))
        a = checks.flatten(ops.mean(powered, axis=-1))
        norm = ops.sqrt(ops.maximum(ops.sum(ops.square(a), axis=-1, keepdims=True),
                                    _NORM_FLOOR_SQUARED))
        return a / norm

    def _check_ranks(self, teacher_shape, student_shape):
        what = ("feature maps [batch, *spatial, channels] (rank >= 3, channels last; "
                "flat features have no spatial attention)")
        for role, shape in (("teacher", teacher_shape), ("student", student_shape)):
            checks.check_min_rank(self, shape, role, 3, what)
        if len(teacher_shape) != len(student_shape):
            raise ValueError(
                f"AT compares maps with the same number of spatial axes; "
                f"{checks.describe(self, 'teacher')} has shape {tuple(teacher_shape)} and "
                f"{checks.describe(self, 'student')} has shape {tuple(student_shape)}."
            )

    def get_config(self):
        return {**super().get_config(), "teacher_layer_name": self.teacher_layer_name,
                "student_layer_name": self.student_layer_name, "p": self.p}


def _pooling_matrix(size_in, size_out):
    """`[size_in, size_out]` averaging matrix of adaptive average pooling."""
    m = np.zeros((size_in, size_out), "float32")
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = math.ceil((i + 1) * size_in / size_out)
        m[start:end, i] = 1.0 / (end - start)
    return m


def _pool_axis(x, axis, size_out):
    x = ops.moveaxis(x, axis, -1)
    x = ops.matmul(x, ops.convert_to_tensor(_pooling_matrix(x.shape[-1], size_out)))
    return ops.moveaxis(x, -1, axis)


def _match_spatial(teacher_outputs, student_outputs):
    """Average-pools the larger map down to the smaller, axis by axis."""
    for axis in range(1, len(teacher_outputs.shape) - 1):
        t_size, s_size = teacher_outputs.shape[axis], student_outputs.shape[axis]
        if t_size is None or s_size is None or t_size == s_size:
            continue
        if t_size > s_size:
            teacher_outputs = _pool_axis(teacher_outputs, axis, s_size)
        else:
            student_outputs = _pool_axis(student_outputs, axis, t_size)
    return teacher_outputs, student_outputs
