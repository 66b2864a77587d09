"""Building blocks shared by the kdtf model zoo.

Every zoo model is a functional `keras.Model` that:

* starts from `model_input` (optionally a uint8 image input followed by a
  `Rescaling(1/255)`, so images travel as bytes and are normalised on device),
* names the layers that end its backbone stages "stage1", "stage2", ...,
* ends with `classifier_head`: a pooled/flattened penultimate layer named
  "features" and a float32 `Dense` named "logits" producing raw logits.

The convolution helpers mirror PyTorch CIFAR reference code (3x3 convs with
padding 1, no bias before BatchNorm, BatchNorm momentum 0.1 / eps 1e-5 in
PyTorch terms), so parameter counts and feature-map sizes match the published
models exactly.
"""
import keras

VALID_INPUT_DTYPES = ("float32", "uint8")

# PyTorch BatchNorm2d(momentum=0.1, eps=1e-5) in Keras terms.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def conv_initializer():
    """Returns the He-normal (fan-out) initializer used by the CIFAR references.

    The RepDistiller/CRD models initialise conv kernels with
    `normal(0, sqrt(2 / (k * k * out_channels)))`, i.e. He-normal on fan-out.

    Returns:
        A new `keras.initializers.VarianceScaling` instance.

    Example:
        >>> init = conv_initializer()
    """
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def check_num_classes(num_classes):
    """Validates `num_classes` (a positive int) and returns it.

    Args:
        num_classes: number of output classes.

    Returns:
        `num_classes` as an int.

    Example:
        >>> check_num_classes(10)
        10
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"`num_classes` must be a positive int, got {num_classes!r}."
        )
    return num_classes


def check_input_shape(input_shape, rank=None):
    """Validates `input_shape` (a tuple of positive ints, batch excluded).

    Args:
        input_shape: shape of one example, e.g. `(32, 32, 3)`.
        rank: if given, the required number of dimensions.

    Returns:
        `input_shape` as a tuple of ints.

    Example:
        >>> check_input_shape([32, 32, 3], rank=3)
        (32, 32, 3)
    """
    try:
        shape = tuple(int(d) for d in input_shape)
    except TypeError:
        raise ValueError(
            f"`input_shape` must be a tuple of ints, got {input_shape!r}."
        ) from None
    if not shape or any(d < 1 for d in shape):
        raise ValueError(
            f"`input_shape` must be a non-empty tuple of positive ints, "
            f"got {input_shape!r}."
        )
    if rank is not None and len(shape) != rank:
        raise ValueError(
            f"`input_shape` must have {rank} dimensions, got {input_shape!r}."
        )
    return shape


def model_input(input_shape, input_dtype="float32", allow_uint8=True):
    """Creates the model input, optionally rescaling uint8 images to [0, 1].

    Args:
        input_shape: shape of one example (batch excluded).
        input_dtype: "float32" (inputs used as given) or "uint8" (inputs are
            bytes; a `Rescaling(1/255)` layer named "rescaling" casts them to
            the compute dtype and scales them to [0, 1]).
        allow_uint8: whether "uint8" is accepted (False for non-image models).

    Returns:
        `(inputs, x)`: the `keras.Input` and the tensor to build on.

    Example:
        >>> inputs, x = model_input((32, 32, 3), input_dtype="uint8")
    """
    valid = VALID_INPUT_DTYPES if allow_uint8 else ("float32",)
    if input_dtype is None:
        input_dtype = "float32"
    if input_dtype not in valid:
        raise ValueError(
            f"`input_dtype` must be one of {list(valid)}, got {input_dtype!r}."
        )
    inputs = keras.Input(shape=input_shape, dtype=input_dtype, name="input")
    x = inputs
    if input_dtype == "uint8":
        x = keras.layers.Rescaling(1.0 / 255.0, name="rescaling")(x)
    return inputs, x


def conv2d(x, filters, kernel_size, strides=1, name=None, use_bias=False, groups=1):
    """A 2-D convolution with PyTorch-style symmetric padding `kernel_size // 2`.

    Stride-1 convolutions use `padding="same"`; strided ones use an explicit
    `ZeroPadding2D` followed by a "valid" convolution, so outputs line up with
    PyTorch's `padding=k//2` (Keras "same" pads asymmetrically for stride 2).

    Args:
        x: input tensor (NHWC).
        filters: output channels.
        kernel_size: int kernel size.
        strides: int stride.
        name: layer name (the padding layer gets `name + "_pad"`).
        use_bias: whether the convolution has a bias.
        groups: convolution groups.

    Returns:
        The output tensor.

    Example:
        >>> y = conv2d(keras.Input((32, 32, 3)), 16, 3, name="conv1")
    """
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        groups=groups,
        kernel_initializer=conv_initializer(),
        name=name,
    )(x)


def depthwise_conv2d(x, kernel_size, strides=1, name=None):
    """A bias-free depthwise convolution with PyTorch-style padding.

    Args:
        x: input tensor (NHWC).
        kernel_size: int kernel size.
        strides: int stride.
        name: layer name (the padding layer gets `name + "_pad"`).

    Returns:
        The output tensor.

    Example:
        >>> y = depthwise_conv2d(keras.Input((32, 32, 8)), 3, name="dw")
    """
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    return keras.layers.DepthwiseConv2D(
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        depthwise_initializer=conv_initializer(),
        name=name,
    )(x)


def batch_norm(x, name=None):
    """BatchNorm with PyTorch's default momentum and epsilon.

    Args:
        x: input tensor.
        name: layer name.

    Returns:
        The output tensor.

    Example:
        >>> y = batch_norm(keras.Input((8, 8, 4)), name="bn")
    """
    return keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name
    )(x)


def relu(x, name=None):
    """A ReLU layer.

    Args:
        x: input tensor.
        name: layer name.

    Returns:
        The output tensor.

    Example:
        >>> y = relu(keras.Input((4,)), name="act")
    """
    return keras.layers.ReLU(name=name)(x)


def conv_bn(x, filters, kernel_size, strides=1, name=None, activation=True, act_name=None):
    """Conv (no bias) -> BatchNorm -> optional ReLU.

    Args:
        x: input tensor (NHWC).
        filters: output channels.
        kernel_size: int kernel size.
        strides: int stride.
        name: prefix; layers are `name_conv`, `name_bn`, `name_relu`.
        activation: whether to apply the ReLU.
        act_name: overrides the ReLU's name (e.g. "stage1").

    Returns:
        The output tensor.

    Example:
        >>> y = conv_bn(keras.Input((32, 32, 3)), 16, 3, name="stem")
    """
    x = conv2d(x, filters, kernel_size, strides, name=f"{name}_conv")
    x = batch_norm(x, name=f"{name}_bn")
    if activation:
        x = relu(x, name=act_name or f"{name}_relu")
    return x


def classifier_head(x, num_classes, pool="avg"):
    """Penultimate "features" layer followed by float32 "logits".

    Args:
        x: backbone output.
        num_classes: number of classes.
        pool: "avg" (global average pooling, 1-D or 2-D by rank), "flatten",
            or "identity" (x is already the feature vector).

    Returns:
        The logits tensor (float32, no softmax).

    Example:
        >>> logits = classifier_head(keras.Input((8, 8, 64)), 100)
    """
    rank = len(x.shape)
    if pool == "avg":
        if rank == 4:
            features = keras.layers.GlobalAveragePooling2D(name="features")(x)
        elif rank == 3:
            features = keras.layers.GlobalAveragePooling1D(name="features")(x)
        else:
            raise ValueError(f"`pool='avg'` needs a rank 3 or 4 tensor, got rank {rank}.")
    elif pool == "flatten":
        features = keras.layers.Flatten(name="features")(x)
    elif pool == "identity":
        features = keras.layers.Identity(name="features")(x)
    else:
        raise ValueError(
            f"`pool` must be one of ['avg', 'flatten', 'identity'], got {pool!r}."
        )
    return logits_layer(features, num_classes)


def logits_layer(features, num_classes):
    """The float32 `Dense` named "logits" (raw logits, no softmax).

    It computes in float32 even under a mixed-precision policy.

    Args:
        features: the penultimate feature tensor (rank 2).
        num_classes: number of classes.

    Returns:
        The logits tensor.

    Example:
        >>> logits = logits_layer(keras.Input((64,)), 10)
    """
    return keras.layers.Dense(num_classes, dtype="float32", name="logits")(features)
