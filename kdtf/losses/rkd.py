"""Relational knowledge distillation (Park et al., CVPR 2019)."""
import keras
from keras import ops

from kdtf.losses import feature_checks as checks

# The reference code clamps squared distances at 1e-12 before the sqrt...
_DISTANCE_FLOOR_SQUARED = 1e-12
# ...and normalises difference vectors with F.normalize (norm floored at 1e-12).
_NORM_FLOOR_SQUARED = 1e-24


def _huber(x):
    """Smooth L1 with threshold 1 (`F.smooth_l1_loss`'s default), elementwise."""
    a = ops.abs(x)
    return ops.where(a < 1.0, 0.5 * ops.square(x), a - 0.5)


# Embeddings up to this wide get their angles from a batched matmul of the unit
# difference vectors (`B^3 D` multiply-adds); wider ones from the law of cosines
# (`B^3` elementwise operations, whatever D). Measured on a 2-core CPU at B = 128,
# one RKD gradient step: 14 vs 22 ms at D = 64, 145 vs 58 ms at D = 784.
MATMUL_MAX_WIDTH = 128


def _relations(embeddings):
    """Normalised pairwise distances `[B, B]` and angle cosines `[B, B, B]`.

    `angles[i, j, k]` is the cosine of the angle at `e_i` between `e_j - e_i`
    and `e_k - e_i` (zero when `j` or `k` is `i`). For embeddings wider than
    `MATMUL_MAX_WIDTH` the dot products come from the law of cosines,
    `(e_j - e_i) . (e_k - e_i) = (d_ij^2 + d_ik^2 - d_jk^2) / 2`, at a cost
    independent of the width `D`; narrower ones take the reference code's
    batched matmul of unit difference vectors. The squared distances are
    summed from the difference vectors either way.
    """
    diff = ops.expand_dims(embeddings, 0) - ops.expand_dims(embeddings, 1)  # [i, j] = e_j - e_i
    squared = ops.sum(ops.square(diff), axis=-1)
    index = ops.arange(ops.shape(embeddings)[0])
    off = ops.expand_dims(index, 0) != ops.expand_dims(index, 1)
    off_diagonal = ops.cast(off, "float32")
    distance = ops.sqrt(ops.maximum(squared, _DISTANCE_FLOOR_SQUARED)) * off_diagonal
    # The mean over the B (B - 1) pairs: every off-diagonal distance is >= 1e-6,
    # so this is the reference code's mean over the positive distances.
    pairs = ops.sum(off_diagonal)
    mean = ops.sum(distance) / ops.maximum(pairs, 1.0)
    distance = distance / ops.maximum(mean, 1e-12)
    norm = ops.sqrt(ops.maximum(squared, _NORM_FLOOR_SQUARED))  # F.normalize's floored norm
    if embeddings.shape[-1] <= MATMUL_MAX_WIDTH:
        unit = diff / ops.expand_dims(norm, -1)
        return distance, ops.matmul(unit, ops.transpose(unit, (0, 2, 1)))
    # 1 / norm, 0 on the diagonal (the zero vector e_i - e_i), so the cosines
    # with j == i or k == i are 0, as above; their dot products are exactly 0
    # too (d_ii = 0, and d_ij = d_ji bit for bit).
    inverse = ops.where(off, 1.0 / norm, 0.0)
    dot = ops.expand_dims(squared, 2) + ops.expand_dims(squared, 1) - ops.expand_dims(squared, 0)
    return distance, dot * ops.expand_dims(0.5 * inverse, 2) * ops.expand_dims(inverse, 1)


@keras.saving.register_keras_serializable(package="kdtf")
class RKD(checks.EmbeddingLoss):
    """Relational KD: match the distances and angles within a batch of embeddings.

    For embeddings `e` (`[B, D]`; higher-rank features are flattened), with
    `d_ij = |e_i - e_j| / mu` (`mu` the mean distance over the `B (B - 1)`
    pairs) and `cos_ijk` the cosine of the angle at `e_i` formed by `e_j` and
    `e_k`,

        loss = distance_weight * mean_ij huber(d_ij^S - d_ij^T)
             + angle_weight * mean_ijk huber(cos_ijk^S - cos_ijk^T),

    `huber` being the smooth L1 loss with threshold 1. Teacher and student
    may have different widths `D`: only relations are compared, so no
    adapter is needed. The loss is invariant to a translation, rotation or
    (uniform) scaling of either embedding. The teacher's relations carry no
    gradient.

    The per-example value of example `i` is the mean over its row (`j`, and
    `j, k` for the angles), so the batch mean equals the formula above.
    Sample weights weigh these rows. The loss is relational: it needs a batch
    of at least 2 and, under `tf.distribute`, relates the examples of each
    replica's batch. Memory grows as `B^2 D` (difference vectors) and `B^3`
    (angles); for embeddings wider than `MATMUL_MAX_WIDTH` the angles
    are computed from the pairwise distances (law of cosines) in `B^3`
    operations, not the reference code's `B^3 D`.

    Conventions follow the reference code (github.com/lenscloth/RKD, as
    re-implemented in HobbitLong/RepDistiller and megvii-research/mdistiller):
    unsquared distances with the squared distance clamped at `1e-12`, the mean
    over positive distances, `F.normalize` floors of `1e-12`, smooth L1 means
    over all `B^2` and `B^3` entries (including the zero diagonal), weights 25
    and 50, and a loss weight of 1 on top.

    Args:
        teacher_layer_name: the teacher layer whose output is the embedding,
            e.g. `"features"` (the penultimate layer of kdtf zoo models).
        student_layer_name: the student layer to match.
        distance_weight: weight of the distance term. Defaults to 25.
        angle_weight: weight of the angle term. Defaults to 50.
        name: name of the loss. Defaults to `"rkd"`.
        reduction: `keras.losses.Loss` reduction over the per-example values.

    Call arguments:
        teacher_outputs: teacher embeddings `[B, ...]`.
        student_outputs: student embeddings `[B, ...]`, the same `B`.
        sample_weight: optional per-example weights.

    Returns:
        The (weighted) batch mean of the per-example values, or the `[B]`
        values with `reduction=None`.

    Example:

    >>> loss = kdtf.losses.RKD("features", "features")
    >>> distiller = kdtf.Distiller(teacher, student, [loss])
    """

    def __init__(self, teacher_layer_name, student_layer_name, distance_weight=25.0,
                 angle_weight=50.0, name="rkd", reduction="sum_over_batch_size"):
        super().__init__(teacher_layer_name, student_layer_name, name=name, reduction=reduction)
        self.distance_weight = checks.check_weight("distance_weight", distance_weight)
        self.angle_weight = checks.check_weight("angle_weight", angle_weight)

    def call(self, teacher_outputs, student_outputs):
        flat_t, flat_s = self.embeddings(teacher_outputs, student_outputs)
        batch = teacher_outputs.shape[0]
        if batch is not None and batch < 2:
            raise ValueError(
                f"RKD relates the examples of a batch and needs at least 2; got "
                f"{checks.describe(self, 'teacher')} of shape {tuple(teacher_outputs.shape)}."
            )
        d_t, a_t = _relations(flat_t)
        d_t, a_t = ops.stop_gradient(d_t), ops.stop_gradient(a_t)
        d_s, a_s = _relations(flat_s)
        loss = ops.zeros_like(d_t[:, 0])
        if self.distance_weight:
            loss = loss + self.distance_weight * ops.mean(_huber(d_s - d_t), axis=-1)
        if self.angle_weight:
            loss = loss + self.angle_weight * ops.mean(_huber(a_s - a_t), axis=(1, 2))
        return loss

    def get_config(self):
        return {**super().get_config(), "distance_weight": self.distance_weight,
                "angle_weight": self.angle_weight}
