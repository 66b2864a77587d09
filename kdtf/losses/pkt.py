"""Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018)."""
import keras
from keras import ops

from kdtf.losses import feature_checks as checks

# The reference code's eps: added to the norms and inside the log ratio.
EPS = 1e-7


def _conditional(embeddings):
    """Row-normalised cosine-similarity kernel `[B, B]`, each row a distribution."""
    # The floor keeps sqrt's gradient finite for an all-zero row (far below EPS).
    norm = ops.sqrt(ops.maximum(ops.sum(ops.square(embeddings), axis=-1, keepdims=True), 1e-30))
    unit = embeddings / (norm + EPS)
    similarity = (ops.matmul(unit, ops.transpose(unit)) + 1.0) / 2.0
    return similarity / ops.sum(similarity, axis=-1, keepdims=True)


@keras.saving.register_keras_serializable(package="kdtf")
class PKT(checks.EmbeddingLoss):
    """PKT: match the distributions of cosine similarities within a batch.

    For embeddings `e` (`[B, D]`; higher-rank features are flattened), the
    cosine similarities of the l2-normalised rows are shifted to `[0, 1]`,
    `K_ij = (cos(e_i, e_j) + 1) / 2`, and each row is normalised into a
    conditional distribution `P_ij = K_ij / sum_j K_ij`. With `P^T`, `P^S`
    from the teacher and the student,

        loss = 1 / B^2 * sum_ij P^T_ij log((P^T_ij + eps) / (P^S_ij + eps)),

    the paper's sum over rows of `KL(P^T_i || P^S_i)` divided by `B^2`: the
    mean over the `B^2` entries that the reference code takes (so its loss
    weight, 30000 on CIFAR-100, carries over). The value of example `i` is
    `1 / B * KL(P^T_i || P^S_i)`, so the batch mean is the formula above.
    Teacher and student may have different widths; the loss is invariant to
    a positive scaling of either embedding (up to `eps`) and to a rotation.
    Under `tf.distribute` each replica relates its own batch.

    Conventions follow the reference code (github.com/passalis/
    probabilistic_kt, as re-implemented in HobbitLong/RepDistiller and
    megvii-research/mdistiller): `eps = 1e-7` added to the norms and to both
    probabilities in the log ratio, and the mean over all `B^2` entries.

    Args:
        teacher_layer_name: the teacher layer whose output is the embedding,
            e.g. `"features"` (the penultimate layer of kdtf zoo models).
        student_layer_name: the student layer to match.
        name: name of the loss. Defaults to `"pkt"`.
        reduction: `keras.losses.Loss` reduction over the per-example values.

    Call arguments:
        teacher_outputs: teacher embeddings `[B, ...]`.
        student_outputs: student embeddings `[B, ...]`, the same `B`.
        sample_weight: optional per-example weights (of the rows).

    Returns:
        The (weighted) batch mean of the per-example values, or the `[B]`
        values with `reduction=None`.

    Example:

    >>> loss = kdtf.losses.PKT("features", "features")
    >>> distiller = kdtf.Distiller(teacher, student, [loss], [30000.0])
    """

    def __init__(self, teacher_layer_name, student_layer_name, name="pkt",
                 reduction="sum_over_batch_size"):
        super().__init__(teacher_layer_name, student_layer_name, name=name, reduction=reduction)

    def call(self, teacher_outputs, student_outputs):
        teacher_outputs, student_outputs = self.embeddings(teacher_outputs, student_outputs)
        p_t = _conditional(teacher_outputs)
        p_s = _conditional(student_outputs)
        kl = p_t * ops.log((p_t + EPS) / (p_s + EPS))
        return ops.mean(kl, axis=-1)
