"""Feature adapters: map a student feature map onto the teacher's shape.

Feature distillation (FitNets, SSKD) compares intermediate features of two
networks whose widths, and sometimes spatial sizes, differ. An `Adapter` is
the small trainable layer put on the student side of such a loss:

* `[H, W, C]` maps: resize the student map to the teacher's `H x W`
  (average pooling for an integer down-scaling factor, bilinear resizing
  otherwise), then a 1x1 `Conv2D` to the teacher's channels, then
  `BatchNormalization`.
* `[L, C]` sequences: the same in 1-D (`AveragePooling1D` / linear
  interpolation, then a kernel-1 `Conv1D` and `BatchNormalization`).
* `[D]` vectors: `Dense` to the teacher's width, then `BatchNormalization`.

Adapters belong to the training loss, never to the student: the student a
distillation run returns has no adapter in it.
"""
import numbers

import keras
from keras import ops


def _check_shape(arg, shape):
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(
            f"`{arg}` must be a tuple of positive ints (one example's shape, "
            f"no batch dimension); got {shape!r}."
        )
    shape = tuple(shape)
    if not 1 <= len(shape) <= 3 or any(
        isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape
    ):
        raise ValueError(
            f"`{arg}` must be [D], [L, C] or [H, W, C] with positive int "
            f"sizes (no batch dimension); got {shape!r}."
        )
    return shape


def _check_pair(teacher_shape, student_shape):
    teacher_shape = _check_shape("teacher_shape", _as_ints(teacher_shape))
    student_shape = _check_shape("student_shape", _as_ints(student_shape))
    if len(teacher_shape) != len(student_shape):
        raise ValueError(
            "`teacher_shape` and `student_shape` must have the same rank "
            f"([D], [L, C] or [H, W, C]); got teacher_shape={teacher_shape} "
            f"and student_shape={student_shape}."
        )
    return teacher_shape, student_shape


def _as_ints(shape):
    """Turns NumPy / TensorShape integer sizes into Python ints."""
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        return shape
    return tuple(
        int(d) if isinstance(d, numbers.Integral) and not isinstance(d, bool) else d
        for d in shape
    )


@keras.saving.register_keras_serializable(package="kdtf")
class Adapter(keras.layers.Layer):
    """Maps student features of `student_shape` to `teacher_shape`.

    Args:
        teacher_shape: shape of one teacher feature, without the batch
            dimension: `(D,)`, `(L, C)` or `(H, W, C)` (channels last).
        student_shape: shape of one student feature, of the same rank.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`, ...).
            The dtype defaults to float32 so that losses on adapted
            features stay in float32 under mixed precision.

    Call arguments:
        inputs: student features of shape `[B] + student_shape`.
        training: whether BatchNormalization uses batch statistics (and
            updates its moving statistics), as for any Keras layer.

    Returns:
        Features of shape `[B] + teacher_shape`.

    Example:

    >>> adapter = Adapter(teacher_shape=(7, 7, 64), student_shape=(14, 14, 16))
    >>> adapter(np.zeros((2, 14, 14, 16), "float32")).shape
    (2, 7, 7, 64)
    """

    def __init__(self, teacher_shape, student_shape, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.teacher_shape, self.student_shape = _check_pair(
            teacher_shape, student_shape
        )
        rank = len(self.teacher_shape)
        t_channels = self.teacher_shape[-1]
        self.pool = None
        self.resize_to = None
        if rank == 1:
            self.project = keras.layers.Dense(
                t_channels, dtype=self.dtype_policy, name="dense"
            )
        else:
            t_size, s_size = self.teacher_shape[:-1], self.student_shape[:-1]
            if t_size != s_size:
                factors = [s // t for s, t in zip(s_size, t_size)]
                if all(s % t == 0 for s, t in zip(s_size, t_size)):
                    pool_cls = (
                        keras.layers.AveragePooling1D
                        if rank == 2
                        else keras.layers.AveragePooling2D
                    )
                    self.pool = pool_cls(
                        tuple(factors), dtype=self.dtype_policy, name="pool"
                    )
                else:
                    self.resize_to = t_size
            conv_cls = keras.layers.Conv1D if rank == 2 else keras.layers.Conv2D
            self.project = conv_cls(
                t_channels, 1, dtype=self.dtype_policy, name="conv"
            )
        self.norm = keras.layers.BatchNormalization(
            dtype=self.dtype_policy, name="bn"
        )

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != len(self.student_shape) + 1 or any(
            d is not None and d != s for d, s in zip(shape[1:], self.student_shape)
        ):
            raise ValueError(
                f"Adapter {self.name!r} expects inputs of shape "
                f"[batch] + {list(self.student_shape)}; got {shape}."
            )
        shape = (shape[0],) + self.student_shape
        if self.pool is not None:
            self.pool.build(shape)
            shape = self.pool.compute_output_shape(shape)
        elif self.resize_to is not None:
            shape = (shape[0],) + tuple(self.resize_to) + (shape[-1],)
        self.project.build(shape)
        shape = self.project.compute_output_shape(shape)
        self.norm.build(shape)
        self.built = True

    def call(self, inputs, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        if self.pool is not None:
            x = self.pool(x)
        elif self.resize_to is not None:
            x = _resize(x, self.resize_to)
        x = self.project(x)
        return self.norm(x, training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.teacher_shape

    def initialize_from_targets(self, teacher_features):
        """Sets the BatchNorm scale and offset to the teacher's moments.

        At initialisation BatchNorm outputs unit-variance, zero-mean
        features, while teacher features can have any scale; learning the
        scale through `gamma` and `beta` is slow. Setting `gamma` to the
        per-channel standard deviation and `beta` to the mean of a batch of
        teacher features makes the adapter start at the right scale.

        Args:
            teacher_features: a batch of teacher features,
                `[B] + teacher_shape`.

        Example:

        >>> adapter.initialize_from_targets(teacher_stage(x_batch))
        """
        t = keras.ops.convert_to_numpy(teacher_features).astype("float64")
        if tuple(t.shape[1:]) != self.teacher_shape:
            raise ValueError(
                f"`teacher_features` must have shape [batch] + "
                f"{list(self.teacher_shape)}; got {tuple(t.shape)}."
            )
        t = t.reshape(-1, self.teacher_shape[-1])
        self.norm.gamma.assign(t.std(axis=0).astype("float32"))
        self.norm.beta.assign(t.mean(axis=0).astype("float32"))

    def get_config(self):
        return {
            **super().get_config(),
            "teacher_shape": list(self.teacher_shape),
            "student_shape": list(self.student_shape),
        }


def _resize(x, size):
    """Bilinear (2-D) or linear (1-D) resizing of channels-last features."""
    if len(size) == 2:
        return ops.image.resize(
            x, size, interpolation="bilinear", data_format="channels_last"
        )
    # [B, L, C] -> [B, L, 1, C] -> resize -> [B, L', C]
    x = ops.expand_dims(x, 2)
    x = ops.image.resize(
        x, (size[0], 1), interpolation="bilinear", data_format="channels_last"
    )
    return ops.squeeze(x, 2)


def make_adapter(teacher_shape, student_shape, name=None):
    """Returns an `Adapter` for two feature shapes, or None if they are equal.

    Args:
        teacher_shape: shape of one teacher feature (no batch dimension).
        student_shape: shape of one student feature (no batch dimension).
        name: optional layer name.

    Returns:
        A built `Adapter`, or `None` when the shapes already match.

    Example:

    >>> make_adapter((64,), (64,)) is None
    True
    >>> make_adapter((40, 64), (40, 16)).teacher_shape
    (40, 64)
    """
    teacher_shape, student_shape = _check_pair(teacher_shape, student_shape)
    if teacher_shape == student_shape:
        return None
    adapter = Adapter(teacher_shape, student_shape, name=name)
    adapter.build((None,) + student_shape)
    return adapter
