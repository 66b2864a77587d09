"""kdtf's crop and flip, written once: the layer in the train step, and the math
behind `kdtf.data.Augment` (tf.data) and `kdtf.caching`'s view augmentations.

`shift_window` (pad and crop at per-example offsets) and `crop_flip` are
the one implementation; each caller only draws its random numbers its own way
(a `keras.random.SeedGenerator` in the step, stateless per-batch or
per-example seeds on the host) and passes them in. They run on Keras's backend
ops, on the active backend by default or on TensorFlow's (`TF_OPS`) inside
tf.data, whatever the Keras backend, as Keras's own preprocessing layers do.
"""
import keras
from keras import ops
from keras.src.utils.backend_utils import DynamicBackend

# TensorFlow's ops for code that runs inside tf.data (the host pipeline and the
# teacher cache), on any Keras backend.
TF_OPS = DynamicBackend("tensorflow")


def shift_window(x, offsets, padding, axes, backend=None):
    """Zero-pads `x` on `axes` and cuts each example's window back out.

    Args:
        x: `[B, ...]` tensor.
        offsets: int32 `[B, len(axes)]`, each in `[0, 2 * padding]`: where
            example `b`'s window starts on `axes[j]` in the padded tensor
            (`padding` is no shift).
        padding: int >= 0, zeros added on both sides of each axis.
        axes: the axes to shift (1 for the height of `[B, H, W, C]`).
        backend: a Keras backend namespace (`TF_OPS` inside tf.data); None:
            the active backend.

    Returns:
        A tensor of `x`'s shape and dtype: an exact gather, no arithmetic.
    """
    b = backend or _ACTIVE
    if any(d is None for d in x.shape[1:]):
        raise ValueError(f"shift_window needs static sizes but the batch axis; got shape {x.shape}.")
    pad = [[0, 0]] * len(x.shape)
    for axis in axes:
        pad[axis] = [padding, padding]
    out = b.numpy.pad(x, pad)
    for j, axis in enumerate(axes):
        out = _window(b, out, b.cast(offsets[:, j], "int32"), x.shape[axis], axis)
    return out


def _window(b, x, starts, size, axis):
    """`x[i, ..., starts[i] : starts[i] + size, ...]` on `axis`, for every `i`.

    One gather of rows of the flattened `[B * L, ...]` tensor: as fast as a
    per-example gather (`tf.gather(batch_dims=1)`), where `take_along_axis`
    broadcasts its index to the whole output (4x slower in tf.data).
    """
    if axis != 1:
        x = b.numpy.moveaxis(x, axis, 1)
    rest = list(x.shape[2:])
    length = x.shape[1]
    batch = b.core.shape(x)[0]
    rows = b.numpy.expand_dims(b.numpy.arange(batch, dtype="int32") * length, 1)
    positions = b.numpy.expand_dims(starts, 1) + b.numpy.expand_dims(
        b.numpy.arange(size, dtype="int32"), 0)
    flat = b.numpy.reshape(x, [-1] + rest)
    out = b.numpy.take(flat, b.numpy.reshape(rows + positions, [-1]), axis=0)
    out = b.numpy.reshape(out, [-1, size] + rest)
    return b.numpy.moveaxis(out, 1, axis) if axis != 1 else out


def crop_flip(images, offsets, flip, padding, backend=None):
    """Pad-and-crop by `offsets`, then a left-right flip where `flip` holds.

    Args:
        images: `[B, H, W, C]`, any dtype (uint8 stays uint8).
        offsets: int32 `[B, 2]` (rows, columns) in `[0, 2 * padding]`.
        flip: bool `[B]`, or None for no flip.
        padding: int >= 0; 0 skips the crop.
        backend: as in `shift_window`.

    Returns:
        The augmented images, same shape and dtype.
    """
    b = backend or _ACTIVE
    if padding:
        images = shift_window(images, offsets, padding, axes=(1, 2), backend=b)
    if flip is not None:
        mask = b.numpy.reshape(flip, [-1, 1, 1, 1])
        images = b.numpy.where(mask, b.numpy.flip(images, axis=2), images)
    return images


_ACTIVE = DynamicBackend()


@keras.saving.register_keras_serializable(package="kdtf")
class RandomCropFlip(keras.layers.Layer):
    """Pad-and-crop (a random translation) and horizontal flip, per image.

    The standard CIFAR augmentation, as `kdtf.data.Augment` does it in
    tf.data on the host, but as a backend-agnostic layer (`keras.ops`,
    `keras.random`): given to `kdtf.Distiller(augmentation=...)` it runs on
    the accelerator inside the compiled train step, on the batch as it
    arrived (uint8 images stay uint8), so the host only feeds bytes. Each
    image is zero-padded by `padding` pixels on every side and cropped back
    to `H x W` at a random offset (an exact gather, `crop_flip`), then
    flipped left-right with probability 1/2. At inference (`training`
    false) the layer is the identity.

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
        batch = ops.shape(images)[0]
        p = self.padding
        offsets = (keras.random.randint((batch, 2), 0, 2 * p + 1, seed=self.seed_generator)
                   if p else None)
        flip = None
        if self.flip:
            flip = keras.random.uniform((batch,), seed=self.seed_generator) < 0.5
        return crop_flip(images, offsets, flip, p)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"padding": self.padding, "flip": self.flip, "seed": self.seed})
        return config

