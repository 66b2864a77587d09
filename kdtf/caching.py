"""Teacher caching: run the teacher once, reuse its outputs every epoch.

Online distillation runs the teacher on every batch of every epoch, although
a frozen teacher gives the same outputs for the same inputs. `TeacherCache`
runs it once, ahead of training, and feeds its outputs to `kdtf.Distiller`
with the data:

* **Fixed data** (`views=1`, no augmentation): one output per example.
* **Augmented data**, as in fast knowledge distillation (FKD, Shen & Xing
  2021): each example gets a fixed set of `views` augmented versions. Only
  the teacher's outputs on them are stored, never the augmented inputs: view
  `v` of example `i` is regenerated on the fly from its stateless seed
  `(seed, i * views + v)`, bit-identical to the view the teacher saw. Each
  epoch every example shows one of its views, drawn at random.
* **Top-k** (`top_k=k`): per (example, view) only the `k` largest logits,
  their class indices and one scalar for the other classes are stored. The
  dense logits are rebuilt with the other classes at that scalar, chosen so
  that `softmax` (at temperature 1) gives the exact top-k probabilities and
  spreads the remaining mass evenly over the other classes (FKD's "marginal
  smoothing"). `top_k=num_classes` is lossless.

The batches of `TeacherCache.dataset` are
`({"inputs": x, "teacher_outputs": t}, y)`, the format `kdtf.Distiller`
documents; synthetic inputs of a sampler are still sent through the teacher
online.

Example:

```python
cache = kdtf.caching.TeacherCache.build(
    teacher, x_train, views=8, augment=kdtf.caching.SignalShift(max_shift=3),
    top_k=5)
print(cache.memory_bytes)
distiller = kdtf.Distiller(teacher=teacher, student=student)
distiller.compile(optimizer="adam", loss=task_loss)
distiller.fit(cache.dataset(y_train, batch_size=128, shuffle=True), epochs=60)
```

View augmentations take one stateless seed per example, `augment(x, seeds)`
with `seeds` of shape `[B, 2]`, so that a view does not depend on the batch it
lands in; `SignalShift` (1-D signals) and `ImageCropFlip` (images; the
per-example counterpart of `kdtf.data.Augment`, which is converted
automatically) are provided.
"""
import json
import math

import keras
import numpy as np
import tensorflow as tf

from kdtf import augmentation
from kdtf import batches

_DTYPES = ("float16", "float32")


# ----------------------------------------------------------------- seeding
def view_seeds(seed, indices, views, num_views):
    """The stateless seed of each (example, view): `(seed, index * K + view)`.

    Args:
        seed: int (or int scalar tensor), the cache's seed.
        indices: int tensor `[B]` of example indices.
        views: int tensor `[B]` of view ids in `[0, num_views)`.
        num_views: K, the number of views per example.

    Returns:
        An int64 tensor `[B, 2]`.
    """
    indices = tf.cast(indices, tf.int64)
    views = tf.cast(views, tf.int64)
    return tf.stack(
        [tf.fill(tf.shape(indices), tf.cast(seed, tf.int64)),
         indices * num_views + views],
        axis=1,
    )


def _per_example(seeds, fn, dtype=tf.float32):
    """`fn(seed_i)` for each row of `seeds` `[B, 2]`, stacked: row i depends
    on `seeds[i]` alone, whatever the batch."""
    return tf.map_fn(fn, tf.cast(seeds, tf.int64), fn_output_signature=dtype)


# ------------------------------------------------------- view augmentations
class ViewAugment:
    """Base of per-example seeded augmentations, `augment(x, seeds)`.

    `x` is a batch `[B, ...]`, `seeds` an int tensor `[B, 2]`; the result has
    the shape and dtype of `x`, and row `i` is a deterministic function of
    `x[i]` and `seeds[i]` alone, so that a view can be regenerated from its
    seed. Subclasses implement `call(x, seeds)` and `get_config()`.
    """

    def __call__(self, x, seeds):
        x = tf.convert_to_tensor(x)
        self.check_input_shape(tuple(x.shape[1:]))
        return self.call(x, tf.cast(seeds, tf.int64))

    def call(self, x, seeds):
        raise NotImplementedError(f"{type(self).__name__} must implement call().")

    def check_input_shape(self, example_shape):
        """Raises a ValueError when one example cannot be augmented."""

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _check_non_negative_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"`{name}` must be an int >= 0; got {value!r}.")
    return int(value)


def _check_non_negative_float(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not value >= 0:
        raise ValueError(f"`{name}` must be a number >= 0; got {value!r}.")
    return float(value)


@keras.saving.register_keras_serializable(package="kdtf")
class SignalShift(ViewAugment):
    """Random translation (zero-filled), gain and noise of 1-D signals.

    For inputs `[B, L]` or `[B, L, C]` (MNIST-1D: `[B, 40]`): each signal is
    shifted by an integer in `[-max_shift, max_shift]`, multiplied by a gain
    in `[1 - scale, 1 + scale]` and gets Gaussian noise of std `noise_std`.

    Args:
        max_shift: int >= 0, the largest shift in samples.
        scale: float >= 0, the largest relative gain change.
        noise_std: float >= 0, the std of the added noise.
    """

    def __init__(self, max_shift=3, scale=0.0, noise_std=0.0):
        self.max_shift = _check_non_negative_int("max_shift", max_shift)
        self.scale = _check_non_negative_float("scale", scale)
        self.noise_std = _check_non_negative_float("noise_std", noise_std)

    def check_input_shape(self, example_shape):
        if len(example_shape) not in (1, 2):
            raise ValueError(
                "SignalShift augments 1-D signals with one example of shape "
                f"[L] or [L, C]; got example shape {tuple(example_shape)}."
            )

    def call(self, x, seeds):
        dtype = x.dtype
        if not dtype.is_floating:
            raise ValueError(f"SignalShift needs float inputs; got dtype {dtype.name}.")
        u = _per_example(seeds, lambda s: tf.random.stateless_uniform([2], s))
        if self.max_shift:
            offsets = tf.cast(tf.floor(u[:, :1] * (2 * self.max_shift + 1)), tf.int32)
            offsets = tf.minimum(offsets, 2 * self.max_shift)
            x = augmentation.shift_window(x, offsets, self.max_shift, axes=(1,),
                                           backend=augmentation.TF_OPS)
        extra = [1] * (x.shape.rank - 1)
        if self.scale:
            gain = 1.0 + self.scale * (2.0 * u[:, 1] - 1.0)
            x = x * tf.reshape(tf.cast(gain, dtype), [-1] + extra)
        if self.noise_std:
            shape = tf.shape(x)[1:]
            noise = _per_example(
                seeds,
                lambda s: tf.random.stateless_normal(
                    shape, tf.random.experimental.stateless_fold_in(s, 1)),
            )
            x = x + tf.cast(self.noise_std * noise, dtype)
        return x

    def get_config(self):
        return {"max_shift": self.max_shift, "scale": self.scale, "noise_std": self.noise_std}


@keras.saving.register_keras_serializable(package="kdtf")
class ImageCropFlip(ViewAugment):
    """Random crop of a zero-padded image and horizontal flip, per example.

    The per-example-seeded counterpart of `kdtf.data.Augment` (which a
    `TeacherCache` converts to this). Dtypes are preserved (uint8 stays
    uint8).

    Args:
        random_crop_padding: int >= 0, padding in pixels; 0 disables the crop.
        flip: bool, whether to flip left-right with probability 1/2.
    """

    def __init__(self, random_crop_padding=4, flip=True):
        self.random_crop_padding = _check_non_negative_int(
            "random_crop_padding", random_crop_padding)
        if not isinstance(flip, (bool, np.bool_)):
            raise TypeError(f"`flip` must be a bool; got {flip!r}.")
        self.flip = bool(flip)

    def check_input_shape(self, example_shape):
        if len(example_shape) != 3:
            raise ValueError(
                "ImageCropFlip needs images with one example of shape [H, W, C]; "
                f"got example shape {tuple(example_shape)}."
            )

    def call(self, x, seeds):
        u = _per_example(seeds, lambda s: tf.random.stateless_uniform([3], s))
        p = self.random_crop_padding
        offsets = tf.minimum(tf.cast(tf.floor(u[:, :2] * (2 * p + 1)), tf.int32), 2 * p)
        flip = u[:, 2] < 0.5 if self.flip else None
        return augmentation.crop_flip(x, offsets, flip, p, backend=augmentation.TF_OPS)

    def get_config(self):
        return {"random_crop_padding": self.random_crop_padding, "flip": self.flip}


def as_view_augment(augment):
    """A per-example augmentation `augment(x, seeds)` from what users pass.

    Args:
        augment: None, a `ViewAugment`, a `kdtf.data.Augment` (converted to
            `ImageCropFlip` with the same crop and flip), or any callable
            `f(x, seeds)` following the `ViewAugment` contract.

    Returns:
        None or a callable `augment(x, seeds)`.
    """
    from kdtf.data import Augment

    if augment is None or isinstance(augment, ViewAugment):
        return augment
    if isinstance(augment, Augment):
        return ImageCropFlip(augment.random_crop_padding, augment.flip)
    if callable(augment):
        return augment
    raise TypeError(
        "`augment` must be None, a kdtf.caching.ViewAugment, a kdtf.data.Augment "
        f"or a callable augment(x, seeds); got {type(augment).__name__}."
    )


def augmented_dataset(x, y=None, augment=None, batch_size=128, shuffle=False, seed=0,
                      drop_remainder=False, repeat=False):
    """The online counterpart of a cache: a fresh view of every example each epoch.

    Batches are `(augment(x_b, seeds), y_b)` with per-example seeds drawn anew
    every epoch, for training with the teacher run online on each batch (to
    compare with `TeacherCache` views under the same augmentation).

    Args:
        x: numpy inputs `[N, ...]`.
        y: optional labels `[N]`.
        augment: a `ViewAugment`, a `kdtf.data.Augment` or a callable
            `augment(x, seeds)`; None for no augmentation.
        batch_size: int >= 1.
        shuffle: reshuffle every epoch (seeded by `seed`).
        seed: seed of the shuffle and of the views.
        drop_remainder: drop the last incomplete batch.
        repeat: repeat forever.

    Returns:
        A prefetched `tf.data.Dataset`.
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    augment = as_view_augment(augment)
    x = np.asarray(x)
    if isinstance(augment, ViewAugment):
        augment.check_input_shape(x.shape[1:])
    x_t = tf.convert_to_tensor(x)
    y_t = None
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.shape != (len(x),):
            raise ValueError(f"`y` must have shape ({len(x)},) to match `x`; got {y.shape}.")
        y_t = tf.convert_to_tensor(y.astype(np.int32))
    ds = tf.data.Dataset.range(len(x))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, draws))

    def make_batch(idx, draw):
        inputs = tf.gather(x_t, idx)
        if augment is not None:
            inputs = augment(inputs, view_seeds(draw, idx, tf.zeros_like(idx), 1))
        return inputs if y_t is None else (inputs, tf.gather(y_t, idx))

    ds = ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


# -------------------------------------------------------------- the cache
def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1; got {value!r}.")
    return int(value)


def _logsumexp(z, axis):
    m = np.max(z, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(z - m), axis=axis))


def top_k_compress(logits, k):
    """Top-k values, their indices and the tail value of logits `[..., C]`.

    The tail value `log(mean(exp(z_j)))` over the classes outside the top-k
    makes `top_k_expand` reproduce the exact softmax probabilities of the
    top-k classes (temperature 1) and spread the rest evenly.

    Returns:
        `(values [..., k], indices [..., k], tail [...] or None when k == C)`,
        values and tail in float64, indices int32.
    """
    z = np.asarray(logits, dtype=np.float64)
    c = z.shape[-1]
    order = np.argsort(-z, axis=-1, kind="stable")
    indices = order[..., :k].astype(np.int32)
    values = np.take_along_axis(z, indices, axis=-1)
    if k == c:
        return values, indices, None
    rest = np.take_along_axis(z, order[..., k:], axis=-1)
    tail = _logsumexp(rest, axis=-1) - math.log(c - k)
    return values, indices, tail


def top_k_expand(values, indices, tail, num_classes):
    """Dense logits `[..., C]` (float32 tensor) from `top_k_compress` parts."""
    values = tf.cast(values, tf.float32)
    one_hot = tf.one_hot(tf.cast(indices, tf.int32), num_classes, dtype=tf.float32)
    dense = tf.reduce_sum(one_hot * values[..., None], axis=-2)
    if tail is None:
        return dense
    mask = tf.reduce_sum(one_hot, axis=-2)
    return dense + (1.0 - mask) * tf.cast(tail, tf.float32)[..., None]


class TeacherCache:
    """A frozen teacher's outputs on a dataset (and its augmented views).

    Build with `TeacherCache.build`; train with `cache.dataset(y, ...)` and a
    `kdtf.Distiller`. Only the teacher's outputs are stored
    (`memory_bytes`); the inputs are the training array itself, and
    augmented views are regenerated from their seeds.

    Attributes:
        num_examples: N, examples covered.
        views: K, views per example.
        top_k: k of a top-k cache, or None for a dense one.
        output_shape: the teacher's output shape per example.
        dtype: storage dtype of the values ("float16" or "float32").
        seed: seed of the views.
        augment: the view augmentation, or None.
        memory_bytes: bytes held by the stored outputs.
    """

    def __init__(self, arrays, output_shape, views=1, top_k=None, seed=0, augment=None,
                 x=None, teacher_name=None):
        self._arrays = dict(arrays)
        self.output_shape = tuple(int(d) for d in output_shape)
        self.views = _check_positive_int("views", views)
        self.top_k = top_k
        self.seed = int(seed)
        self.augment = as_view_augment(augment)
        self.teacher_name = teacher_name
        first = self._arrays["values"]
        self.num_examples = int(first.shape[0])
        self.dtype = str(first.dtype)
        if first.shape[1] != self.views:
            raise ValueError(
                f"cache arrays hold {first.shape[1]} views per example; views={self.views}.")
        self.x = None
        if x is not None:
            self.x = self._check_x(x)

    # ------------------------------------------------------------ building
    @classmethod
    def build(cls, teacher, x, views=1, augment=None, top_k=None, batch_size=256, seed=0,
              dtype="float16"):
        """Runs `teacher` once over every (example, view) and stores its outputs.

        Args:
            teacher: the trained `keras.Model`, with one output tensor.
            x: numpy inputs `[N, ...]` of the training set, in the form the
                teacher and student take (e.g. uint8 images).
            views: K >= 1, augmented views per example. K > 1 needs `augment`.
            augment: None, a `ViewAugment` (`SignalShift`, `ImageCropFlip`),
                a `kdtf.data.Augment`, or a callable `augment(x, seeds)`.
                With `augment` every view (also for K = 1) is augmented.
            top_k: None to store the dense outputs, or k in [1, C] to store
                the k largest logits per (example, view) (outputs `[N, C]`
                only).
            batch_size: batch size of the teacher's forward passes.
            seed: seed of the views.
            dtype: storage dtype of the values, "float16" (default, half the
                memory; ~3 significant digits) or "float32" (exact).

        Returns:
            A `TeacherCache` holding `x` (by reference) for `dataset()`.
        """
        from kdtf.data import validate_arrays

        if not isinstance(teacher, keras.Model):
            raise TypeError(f"`teacher` must be a keras.Model; got {type(teacher).__name__}.")
        views = _check_positive_int("views", views)
        batch_size = _check_positive_int("batch_size", batch_size)
        if dtype not in _DTYPES:
            raise ValueError(f"`dtype` must be one of {_DTYPES}; got {dtype!r}.")
        x = np.asarray(x)
        validate_arrays(x, name="x")
        augment = as_view_augment(augment)
        if views > 1 and augment is None:
            raise ValueError(
                f"views={views} needs `augment`: without augmentation every view "
                "of an example is the same input (use views=1).")
        if isinstance(augment, ViewAugment):
            augment.check_input_shape(x.shape[1:])
        x_t = tf.convert_to_tensor(x)
        n = len(x)
        outputs = []
        for view in range(views):
            ds = tf.data.Dataset.range(n).batch(batch_size)
            if augment is None:
                ds = ds.map(lambda idx: tf.gather(x_t, idx))
            else:
                ds = ds.map(lambda idx, v=view: augment(
                    tf.gather(x_t, idx),
                    view_seeds(seed, idx, tf.fill(tf.shape(idx), tf.constant(v, tf.int64)),
                               views)))
            out = teacher.predict(ds.prefetch(2), verbose=0)
            if not isinstance(out, np.ndarray):
                raise ValueError(
                    f"TeacherCache needs a teacher with one output tensor; "
                    f"{teacher.name!r} returns {type(out).__name__}.")
            outputs.append(out)
        outputs = np.stack(outputs, axis=1)  # [N, K, ...]
        output_shape = outputs.shape[2:]
        if top_k is None:
            arrays = {"values": outputs.astype(dtype)}
        else:
            if len(output_shape) != 1:
                raise ValueError(
                    "top_k needs teacher outputs of shape [N, num_classes]; got "
                    f"{(n,) + tuple(output_shape)}.")
            c = output_shape[0]
            if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= c:
                raise ValueError(f"`top_k` must be an int in [1, {c}] or None; got {top_k!r}.")
            top_k = int(top_k)
            values, indices, tail = top_k_compress(outputs, top_k)
            arrays = {"values": values.astype(dtype),
                      "indices": indices.astype(np.int16 if c <= 2**15 else np.int32)}
            if tail is not None:
                arrays["tail"] = tail.astype(dtype)
        for name, array in arrays.items():
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                raise ValueError(
                    f"teacher outputs are not finite in {dtype} (overflow or NaN in the "
                    "teacher); use dtype='float32' or check the teacher.")
        return cls(arrays, output_shape, views=views, top_k=top_k, seed=seed, augment=augment,
                   x=x, teacher_name=teacher.name)

    # --------------------------------------------------------- inspection
    @property
    def memory_bytes(self):
        """Bytes of the stored teacher outputs (values, indices, tail)."""
        return int(sum(a.nbytes for a in self._arrays.values()))

    @property
    def arrays(self):
        """The stored arrays by name (read-only views)."""
        out = {}
        for name, array in self._arrays.items():
            view = array.view()
            view.flags.writeable = False
            out[name] = view
        return out

    @property
    def num_classes(self):
        return self.output_shape[-1]

    def check_teacher(self, teacher):
        """Raises a ValueError when `teacher`'s output shape is not the cache's."""
        try:
            want = tuple(teacher.outputs[0].shape[1:])
        except (AttributeError, ValueError, IndexError, TypeError):
            return
        if want != self.output_shape:
            raise ValueError(
                f"This cache holds teacher outputs of shape {self.output_shape} per "
                f"example (teacher {self.teacher_name!r}); {teacher.name!r} outputs "
                f"{want}. Rebuild the cache for this teacher.")

    def _check_x(self, x):
        x = np.asarray(x)
        if x.ndim == 0 or len(x) != self.num_examples:
            raise ValueError(
                f"This cache holds teacher outputs for {self.num_examples} examples; "
                f"got x with {len(x) if x.ndim else 0} rows (was it built for "
                "another dataset?).")
        return x

    def _check_indices(self, indices, views):
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        views = np.broadcast_to(np.asarray(views, dtype=np.int64), indices.shape)
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_examples):
            raise ValueError(f"indices must be in [0, {self.num_examples}).")
        if views.size and (views.min() < 0 or views.max() >= self.views):
            raise ValueError(f"views must be in [0, {self.views}).")
        return indices, views

    def _gather_outputs(self, indices, views):
        """Dense float32 outputs for int tensors `indices`, `views` `[B]`."""
        idx = tf.stack([tf.cast(indices, tf.int64), tf.cast(views, tf.int64)], axis=1)
        tensors = self._tensors()
        values = tf.gather_nd(tensors["values"], idx)
        if self.top_k is None:
            return tf.cast(values, tf.float32)
        tail = tf.gather_nd(tensors["tail"], idx) if "tail" in tensors else None
        return top_k_expand(values, tf.gather_nd(tensors["indices"], idx), tail,
                            self.num_classes)

    def _tensors(self):
        if getattr(self, "_tensor_cache", None) is None:
            self._tensor_cache = {k: tf.convert_to_tensor(v) for k, v in self._arrays.items()}
        return self._tensor_cache

    def outputs(self, indices, views=0):
        """The cached teacher outputs (dense, float32) of (example, view) pairs.

        Args:
            indices: example indices `[B]`.
            views: view ids `[B]` (or one for all).

        Returns:
            numpy float32 `[B] + output_shape`.
        """
        indices, views = self._check_indices(indices, views)
        return self._gather_outputs(indices, views).numpy()

    def inputs(self, indices, views=0, x=None):
        """Regenerates the inputs the teacher saw for (example, view) pairs.

        Args:
            indices: example indices `[B]`.
            views: view ids `[B]` (or one for all).
            x: the training inputs; defaults to those given to `build`.

        Returns:
            numpy `[B] + example shape`, the exact inputs of `build`.
        """
        indices, views = self._check_indices(indices, views)
        x = self._inputs_array(x)
        batch = tf.gather(tf.convert_to_tensor(x), indices)
        if self.augment is None:
            return batch.numpy()
        return self.augment(batch, view_seeds(self.seed, indices, views, self.views)).numpy()

    def _inputs_array(self, x):
        if x is None:
            if self.x is None:
                raise ValueError(
                    "This cache has no inputs (loaded from a file): pass the training "
                    "inputs as `x`.")
            return self.x
        return self._check_x(x)

    # ------------------------------------------------------------- training
    def dataset(self, y=None, sample_weight=None, batch_size=128, shuffle=False, seed=0,
                drop_remainder=False, repeat=False, x=None):
        """A `tf.data.Dataset` of cached batches for `kdtf.Distiller.fit`.

        Each batch is `({"inputs": x_b, "teacher_outputs": t_b}, y_b)` (with
        `sample_weight` a third element; without `y` the dict alone). Every
        example shows one of its `views` views, drawn at random each epoch
        (seeded by `seed`); its input is regenerated from the view's seed.

        Args:
            y: optional labels `[N]` (or `[N, 1]`) of the cached examples.
            sample_weight: optional weights `[N]`; needs `y`.
            batch_size: int >= 1.
            shuffle: reshuffle the examples every epoch (seeded by `seed`).
            seed: seed of the shuffle and of the view draws.
            drop_remainder: drop the last incomplete batch.
            repeat: repeat forever (each pass reshuffled).
            x: the training inputs; defaults to those given to `build`.

        Returns:
            A prefetched `tf.data.Dataset`.
        """
        batch_size = _check_positive_int("batch_size", batch_size)
        x = self._inputs_array(x)
        extras = []
        if y is not None:
            y = np.asarray(y)
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            if y.ndim != 1 or len(y) != self.num_examples:
                raise ValueError(
                    f"This cache holds teacher outputs for {self.num_examples} examples; "
                    f"got y of shape {y.shape} (labels of another dataset?).")
            extras.append(tf.convert_to_tensor(y.astype(np.int32)))
        if sample_weight is not None:
            if y is None:
                raise ValueError("`sample_weight` needs labels `y`; got y=None.")
            w = np.asarray(sample_weight, dtype=np.float32)
            if w.shape != (self.num_examples,):
                raise ValueError(
                    f"`sample_weight` must have shape ({self.num_examples},); got {w.shape}.")
            extras.append(tf.convert_to_tensor(w))
        x_t = tf.convert_to_tensor(x)
        self._tensors()  # created eagerly: the map function captures them
        ds = tf.data.Dataset.range(self.num_examples)
        if shuffle:
            ds = ds.shuffle(self.num_examples, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        batch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, batch_seeds))

        def make_batch(idx, batch_seed):
            if self.views > 1:
                views = tf.random.stateless_uniform(
                    tf.shape(idx), batch_seed, minval=0, maxval=self.views, dtype=tf.int64)
            else:
                views = tf.zeros_like(idx)
            inputs = tf.gather(x_t, idx)
            if self.augment is not None:
                inputs = self.augment(inputs, view_seeds(self.seed, idx, views, self.views))
            features = batches.make(inputs, teacher_outputs=self._gather_outputs(idx, views))
            if not extras:
                return features
            return (features,) + tuple(tf.gather(e, idx) for e in extras)

        ds = ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    # ----------------------------------------------------------- files
    def get_config(self):
        """The cache's settings (not its arrays; see `save`)."""
        augment = self.augment
        if augment is not None and not hasattr(augment, "get_config"):
            augment = None  # a plain callable; `load` asks for it again
        return {
            "output_shape": list(self.output_shape),
            "views": self.views,
            "top_k": self.top_k,
            "seed": self.seed,
            "augment": keras.saving.serialize_keras_object(augment) if augment else None,
            "augmented": self.augment is not None,
            "teacher_name": self.teacher_name,
        }

    def save(self, path):
        """Writes the cache (arrays and settings, not the inputs) to an `.npz`."""
        config = json.dumps(self.get_config())
        with open(path, "wb") as f:
            np.savez(f, _config=np.frombuffer(config.encode(), dtype=np.uint8), **self._arrays)

    @classmethod
    def load(cls, path, x=None, augment=None):
        """Reads a cache written by `save`.

        Args:
            path: the `.npz` file.
            x: the training inputs it was built from (needed by `dataset`).
            augment: the view augmentation, when it was a plain callable
                (registered `ViewAugment`s are restored from the file).
        """
        with np.load(path, allow_pickle=False) as data:
            config = json.loads(bytes(data["_config"]).decode())
            arrays = {k: data[k] for k in data.files if k != "_config"}
        if augment is None and config["augment"] is not None:
            augment = keras.saving.deserialize_keras_object(config["augment"])
        if config["augmented"] and augment is None:
            raise ValueError(
                f"{path} was built with a custom augmentation: pass it as `augment`.")
        return cls(arrays, config["output_shape"], views=config["views"], top_k=config["top_k"],
                   seed=config["seed"], augment=augment, x=x, teacher_name=config["teacher_name"])

    def __repr__(self):
        kind = f"top_k={self.top_k}" if self.top_k else "dense"
        return (f"TeacherCache(num_examples={self.num_examples}, views={self.views}, {kind}, "
                f"dtype={self.dtype}, output_shape={self.output_shape}, "
                f"memory_bytes={self.memory_bytes})")
