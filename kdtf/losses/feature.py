"""Feature distillation: mean squared error between intermediate features."""
import keras
from keras import ops

from kdtf import adapters as adapters_lib
from kdtf.losses.base import DistillationLoss


@keras.saving.register_keras_serializable(package="kdtf")
class FeatureMSE(DistillationLoss):
    """FitNets-style hint loss: `mean((A(F_S) - F_T)^2)` per example.

    `F_T` and `F_S` are the outputs of the teacher layer `teacher_layer_name`
    and the student layer `student_layer_name`; `A` is an `kdtf.adapters.Adapter`
    (1x1 convolution or dense layer + BatchNorm, resizing spatial maps when
    their sizes differ) that maps the student's features onto the teacher's
    shape. The mean runs over every axis but the batch axis.

    The `kdtf.Distiller` reads `teacher_layer_name` / `student_layer_name`,
    feeds this loss the two layers' outputs instead of the logits and calls
    `build_adapter(teacher_shape, student_shape)` once with the static
    per-example shapes. The adapter is then exposed as `loss.adapter`; it is
    trained by the Distiller's optimizer and saved with the Distiller, never
    with the student. The config only holds names and flags.

    Args:
        teacher_layer_name: name of the teacher layer whose output is the
            target, e.g. `"stage2"`.
        student_layer_name: name of the student layer to match.
        adapter: whether to add an adapter when the shapes differ. With
            `adapter=False`, differing shapes are an error.
        name: name of the loss. Defaults to `"feature_mse"`.
        reduction: `keras.losses.Loss` reduction over the per-example values.

    Call arguments:
        teacher_outputs: teacher features `[B] + teacher_shape`.
        student_outputs: student features `[B] + student_shape`.
        sample_weight: optional per-example weights.
        training: passed to the adapter (its BatchNorm uses batch
            statistics when True). Pass `training=True` in train steps.

    Example:

    >>> loss = FeatureMSE("stage2", "stage2")
    >>> adapter = loss.build_adapter((20, 64), (20, 16))
    >>> loss(teacher_features, student_features, training=True)
    """

    def __init__(
        self,
        teacher_layer_name,
        student_layer_name,
        adapter=True,
        name="feature_mse",
        reduction="sum_over_batch_size",
    ):
        super().__init__(name=name, reduction=reduction)
        for arg, value in (
            ("teacher_layer_name", teacher_layer_name),
            ("student_layer_name", student_layer_name),
        ):
            if not isinstance(value, str) or not value:
                raise TypeError(
                    f"`{arg}` must be a non-empty str (a layer name); got "
                    f"{value!r}."
                )
        if not isinstance(adapter, bool):
            raise TypeError(f"`adapter` must be a bool; got {adapter!r}.")
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self.use_adapter = adapter
        self.adapter = None
        self._shapes = None

    def build_adapter(self, teacher_shape, student_shape):
        """Creates the adapter for per-example feature shapes (no batch dim).

        Args:
            teacher_shape: shape of one teacher feature.
            student_shape: shape of one student feature.

        Returns:
            The built `kdtf.adapters.Adapter` (also stored as `self.adapter`),
            or None when the shapes are equal.

        Raises:
            ValueError: the shapes differ and `adapter=False`, or they have
                different ranks.
        """
        teacher_shape = tuple(int(d) for d in teacher_shape)
        student_shape = tuple(int(d) for d in student_shape)
        if teacher_shape != student_shape and not self.use_adapter:
            raise ValueError(
                f"{type(self).__name__}: teacher layer "
                f"{self.teacher_layer_name!r} has features of shape "
                f"{teacher_shape} and student layer {self.student_layer_name!r} "
                f"of shape {student_shape}; with adapter=False they must be "
                "equal. Use adapter=True to learn a mapping."
            )
        self.adapter = adapters_lib.make_adapter(
            teacher_shape, student_shape, name=f"{self.name}_adapter"
        )
        self._shapes = (teacher_shape, student_shape)
        return self.adapter

    needs = ("training",)  # the adapter's BatchNorm

    def __call__(
        self, teacher_outputs, student_outputs, sample_weight=None, training=None
    ):
        student_outputs = ops.cast(student_outputs, "float32")
        if self.adapter is not None:
            student_outputs = self.adapter(student_outputs, training=training)
        elif self.use_adapter and self._shapes is None and tuple(
            teacher_outputs.shape[1:]
        ) != tuple(student_outputs.shape[1:]):
            raise ValueError(
                f"{type(self).__name__}: teacher features of shape "
                f"{tuple(teacher_outputs.shape[1:])} and student features of "
                f"shape {tuple(student_outputs.shape[1:])} differ; call "
                "build_adapter(teacher_shape, student_shape) first (the "
                "kdtf.Distiller does this in its constructor)."
            )
        return super().__call__(
            teacher_outputs, student_outputs, sample_weight=sample_weight
        )

    def call(self, teacher_outputs, student_outputs):
        squared = ops.square(student_outputs - teacher_outputs)
        rank = len(squared.shape)
        if rank == 1:
            return squared
        return ops.mean(squared, axis=tuple(range(1, rank)))

    def get_config(self):
        return {
            **super().get_config(),
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
            "adapter": self.use_adapter,
        }
