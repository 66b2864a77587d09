"""`tf.distribute` glue: multi-worker training and cross-replica gathers.

Keras 3.15's `fit` fails under `tf.distribute.MultiWorkerMirroredStrategy`
(keras-team/keras#20585) in two places, both fixed here for the `Distiller`,
which owns its train and test steps:

1. `_maybe_symbolic_build` reduces the first *data* batch across workers
   (`strategy.reduce("MEAN", batch)`), which cannot convert the per-replica
   batch to a tensor. Building only needs shapes and dtypes, so we build from
   the dataset's element spec, which also leaves the data order alone.
2. `reduce_per_replica` reduces logs with `strategy.reduce("MEAN", v,
   axis=0)` in multi-worker mode, which fails on scalar logs. The steps give
   each log a leading axis of length 1 there (`logs_for_reduction`), so that
   reduction is the mean over all replicas of all workers, a scalar.

`all_gather` lets a loss see the global batch (DIST's intra-class term).
Off TensorFlow, or outside a replica context, every function is a no-op.
"""
import keras


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
