"""ShuffleNetV2 for CIFAR as in CRD / RepDistiller ("ShuffleV2", net size 1).

A 1x1 conv-BN-ReLU stem of width 24 (no stride, no max-pool on 32x32
inputs), three stages each made of a stride-2 down-sampling unit followed by
basic units (channel split, 1x1 - 3x3 depthwise - 1x1 on one half, concat,
channel shuffle), then a 1x1 conv-BN-ReLU, global average pooling and a
linear classifier.
"""
import keras
from keras import ops

from kdtf.models import blocks

# net size -> (stage widths + head width, basic units per stage).
SHUFFLENETV2_CONFIGS = {
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2: ((224, 488, 976, 2048), (3, 7, 3)),
}


@keras.saving.register_keras_serializable(package="kdtf")
class ChannelShuffle(keras.layers.Layer):
    """Channel shuffle of ShuffleNet on NHWC tensors.

    Splits the channels into `groups` groups and interleaves them, i.e.
    output channel `j * groups + i` is input channel `i * (C // groups) + j`.

    Args:
        groups: number of channel groups; must divide the channel count.

    Example:
        >>> y = ChannelShuffle(2)(keras.ops.ones((1, 4, 4, 8)))
    """

    def __init__(self, groups=2, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"`groups` must be a positive int, got {groups!r}.")
        self.groups = groups

    def call(self, inputs):
        channels = inputs.shape[-1]
        if channels % self.groups:
            raise ValueError(
                f"ChannelShuffle: {channels} channels not divisible by "
                f"`groups`={self.groups}."
            )
        shape = ops.shape(inputs)
        x = ops.reshape(
            inputs, (shape[0], shape[1], shape[2], self.groups, channels // self.groups)
        )
        x = ops.transpose(x, (0, 1, 2, 4, 3))
        return ops.reshape(x, (shape[0], shape[1], shape[2], channels))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"groups": self.groups})
        return config


@keras.saving.register_keras_serializable(package="kdtf")
class ChannelSplit(keras.layers.Layer):
    """Splits the last axis into the first `int(C * ratio)` channels and the rest.

    Args:
        ratio: fraction of channels in the first output, in (0, 1).

    Returns (when called):
        A list `[first, rest]`.

    Example:
        >>> a, b = ChannelSplit(0.5)(keras.ops.ones((1, 4, 4, 8)))
    """

    def __init__(self, ratio=0.5, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"`ratio` must be in (0, 1), got {ratio!r}.")
        self.ratio = float(ratio)

    def call(self, inputs):
        c = int(inputs.shape[-1] * self.ratio)
        return [inputs[..., :c], inputs[..., c:]]

    def compute_output_shape(self, input_shape):
        c = int(input_shape[-1] * self.ratio)
        return [tuple(input_shape[:-1]) + (c,), tuple(input_shape[:-1]) + (input_shape[-1] - c,)]

    def get_config(self):
        config = super().get_config()
        config.update({"ratio": self.ratio})
        return config


def shuffle_basic_unit(x, name, out_name=None):
    """A stride-1 ShuffleNetV2 unit: split, transform one half, concat, shuffle.

    Args:
        x: input tensor (NHWC, even channel count).
        name: prefix for the unit's layers.
        out_name: name of the final shuffle layer.

    Returns:
        The unit output (same shape as `x`).

    Example:
        >>> y = shuffle_basic_unit(keras.Input((8, 8, 116)), name="u")
    """
    x1, x2 = ChannelSplit(0.5, name=f"{name}_split")(x)
    c = x2.shape[-1]
    out = blocks.conv_bn(x2, c, 1, 1, name=f"{name}_pw1")
    out = blocks.depthwise_conv2d(out, 3, 1, name=f"{name}_dw_conv")
    out = blocks.batch_norm(out, name=f"{name}_dw_bn")
    out = blocks.conv_bn(out, c, 1, 1, name=f"{name}_pw2")
    out = keras.layers.Concatenate(name=f"{name}_concat")([x1, out])
    return ChannelShuffle(2, name=out_name or f"{name}_shuffle")(out)


def shuffle_down_unit(x, out_channels, name):
    """A stride-2 ShuffleNetV2 unit with two branches, concat and shuffle.

    Args:
        x: input tensor (NHWC).
        out_channels: output channels (even).
        name: prefix for the unit's layers.

    Returns:
        The unit output at half the spatial resolution.

    Example:
        >>> y = shuffle_down_unit(keras.Input((32, 32, 24)), 116, name="d")
    """
    mid = out_channels // 2
    left = blocks.depthwise_conv2d(x, 3, 2, name=f"{name}_left_dw_conv")
    left = blocks.batch_norm(left, name=f"{name}_left_dw_bn")
    left = blocks.conv_bn(left, mid, 1, 1, name=f"{name}_left_pw")
    right = blocks.conv_bn(x, mid, 1, 1, name=f"{name}_right_pw1")
    right = blocks.depthwise_conv2d(right, 3, 2, name=f"{name}_right_dw_conv")
    right = blocks.batch_norm(right, name=f"{name}_right_dw_bn")
    right = blocks.conv_bn(right, mid, 1, 1, name=f"{name}_right_pw2")
    out = keras.layers.Concatenate(name=f"{name}_concat")([left, right])
    return ChannelShuffle(2, name=f"{name}_shuffle")(out)


def shufflenetv2_cifar(
    net_size=1,
    input_shape=(32, 32, 3),
    num_classes=100,
    input_dtype="float32",
    name="shufflenetv2",
):
    """Builds the CIFAR ShuffleNetV2 of CRD.

    Args:
        net_size: a key of `SHUFFLENETV2_CONFIGS` (0.5, 1, 1.5, 2).
        input_shape: image shape (H, W, C).
        num_classes: number of classes.
        input_dtype: "float32" or "uint8" (adds `Rescaling(1/255)`).
        name: model name.

    Returns:
        A functional `keras.Model` producing logits; the last unit of each of
        the 3 stages is named "stage1".."stage3".

    Example:
        >>> model = shufflenetv2_cifar(1, num_classes=10)
    """
    if net_size not in SHUFFLENETV2_CONFIGS:
        raise ValueError(
            f"`net_size` must be one of {sorted(SHUFFLENETV2_CONFIGS)}, got {net_size!r}."
        )
    widths, repeats = SHUFFLENETV2_CONFIGS[net_size]
    input_shape = blocks.check_input_shape(input_shape, rank=3)
    num_classes = blocks.check_num_classes(num_classes)
    inputs, x = blocks.model_input(input_shape, input_dtype)
    x = blocks.conv_bn(x, 24, 1, 1, name="stem")
    for s, (width, n) in enumerate(zip(widths[:3], repeats), start=1):
        x = shuffle_down_unit(x, width, name=f"stage{s}_down")
        for i in range(n):
            x = shuffle_basic_unit(
                x, name=f"stage{s}_unit{i}", out_name=f"stage{s}" if i == n - 1 else None
            )
    x = blocks.conv_bn(x, widths[3], 1, 1, name="head")
    outputs = blocks.classifier_head(x, num_classes)
    return keras.Model(inputs, outputs, name=name)


def shufflenetv2(input_shape=(32, 32, 3), num_classes=100, input_dtype="float32", name="shufflenetv2"):
    """CRD "ShuffleV2" (net size 1; 1.36M params on CIFAR-100).

    Args as in `shufflenetv2_cifar`.
    """
    return shufflenetv2_cifar(1, input_shape, num_classes, input_dtype, name)
