"""Choosing a `tf.distribute` strategy for a run, and who writes files.

`kdtf.Distiller` trains under any strategy whose scope its models were built
in: `MirroredStrategy` (the devices of one machine) and
`MultiWorkerMirroredStrategy` (several machines, or several processes of
one machine, configured through the `TF_CONFIG` environment variable).
Keras 3.15's own `fit` does not work under the multi-worker strategy
(keras-team/keras#20585); the Distiller's steps do, through the step glue at
the end of this module (`maybe_symbolic_build`, `logs_for_reduction`,
`all_gather`).

In a multi-worker run every worker runs the same program; only the chief
(worker 0) writes the results that matter (the student file, exports),
while the others write their checkpoints to a private directory
(`worker_dir`), as Keras's own callbacks do.

Example:

```python
strategy = kdtf.distribute.make_strategy("multi_worker")   # reads TF_CONFIG
with strategy.scope():
    distiller = kdtf.Distiller(teacher=load_teacher(), student=make_student())
    distiller.compile(...)
distiller.fit(kdtf.distribute.shard_by_data(train_ds), epochs=10)
if kdtf.distribute.is_chief(strategy):
    distiller.student.save("student.keras")
```
"""
import json
import os

import keras

STRATEGIES = ("none", "mirrored", "multi_worker")


def make_strategy(name="none"):
    """Returns the `tf.distribute` strategy called `name`.

    Args:
        name: "none" (the default strategy: one device), "mirrored"
            (`MirroredStrategy` over this machine's devices) or
            "multi_worker" (`MultiWorkerMirroredStrategy`; needs `TF_CONFIG`
            describing the cluster and this worker's index).

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: unknown `name`, or "multi_worker" without a valid
            `TF_CONFIG`.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"strategy: unknown {name!r}; valid: {', '.join(STRATEGIES)}.")
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    config = tf_config()
    if not config.get("cluster", {}).get("worker") or "task" not in config:
        raise ValueError(
            "strategy: 'multi_worker' needs the TF_CONFIG environment variable with "
            "the cluster and this worker's task, e.g. TF_CONFIG='{\"cluster\": "
            "{\"worker\": [\"host1:12345\", \"host2:12345\"]}, \"task\": {\"type\": "
            "\"worker\", \"index\": 0}}' (see README, Distributed training)."
        )
    return tf.distribute.MultiWorkerMirroredStrategy()


def tf_config():
    """The parsed `TF_CONFIG` environment variable ({} when unset).

    Raises:
        ValueError: when `TF_CONFIG` is set but is not a JSON object.
    """
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e.msg}): {raw[:80]!r}") from None
    if not isinstance(config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object; got {raw[:80]!r}.")
    return config


def worker_index(strategy=None):
    """This worker's index in a multi-worker run (0 otherwise).

    Args:
        strategy: the run's strategy; defaults to the current one
            (`tf.distribute.get_strategy()`, i.e. the one whose scope is open).
    """
    import tensorflow as tf

    
    strategy = strategy or tf.distribute.get_strategy()
    if not in_multi_worker_mode(strategy):
        return 0
    task = tf_config().get("task", {})
    return int(task.get("index", 0)) if task.get("type", "worker") in ("worker", "chief") else 0


def is_chief(strategy=None):
    """Whether this process writes the run's results (worker 0, or alone)."""
    return worker_index(strategy) == 0


def worker_dir(workdir, strategy=None):
    """`workdir` for the chief; a private `workdir/workers/<i>` otherwise."""
    index = worker_index(strategy)
    return workdir if index == 0 else os.path.join(workdir, "workers", str(index))


def enable_multi_worker(model):
    """Makes `model.fit`/`evaluate` work under MultiWorkerMirroredStrategy.

    Keras 3.15's `fit` fails there (keras-team/keras#20585). This patches the
    *instance* `model` (any `keras.Model` on the TensorFlow backend, built
    in the strategy's scope) the way `kdtf.Distiller` works by itself: it
    builds from the first local batch and reduces its logs correctly. Other
    instances of the class are untouched; a model that is not under a
    multi-worker strategy behaves exactly as before.

    Args:
        model: a `keras.Model`.

    Returns:
        `model`, patched.

    Example:

    ```python
    with strategy.scope():
        teacher = kdtf.distribute.enable_multi_worker(make_teacher())
        teacher.compile(...)
    teacher.fit(kdtf.distribute.shard_by_data(train_ds), epochs=10)
    ```
    """
    import types

    
    if getattr(model, "_kdtf_multi_worker", False):
        return model
    train_step, test_step = model.train_step, model.test_step
    model._maybe_symbolic_build = types.MethodType(
        maybe_symbolic_build, model
    )
    model.train_step = lambda data: logs_for_reduction(train_step(data))
    model.test_step = lambda data: logs_for_reduction(test_step(data))
    model._kdtf_multi_worker = True
    return model


def shard_by_data(dataset):
    """Shards `dataset` across workers by element (AutoShardPolicy.DATA).

    In-memory datasets have no files to shard by; with DATA sharding each
    global batch is split between the workers, so a run with N workers
    follows the same sequence of global batches as one worker.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options)


# ------------------------------------------------------------- step glue
# `tf.distribute` glue: multi-worker training and cross-replica gathers.
#
# Keras 3.15's `fit` fails under `tf.distribute.MultiWorkerMirroredStrategy`
# (keras-team/keras#20585) in two places, both fixed in this module for the `Distiller`,
# which owns its train and test steps:
#
# 1. `_maybe_symbolic_build` reduces the first *data* batch across workers
#    (`strategy.reduce("MEAN", batch)`), which cannot convert the per-replica
#    batch to a tensor. Building only needs shapes and dtypes, so we build from
#    the dataset's element spec, which also leaves the data order alone.
# 2. `reduce_per_replica` reduces logs with `strategy.reduce("MEAN", v,
#    axis=0)` in multi-worker mode, which fails on scalar logs. The steps give
#    each log a leading axis of length 1 there (`logs_for_reduction`), so that
#    reduction is the mean over all replicas of all workers, a scalar.
#
# `all_gather` lets a loss see the global batch (DIST's intra-class term).
# Off TensorFlow, or outside a replica context, every function is a no-op.



def _tf():
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return tf


def in_multi_worker_mode(strategy):
    """Whether `strategy` is a MultiWorkerMirroredStrategy across >1 worker."""
    tf = _tf()
    if tf is None or not isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy
    ):
        return False
    in_mode = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return bool(in_mode()) if callable(in_mode) else False


def local_batch(strategy, batch):
    """The first local replica's part of a (possibly) distributed batch."""
    tf = _tf()

    def first(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    return tf.nest.map_structure(first, batch)


def maybe_symbolic_build(model, iterator=None, data_batch=None):
    """`TensorFlowTrainer._maybe_symbolic_build` that works on any strategy.

    Builds the model's variables (under its strategy's scope) from the
    dataset's element spec (shapes and dtypes are all a symbolic build
    needs). Keras 3.15 instead draws the first batch from a fresh iterator
    and reduces it across workers: that fails under MultiWorkerMirroredStrategy,
    and with a reshuffling dataset it also spends the first shuffle order, so
    a run under any strategy would see other batches than one without.
    """
    if model._distribute_strategy is None:
        # No strategy: Keras defers building to the traced step; so do we.
        return None
    strategy = model.distribute_strategy
    if iterator is not None and data_batch is None:
        adapter = getattr(iterator, "data_adapter", None)
        try:
            data_batch = adapter.get_tf_dataset().element_spec
        except Exception:  # not a tf.data-backed iterator: draw a local batch
            for _, _, it in iterator:
                data_batch = local_batch(strategy, next(it))
                break
    with strategy.scope():
        model._symbolic_build(data_batch=data_batch)


def logs_for_reduction(logs):
    """Gives scalar logs a length-1 axis in multi-worker mode (see above)."""
    tf = _tf()
    if tf is None or not tf.distribute.has_strategy():
        return logs
    if not in_multi_worker_mode(tf.distribute.get_strategy()):
        return logs
    return {
        key: tf.reshape(value, [1]) if value.shape.rank == 0 else value
        for key, value in logs.items()
    }


def all_gather(x):
    """Concatenates `x` over all replicas (axis 0), with gradients.

    Inside a `tf.distribute` replica step with more than one replica, each
    replica gets the global batch in replica order; the gradient of the
    gathered tensor flows back to each replica's own rows (summed over the
    replicas that used them). Otherwise returns `x`.
    """
    tf = _tf()
    if tf is None:
        return x
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    return ctx.all_gather(x, axis=0)
