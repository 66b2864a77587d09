"""Models for MNIST-1D (Greydanus 2020): 1-D signals of length 40, 10 classes.

* `mnist1d_cnn`: the teacher, a 3-layer 1-D CNN (widths 32, 64, 64, kernel 5,
  global average pooling). Trained 40 epochs with Adam(3e-3), batch 100, on
  the 4000 standard training signals it reaches ~95% test accuracy (~93% with
  Adam(1e-3) at 40-60 epochs), in well under a minute on 2 CPU cores.
* `mnist1d_cnn_small`: a much smaller CNN student (widths 8, 16, 16).
* `mnist1d_cnn_wide`: the teacher at twice the width (64, 128, 128; ~4x the
  parameters), a stronger teacher for studies that vary teacher size.
* `mnist1d_mlp`: an MLP student with two hidden layers of 100 units.
* `mnist1d_mlp256`: the plain MLP of the MNIST-1D reference code (two hidden
  layers of 256, the second residual), for the published MLP baseline.

Signals of shape (L,) are reshaped to (L, 1) inside the CNNs.
"""
import math

import keras

from kdtf.models import blocks


def _signal_input(input_shape, input_dtype, name):
    input_shape = blocks.check_input_shape(input_shape)
    if len(input_shape) > 2:
        raise ValueError(
            f"`input_shape` for {name} must be (length,) or (length, channels), "
            f"got {input_shape!r}."
        )
    return blocks.model_input(input_shape, input_dtype, allow_uint8=False)


def conv1d_net(
    widths,
    kernel_sizes,
    strides,
    input_shape=(40,),
    num_classes=10,
    input_dtype="float32",
    pool="flatten",
    name="conv1d_net",
):
    """Builds a plain 1-D CNN: Conv1D-ReLU layers, then "features" and "logits".

    Args:
        widths: filters of each conv layer; each conv ends a stage.
        kernel_sizes: kernel size of each conv layer.
        strides: stride of each conv layer.
        input_shape: (length,) or (length, channels).
        num_classes: number of classes.
        input_dtype: must be "float32" (signals are not images).
        pool: "flatten" or "avg" for the "features" layer.
        name: model name.

    Returns:
        A functional `keras.Model`; conv layer i is named f"stage{i}".

    Example:
        >>> model = conv1d_net((8, 16), (5, 3), (1, 2), num_classes=10)
    """
    if not len(widths) == len(kernel_sizes) == len(strides):
        raise ValueError(
            "`widths`, `kernel_sizes` and `strides` must have the same length, got "
            f"{widths!r}, {kernel_sizes!r}, {strides!r}."
        )
    num_classes = blocks.check_num_classes(num_classes)
    inputs, x = _signal_input(input_shape, input_dtype, name)
    if len(x.shape) == 2:
        x = keras.layers.Reshape((x.shape[1], 1), name="to_channels")(x)
    for i, (w, k, s) in enumerate(zip(widths, kernel_sizes, strides), start=1):
        x = keras.layers.Conv1D(
            w, k, strides=s, padding="same", activation="relu",
            kernel_initializer=blocks.conv_initializer(), name=f"stage{i}",
        )(x)
    outputs = blocks.classifier_head(x, num_classes, pool=pool)
    return keras.Model(inputs, outputs, name=name)


def mnist1d_cnn(input_shape=(40,), num_classes=10, input_dtype="float32", name="mnist1d_cnn"):
    """MNIST-1D teacher CNN: Conv1D 32 -> 64 (stride 2) -> 64, kernel 5, ReLU, global avg pool.

    Args as in `conv1d_net`.

    Returns:
        A `keras.Model` with stages "stage1".."stage3".

    Example:
        >>> model = mnist1d_cnn()
    """
    return conv1d_net(
        (32, 64, 64), (5, 5, 5), (1, 2, 1), input_shape, num_classes, input_dtype,
        pool="avg", name=name,
    )


def mnist1d_cnn_wide(input_shape=(40,), num_classes=10, input_dtype="float32", name="mnist1d_cnn_wide"):
    """MNIST-1D wide teacher CNN: Conv1D 64 -> 128 (stride 2) -> 128, kernel 5, ReLU, global avg pool.

    `mnist1d_cnn` at twice the width, for a stronger teacher of the same family.

    Args as in `conv1d_net`.

    Returns:
        A `keras.Model` with stages "stage1".."stage3".

    Example:
        >>> model = mnist1d_cnn_wide()
    """
    return conv1d_net(
        (64, 128, 128), (5, 5, 5), (1, 2, 1), input_shape, num_classes, input_dtype,
        pool="avg", name=name,
    )


def mnist1d_cnn_small(input_shape=(40,), num_classes=10, input_dtype="float32", name="mnist1d_cnn_small"):
    """MNIST-1D small CNN student: Conv1D 8 -> 16 (stride 2) -> 16, kernel 5, ReLU, global avg pool.

    Args as in `conv1d_net`.

    Returns:
        A `keras.Model` with stages "stage1".."stage3".

    Example:
        >>> model = mnist1d_cnn_small()
    """
    return conv1d_net(
        (8, 16, 16), (5, 5, 5), (1, 2, 1), input_shape, num_classes, input_dtype,
        pool="avg", name=name,
    )


def mlp(
    hidden_units,
    input_shape=(40,),
    num_classes=10,
    input_dtype="float32",
    name="mlp",
):
    """Builds an MLP: Dense-ReLU hidden layers (each a stage), then logits.

    Args:
        hidden_units: units of each hidden layer (at least one).
        input_shape: shape of one example; flattened first if not 1-D.
        num_classes: number of classes.
        input_dtype: must be "float32".
        name: model name.

    Returns:
        A functional `keras.Model`; hidden layer i is named f"stage{i}" and an
        identity layer "features" marks the last hidden activation.

    Example:
        >>> model = mlp((100, 100))
    """
    if not hidden_units:
        raise ValueError(f"`hidden_units` must be non-empty, got {hidden_units!r}.")
    num_classes = blocks.check_num_classes(num_classes)
    inputs, x = _signal_input(input_shape, input_dtype, name)
    if len(x.shape) > 2:
        x = keras.layers.Reshape((math.prod(x.shape[1:]),), name="flatten")(x)
    for i, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"stage{i}")(x)
    outputs = blocks.classifier_head(x, num_classes, pool="identity")
    return keras.Model(inputs, outputs, name=name)


def mnist1d_mlp(input_shape=(40,), num_classes=10, input_dtype="float32", name="mnist1d_mlp"):
    """MNIST-1D MLP student: two hidden layers of 100 ReLU units.

    Args as in `mlp`.

    Returns:
        A `keras.Model` with stages "stage1", "stage2".

    Example:
        >>> model = mnist1d_mlp()
    """
    return mlp((100, 100), input_shape, num_classes, input_dtype, name)


def mnist1d_mlp256(input_shape=(40,), num_classes=10, input_dtype="float32",
                   name="mnist1d_mlp256"):
    """The MLP of the MNIST-1D reference code, for the published MLP baseline.

    Two hidden layers of 256 ReLU units, the second added to its input
    (h = h + relu(W2 h)), then the logits: 78,858 parameters. The reference
    code trains it with Adam 1e-2, batch 100, for 8000 steps; the published
    MLP test accuracy is 68%.

    Args as in `mlp`.

    Returns:
        A `keras.Model` with stages "stage1", "stage2" (the residual sum).

    Example:
        >>> model = mnist1d_mlp256()
        >>> model.count_params()
        78858
    """
    num_classes = blocks.check_num_classes(num_classes)
    inputs, x = _signal_input(input_shape, input_dtype, name)
    if len(x.shape) > 2:
        x = keras.layers.Reshape((math.prod(x.shape[1:]),), name="flatten")(x)
    h = keras.layers.Dense(256, activation="relu", name="stage1")(x)
    residual = keras.layers.Dense(256, activation="relu", name="dense2")(h)
    h = keras.layers.Add(name="stage2")([h, residual])
    outputs = blocks.classifier_head(h, num_classes, pool="identity")
    return keras.Model(inputs, outputs, name=name)
