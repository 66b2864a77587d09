"""The `Distiller`'s train and test steps on the TensorFlow backend."""
import keras
import tensorflow as tf

from kdtf import distribute


def train_step(model, data):
    """One distillation step: teacher once (inference), student once.

    With cached teacher outputs in the batch (see `kdtf.Distiller`), the
    teacher runs on the synthetic inputs only, or not at all.

    The teacher runs outside the gradient tape, so none of its activations are
    kept for the backward pass. When the total loss is not finite (on any
    replica) the update is skipped: the optimizer does not run, so weights,
    slots and the iteration count stay as they were (zero gradients alone
    would still move Adam's weights by momentum), and
    `kdtf.callbacks.NonFiniteGuard` stops training with an error. The
    student's non-trainable state (BatchNorm moving statistics) is put back
    too, so a skipped step leaves every variable as it was.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    index = model.batch_index(x)  # the examples' dataset indices, if any
    x, cached = model.unpack_inputs(x)  # cached teacher outputs, if any
    # The student's (and adapters') non-trainable state, e.g. BatchNorm
    # moving statistics, read before the forward pass updates it.
    state = _training_state(model)
    state_before = [tf.identity(v.value) for v in state]
    x_all, num_real = model.training_inputs(x, cached)
    teacher_outputs = tf.nest.map_structure(
        tf.stop_gradient, model.teacher_outputs(x_all, cached, num_real)
    )
    with tf.GradientTape() as tape:
        student_outputs = model.student_outputs(x_all, training=True)
        total, terms, y_pred = model.compute_distillation_loss(
            y, teacher_outputs, student_outputs, num_real, sample_weight, index=index
        )
        scaled = model.optimizer.scale_loss(total)
    variables = model.trainable_variables
    gradients = tape.gradient(scaled, variables)
    finite = _all_replicas(tf.math.is_finite(total))
    _apply_if(finite, model.optimizer, gradients, variables)
    # A skipped step keeps the state it found, as the JAX step does.
    for v, before in zip(state, state_before):
        v.assign(tf.where(finite, v.value, before))
    model.update_loss_trackers(total, terms, tf.shape(x)[0])
    return _metrics(model, x, y, y_pred, sample_weight)


def test_step(model, data):
    """Evaluates the student: task loss, metrics and distance to the teacher."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    index = model.batch_index(x)
    x, cached = model.unpack_inputs(x)
    student_outputs = model.student_outputs(x, training=False)
    teacher_outputs = model.teacher_outputs(x, cached)
    total, terms, y_pred = model.compute_distillation_loss(
        y, teacher_outputs, student_outputs, None, sample_weight, training=False, index=index
    )
    # As in keras.distillation, `loss` is the total objective; the student's
    # own task loss (comparable with a student trained alone) is `student_loss`.
    model.update_loss_trackers(total, terms, tf.shape(x)[0])
    return _metrics(model, x, y, y_pred, sample_weight)


def _metrics(model, x, y, y_pred, sample_weight):
    if y is None:
        logs = model.get_metrics_result()
    else:
        logs = model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
    return distribute.logs_for_reduction(logs)


def _training_state(model):
    """Non-trainable variables that a training forward pass may update.

    Those of the trainable leaf layers of the student and the adapters
    (BatchNorm statistics, seed states); a frozen layer's variables are not
    updated in training, so they are not copied in every step.
    """
    state = []
    for root in (model.student, *getattr(model, "adapters", ())):
        for layer in root._flatten_layers(include_self=True, recursive=True):
            if layer.trainable and not list(layer._flatten_layers(include_self=False)):
                state += list(layer.non_trainable_variables)
    return state


def _all_replicas(finite):
    """True where `finite` holds on every replica (all workers agree)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return finite
    # ReduceOp has SUM and MEAN only: count the replicas whose loss is not finite.
    bad = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
    return bad < 0.5


def _apply_if(finite, optimizer, gradients, variables):
    """`optimizer.apply(gradients, variables)` only where `finite` holds.

    Like Keras's `LossScaleOptimizer`: a strategy whose optimizer update goes
    through `merge_call` (MirroredStrategy) cannot take a `tf.cond` in replica
    context, so the condition is taken in cross-replica context there.
    """
    def apply():
        optimizer.apply(gradients, variables)

    if not tf.distribute.has_strategy() or tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(finite, apply, _nothing)
        return

    def cross_replica(distribution, finite, gradients):
        agreed = distribution.experimental_local_results(finite)[0]
        def apply_each():
            distribution.extended.call_for_each_replica(optimizer.apply, args=(gradients, variables))

        tf.cond(agreed, apply_each, _nothing)

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(finite, gradients))


def _nothing():
    return None
