"""CIFAR VGG with BatchNorm as used by CRD / RepDistiller ("vgg8" = vgg8_bn).

Five blocks of 3x3 conv (with bias) - BN - ReLU layers; max-pooling after
blocks 1-3 (and after block 4 only for inputs of height >= 64, as the
reference does for 64x64 images), then global average pooling and a single
linear classifier (the VGG fully connected layers are removed).
"""
import keras

from kdtf.models import blocks

# Conv widths per block.
VGG_CONFIGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
}


def vgg(
    config,
    input_shape=(32, 32, 3),
    num_classes=100,
    input_dtype="float32",
    name="vgg",
):
    """Builds a CIFAR VGG-BN network.

    Args:
        config: a key of `VGG_CONFIGS` or a sequence of 5 sequences of widths.
        input_shape: image shape (H, W, C).
        num_classes: number of classes.
        input_dtype: "float32" or "uint8" (adds `Rescaling(1/255)`).
        name: model name.

    Returns:
        A functional `keras.Model` producing logits; the final ReLU of each of
        the 5 blocks is named "stage1".."stage5".

    Example:
        >>> model = vgg("vgg8", num_classes=10)
    """
    if isinstance(config, str):
        if config not in VGG_CONFIGS:
            raise ValueError(
                f"Unknown VGG `config` {config!r}; valid: {sorted(VGG_CONFIGS)}."
            )
        config = VGG_CONFIGS[config]
    if len(config) != 5:
        raise ValueError(f"`config` must have 5 blocks, got {config!r}.")
    input_shape = blocks.check_input_shape(input_shape, rank=3)
    num_classes = blocks.check_num_classes(num_classes)
    inputs, x = blocks.model_input(input_shape, input_dtype)
    for b, widths in enumerate(config):
        stage = b + 1
        for i, width in enumerate(widths):
            prefix = f"block{b}_{i}"
            x = blocks.conv2d(x, width, 3, 1, name=f"{prefix}_conv", use_bias=True)
            x = blocks.batch_norm(x, name=f"{prefix}_bn")
            last = i == len(widths) - 1
            x = blocks.relu(x, name=f"stage{stage}" if last else f"{prefix}_relu")
        if b < 3 or (b == 3 and input_shape[0] >= 64):
            x = keras.layers.MaxPooling2D(2, name=f"pool{b}")(x)
    outputs = blocks.classifier_head(x, num_classes)
    return keras.Model(inputs, outputs, name=name)


def vgg8(input_shape=(32, 32, 3), num_classes=100, input_dtype="float32", name="vgg8"):
    """VGG-8 with BN (3.96M params on CIFAR-100). Args as in `vgg`."""
    return vgg("vgg8", input_shape, num_classes, input_dtype, name)


def vgg13(input_shape=(32, 32, 3), num_classes=100, input_dtype="float32", name="vgg13"):
    """VGG-13 with BN (9.46M params on CIFAR-100). Args as in `vgg`."""
    return vgg("vgg13", input_shape, num_classes, input_dtype, name)
