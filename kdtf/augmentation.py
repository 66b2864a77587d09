"""Image augmentation as a Keras layer, run on the device inside the train step."""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kdtf")
class RandomCropFlip(keras.layers.Layer):
    """Pad-and-crop (a random translation) and horizontal flip, per image.

    The standard CIFAR augmentation, as `kdtf.data.Augment` does it in
    tf.data on the host, but as a backend-agnostic layer (`keras.ops`,
    `keras.random`): given to `kdtf.Distiller(augmentation=...)` it runs on
    the accelerator inside the compiled train step, on the batch as it
    arrived (uint8 images stay uint8), so the host only feeds bytes. Each
    image is zero-padded by `padding` pixels on every side and cropped back
    to `H x W` at a random offset, then flipped left-right with probability
    1/2. The crop is an exact gather (a one-hot matrix product in float32,
    exact for uint8 and float values alike). At inference (`training` false)
    the layer is the identity.

    Args:
        padding: int >= 0, pixels of zero padding; 0 disables the crop.
        flip: bool, whether to flip left-right at random.
        seed: int or None, seed of the layer's `keras.random.SeedGenerator`.
        **kwargs: passed to `keras.layers.Layer`.

    Returns:
        Called on images `[B, H, W, C]`, the augmented images, same shape and
        dtype.

    Example:
    >>> distiller = kdtf.Distiller(teacher, student, kdtf.losses.KD(),
    ...                            augmentation=kdtf.augmentation.RandomCropFlip(4, seed=0))
    """

    def __init__(self, padding=4, flip=True, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"`padding` must be an int >= 0; got {padding!r}.")
        if not isinstance(flip, bool):
            raise TypeError(f"`flip` must be a bool; got {flip!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"`seed` must be an int or None; got {seed!r}.")
        self.padding = padding
        self.flip = flip
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = False

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(
                "RandomCropFlip needs images [batch, height, width, channels] with a known "
                f"height and width; got input shape {tuple(input_shape)}."
            )
        self.built = True

    def call(self, images, training=None):
        if not training:
            return images
        height, width = images.shape[1], images.shape[2]
        dtype = images.dtype
        out = ops.cast(images, "float32")
        batch = ops.shape(out)[0]
        if self.padding:
            p = self.padding
            out = ops.pad(out, [[0, 0], [p, p], [p, p], [0, 0]])
            offsets = keras.random.randint((batch, 2), 0, 2 * p + 1, seed=self.seed_generator)
            rows = _one_hot_window(offsets[:, 0], height, height + 2 * p)  # [B, H, H + 2p]
            cols = _one_hot_window(offsets[:, 1], width, width + 2 * p)  # [B, W, W + 2p]
            out = ops.einsum("bhi,biwc->bhwc", rows, out)
            out = ops.einsum("bwj,bhjc->bhwc", cols, out)
        if self.flip:
            coin = keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator)
            out = ops.where(coin < 0.5, ops.flip(out, axis=2), out)
        return ops.cast(out, dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"padding": self.padding, "flip": self.flip, "seed": self.seed})
        return config


def _one_hot_window(start, size, total):
    """`[B, size, total]`: row `k` of batch `b` selects index `start[b] + k`."""
    index = ops.expand_dims(start, 1) + ops.expand_dims(ops.arange(size, dtype=start.dtype), 0)
    return ops.one_hot(index, total, dtype="float32")
