"""tf.data input pipelines from numpy arrays, with seeded augmentation of images and signals."""
import keras
import numpy as np
import tensorflow as tf

from kdtf import augmentation
from kdtf import batches
from kdtf.data.validation import validate_arrays


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int; got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}; got {value}.")
    return int(value)


@keras.saving.register_keras_serializable(package="kdtf")
class Augment:
    """Seeded per-example augmentation: a random translation, and a flip.

    Images `[B, H, W, C]`: each image is zero-padded by
    `random_crop_padding` pixels on every side and randomly cropped back to
    `H x W` (a random translation), then flipped left-right with
    probability 1/2. Signals `[B, L]` or `[B, L, C]` (MNIST-1D, audio,
    sensor traces): each is zero-padded by `random_crop_padding` steps at
    both ends and cut back to length `L` at a random offset, a random shift
    in time; a time reversal is rarely label-preserving, so signals need
    `flip=False`. Offsets and flips are drawn per example with stateless
    ops from a per-batch seed, so a pipeline built by
    `make_dataset(..., augment=Augment(seed=s))` is reproducible and draws
    new augmentations every epoch. Dtypes are preserved (uint8 stays uint8).

    Given to a distillation run, the teacher and the student see the same
    augmented batch, so the teacher labels every view the student trains
    on ("consistent teaching", Beyer et al., CVPR 2022).

    Args:
        random_crop_padding: Int >= 0, padding in pixels (images) or steps
            (signals); 0 disables the translation.
        flip: Bool, whether to apply random horizontal flips (images only).
        seed: Int seed of the augmentation stream.

    Example:

    ```python
    ds = make_dataset(x_images, y, batch_size=64, shuffle=True,
                      augment=Augment(random_crop_padding=4, flip=True))
    ds = make_dataset(x_signals, y, batch_size=64, shuffle=True,  # [N, 40]
                      augment=Augment(random_crop_padding=4, flip=False))
    ```
    """

    def __init__(self, random_crop_padding=4, flip=True, seed=0):
        self.random_crop_padding = _check_int(
            random_crop_padding, "random_crop_padding", 0
        )
        if not isinstance(flip, (bool, np.bool_)):
            raise TypeError(f"`flip` must be a bool; got {flip!r}.")
        self.flip = bool(flip)
        self.seed = _check_int(seed, "seed", 0)

    def check_input_shape(self, example_shape):
        """Raises a ValueError unless one example is an image `[H, W, C]`
        or a signal `[L]` / `[L, C]` (and then `flip` is off).

        Args:
            example_shape: Shape of one example (no batch axis).
        """
        example_shape = tuple(example_shape)
        if len(example_shape) not in (1, 2, 3):
            raise ValueError(
                "`augment` (kdtf.data.Augment: random translation and flip) "
                "needs images with one example of shape [H, W, C] or signals "
                f"[L] or [L, C]; got example shape {example_shape}. Pass "
                "`augment=None` for other inputs, or add a channel axis to "
                "grayscale images (x[..., None])."
            )
        if len(example_shape) < 3 and self.flip:
            raise ValueError(
                "`augment`: flip=True reverses images left-right, but the "
                f"examples are signals of shape {example_shape}, where a "
                "time reversal rarely keeps the label; pass "
                "Augment(..., flip=False) to shift them only."
            )

    def __call__(self, images, seed):
        """Augments one batch.

        Args:
            images: Tensor `[B, H, W, C]`, `[B, L]` or `[B, L, C]`.
            seed: Int tensor of shape `[2]`, the stateless seed of this batch.

        Returns:
            Tensor of the same shape and dtype as `images`.
        """
        images = tf.convert_to_tensor(images)
        self.check_input_shape(images.shape[1:])
        seed = tf.cast(seed, tf.int64)
        crop_seed = tf.random.experimental.stateless_fold_in(seed, 0)
        flip_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        batch = tf.shape(images)[0]
        p = self.random_crop_padding
        if images.shape.rank < 4:
            if p == 0:
                return images
            offsets = tf.random.stateless_uniform(
                [batch, 1], crop_seed, minval=0, maxval=2 * p + 1, dtype=tf.int32)
            return augmentation.shift_window(
                images, offsets, p, axes=(1,), backend=augmentation.TF_OPS)
        offsets = None
        if p > 0:
            offsets = tf.random.stateless_uniform(
                [batch, 2], crop_seed, minval=0, maxval=2 * p + 1, dtype=tf.int32)
        flip = tf.random.stateless_uniform([batch], flip_seed) < 0.5 if self.flip else None
        return augmentation.crop_flip(images, offsets, flip, p, backend=augmentation.TF_OPS)

    def get_config(self):
        return {
            "random_crop_padding": self.random_crop_padding,
            "flip": self.flip,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return (
            f"Augment(random_crop_padding={self.random_crop_padding}, "
            f"flip={self.flip}, seed={self.seed})"
        )


def make_dataset(
    x,
    y=None,
    sample_weight=None,
    batch_size=128,
    shuffle=False,
    seed=0,
    augment=None,
    drop_remainder=False,
    repeat=False,
    index=False,
):
    """Builds a batched, prefetched `tf.data.Dataset` from numpy arrays.

    Args:
        x: Numpy inputs, first axis = examples.
        y: Optional integer labels `(N,)`.
        sample_weight: Optional per-example weights `(N,)`, finite and
            non-negative; needs `y`.
        batch_size: Int >= 1.
        shuffle: Bool. When True the examples are shuffled with a full-size
            buffer, seeded by `seed`, and reshuffled every epoch (each new
            iteration); the sequence of epochs is the same for the same seed.
        seed: Int seed of the shuffle.
        augment: `Augment` instance or None. Applied per batch to `x`; needs
            images `[N, H, W, C]` or signals `[N, L]` / `[N, L, C]`.
        drop_remainder: Bool, drop the last incomplete batch.
        repeat: Bool, repeat forever (each pass reshuffled).
        index: Bool. When True each batch's `x` is the dict
            `{"inputs": x, "index": i}` of `kdtf.batches`, `i` the examples'
            int32 positions in `x` (taken before shuffling), for losses that
            need each example's index (`kdtf.losses.CRD`).

    Returns:
        A `tf.data.Dataset` yielding `x`, `(x, y)` or `(x, y, sample_weight)`
        batches.

    Example:

    ```python
    splits = kdtf.data.load("mnist1d")
    ds = make_dataset(splits.x_train, splits.y_train, batch_size=128,
                      shuffle=True, seed=0)
    model.fit(ds, epochs=10)
    ```
    """
    batch_size = _check_int(batch_size, "batch_size", 1)
    seed = _check_int(seed, "seed", 0)
    x = np.asarray(x)
    validate_arrays(x, y, name="x")
    if augment is not None:
        if not isinstance(augment, Augment):
            raise TypeError(
                "`augment` must be a kdtf.data.Augment instance or None; got "
                f"{type(augment).__name__}."
            )
        augment.check_input_shape(x.shape[1:])
    tensors = (x,)
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 2:
            y = y[:, 0]
        y = y.astype(np.int32)
        tensors += (y,)
    if sample_weight is not None:
        if y is None:
            raise ValueError("`sample_weight` needs labels `y`; got y=None.")
        w = np.asarray(sample_weight)
        if w.dtype.kind not in "biuf":
            raise TypeError(
                f"`sample_weight` must be numeric; got dtype {w.dtype}."
            )
        w = w.astype(np.float32)
        if w.shape != (len(x),):
            raise ValueError(
                f"`sample_weight` must have shape ({len(x)},) to match `x`; "
                f"got {w.shape}."
            )
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            i = int(np.argmax(~np.isfinite(w) | (w < 0)))
            raise ValueError(
                "`sample_weight` must be finite and non-negative; found "
                f"{w[i]} at index {i}."
            )
        tensors += (w,)

    if index:
        tensors = (batches.make(x, index=np.arange(len(x), dtype=np.int32)),) + tensors[1:]
    ds = tf.data.Dataset.from_tensor_slices(
        tensors[0] if len(tensors) == 1 else tensors
    )
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if augment is not None:
        seeds = tf.data.Dataset.random(
            seed=augment.seed, rerandomize_each_iteration=True
        ).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds))

        def _augment_x(x, batch_seed):
            if isinstance(x, dict):  # the index rides along unchanged
                return {**x, batches.INPUTS_KEY: augment(x[batches.INPUTS_KEY], batch_seed)}
            return augment(x, batch_seed)

        def _augment(batch, batch_seed):
            if isinstance(batch, tuple):
                return (_augment_x(batch[0], batch_seed),) + batch[1:]
            return _augment_x(batch, batch_seed)

        ds = ds.map(
            _augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def one_iterator_per_fit(dataset, steps=None):
    """Repeats a finite dataset so that `fit` keeps one iterator for all epochs.

    Keras makes a new iterator over a finite dataset every epoch, and on
    TensorFlow 2.21 each one costs 10-25 KiB of memory that is never given
    back: over the thousands of epochs of a long run that alone grows memory
    by a few percent (measured by `python -m studies.soak`). Over
    `dataset.repeat()` with `steps_per_epoch` set to the dataset's length,
    Keras keeps one iterator. Every epoch still sees each example once, and
    a seeded shuffle and `Augment` stay reproducible: iterated directly
    (`for batch in ds`), the repeated dataset yields exactly the batches of
    fresh iterators (tested). Under `fit`, the first epoch is the same as
    without it; later epochs are reshuffled in another seeded order, because
    Keras's per-epoch iterators over its distributed dataset draw their
    reshuffle seeds their own way.

    Args:
        dataset: a `tf.data.Dataset`; anything else is returned unchanged.
        steps: the `steps_per_epoch` the caller gave; when set, nothing
            changes.

    Returns:
        `(dataset, steps)`: the repeated dataset and its length when it is
        finite with a known length and `steps` is None, else the arguments
        unchanged.

    Example:
    >>> ds, steps = one_iterator_per_fit(make_dataset(x, y, batch_size=32))
    >>> model.fit(ds, steps_per_epoch=steps, epochs=100)
    """
    if steps is not None or not isinstance(dataset, tf.data.Dataset):
        return dataset, steps
    length = int(dataset.cardinality())
    if length <= 0:  # infinite, unknown or empty: leave it to Keras
        return dataset, steps
    return dataset.repeat(), length
