"""MobileNetV2 for CIFAR as in CRD / RepDistiller ("mobile_half" = T=6, width 0.5).

The CIFAR variant from "Knowledge Distillation via Route Constrained
Optimization": a stride-2 3x3 conv-BN-ReLU stem, seven groups of inverted
residual blocks (1x1 expand - 3x3 depthwise - 1x1 linear projection, each
with BN; the expansion conv is present even for expand ratio 1; ReLU, not
ReLU6), a 1x1 conv-BN-ReLU to 1280 channels, global average pooling and a
linear classifier.
"""
import keras

from kdtf.models import blocks

# (expand ratio or None for "T", channels, repeats, first stride), as in the paper.
_SETTINGS = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
# Groups after which a backbone stage ends (f1..f4 in the reference).
_STAGE_GROUPS = (1, 2, 4, 6)


def inverted_residual(x, out_channels, strides, expand_ratio, name, out_name=None):
    """An inverted residual block (expand, depthwise, project).

    Args:
        x: input tensor (NHWC).
        out_channels: output channels.
        strides: depthwise stride (1 or 2).
        expand_ratio: channel expansion of the hidden layer.
        name: prefix for the block's layers.
        out_name: name of the block's output layer (the `Add` when the block is
            residual, else the projection BN).

    Returns:
        The block output.

    Example:
        >>> y = inverted_residual(keras.Input((16, 16, 16)), 24, 1, 6, name="b")
    """
    in_channels = x.shape[-1]
    residual = strides == 1 and in_channels == out_channels
    hidden = in_channels * expand_ratio
    out = blocks.conv_bn(x, hidden, 1, 1, name=f"{name}_expand")
    out = blocks.depthwise_conv2d(out, 3, strides, name=f"{name}_dw_conv")
    out = blocks.batch_norm(out, name=f"{name}_dw_bn")
    out = blocks.relu(out, name=f"{name}_dw_relu")
    out = blocks.conv2d(out, out_channels, 1, 1, name=f"{name}_project_conv")
    bn_name = f"{name}_project_bn" if residual or out_name is None else out_name
    out = blocks.batch_norm(out, name=bn_name)
    if residual:
        out = keras.layers.Add(name=out_name or f"{name}_add")([x, out])
    return out


def mobilenetv2_cifar(
    expand_ratio=6,
    width_mult=0.5,
    input_shape=(32, 32, 3),
    num_classes=100,
    input_dtype="float32",
    name="mobilenetv2",
):
    """Builds the CIFAR MobileNetV2 of CRD (`mobilenetv2_T_w`).

    Args:
        expand_ratio: T, the expansion of all groups but the first.
        width_mult: channel width multiplier W.
        input_shape: image shape (H, W, C).
        num_classes: number of classes.
        input_dtype: "float32" or "uint8" (adds `Rescaling(1/255)`).
        name: model name.

    Returns:
        A functional `keras.Model` producing logits; the ends of groups 2, 3,
        5 and 7 are named "stage1".."stage4".

    Example:
        >>> model = mobilenetv2_cifar(6, 0.5, num_classes=10)
    """
    if width_mult <= 0:
        raise ValueError(f"`width_mult` must be positive, got {width_mult!r}.")
    if not isinstance(expand_ratio, int) or expand_ratio < 1:
        raise ValueError(f"`expand_ratio` must be a positive int, got {expand_ratio!r}.")
    input_shape = blocks.check_input_shape(input_shape, rank=3)
    num_classes = blocks.check_num_classes(num_classes)
    inputs, x = blocks.model_input(input_shape, input_dtype)
    x = blocks.conv_bn(x, int(32 * width_mult), 3, 2, name="stem")
    for g, (t, c, n, s) in enumerate(_SETTINGS):
        t = expand_ratio if t is None else t
        out_channels = int(c * width_mult)
        for i in range(n):
            out_name = None
            if g in _STAGE_GROUPS and i == n - 1:
                out_name = f"stage{_STAGE_GROUPS.index(g) + 1}"
            x = inverted_residual(
                x, out_channels, s if i == 0 else 1, t,
                name=f"group{g}_block{i}", out_name=out_name,
            )
    last_channels = int(1280 * width_mult) if width_mult > 1.0 else 1280
    x = blocks.conv_bn(x, last_channels, 1, 1, name="head")
    outputs = blocks.classifier_head(x, num_classes)
    return keras.Model(inputs, outputs, name=name)


def mobilenetv2(input_shape=(32, 32, 3), num_classes=100, input_dtype="float32", name="mobilenetv2"):
    """CRD "mobile_half" MobileNetV2 (T=6, W=0.5; 0.81M params on CIFAR-100).

    Args as in `mobilenetv2_cifar`.
    """
    return mobilenetv2_cifar(6, 0.5, input_shape, num_classes, input_dtype, name)
