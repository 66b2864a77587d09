"""The `Distiller`'s train and test steps on the TensorFlow backend."""
import keras
import tensorflow as tf

from kdtf.backend import distribute


def train_step(model, data):
    """One distillation step: teacher once (inference), student once.

    With cached teacher outputs in the batch (see `kdtf.Distiller`), the
    teacher runs on the synthetic inputs only, or not at all.

    The teacher runs outside the gradient tape, so none of its activations are
    kept for the backward pass. When the total loss is not finite the update is
    skipped (gradients zeroed) and `kdtf.callbacks.NonFiniteGuard` stops
    training with an error.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x, cached = model.unpack_inputs(x)  # cached teacher outputs, if any
    x_all, num_real = model.training_inputs(x, cached)
    teacher_outputs = tf.nest.map_structure(
        tf.stop_gradient, model.teacher_outputs(x_all, cached, num_real)
    )
    with tf.GradientTape() as tape:
        student_outputs = model.student_outputs(x_all, training=True)
        total, terms, y_pred = model.compute_distillation_loss(
            y, teacher_outputs, student_outputs, num_real, sample_weight
        )
        scaled = model.optimizer.scale_loss(total)
    variables = model.trainable_variables
    gradients = tape.gradient(scaled, variables)
    finite = tf.math.is_finite(total)
    gradients = [_zero_unless(finite, g) for g in gradients]
    model.optimizer.apply(gradients, variables)
    model.update_loss_trackers(total, terms, tf.shape(x)[0])
    return _metrics(model, x, y, y_pred, sample_weight)


def test_step(model, data):
    """Evaluates the student: task loss, metrics and distance to the teacher."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x, cached = model.unpack_inputs(x)
    student_outputs = model.student_outputs(x, training=False)
    teacher_outputs = model.teacher_outputs(x, cached)
    _, terms, y_pred = model.compute_distillation_loss(
        y, teacher_outputs, student_outputs, None, sample_weight, training=False
    )
    # In evaluation `loss` is the student's own task loss, comparable with a
    # student trained without a teacher.
    model.update_loss_trackers(terms["student_loss"], terms, tf.shape(x)[0])
    return _metrics(model, x, y, y_pred, sample_weight)


def _metrics(model, x, y, y_pred, sample_weight):
    if y is None:
        logs = model.get_metrics_result()
    else:
        logs = model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
    return distribute.logs_for_reduction(logs)


def _zero_unless(finite, gradient):
    if gradient is None:
        return None
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(
            tf.where(finite, gradient.values, tf.zeros_like(gradient.values)),
            gradient.indices,
            gradient.dense_shape,
        )
    return tf.where(finite, gradient, tf.zeros_like(gradient))
