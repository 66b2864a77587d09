"""Pool sampler: draws real unlabelled inputs from a fixed pool."""

import keras
import numpy as np
from keras import ops

from kdtf.samplers.base import Sampler
from kdtf.samplers.base import uniform
from kdtf.samplers.gmm import _collect_inputs


@keras.saving.register_keras_serializable(package="kdtf")
class Pool(Sampler):
    """Draws inputs uniformly at random from a fixed pool of real inputs.

    `fit(x_unlabeled)` stores a pool of real inputs that have no labels;
    sampling picks rows of the pool uniformly at random, with replacement
    (indices from a TFP `Uniform`, stateless seed), so the synthetic inputs
    are real inputs labelled only by the teacher. This is the "oracle" of
    extracurricular learning, an upper reference for model-based samplers,
    and the way to distil on unlabelled data with `kdtf.Distiller`. The
    values of `x_real` are unused; its per-example shape must be the pool's.

    The pool is a non-trainable float32 variable `[P, ...]`, saved with the
    weights of a model that owns the sampler (`.keras` files); the config
    holds only `pool_shape`, from which `from_config()` rebuilds the (zero)
    variable that weight loading then fills. The pool lives on the device
    with the model, so keep it to a size that fits there. XLA
    (`jit_compile=True`): supported.

    Fit before tracing a train step that samples from the pool: a traced
    function keeps the variable it captured, and refitting to a pool of
    another shape creates a new one.

    Args:
        pool_shape: shape `[P, ...]` of the pool (normally set by `fit()` or
            by `from_config()`); creates a zero pool to be filled by weight
            loading.
        seed: int or None, seed of the sampler's own `SeedGenerator`.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> pool = Pool(seed=0).fit(x_unlabeled)
    >>> x_syn = pool(x_batch, seed=1)           # rows of x_unlabeled
    >>> distiller = kdtf.Distiller(teacher, student, sampler=pool)
    """

    def __init__(self, pool_shape=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self._pool = None
        if pool_shape is not None:
            try:
                shape = tuple(int(d) for d in pool_shape)
            except (TypeError, ValueError) as e:
                raise ValueError(
                    "`pool_shape` must be a list of positive ints; received "
                    f"pool_shape={pool_shape!r}."
                ) from e
            if len(shape) < 2 or min(shape) < 1:
                raise ValueError(
                    "`pool_shape` must be [P, ...] with P >= 1 and at least "
                    "one feature dimension, all positive; received "
                    f"pool_shape={pool_shape!r}."
                )
            self._create_pool(shape)

    @property
    def fitted(self):
        """Whether the sampler has a pool (from `fit` or a config)."""
        return self._pool is not None

    @property
    def pool_shape(self):
        """Shape `(P, ...)` of the pool, or None."""
        return None if self._pool is None else tuple(self._pool.shape)

    @property
    def pool_size(self):
        """Number of pool rows P, or None."""
        return None if self._pool is None else int(self._pool.shape[0])

    @property
    def pool(self):
        """The pool `[P, ...]` as float32 numpy, or None."""
        return None if self._pool is None else ops.convert_to_numpy(self._pool)

    def _create_pool(self, shape):
        if self._pool is not None:
            if tuple(self._pool.shape) == tuple(shape):
                return
            # Refit to a pool of another shape: replace the variable.
            delattr(self, "_pool")
            self._pool = None
        # Keras locks a built (called) layer's state; unlock it while adding
        # the variable, as Keras's own `_untrack_variable` does.
        was_locked = self._tracker.locked
        self._tracker.unlock()
        try:
            self._pool = self.add_weight(
                shape=shape,
                initializer="zeros",
                dtype="float32",
                trainable=False,
                name="pool",
            )
        finally:
            if was_locked:
                self._tracker.lock()

    def fit(self, x_unlabeled, max_samples=None):
        """Stores real unlabelled inputs as the pool to sample from.

        Args:
            x_unlabeled: numpy array / tensor `[P, ...]`, an `(x, y)` tuple
                of arrays, or a batched `tf.data.Dataset` of `x` or `(x, y)`
                (labels, if any, are ignored).
            max_samples: int or None, keep at most this many inputs (the
                first ones); None keeps all.

        Returns:
            `self`, fitted.

        Raises:
            ValueError: for an empty pool, non-finite inputs, or a bad
                `max_samples`.

        Example:

        >>> pool = Pool(seed=0).fit(x_unlabeled)
        >>> pool.pool_shape
        (1000, 40)
        """
        if max_samples is not None:
            if (
                isinstance(max_samples, bool)
                or not isinstance(max_samples, (int, np.integer))
                or max_samples < 1
            ):
                raise ValueError(
                    "`max_samples` must be a positive int or None; received "
                    f"max_samples={max_samples!r}."
                )
            max_samples = int(max_samples)
        x = _collect_inputs(
            x_unlabeled,
            max_samples,
            caller="Pool.fit",
            arg="x_unlabeled",
            dtype="float32",
        )
        if x.shape[0] < 1:
            raise ValueError(
                "`x_unlabeled` must hold at least one input; received shape "
                f"{x.shape}."
            )
        if not np.all(np.isfinite(x)):
            raise ValueError("Pool.fit received non-finite `x_unlabeled`.")
        self._create_pool(tuple(int(d) for d in x.shape))
        self._pool.assign(x)
        return self

    def validate(self, input_shape):
        super().validate(input_shape)
        input_shape = tuple(input_shape)
        if not self.fitted:
            return
        expected = self.pool_shape[1:]
        if len(input_shape) != len(expected) or any(
            d is not None and d != e for d, e in zip(input_shape, expected)
        ):
            raise ValueError(
                "Pool was fitted to `x_unlabeled` with per-example shape "
                f"{expected}; `x_real` has per-example shape {input_shape}."
            )

    def sample(self, x, num_samples, seed):
        if not self.fitted:
            raise ValueError(
                "Pool is not fitted: call `fit(x_unlabeled)` on real inputs "
                "(or load it from a saved model) before sampling."
            )
        size = self.pool_size
        u = uniform([num_samples], seed)
        index = ops.cast(ops.floor(u * float(size)), "int32")
        # float32 rounding can give u * size == size: keep within the pool.
        index = ops.minimum(index, size - 1)
        return ops.take(self._pool, index, axis=0)

    def load_own_variables(self, store):
        # A pool saved without its shape in the config (e.g. an unfitted
        # config with fitted weights) is rebuilt from the stored array.
        if not self.fitted and len(store.keys()) == 1:
            self._create_pool(tuple(store["0"].shape))
        super().load_own_variables(store)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pool_shape": (
                    None if self.pool_shape is None else list(self.pool_shape)
                )
            }
        )
        return config
