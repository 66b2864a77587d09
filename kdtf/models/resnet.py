"""CIFAR ResNets (He et al. 2016) as used by CRD / RepDistiller and DIST.

Three stages of basic blocks (two 3x3 conv-BN layers, identity or 1x1
conv-BN shortcut), widths `filters[1:]` and strides 1, 2, 2, after a 3x3
conv-BN-ReLU stem of width `filters[0]`; depth = 6n + 2.

`resnet20` / `resnet56` use widths (16, 16, 32, 64); the "x4" variants
`resnet8x4` / `resnet32x4` use (32, 64, 128, 256).
"""
import keras

from kdtf.models import blocks


def basic_block(x, planes, strides, name, out_name=None):
    """A post-activation basic residual block.

    Args:
        x: input tensor (NHWC).
        planes: output channels.
        strides: stride of the first conv (and of the shortcut).
        name: prefix for the block's layers.
        out_name: name of the final ReLU (default `name + "_out"`).

    Returns:
        The block output.

    Example:
        >>> y = basic_block(keras.Input((32, 32, 16)), 32, 2, name="b")
    """
    in_planes = x.shape[-1]
    out = blocks.conv_bn(x, planes, 3, strides, name=f"{name}_1")
    out = blocks.conv_bn(out, planes, 3, 1, name=f"{name}_2", activation=False)
    shortcut = x
    if strides != 1 or in_planes != planes:
        shortcut = blocks.conv_bn(
            x, planes, 1, strides, name=f"{name}_down", activation=False
        )
    out = keras.layers.Add(name=f"{name}_add")([out, shortcut])
    return blocks.relu(out, name=out_name or f"{name}_out")


def cifar_resnet(
    depth,
    filters,
    input_shape=(32, 32, 3),
    num_classes=100,
    input_dtype="float32",
    name="resnet",
):
    """Builds a CIFAR ResNet with basic blocks.

    Args:
        depth: 6n + 2 (8, 20, 32, 56, ...).
        filters: 4 widths: stem, stage 1, stage 2, stage 3.
        input_shape: image shape (H, W, C).
        num_classes: number of classes.
        input_dtype: "float32" or "uint8" (adds `Rescaling(1/255)`).
        name: model name.

    Returns:
        A functional `keras.Model` producing logits; stage ends are named
        "stage1".."stage3".

    Example:
        >>> model = cifar_resnet(20, (16, 16, 32, 64), num_classes=10)
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"`depth` must be 6n + 2 with n >= 1, got {depth!r}.")
    if len(filters) != 4:
        raise ValueError(f"`filters` must have 4 entries, got {filters!r}.")
    n = (depth - 2) // 6
    input_shape = blocks.check_input_shape(input_shape, rank=3)
    num_classes = blocks.check_num_classes(num_classes)
    inputs, x = blocks.model_input(input_shape, input_dtype)
    x = blocks.conv_bn(x, filters[0], 3, 1, name="stem")
    for stage, (planes, stride) in enumerate(zip(filters[1:], (1, 2, 2)), start=1):
        for i in range(n):
            x = basic_block(
                x,
                planes,
                stride if i == 0 else 1,
                name=f"stage{stage}_block{i}",
                out_name=f"stage{stage}" if i == n - 1 else None,
            )
    outputs = blocks.classifier_head(x, num_classes)
    return keras.Model(inputs, outputs, name=name)


def resnet20(input_shape=(32, 32, 3), num_classes=100, input_dtype="float32", name="resnet20"):
    """ResNet-20 (0.28M params on CIFAR-100). Args as in `cifar_resnet`."""
    return cifar_resnet(20, (16, 16, 32, 64), input_shape, num_classes, input_dtype, name)


def resnet56(input_shape=(32, 32, 3), num_classes=100, input_dtype="float32", name="resnet56"):
    """ResNet-56 (0.86M params on CIFAR-100). Args as in `cifar_resnet`."""
    return cifar_resnet(56, (16, 16, 32, 64), input_shape, num_classes, input_dtype, name)


def resnet8x4(input_shape=(32, 32, 3), num_classes=100, input_dtype="float32", name="resnet8x4"):
    """ResNet-8x4 (1.23M params on CIFAR-100). Args as in `cifar_resnet`."""
    return cifar_resnet(8, (32, 64, 128, 256), input_shape, num_classes, input_dtype, name)


def resnet32x4(input_shape=(32, 32, 3), num_classes=100, input_dtype="float32", name="resnet32x4"):
    """ResNet-32x4 (7.43M params on CIFAR-100). Args as in `cifar_resnet`."""
    return cifar_resnet(32, (32, 64, 128, 256), input_shape, num_classes, input_dtype, name)
