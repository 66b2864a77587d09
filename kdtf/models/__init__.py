"""The kdtf model zoo: teachers and students for distillation experiments.

All models are functional Keras 3 models that output raw logits from a
float32 `Dense` named "logits"; the pooled penultimate layer is named
"features" and the layers ending each backbone stage "stage1", "stage2", ...

Families:

* MNIST-1D (input (40,), 10 classes): "mnist1d_cnn" (teacher),
  "mnist1d_cnn_small", "mnist1d_cnn_wide" (a 4x larger teacher), "mnist1d_mlp",
  "mnist1d_mlp256" (the reference code's MLP).
* MNIST (input (28, 28, 1), 10 classes): "mnist_cnn" (teacher),
  "mnist_cnn_small".
* CIFAR (input (32, 32, 3), 100 classes), as in CRD / RepDistiller and DIST:
  "resnet8x4", "resnet32x4", "resnet20", "resnet56", "wrn_40_2", "wrn_16_2",
  "wrn_40_1", "vgg8", "vgg13", "mobilenetv2" (CRD "mobile_half"),
  "shufflenetv2" (CRD "ShuffleV2").

Example:
    >>> model = kdtf.models.get("resnet8x4", input_dtype="uint8")
    >>> kdtf.models.stage_endpoints(model)
    ['stage1', 'stage2', 'stage3']
"""
import re

import keras

from kdtf.models import mnist
from kdtf.models import mnist1d
from kdtf.models import mobilenetv2
from kdtf.models import resnet
from kdtf.models import shufflenetv2
from kdtf.models import vgg
from kdtf.models import wrn
from kdtf.models.shufflenetv2 import ChannelShuffle
from kdtf.models.shufflenetv2 import ChannelSplit

_MNIST1D = {"input_shape": (40,), "num_classes": 10}
_MNIST = {"input_shape": (28, 28, 1), "num_classes": 10}
_CIFAR = {"input_shape": (32, 32, 3), "num_classes": 100}

# name -> (builder, defaults)
_REGISTRY = {
    "mnist1d_cnn": (mnist1d.mnist1d_cnn, _MNIST1D),
    "mnist1d_cnn_small": (mnist1d.mnist1d_cnn_small, _MNIST1D),
    "mnist1d_cnn_wide": (mnist1d.mnist1d_cnn_wide, _MNIST1D),
    "mnist1d_mlp": (mnist1d.mnist1d_mlp, _MNIST1D),
    "mnist1d_mlp256": (mnist1d.mnist1d_mlp256, _MNIST1D),
    "mnist_cnn": (mnist.mnist_cnn, _MNIST),
    "mnist_cnn_small": (mnist.mnist_cnn_small, _MNIST),
    "resnet8x4": (resnet.resnet8x4, _CIFAR),
    "resnet32x4": (resnet.resnet32x4, _CIFAR),
    "resnet20": (resnet.resnet20, _CIFAR),
    "resnet56": (resnet.resnet56, _CIFAR),
    "wrn_40_2": (wrn.wrn_40_2, _CIFAR),
    "wrn_16_2": (wrn.wrn_16_2, _CIFAR),
    "wrn_40_1": (wrn.wrn_40_1, _CIFAR),
    "vgg8": (vgg.vgg8, _CIFAR),
    "vgg13": (vgg.vgg13, _CIFAR),
    "mobilenetv2": (mobilenetv2.mobilenetv2, _CIFAR),
    "shufflenetv2": (shufflenetv2.shufflenetv2, _CIFAR),
}

# RepDistiller spellings, accepted by `get` (not listed by `available`).
_ALIASES = {"mobile_half": "mobilenetv2", "shufflev2": "shufflenetv2"}

_STAGE_RE = re.compile(r"^stage(\d+)$")


def available():
    """Returns the names accepted by `get`, sorted.

    Returns:
        A list of model names.

    Example:
        >>> "resnet8x4" in kdtf.models.available()
        True
    """
    return sorted(_REGISTRY)


def get(name, input_shape=None, num_classes=None, **kwargs):
    """Builds a zoo model by name.

    Args:
        name: one of `available()` (case-insensitive; the RepDistiller names
            "mobile_half" and "ShuffleV2" are accepted too).
        input_shape: shape of one example; defaults to (40,) for MNIST-1D,
            (28, 28, 1) for MNIST and (32, 32, 3) for CIFAR models.
        num_classes: number of classes; defaults to 10 for MNIST-1D / MNIST and
            100 for CIFAR models.
        **kwargs: passed to the builder, e.g. `input_dtype="uint8"` for image
            models (adds `Rescaling(1/255)` after a uint8 input).

    Returns:
        A functional `keras.Model` named `name` with initialised weights,
        outputting raw float32 logits of shape (batch, num_classes).

    Example:
        >>> model = kdtf.models.get("wrn_16_2", num_classes=10)
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str, got {type(name).__name__}.")
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(
            f"Unknown model name {name!r}; valid names: {available()}."
        )
    builder, defaults = _REGISTRY[key]
    if input_shape is None:
        input_shape = defaults["input_shape"]
    if num_classes is None:
        num_classes = defaults["num_classes"]
    kwargs.setdefault("name", key)
    return builder(input_shape=input_shape, num_classes=num_classes, **kwargs)


def known_inputs(model):
    """The symbolic inputs of `model`, or `[]` when it has none yet.

    Functional and Sequential models built from `keras.Input` know their
    inputs; a subclassed or unbuilt model raises on `model.inputs`, which is
    taken here as "no known inputs".

    Args:
        model: a `keras.Model`.

    Returns:
        A list of `KerasTensor`s (possibly empty).

    Example:
    >>> [tuple(x.shape) for x in known_inputs(kdtf.models.get("mnist1d_mlp"))]
    [(None, 40)]
    """
    try:
        return list(model.inputs or [])
    except (AttributeError, ValueError):
        return []


def stage_endpoints(model):
    """Names of the layers that end each backbone stage, in order.

    Zoo models name these layers "stage1", "stage2", ...; their outputs are
    the intermediate features used by feature-based distillation.

    Args:
        model: a `keras.Model` (typically from `get`).

    Returns:
        A list of layer names, e.g. ["stage1", "stage2", "stage3"].

    Example:
        >>> kdtf.models.stage_endpoints(kdtf.models.get("mnist1d_mlp"))
        ['stage1', 'stage2']
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model, got {type(model).__name__}.")
    stages = {}
    for layer in model.layers:
        match = _STAGE_RE.match(layer.name)
        if match:
            stages[int(match.group(1))] = layer.name
    if not stages:
        raise ValueError(
            f"Model {model.name!r} has no stage endpoint layers (layers named "
            "'stage1', 'stage2', ...); stage_endpoints() works on kdtf zoo "
            "models or models that follow that naming."
        )
    if sorted(stages) != list(range(1, len(stages) + 1)):
        raise ValueError(
            f"Model {model.name!r} has non-consecutive stage layers: "
            f"{[stages[k] for k in sorted(stages)]}."
        )
    return [stages[k] for k in sorted(stages)]


__all__ = [
    "ChannelShuffle",
    "ChannelSplit",
    "available",
    "get",
    "stage_endpoints",
]


def resize_inputs(model, input_shape, interpolation="bilinear", name=None):
    """`model` behind a resizing step, taking inputs of another size.

    A teacher trained at one resolution can then teach a student that sees
    another: `Distiller(resize_inputs(teacher, (32, 32, 3)), student)` runs
    the student on the batch as it is and the teacher on the same batch
    resized to the teacher's own input size, inside the train step. The
    returned model shares `model`'s layers and weights.

    Args:
        model: a built `keras.Model` with one image input `(H, W, C)`.
        input_shape: the shape `(h, w, C)` the returned model takes (the
            student's input shape).
        interpolation: a `keras.layers.Resizing` interpolation. Defaults to
            "bilinear".
        name: name of the returned model; defaults to `<model.name>_resized`.

    Returns:
        A functional `keras.Model` from `input_shape` to `model`'s outputs.

    Example:

    >>> teacher = keras.applications.ResNet50(input_shape=(64, 64, 3), weights=None,
    ...                                       classes=10, classifier_activation=None)
    >>> kdtf.models.resize_inputs(teacher, (32, 32, 3)).input_shape
    (None, 32, 32, 3)
    """
    inputs = known_inputs(model)
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ValueError(
            f"resize_inputs needs a model with one image input (H, W, C); {model.name!r} has "
            f"inputs {[tuple(i.shape) for i in inputs]}."
        )
    height, width, channels = inputs[0].shape[1:]
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != channels:
        raise ValueError(
            f"input_shape must be (height, width, {channels}) for {model.name!r}; got "
            f"{input_shape}."
        )
    x = keras.Input(input_shape, dtype=inputs[0].dtype)
    resized = keras.layers.Resizing(height, width, interpolation=interpolation,
                                    name=f"{model.name}_resize")(x)
    return keras.Model(x, model(resized), name=name or f"{model.name}_resized")
