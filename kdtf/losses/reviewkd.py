"""ReviewKD: knowledge review (Chen et al., CVPR 2021).

The student's stage features `S_1..S_n` (shallow to deep) are fused deep to
shallow by attention-based fusion (ABF) modules, and each fused map `F_i` is
matched to the teacher's stage feature `T_i` by the hierarchical context loss

    HCL(F, T) = (mse(F, T) + sum_l w_l * mse(pool_l(F), pool_l(T))) / (1 + sum_l w_l)

with `pool_l` the adaptive average pooling to `l x l`, `l` in (4, 2, 1),
levels with `l >= H` left out and weights `1/2, 1/4, 1/8` given to the levels
used, in that order; the loss is the sum of HCL over the stage pairs.

ABF of stage `i`: `x = BN(conv1x1(S_i))` to `mid` channels; except for the
deepest stage, the residual `r` of the deeper stage is resized (nearest) to
`x`'s size and mixed in with two attention maps,
`a = sigmoid(conv1x1([x, r]))`, `x = x * a_0 + r * a_1`; `x` is resized
(nearest) to the teacher's size of the stage, `F_i = BN(conv3x3(x))` has the
teacher's channels, and `x` is the residual passed to the shallower stage.

Conventions from the official code (github.com/dvlab-research/ReviewKD,
`CIFAR-100/model/reviewkd.py`, `hcl`, `ABF`, and `CIFAR-100/train.py`): `mid =
min(512, channels of the deepest student stage)`; convolutions without bias
before their BatchNorm, initialised uniformly in `+-sqrt(3 / fan_in)` (PyTorch's
`kaiming_uniform_(a=1)`); BatchNorm with PyTorch's `eps = 1e-5` and momentum
0.1 (Keras `momentum=0.9`); nearest resizing with PyTorch's index rule
`floor(i * in / out)`; adaptive pooling bins `[floor(i * n / l), ceil((i + 1)
* n / l))`; the mean squared errors are means over every element, so the
batch mean of this per-example loss equals the official value; HCL summed
over stages; a linear warm-up of the loss (the official 20 epochs). The
teacher's features in the official CIFAR code are its stages' pre-activation
outputs and its pooled feature; here they are whatever layers are named.
Differences: the attention convolution keeps Keras's zero bias initialiser
(PyTorch draws it uniformly); the warm-up is per optimizer step, not per
epoch.
"""
import keras
import numpy as np
from keras import ops

from kdtf.losses.base import DistillationLoss

LEVELS = (4, 2, 1)
_CONV_INIT = {"class_name": "VarianceScaling",
              "config": {"scale": 1.0, "mode": "fan_in", "distribution": "uniform"}}


def _pool_matrix(size, bins):
    """`[bins, size]` weights of PyTorch's adaptive average pooling in 1-D."""
    m = np.zeros((bins, size), "float32")
    for i in range(bins):
        start, end = (i * size) // bins, -((-(i + 1) * size) // bins)
        m[i, start:end] = 1.0 / (end - start)
    return m


def _nearest(x, size):
    """Nearest resizing of `[B, H, W, C]` to `size` (PyTorch's index rule)."""
    for axis, (n_in, n_out) in ((1, (x.shape[1], size[0])), (2, (x.shape[2], size[1]))):
        if n_in != n_out:
            index = np.minimum(np.floor(np.arange(n_out) * (n_in / n_out)), n_in - 1)
            x = ops.take(x, index.astype("int32"), axis=axis)
    return x


def _as_map(x):
    """`[B, C]` features as `[B, 1, 1, C]` maps, `[B, L, C]` as `[B, L, 1, C]`."""
    if len(x.shape) == 2:
        return ops.reshape(x, (-1, 1, 1, x.shape[-1]))
    if len(x.shape) == 3:
        return ops.reshape(x, (-1, x.shape[1], 1, x.shape[-1]))
    return x


def _check_maps(arg, features, count=None):
    if not isinstance(features, (list, tuple)) or not features:
        raise ValueError(
            f"`{arg}` must be a non-empty list of stage features ([B, H, W, C] maps or "
            f"[B, C] vectors); got {type(features).__name__}."
        )
    if count is not None and len(features) != count:
        raise ValueError(f"`{arg}` must hold {count} stage features; got {len(features)}.")
    for i, f in enumerate(features):
        if len(f.shape) not in (2, 3, 4):
            raise ValueError(
                f"`{arg}[{i}]` must be a [B, H, W, C] map, a [B, L, C] sequence or a [B, C] "
                "vector; got shape "
                f"{tuple(f.shape)}."
            )


def hierarchical_context_loss(student_features, teacher_features, levels=LEVELS):
    """HCL summed over stage pairs, one value per example.

    Args:
        student_features: list of `[B, H_i, W_i, C_i]` maps (or `[B, C_i]`).
        teacher_features: list of maps of the same shapes.
        levels: pyramid pooling sizes, largest first. Defaults to (4, 2, 1).

    Returns:
        `[B]` losses.

    Raises:
        ValueError: the lists differ in length or a pair in shape.
    """
    _check_maps("student_features", student_features)
    _check_maps("teacher_features", teacher_features, len(student_features))
    total = 0.0
    for i, (fs, ft) in enumerate(zip(student_features, teacher_features)):
        fs, ft = _as_map(ops.cast(fs, "float32")), _as_map(ops.cast(ft, "float32"))
        if tuple(fs.shape[1:]) != tuple(ft.shape[1:]):
            raise ValueError(
                f"hierarchical_context_loss: student_features[{i}] has shape "
                f"{tuple(fs.shape)} and teacher_features[{i}] {tuple(ft.shape)}; they must "
                "match (ReviewKD's fusion maps the student onto the teacher's shapes)."
            )
        h, w = fs.shape[1], fs.shape[2]
        loss = ops.mean(ops.square(fs - ft), axis=(1, 2, 3))
        weight, weights = 1.0, 1.0
        diff = fs - ft  # pooling is linear: pool(F) - pool(T) = pool(F - T)
        for level in levels:
            if level >= h:
                continue
            pooled = ops.einsum("bhwc,ih,jw->bijc", diff, _pool_matrix(h, level),
                                _pool_matrix(w, level))
            weight /= 2.0
            loss = loss + weight * ops.mean(ops.square(pooled), axis=(1, 2, 3))
            weights += weight
        total = total + loss / weights
    return total


@keras.saving.register_keras_serializable(package="kdtf")
class ABF(keras.layers.Layer):
    """Attention-based fusion of one student stage (ReviewKD).

    Args:
        mid_channels: channels of the fused features (and of the residual).
        out_channels: channels of the output (the teacher stage's).
        fuse: whether a residual from a deeper stage is mixed in.
        **kwargs: `keras.layers.Layer` arguments (float32 by default).

    Call arguments:
        inputs: `[B, H, W, C]` student features.
        residual: `[B, h, w, mid_channels]` from the deeper stage (with
            `fuse=True`).
        out_size: `(H_t, W_t)`, the teacher's spatial size.
        training: BatchNorm mode.

    Returns:
        `(output [B, H_t, W_t, out_channels], residual [B, H_t, W_t, mid])`.
    """

    def __init__(self, mid_channels, out_channels, fuse, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mid_channels, self.out_channels, self.fuse = int(mid_channels), int(out_channels), fuse
        policy = self.dtype_policy

        def conv(filters, size, name):
            return keras.layers.Conv2D(filters, size, padding="same", use_bias=False,
                                       kernel_initializer=keras.initializers.get(_CONV_INIT),
                                       dtype=policy, name=name)

        def norm(name):
            return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype=policy,
                                                   name=name)

        self.conv1, self.norm1 = conv(self.mid_channels, 1, "conv1"), norm("bn1")
        self.conv2, self.norm2 = conv(self.out_channels, 3, "conv2"), norm("bn2")
        self.att_conv = keras.layers.Conv2D(
            2, 1, activation="sigmoid", dtype=policy, name="att_conv",
            kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")
        ) if fuse else None

    def build(self, input_shape, out_size=None):
        h, w, c = input_shape[1:]
        out_size = out_size or (h, w)
        self.conv1.build((None, h, w, c))
        self.norm1.build((None, h, w, self.mid_channels))
        if self.att_conv is not None:
            self.att_conv.build((None, h, w, 2 * self.mid_channels))
        self.conv2.build((None,) + tuple(out_size) + (self.mid_channels,))
        self.norm2.build((None,) + tuple(out_size) + (self.out_channels,))
        self.built = True

    def call(self, inputs, residual=None, out_size=None, training=None):
        x = self.norm1(self.conv1(inputs), training=training)
        if self.att_conv is not None:
            residual = _nearest(residual, (x.shape[1], x.shape[2]))
            att = self.att_conv(ops.concatenate([x, residual], axis=-1))
            x = x * att[..., :1] + residual * att[..., 1:]
        if out_size is not None:
            x = _nearest(x, out_size)
        return self.norm2(self.conv2(x), training=training), x

    def get_config(self):
        return {**super().get_config(), "mid_channels": self.mid_channels,
                "out_channels": self.out_channels, "fuse": self.fuse}


@keras.saving.register_keras_serializable(package="kdtf")
class ReviewFusion(keras.layers.Layer):
    """ReviewKD's ABF modules for all stages: student maps onto teacher shapes.

    Args:
        teacher_shapes: per-stage teacher feature shapes (no batch dim),
            shallow to deep, `(H, W, C)` or `(C,)`.
        student_shapes: the student's, in the same order.
        mid_channels: channels of the fused features; None for the official
            `min(512, channels of the deepest student stage)`.
        **kwargs: `keras.layers.Layer` arguments.

    Call arguments:
        inputs: list of student features, shallow to deep.
        training: BatchNorm mode.

    Returns:
        List of fused features with the teacher's shapes (as `[B, H, W, C]`).
    """

    def __init__(self, teacher_shapes, student_shapes, mid_channels=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.teacher_shapes = [_map_shape(s) for s in teacher_shapes]
        self.student_shapes = [_map_shape(s) for s in student_shapes]
        self.mid_channels = (min(512, self.student_shapes[-1][-1]) if mid_channels is None
                             else int(mid_channels))
        n = len(self.student_shapes)
        self.abfs = [ABF(self.mid_channels, t[-1], fuse=i < n - 1, dtype=self.dtype_policy,
                         name=f"abf{i + 1}") for i, t in enumerate(self.teacher_shapes)]
        for abf, s, t in zip(self.abfs, self.student_shapes, self.teacher_shapes):
            abf.build((None,) + s, out_size=t[:2])
        self.built = True

    def call(self, inputs, training=None):
        inputs = [_as_map(x) for x in inputs]
        outputs = [None] * len(inputs)
        residual = None
        for i in reversed(range(len(inputs))):
            outputs[i], residual = self.abfs[i](
                inputs[i], residual, out_size=self.teacher_shapes[i][:2], training=training)
        return outputs

    def get_config(self):
        return {**super().get_config(), "teacher_shapes": self.teacher_shapes,
                "student_shapes": self.student_shapes, "mid_channels": self.mid_channels}


def _map_shape(shape):
    shape = tuple(int(d) for d in shape)
    if len(shape) == 2:  # a sequence [L, C] is an L x 1 map
        return (shape[0], 1, shape[1])
    return (1, 1) + shape if len(shape) == 1 else shape


@keras.saving.register_keras_serializable(package="kdtf")
class ReviewKD(DistillationLoss):
    """Knowledge review (Chen et al., CVPR 2021): ABF fusion + hierarchical context loss.

    The student's features at `student_layer_names` (stages, shallow to
    deep) are fused deep to shallow by `ABF` modules onto the shapes of the
    teacher's features at `teacher_layer_names`, and the loss is the sum
    over stage pairs of the hierarchical context loss (see the module
    docstring), one value per example, times `min(step / warmup_steps, 1)`.
    A stage may be a `[B, H, W, C]` map, a `[B, L, C]` sequence (taken as
    an `L x 1` map: 1-D pooling and kernel-3 convolutions) or a `[B, C]`
    vector (taken as a 1x1 map), e.g. the pooled penultimate feature the official code uses as
    its deepest stage.

    `kdtf.Distiller` reads `teacher_layer_names` / `student_layer_names`,
    passes this loss lists of the layers' outputs, and calls
    `build_adapter(teacher_shapes, student_shapes)` once with lists of
    static per-example shapes. The `ReviewFusion` it returns
    (`loss.adapter`, the ABF modules) is trained by the Distiller's
    optimizer and saved with the Distiller, never with the student.

    Args:
        teacher_layer_names: teacher layers, shallow to deep.
        student_layer_names: student layers, one per teacher layer.
        warmup_steps: the loss grows linearly from 0 over this many optimizer
            steps (the official code: 20 epochs); 0 for none.
        mid_channels: channels of the fused features; None for the
            official `min(512, channels of the deepest student stage)`.
        name: name of the loss. Defaults to `"reviewkd"`.
        reduction: `keras.losses.Loss` reduction over the per-example values.

    Call arguments:
        teacher_outputs: list of teacher stage features.
        student_outputs: list of student stage features.
        sample_weight: optional per-example weights.
        training: BatchNorm mode of the ABF modules (True in train steps).
        step: the optimizer's step count, for the warm-up (None: done).

    Returns:
        The reduced loss (`[B]` with `reduction=None`).

    Example:

    >>> loss = ReviewKD(["t_stage1", "t_stage2", "t_pool"], ["s_stage1", "s_stage2", "s_pool"])
    >>> distiller = kdtf.Distiller(teacher, student, loss, [1.0])
    """

    same_shape = False
    needs = ("training", "step")

    def __init__(self, teacher_layer_names, student_layer_names, warmup_steps=0,
                 mid_channels=None, name="reviewkd", reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        for arg, value in (("teacher_layer_names", teacher_layer_names),
                           ("student_layer_names", student_layer_names)):
            if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value or \
                    not all(isinstance(v, str) and v for v in value):
                raise TypeError(
                    f"`{arg}` must be a non-empty list of layer names (shallow to deep); got "
                    f"{value!r}."
                )
        if len(teacher_layer_names) != len(student_layer_names):
            raise ValueError(
                "`teacher_layer_names` and `student_layer_names` must pair stages one to one; "
                f"got {len(teacher_layer_names)} teacher and {len(student_layer_names)} "
                "student layers."
            )
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"`warmup_steps` must be an int >= 0; got {warmup_steps!r}.")
        if mid_channels is not None and (isinstance(mid_channels, bool) or
                                         not isinstance(mid_channels, int) or mid_channels < 1):
            raise ValueError(f"`mid_channels` must be an int >= 1 or None; got {mid_channels!r}.")
        self.teacher_layer_names = list(teacher_layer_names)
        self.student_layer_names = list(student_layer_names)
        self.warmup_steps = warmup_steps
        self.mid_channels = mid_channels
        self.adapter = None

    def build_adapter(self, teacher_shapes, student_shapes):
        """Creates the ABF modules for per-stage shapes (no batch dims).

        Args:
            teacher_shapes: list of teacher feature shapes, one per stage.
            student_shapes: list of student feature shapes.

        Returns:
            The `ReviewFusion` layer (also `self.adapter`).

        Raises:
            ValueError: wrong number of shapes, or a shape that is not
                `(H, W, C)` or `(C,)` with known sizes.
        """
        n = len(self.teacher_layer_names)
        for arg, shapes, names in (("teacher_shapes", teacher_shapes, self.teacher_layer_names),
                                   ("student_shapes", student_shapes, self.student_layer_names)):
            if len(shapes) != n:
                raise ValueError(f"`{arg}` must hold {n} shapes (one per stage); got {len(shapes)}.")
            for name, shape in zip(names, shapes):
                shape = tuple(shape)
                if len(shape) not in (1, 2, 3) or any(d is None or int(d) < 1 for d in shape):
                    raise ValueError(
                        f"{type(self).__name__}: layer {name!r} ({arg}) has features of shape "
                        f"{shape}; each stage must be an (H, W, C) map, an (L, C) sequence or a "
                        "(C,) vector with known sizes."
                    )
        self.adapter = ReviewFusion(teacher_shapes, student_shapes, self.mid_channels,
                                    name=f"{self.name}_abf")
        return self.adapter

    def call(self, teacher_outputs, student_outputs, training=None, step=None):
        if self.adapter is None:
            raise ValueError(
                f"{type(self).__name__}: call build_adapter(teacher_shapes, student_shapes) "
                "first (the kdtf.Distiller does this in its constructor)."
            )
        n = len(self.teacher_layer_names)
        _check_maps("teacher_outputs", teacher_outputs, n)
        _check_maps("student_outputs", student_outputs, n)
        for arg, features, shapes in (("teacher_outputs", teacher_outputs,
                                       self.adapter.teacher_shapes),
                                      ("student_outputs", student_outputs,
                                       self.adapter.student_shapes)):
            for i, (f, want) in enumerate(zip(features, shapes)):
                got = tuple(_map_shape(f.shape[1:]))
                if got != want:
                    raise ValueError(
                        f"{type(self).__name__}: `{arg}[{i}]` has shape {tuple(f.shape)}; "
                        f"build_adapter was given {want} for that stage."
                    )
        fused = self.adapter(list(student_outputs), training=bool(training))
        loss = hierarchical_context_loss(fused, list(teacher_outputs))
        if self.warmup_steps and step is not None:
            loss = loss * ops.minimum(ops.cast(step, "float32") / float(self.warmup_steps), 1.0)
        return loss

    def get_config(self):
        return {**super().get_config(), "teacher_layer_names": self.teacher_layer_names,
                "student_layer_names": self.student_layer_names,
                "warmup_steps": self.warmup_steps, "mid_channels": self.mid_channels}
