"""Small CNNs for MNIST-style 28x28 grayscale digits, 10 classes.

* `mnist_cnn`: the teacher, two stages of one 3x3 conv (32, 64) with
  max-pooling, then a 128-unit "features" layer.
* `mnist_cnn_small`: the student, two stages of one 3x3 conv (8, 16) with
  max-pooling, flattened into "features".

Inputs may be given flat, e.g. `input_shape=(784,)`, or as (H, W); they are
reshaped to (H, W, 1) inside the model.
"""
import math

import keras

from kdtf.models import blocks


def _image_input(input_shape, input_dtype):
    input_shape = blocks.check_input_shape(input_shape)
    inputs, x = blocks.model_input(input_shape, input_dtype)
    if len(input_shape) == 1:
        side = math.isqrt(input_shape[0])
        if side * side != input_shape[0]:
            raise ValueError(
                f"A flat `input_shape` must hold a square image, got {input_shape!r}."
            )
        x = keras.layers.Reshape((side, side, 1), name="to_image")(x)
    elif len(input_shape) == 2:
        x = keras.layers.Reshape(input_shape + (1,), name="to_image")(x)
    elif len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must be (H, W, C), (H, W) or (H*W,), got {input_shape!r}."
        )
    return inputs, x


def conv2d_net(
    stage_widths,
    dense_units=None,
    input_shape=(28, 28, 1),
    num_classes=10,
    input_dtype="float32",
    name="conv2d_net",
):
    """Builds a plain 2-D CNN: stages of 3x3 Conv-ReLU layers ending in max-pooling.

    Args:
        stage_widths: one tuple of conv widths per stage; each stage ends with
            a 2x2 max-pooling layer named f"stage{i}".
        dense_units: if set, the flattened maps go through a Dense-ReLU layer
            of this size named "features"; else the flatten is "features".
        input_shape: (H, W, C), (H, W) or (H*W,).
        num_classes: number of classes.
        input_dtype: "float32" or "uint8" (adds `Rescaling(1/255)`).
        name: model name.

    Returns:
        A functional `keras.Model` producing logits.

    Example:
        >>> model = conv2d_net(((8,), (16,)))
    """
    num_classes = blocks.check_num_classes(num_classes)
    inputs, x = _image_input(input_shape, input_dtype)
    for s, widths in enumerate(stage_widths, start=1):
        for i, width in enumerate(widths):
            x = keras.layers.Conv2D(
                width, 3, padding="same", activation="relu",
                kernel_initializer=blocks.conv_initializer(), name=f"stage{s}_conv{i}",
            )(x)
        x = keras.layers.MaxPooling2D(2, name=f"stage{s}")(x)
    if dense_units:
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dense(dense_units, activation="relu", name="features")(x)
        outputs = blocks.logits_layer(x, num_classes)
    else:
        outputs = blocks.classifier_head(x, num_classes, pool="flatten")
    return keras.Model(inputs, outputs, name=name)


def mnist_cnn(input_shape=(28, 28, 1), num_classes=10, input_dtype="float32", name="mnist_cnn"):
    """MNIST teacher: [conv32, pool], [conv64, pool], dense 128.

    Args as in `conv2d_net`.

    Returns:
        A `keras.Model` with stages "stage1", "stage2".

    Example:
        >>> model = mnist_cnn(input_dtype="uint8")
    """
    return conv2d_net(((32,), (64,)), 128, input_shape, num_classes, input_dtype, name)


def mnist_cnn_small(input_shape=(28, 28, 1), num_classes=10, input_dtype="float32", name="mnist_cnn_small"):
    """MNIST student: [conv8, pool], [conv16, pool], flatten.

    Args as in `conv2d_net`.

    Returns:
        A `keras.Model` with stages "stage1", "stage2".

    Example:
        >>> model = mnist_cnn_small()
    """
    return conv2d_net(((8,), (16,)), None, input_shape, num_classes, input_dtype, name)
