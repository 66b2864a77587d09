"""Wide ResNets (Zagoruyko & Komodakis 2016) as used by CRD / RepDistiller.

WRN-d-k: a 3x3 conv stem of width 16, then three stages of (d - 4) / 6
pre-activation basic blocks of widths 16k, 32k, 64k (strides 1, 2, 2), then
BN-ReLU, global average pooling and the classifier. As in the reference, a
block that changes width applies BN-ReLU to its input once and feeds the
activated tensor to both the residual branch and the 1x1 shortcut conv.
"""
import keras

from kdtf.models import blocks


def wide_basic_block(x, planes, strides, name, out_name=None):
    """A pre-activation wide basic block.

    Args:
        x: input tensor (NHWC).
        planes: output channels.
        strides: stride of the first conv (and of the shortcut).
        name: prefix for the block's layers.
        out_name: name of the residual `Add` (default `name + "_add"`).

    Returns:
        The block output (the sum, not activated).

    Example:
        >>> y = wide_basic_block(keras.Input((32, 32, 16)), 32, 1, name="b")
    """
    equal_in_out = x.shape[-1] == planes
    act = blocks.relu(blocks.batch_norm(x, name=f"{name}_bn1"), name=f"{name}_relu1")
    out = blocks.conv2d(act, planes, 3, strides, name=f"{name}_conv1")
    out = blocks.batch_norm(out, name=f"{name}_bn2")
    out = blocks.relu(out, name=f"{name}_relu2")
    out = blocks.conv2d(out, planes, 3, 1, name=f"{name}_conv2")
    if equal_in_out:
        shortcut = x
    else:
        shortcut = blocks.conv2d(act, planes, 1, strides, name=f"{name}_shortcut")
    return keras.layers.Add(name=out_name or f"{name}_add")([shortcut, out])


def wide_resnet(
    depth,
    widen_factor,
    input_shape=(32, 32, 3),
    num_classes=100,
    input_dtype="float32",
    name="wrn",
):
    """Builds a CIFAR Wide ResNet WRN-depth-widen_factor.

    Args:
        depth: 6n + 4 (16, 28, 40, ...).
        widen_factor: width multiplier k.
        input_shape: image shape (H, W, C).
        num_classes: number of classes.
        input_dtype: "float32" or "uint8" (adds `Rescaling(1/255)`).
        name: model name.

    Returns:
        A functional `keras.Model` producing logits; stage ends (the last
        block's sum in each stage) are named "stage1".."stage3".

    Example:
        >>> model = wide_resnet(16, 2, num_classes=10)
    """
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"`depth` must be 6n + 4 with n >= 1, got {depth!r}.")
    if not isinstance(widen_factor, int) or widen_factor < 1:
        raise ValueError(f"`widen_factor` must be a positive int, got {widen_factor!r}.")
    n = (depth - 4) // 6
    input_shape = blocks.check_input_shape(input_shape, rank=3)
    num_classes = blocks.check_num_classes(num_classes)
    inputs, x = blocks.model_input(input_shape, input_dtype)
    x = blocks.conv2d(x, 16, 3, 1, name="stem_conv")
    widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
    for stage, (planes, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
        for i in range(n):
            x = wide_basic_block(
                x,
                planes,
                stride if i == 0 else 1,
                name=f"stage{stage}_block{i}",
                out_name=f"stage{stage}" if i == n - 1 else None,
            )
    x = blocks.batch_norm(x, name="head_bn")
    x = blocks.relu(x, name="head_relu")
    outputs = blocks.classifier_head(x, num_classes)
    return keras.Model(inputs, outputs, name=name)


def wrn_40_2(input_shape=(32, 32, 3), num_classes=100, input_dtype="float32", name="wrn_40_2"):
    """WRN-40-2 (2.26M params on CIFAR-100). Args as in `wide_resnet`."""
    return wide_resnet(40, 2, input_shape, num_classes, input_dtype, name)


def wrn_40_1(input_shape=(32, 32, 3), num_classes=100, input_dtype="float32", name="wrn_40_1"):
    """WRN-40-1 (0.57M params on CIFAR-100). Args as in `wide_resnet`."""
    return wide_resnet(40, 1, input_shape, num_classes, input_dtype, name)


def wrn_16_2(input_shape=(32, 32, 3), num_classes=100, input_dtype="float32", name="wrn_16_2"):
    """WRN-16-2 (0.70M params on CIFAR-100). Args as in `wide_resnet`."""
    return wide_resnet(16, 2, input_shape, num_classes, input_dtype, name)
