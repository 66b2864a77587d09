"""Output heads that give a model an output *distribution*.

Extracurricular learning matches the teacher's and student's output
distributions (see `kdtf.losses.DistributionKL`). A head fixes which family a
model predicts:

- `CategoricalHead(num_classes)`: logits of a categorical distribution.
- `GaussianHead(output_dim)`: an independent Gaussian per output dimension,
  returned as ONE tensor `[B, 2 * output_dim]` = concat(mean, log-variance),
  so that the `Distiller` can slice real and synthetic rows of it like logits.
  Use `split_gaussian` to take it apart.

`output_family(model)` tells which head a model ends with and
`check_compatible(teacher, student, losses)` raises a clear error when a
Gaussian (regression) head meets a categorical (classification) one.
"""
import keras
from keras import ops

FAMILIES = ("categorical", "gaussian")


@keras.saving.register_keras_serializable(package="kdtf")
class CategoricalHead(keras.layers.Layer):
    """A Dense layer returning the logits of a categorical distribution.

    Args:
        num_classes: int >= 2, number of classes.
        kernel_initializer: initializer of the Dense kernel.
        **kwargs: `keras.layers.Layer` arguments (e.g. `name`).

    Returns:
        Called on `[B, ..., F]` features, logits `[B, ..., num_classes]`.

    Example:

    >>> head = CategoricalHead(10)
    >>> head(np.zeros((4, 32), "float32")).shape
    TensorShape([4, 10])
    """

    family = "categorical"

    def __init__(self, num_classes, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.num_classes = _check_positive_int("num_classes", num_classes, minimum=2)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dense = keras.layers.Dense(
            self.num_classes,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="logits",
        )

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.built = True

    def call(self, inputs):
        return self.dense(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.num_classes,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="kdtf")
class GaussianHead(keras.layers.Layer):
    """Predicts a diagonal Gaussian: concat(mean, clamped log-variance).

    Two Dense projections give the mean and the log-variance of each of the
    `output_dim` outputs; the log-variance is clipped to
    `[min_log_var, max_log_var]` so variances stay in `[e^-10, e^10]` by
    default (the gradient is zero outside that range, as for `ops.clip`).
    The two are concatenated into one tensor so the model has a single output
    that the `Distiller` can slice row-wise. Outputs are computed in the
    layer's dtype policy; losses cast them to float32.

    Args:
        output_dim: int >= 1, number of regression targets.
        min_log_var: lower clamp of the log-variance. Defaults to -10.
        max_log_var: upper clamp of the log-variance. Defaults to 10.
        kernel_initializer: initializer of both Dense kernels.
        **kwargs: `keras.layers.Layer` arguments (e.g. `name`).

    Returns:
        Called on features `[B, F]`, a tensor `[B, 2 * output_dim]` whose
        first `output_dim` columns are the means and last `output_dim`
        columns the log-variances.

    Example:

    >>> head = GaussianHead(1)
    >>> out = head(np.zeros((4, 32), "float32"))      # [4, 2]
    >>> mean, log_var = split_gaussian(out)           # [4, 1] each
    """

    family = "gaussian"

    def __init__(
        self,
        output_dim,
        min_log_var=-10.0,
        max_log_var=10.0,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.output_dim = _check_positive_int("output_dim", output_dim, minimum=1)
        for arg, value in (("min_log_var", min_log_var), ("max_log_var", max_log_var)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"`{arg}` must be a number; got {value!r}.")
        if not min_log_var < max_log_var:
            raise ValueError(
                "`min_log_var` must be < `max_log_var`; got "
                f"min_log_var={min_log_var}, max_log_var={max_log_var}."
            )
        self.min_log_var = float(min_log_var)
        self.max_log_var = float(max_log_var)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.mean_dense = keras.layers.Dense(
            self.output_dim,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="mean",
        )
        self.log_var_dense = keras.layers.Dense(
            self.output_dim,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="log_var",
        )

    def build(self, input_shape):
        self.mean_dense.build(input_shape)
        self.log_var_dense.build(input_shape)
        self.built = True

    def call(self, inputs):
        mean = self.mean_dense(inputs)
        log_var = ops.clip(
            self.log_var_dense(inputs), self.min_log_var, self.max_log_var
        )
        return ops.concatenate([mean, log_var], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (2 * self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_dim": self.output_dim,
                "min_log_var": self.min_log_var,
                "max_log_var": self.max_log_var,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
            }
        )
        return config


def split_gaussian(outputs, arg="outputs"):
    """Splits `GaussianHead` outputs into `(mean, log_var)`.

    Args:
        outputs: tensor `[..., 2 * D]` = concat(mean, log-variance).
        arg: name of the argument, used in the error message.

    Returns:
        `(mean, log_var)`, two tensors `[..., D]`.

    Raises:
        ValueError: if the last dimension is unknown or odd, which is what a
            classification (logit) output given to a Gaussian loss looks like.

    Example:

    >>> mean, log_var = split_gaussian(model(x))
    >>> std = ops.exp(0.5 * log_var)
    """
    outputs = ops.convert_to_tensor(outputs)
    size = outputs.shape[-1] if len(outputs.shape) else None
    if size is None or size % 2:
        raise ValueError(
            f"`{arg}` must be GaussianHead outputs: concat(mean, log_var) "
            f"with an even last dimension 2 * D; got shape {tuple(outputs.shape)}. "
            "A classification (categorical) output cannot be used with a "
            "Gaussian (regression) loss; use family='categorical' or give the "
            "models a kdtf.heads.GaussianHead."
        )
    d = size // 2
    return outputs[..., :d], outputs[..., d:]


def output_family(model):
    """Returns the output family of a model from its last layer.

    Args:
        model: a `keras.Model` (or layer).

    Returns:
        "gaussian" if the model ends with a `GaussianHead`, "categorical" if
        it ends with a `CategoricalHead`, None if the last layer is neither
        (e.g. a plain `Dense` returning logits).

    Example:

    >>> output_family(keras.Sequential([keras.Input((3,)), GaussianHead(1)]))
    'gaussian'
    """
    layer = _last_layer(model)
    return getattr(layer, "family", None) if layer is not None else None


def softmax_layer(model):
    """The layer whose softmax ends `model`, or None for a logits output.

    A model ends in a softmax when its last layer is a `Softmax` layer, an
    `Activation("softmax")`, or a layer built with `activation="softmax"`
    (`Dense`, `Conv2D`, ...: every `keras.applications` classifier with its
    default `classifier_activation="softmax"`). Nested models are followed
    to their last layer. Subclassed models whose last layer cannot be found
    are treated as returning logits.

    Args:
        model: a `keras.Model`.

    Returns:
        The softmax layer, or None.

    Example:

    >>> softmax_layer(keras.applications.MobileNetV3Small(weights=None)).name
    'predictions'
    """
    layer = _last_layer(model)
    if layer is None:
        return None
    if isinstance(layer, keras.layers.Softmax):
        return layer
    activation = getattr(layer, "activation", None)
    if getattr(activation, "__name__", None) == "softmax":
        return layer
    return None


def log_probabilities(probabilities):
    """`log p` of softmax outputs, in float32: logits up to a per-row constant.

    `softmax(log p / T) == softmax(z / T)` for `p = softmax(z)`, so every
    softmax-based loss and metric is exact on `log p`. Probabilities that
    underflowed to 0 are clipped at the smallest normal float32, i.e. a logit
    gap of about 87 nats, which no temperature-softened target can tell apart.

    Args:
        probabilities: a tensor (or NumPy array) of probabilities.

    Returns:
        A float32 tensor of the same shape.
    """
    p = ops.cast(probabilities, "float32")
    return ops.log(ops.maximum(p, _TINY))


# The smallest normal float32.
_TINY = 1.1754944e-38


def as_logits(model, outputs):
    """`outputs` of `model` as logits: log-probabilities if it ends in a softmax.

    Metrics that take logits (`kdtf.metrics`) then give the right values for
    either kind of classifier.

    Args:
        model: the `keras.Model` that produced `outputs`.
        outputs: its outputs (NumPy array or tensor).

    Returns:
        `outputs` unchanged for a logits model; `log(outputs)` (float32 NumPy)
        for a softmax model.
    """
    if softmax_layer(model) is None:
        return outputs
    return ops.convert_to_numpy(log_probabilities(outputs))


def check_compatible(teacher, student, distillation_losses=()):
    """Raises a ValueError when teacher, student and losses disagree on family.

    A Gaussian (regression) head cannot be distilled from or into a
    classification model, and a Gaussian `DistributionKL`/`MeanMSE` needs a
    Gaussian teacher. Models whose family is unknown (no kdtf head) are
    treated as non-Gaussian.

    Args:
        teacher: the teacher `keras.Model`.
        student: the student `keras.Model`.
        distillation_losses: a loss or list of losses; those with a `family`
            attribute (e.g. `kdtf.losses.DistributionKL`) are checked against
            the teacher.

    Raises:
        ValueError: naming both families.

    Example:

    >>> check_compatible(teacher, student, [DistributionKL("gaussian")])
    """
    t_family, s_family = output_family(teacher), output_family(student)
    if (t_family == "gaussian") != (s_family == "gaussian"):
        raise ValueError(
            "teacher and student must predict the same output distribution: "
            f"the teacher's head is {_describe(t_family)} and the student's is "
            f"{_describe(s_family)}. A regression (GaussianHead) student needs "
            "a GaussianHead teacher, and a classification student a "
            "classification teacher."
        )
    if distillation_losses is None:
        distillation_losses = ()
    elif not isinstance(distillation_losses, (list, tuple)):
        distillation_losses = [distillation_losses]
    for loss in distillation_losses:
        family = getattr(loss, "family", None)
        if family is None:
            continue
        if (family == "gaussian") != (t_family == "gaussian"):
            raise ValueError(
                f"{type(loss).__name__}(family={family!r}) does not fit a "
                f"teacher whose head is {_describe(t_family)}; use "
                f"family={'gaussian' if t_family == 'gaussian' else 'categorical'!r}."
            )


def _describe(family):
    return {
        "gaussian": "a GaussianHead (regression)",
        "categorical": "a CategoricalHead (classification)",
    }.get(family, "not a kdtf head (treated as classification logits)")


def _last_layer(model):
    layer = model
    for _ in range(32):  # descend through nested models
        if not isinstance(layer, keras.Model):
            return layer
        nxt = None
        try:
            outputs = layer.outputs
        except (AttributeError, ValueError):
            outputs = None
        if outputs and len(outputs) == 1:
            history = getattr(outputs[0], "_keras_history", None)
            if history is not None:
                nxt = history[0]
        if nxt is None:
            if not layer.layers:
                return None
            nxt = layer.layers[-1]
        if nxt is layer:
            return None
        layer = nxt
    return None


def _check_positive_int(arg, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{arg}` must be an int >= {minimum}; got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{arg}` must be >= {minimum}; got {arg}={value}.")
    return value
