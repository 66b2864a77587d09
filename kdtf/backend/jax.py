"""The `Distiller`'s train and test steps on the JAX backend.

Stateless, like Keras's own JAX trainer (`keras/src/backend/jax/trainer.py`):
`fit()` calls `train_step(state, data)` with the model's variables as values
and expects `(logs, state)` back, with every update (weights, optimizer
slots, BatchNorm statistics, seed generators, metrics) in the new `state`.
The Distiller's shared methods (`synthesize`, `teacher_outputs`,
`student_outputs`, `compute_distillation_loss`, `update_loss_trackers`) run
unchanged inside a `keras.StatelessScope` that maps each variable to its value
in `state`, as `Layer.stateless_call` does; the scope collects what they
assign (e.g. `SeedGenerator.next()` advancing the Distiller's seed).
"""
import jax
import jax.numpy as jnp
import keras
from keras import tree


def train_step(model, state, data):
    """One distillation step: teacher once (inference), student once.

    With cached teacher outputs in the batch (see `kdtf.Distiller`), the
    teacher runs on the synthetic inputs only, or not at all.

    The synthetic inputs and the teacher's outputs are computed before, and
    outside, the differentiated function, so the teacher is never traced for
    gradients; its outputs also get `stop_gradient`. When the total loss is
    not finite the update is skipped, as on TensorFlow: the step's new
    weights, optimizer state (slots, iteration count) and BatchNorm
    statistics are discarded in favour of the old ones. The seed still
    advances, and the loss trackers
    record the non-finite loss so that `kdtf.callbacks.NonFiniteGuard` stops
    training with an error.

    Args:
        model: the `kdtf.Distiller`.
        state: `(trainable_variables, non_trainable_variables,
            optimizer_variables, metrics_variables)`, lists of arrays in the
            order of the model's (and its optimizer's) variable lists.
        data: a batch `x`, `(x, y)` or `(x, y, sample_weight)`.

    Returns:
        `(logs, state)`: the metric results and the updated state.
    """
    (
        trainable_values,
        non_trainable_values,
        optimizer_values,
        metrics_values,
    ) = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    index = model.batch_index(x)  # the examples' dataset indices, if any
    x, cached = model.unpack_inputs(x)  # cached teacher outputs, if any

    # Synthetic inputs (advances the Distiller's SeedGenerator) and teacher.
    (x_all, num_real, teacher_outputs), (non_trainable_values,) = _stateless(
        [(model.non_trainable_variables, non_trainable_values)],
        lambda: _synthesize_and_teach(model, x, cached),
        extra=[(model.trainable_variables, trainable_values)],
    )
    teacher_outputs = tree.map_structure(jax.lax.stop_gradient, teacher_outputs)

    def loss_fn(trainable, non_trainable, metrics):
        def forward():
            student_outputs = model.student_outputs(x_all, training=True)
            return model.compute_distillation_loss(
                y, teacher_outputs, student_outputs, num_real, sample_weight, index=index
            )

        (total, terms, y_pred), (non_trainable, metrics) = _stateless(
            [
                (model.non_trainable_variables, non_trainable),
                (model.metrics_variables, metrics),
            ],
            forward,
            # The optimizer's step count is read by losses that need "step".
            extra=[(model.trainable_variables, trainable),
                   (model.optimizer.variables, optimizer_values)],
        )
        # Loss scaling (LossScaleOptimizer) reads the optimizer's variables.
        scaled, _ = _stateless(
            [],
            lambda: model.optimizer.scale_loss(total),
            extra=[(model.optimizer.variables, optimizer_values)],
        )
        return scaled, (total, terms, y_pred, non_trainable, metrics)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, aux), gradients = grad_fn(
        trainable_values, non_trainable_values, metrics_values
    )
    total, terms, y_pred, new_non_trainable, metrics_values = aux

    finite = jnp.isfinite(total)
    new_trainable, new_optimizer = model.optimizer.stateless_apply(
        optimizer_values, gradients, trainable_values
    )
    trainable_values = _select(finite, new_trainable, trainable_values)
    optimizer_values = _select(finite, new_optimizer, optimizer_values)
    # `non_trainable_values` already holds the advanced seeds.
    non_trainable_values = _select(
        finite, new_non_trainable, non_trainable_values
    )

    logs, (metrics_values,) = _stateless(
        [(model.metrics_variables, metrics_values)],
        lambda: _update_metrics(model, total, terms, x, y, y_pred, sample_weight),
    )
    return logs, (
        trainable_values,
        non_trainable_values,
        optimizer_values,
        metrics_values,
    )


def test_step(model, state, data):
    """Evaluates the student: task loss, metrics and distance to the teacher.

    Args:
        model: the `kdtf.Distiller`.
        state: `(trainable_variables, non_trainable_variables,
            metrics_variables)`.
        data: a batch `x`, `(x, y)` or `(x, y, sample_weight)`.

    Returns:
        `(logs, state)`.
    """
    trainable_values, non_trainable_values, metrics_values = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    index = model.batch_index(x)
    x, cached = model.unpack_inputs(x)

    def forward():
        student_outputs = model.student_outputs(x, training=False)
        teacher_outputs = model.teacher_outputs(x, cached)
        total, terms, y_pred = model.compute_distillation_loss(
            y, teacher_outputs, student_outputs, None, sample_weight,
            training=False, index=index,
        )
        # As in keras.distillation, `loss` is the total objective; the
        # student's own task loss is `student_loss`.
        return _update_metrics(model, total, terms, x, y, y_pred, sample_weight)

    logs, (non_trainable_values, metrics_values) = _stateless(
        [
            (model.non_trainable_variables, non_trainable_values),
            (model.metrics_variables, metrics_values),
        ],
        forward,
        extra=[(model.trainable_variables, trainable_values)],
    )
    return logs, (trainable_values, non_trainable_values, metrics_values)


def _synthesize_and_teach(model, x, cached):
    x_all, num_real = model.training_inputs(x, cached)
    return x_all, num_real, model.teacher_outputs(x_all, cached, num_real)


def _update_metrics(model, total, terms, x, y, y_pred, sample_weight):
    model.update_loss_trackers(total, terms, _batch_size(x))
    if y is None:
        return model.get_metrics_result()
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _batch_size(x):
    return next(i for i in tree.flatten(x) if i is not None).shape[0]


def _stateless(groups, fn, extra=()):
    """Runs `fn()` in a `StatelessScope` and returns the groups' new values.

    Args:
        groups: list of `(variables, values)` whose updated values are
            returned, in order.
        fn: the function to run; it reads and assigns Keras variables.
        extra: list of `(variables, values)` that `fn` reads but whose
            updates are not collected.

    Returns:
        `(fn(), [new_values for each group])`.
    """
    mapping = []
    for variables, values in list(extra) + list(groups):
        mapping.extend(zip(variables, values))
    with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
        outputs = fn()
    new_values = []
    for variables, values in groups:
        current = []
        for variable, value in zip(variables, values):
            new = scope.get_current_value(variable)
            current.append(value if new is None else new)
        new_values.append(current)
    return outputs, new_values


def _select(finite, new_values, old_values):
    return [
        jnp.where(finite, new, old) for new, old in zip(new_values, old_values)
    ]
