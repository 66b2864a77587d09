"""Tests for kdtf.data.make_dataset and Augment."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from kdtf.data import Augment, make_dataset


def _epoch(ds):
    return [tuple(np.asarray(t) for t in b) if isinstance(b, tuple)
            else (np.asarray(b),) for b in ds]


def _order(ds):
    return np.concatenate([b[1] for b in _epoch(ds)])


def test_structure_and_batching():
    x = np.arange(10, dtype="float32")[:, None] * np.ones((1, 3), "float32")
    y = np.arange(10)
    w = np.linspace(0, 1, 10)
    only_x = _epoch(make_dataset(x, batch_size=4))
    assert [b[0].shape for b in only_x] == [(4, 3), (4, 3), (2, 3)]
    xy = _epoch(make_dataset(x, y, batch_size=4, drop_remainder=True))
    assert len(xy) == 2 and len(xy[0]) == 2
    assert xy[0][1].dtype == np.int32
    np.testing.assert_array_equal(xy[1][0][:, 0], [4, 5, 6, 7])
    xyw = _epoch(make_dataset(x, y, w, batch_size=5))
    assert len(xyw[0]) == 3 and xyw[0][2].dtype == np.float32
    np.testing.assert_allclose(np.concatenate([b[2] for b in xyw]), w,
                               rtol=1e-6)
    # Labels of shape (N, 1) are flattened.
    yb = _epoch(make_dataset(x, y[:, None], batch_size=10))[0][1]
    assert yb.shape == (10,)


def test_shuffle_seeded_and_reshuffled_each_epoch():
    x = np.zeros((64, 2), "float32")
    y = np.arange(64)
    ds = make_dataset(x, y, batch_size=16, shuffle=True, seed=3)
    first, second = _order(ds), _order(ds)
    assert sorted(first) == list(range(64)) and sorted(second) == list(range(64))
    assert not np.array_equal(first, second)  # New order each epoch.
    assert not np.array_equal(first, np.arange(64))
    again = make_dataset(x, y, batch_size=16, shuffle=True, seed=3)
    np.testing.assert_array_equal(_order(again), first)
    np.testing.assert_array_equal(_order(again), second)
    other = make_dataset(x, y, batch_size=16, shuffle=True, seed=4)
    assert not np.array_equal(_order(other), first)
    np.testing.assert_array_equal(_order(make_dataset(x, y, batch_size=16)),
                                  np.arange(64))


def test_repeat_covers_each_epoch():
    y = np.arange(6)
    ds = make_dataset(np.zeros((6, 1)), y, batch_size=3, shuffle=True,
                      repeat=True)
    labels = np.concatenate([b[1].numpy() for b in ds.take(4)])
    assert sorted(labels[:6]) == list(range(6))
    assert sorted(labels[6:]) == list(range(6))


def test_bad_arguments():
    x, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(x, y, batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        make_dataset(x, y, batch_size=2.5)
    with pytest.raises(ValueError, match="sample_weight"):
        make_dataset(x, sample_weight=np.ones(4))
    with pytest.raises(ValueError, match=r"sample_weight.*shape \(4,\)"):
        make_dataset(x, y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        make_dataset(x, y, sample_weight=np.array([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="3 inputs vs 4 labels"):
        make_dataset(x[:3], y)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        make_dataset(bad, y)
    with pytest.raises(TypeError, match="Augment"):
        make_dataset(np.zeros((4, 8, 8, 3)), y, augment="flip")


def test_augment_rejects_bad_shapes_and_flipped_signals():
    with pytest.raises(ValueError, match="`augment`.*augment=None"):
        make_dataset(np.zeros((8, 4, 4, 4, 1), "float32"), np.zeros(8, int),
                     augment=Augment())
    with pytest.raises(ValueError, match="flip=False"):
        make_dataset(np.zeros((8, 40), "float32"), np.zeros(8, int), augment=Augment())
    with pytest.raises(ValueError, match="flip=False"):
        Augment()(tf.zeros((2, 40)), tf.constant([1, 2]))


@pytest.mark.parametrize("shape", [(32, 12), (32, 12, 3)])
def test_augment_shifts_signals_per_example(shape):
    rng = np.random.default_rng(3)
    x = rng.normal(size=shape).astype("float32") + 5.0  # no zeros of its own
    p = 3
    out = Augment(random_crop_padding=p, flip=False)(x, tf.constant([4, 2])).numpy()
    assert out.shape == x.shape and out.dtype == x.dtype
    pad = [(p, p)] + [(0, 0)] * (x.ndim - 2)
    offsets = set()
    for sig, res in zip(x, out):
        padded = np.pad(sig, pad)
        matches = [d for d in range(2 * p + 1)
                   if np.array_equal(padded[d:d + shape[1]], res)]
        assert len(matches) == 1, "output is not a zero-padded window of its input"
        offsets.add(matches[0])
    assert len(offsets) > 3  # independent draws per example
    same = Augment(random_crop_padding=0, flip=False)(x, tf.constant([4, 2])).numpy()
    np.testing.assert_array_equal(same, x)


def _reference_augment(img, dy, dx, flip, p):
    padded = np.pad(img, [(p, p), (p, p), (0, 0)])
    h, w = img.shape[:2]
    out = padded[dy:dy + h, dx:dx + w]
    return out[:, ::-1] if flip else out


def test_augment_is_per_image_pad_crop_flip():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 255, (32, 6, 6, 2)).astype(np.uint8)
    p = 2
    out = Augment(random_crop_padding=p, flip=True)(
        images, tf.constant([5, 7])).numpy()
    assert out.shape == images.shape and out.dtype == np.uint8
    flips, offsets = [], set()
    for img, res in zip(images, out):
        matches = [(dy, dx, f)
                   for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                   for f in (False, True)
                   if np.array_equal(_reference_augment(img, dy, dx, f, p),
                                     res)]
        assert matches, "output is not a padded crop (+ flip) of its input"
        flips.append(matches[0][2])
        offsets.add(matches[0][:2])
    # Independent draws per image: both flip states and several offsets.
    assert 0 < sum(flips) < len(flips)
    assert len(offsets) > 3


def test_augment_disabled_is_identity_and_flip_only():
    x = np.random.default_rng(1).normal(size=(4, 5, 5, 3)).astype("float32")
    seed = tf.constant([1, 2])
    same = Augment(random_crop_padding=0, flip=False)(x, seed).numpy()
    np.testing.assert_array_equal(same, x)
    flipped = Augment(random_crop_padding=0, flip=True)(x, seed).numpy()
    for img, res in zip(x, flipped):
        assert (np.array_equal(res, img)
                or np.array_equal(res, img[:, ::-1]))


def test_augment_in_pipeline_seeded_and_varies_per_epoch():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 255, (16, 8, 8, 3)).astype(np.uint8)
    y = np.arange(16)

    def run(seed):
        ds = make_dataset(x, y, batch_size=8, augment=Augment(seed=seed))
        return [np.concatenate([b[0] for b in _epoch(ds)]) for _ in range(2)]

    a1, a2 = run(0)
    b1, b2 = run(0)
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    assert not np.array_equal(a1, a2)  # Fresh augmentations each epoch.
    assert not np.array_equal(run(1)[0], a1)
    assert a1.dtype == np.uint8 and a1.shape == x.shape


def test_augment_config_roundtrip():
    aug = Augment(random_crop_padding=3, flip=False, seed=9)
    cfg = aug.get_config()
    assert cfg == {"random_crop_padding": 3, "flip": False, "seed": 9}
    back = Augment.from_config(cfg)
    assert back.get_config() == cfg
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(aug))
    assert isinstance(restored, Augment) and restored.get_config() == cfg
    with pytest.raises(ValueError, match="random_crop_padding"):
        Augment(random_crop_padding=-1)
    with pytest.raises(TypeError, match="flip"):
        Augment(flip="yes")


def test_fits_a_keras_model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype(int)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(True))
    hist = model.fit(make_dataset(x, y, np.ones(64), batch_size=16,
                                  shuffle=True), epochs=1, verbose=0,
                     shuffle=False)
    assert np.isfinite(hist.history["loss"][0])


def _epochs_fresh_iterators(ds, epochs):
    return [[t.numpy() for t in tf.nest.flatten(b)] for _ in range(epochs) for b in ds]


def _epochs_one_iterator(ds, epochs):
    from kdtf.data import one_iterator_per_fit

    repeated, steps = one_iterator_per_fit(ds)
    it = iter(repeated)
    return [[t.numpy() for t in tf.nest.flatten(next(it))] for _ in range(epochs * steps)]


def test_one_iterator_per_fit_gives_the_batches_of_fresh_iterators():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(21, 6, 6, 1)).astype("uint8")
    y = np.arange(21)
    for augment in (None, Augment(random_crop_padding=2, seed=5)):
        make = lambda: make_dataset(x, y, batch_size=4, shuffle=True, seed=3, augment=augment)
        fresh = _epochs_fresh_iterators(make(), 3)
        one = _epochs_one_iterator(make(), 3)
        assert len(fresh) == len(one) == 18  # 6 batches (the last of 1) x 3 epochs
        for a, b in zip(fresh, one):
            for u, v in zip(a, b):
                np.testing.assert_array_equal(u, v)
        # The epochs differ from each other (reshuffled, new augmentations).
        assert not np.array_equal(fresh[0][1], fresh[6][1])


def test_one_iterator_per_fit_leaves_other_inputs_alone():
    from kdtf.data import one_iterator_per_fit

    ds = make_dataset(np.zeros((10, 3), "float32"), batch_size=4)
    assert one_iterator_per_fit(ds, steps=2) == (ds, 2)
    repeated = ds.repeat()
    assert one_iterator_per_fit(repeated) == (repeated, None)
    unknown = ds.filter(lambda b: True)
    assert one_iterator_per_fit(unknown) == (unknown, None)
    empty = ds.take(0)
    assert one_iterator_per_fit(empty) == (empty, None)
    arrays = np.zeros((4, 3))
    assert one_iterator_per_fit(arrays)[0] is arrays
    repeated, steps = one_iterator_per_fit(ds)
    assert steps == 3 and int(repeated.cardinality()) == int(tf.data.INFINITE_CARDINALITY)


def test_index_rides_with_each_example_through_shuffle_and_augment():
    import kdtf
    from kdtf import batches

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (20, 6, 6, 1)).astype("uint8")
    y = np.arange(20) % 10
    ds = make_dataset(x, y, batch_size=8, shuffle=True, seed=3, index=True)
    seen = []
    for features, labels in ds:
        inputs, cached, index = batches.split(features)
        assert cached is None
        np.testing.assert_array_equal(x[index.numpy()], inputs.numpy())
        np.testing.assert_array_equal(y[index.numpy()], labels.numpy())
        seen += list(index.numpy())
    assert sorted(seen) == list(range(20)) and seen != list(range(20))
    # With an augmentation the inputs change and the index still names the rows.
    augmented = make_dataset(x, y, batch_size=8, index=True,
                             augment=kdtf.data.Augment(random_crop_padding=1, seed=0))
    features, _ = next(iter(augmented))
    assert sorted(features) == ["index", "inputs"] and features["inputs"].shape == (8, 6, 6, 1)
    # A model's own dict input may have an "index" key: only {"inputs", "index"} is the format.
    own = {"index": index, "tokens": index}
    assert batches.split(own) == (own, None, None)
    with pytest.raises(ValueError, match="'inputs'"):
        batches.split({"teacher_outputs": index, "index": index})
