"""Teacher caching (kdtf.caching): cached KD equals online KD, top-k, views, errors."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import kdtf
from kdtf import caching

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _data(n=64, d=12, c=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = (x[:, :c].argmax(axis=1)).astype("int32")
    return x, y


class _BatchRecorder(keras.layers.Layer):
    """Identity that records the static batch size of every traced call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def call(self, x):
        self.seen.append(x.shape[0])
        return x


def _teacher(d=12, c=5, recorder=None):
    inp = keras.Input((d,))
    h = inp if recorder is None else recorder(inp)
    h = keras.layers.Dense(32)(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Dropout(0.5)(keras.layers.ReLU()(h))
    return keras.Model(inp, keras.layers.Dense(c, name="logits")(h), name="teacher")


def _student(d=12, c=5):
    return keras.Sequential(
        [keras.Input((d,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(c)],
        name="student")


def _pair():
    keras.utils.set_random_seed(1)
    teacher = _teacher()
    student = _student()
    twin = keras.models.clone_model(student)
    twin.set_weights(student.get_weights())
    return teacher, student, twin


def _distiller(teacher, student, **kwargs):
    d = kdtf.Distiller(teacher=teacher, student=student,
                       distillation_losses=kdtf.losses.KD(temperature=2.0), **kwargs)
    d.compile(optimizer=keras.optimizers.SGD(0.5), loss=CE)
    return d


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float16", 2e-3)])
def test_cached_kd_equals_online_kd_one_step(dtype, tol):
    x, y = _data()
    teacher, student, twin = _pair()
    online = _distiller(teacher, student)
    h_online = online.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    cache = caching.TeacherCache.build(teacher, x, dtype=dtype)
    cached = _distiller(teacher, twin)
    h_cached = cached.fit(cache.dataset(y, batch_size=len(x)), epochs=1, verbose=0)
    for key in ("loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(h_cached.history[key], h_online.history[key], rtol=tol, err_msg=key)
    for a, b in zip(twin.get_weights(), student.get_weights()):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    # evaluate() takes cached batches too and reports the same figures.
    e_online = online.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    e_cached = cached.evaluate(cache.dataset(y, batch_size=len(x)), verbose=0, return_dict=True)
    for key in e_online:
        np.testing.assert_allclose(e_cached[key], e_online[key], rtol=tol, err_msg=key)


def test_dense_cache_holds_the_teacher_outputs():
    x, _ = _data()
    teacher = _teacher()
    cache = caching.TeacherCache.build(teacher, x, batch_size=24, dtype="float32")
    want = teacher.predict(x, verbose=0)
    np.testing.assert_allclose(cache.outputs(np.arange(len(x))), want, rtol=1e-5, atol=1e-6)
    cache.check_teacher(teacher)


def test_top_k_reconstruction():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20, 10)) * 3
    # k = C is lossless.
    v, i, tail = caching.top_k_compress(logits, 10)
    assert tail is None
    np.testing.assert_allclose(caching.top_k_expand(v, i, tail, 10).numpy(), logits, rtol=1e-6)
    # k < C: the top-k logits and their softmax probabilities are exact; the
    # other classes share the remaining mass evenly.
    k = 3
    v, i, tail = caching.top_k_compress(logits, k)
    dense = caching.top_k_expand(v, i, tail, 10).numpy().astype(np.float64)
    top = np.argsort(-logits, axis=1)[:, :k]
    np.testing.assert_array_equal(np.sort(i, axis=1), np.sort(top, axis=1))
    np.testing.assert_allclose(np.take_along_axis(dense, top, 1),
                               np.take_along_axis(logits, top, 1), rtol=1e-6)
    p_true = tf.nn.softmax(logits).numpy()
    p_rebuilt = tf.nn.softmax(dense).numpy()
    np.testing.assert_allclose(np.take_along_axis(p_rebuilt, top, 1),
                               np.take_along_axis(p_true, top, 1), rtol=1e-5)
    rest = np.ones_like(p_true, dtype=bool)
    np.put_along_axis(rest, top, False, axis=1)
    p_rest = p_rebuilt[rest].reshape(20, 10 - k)
    np.testing.assert_allclose(p_rest, p_rest[:, :1].repeat(10 - k, axis=1), rtol=1e-5)
    np.testing.assert_allclose(p_rest.sum(1), p_true[rest].reshape(20, -1).sum(1), rtol=1e-5)


def test_top_k_cache_feeds_rebuilt_logits():
    x, y = _data()
    teacher = _teacher()
    cache = caching.TeacherCache.build(teacher, x, top_k=2, dtype="float32")
    logits = teacher.predict(x, verbose=0)
    v, i, tail = caching.top_k_compress(logits, 2)
    want = caching.top_k_expand(v, i, tail, 5).numpy()
    np.testing.assert_allclose(cache.outputs(np.arange(len(x))), want, rtol=1e-5, atol=1e-5)
    batch = next(iter(cache.dataset(y, batch_size=len(x))))[0]
    np.testing.assert_allclose(batch["teacher_outputs"].numpy(), want, rtol=1e-5, atol=1e-5)


def test_views_are_regenerated_deterministically():
    x, y = _data(n=40)
    teacher = _teacher()
    augment = caching.SignalShift(max_shift=2, scale=0.2, noise_std=0.1)
    cache = caching.TeacherCache.build(teacher, x, views=4, augment=augment, seed=3,
                                       dtype="float32", batch_size=7)
    idx = np.arange(len(x))
    for view in range(4):
        a = cache.inputs(idx, view)
        # The same view whatever the batch it is in, and bit-identical again.
        np.testing.assert_array_equal(cache.inputs(idx[::-1], view)[::-1], a)
        np.testing.assert_array_equal(cache.inputs(idx[5:6], view), a[5:6])
        # The cached outputs are the teacher's outputs on exactly these views.
        np.testing.assert_allclose(cache.outputs(idx, view), teacher.predict(a, verbose=0),
                                   rtol=1e-5, atol=1e-5)
    assert not np.allclose(cache.inputs(idx, 0), cache.inputs(idx, 1))
    # The training batches carry regenerated views and their cached outputs,
    # each example one of its K views.
    table = np.stack([cache.inputs(idx, v) for v in range(4)])  # [K, N, d]
    seen_views, seen_examples = [], []
    for features, labels in cache.dataset(y, batch_size=16, shuffle=True, seed=1):
        inputs = features["inputs"].numpy()
        np.testing.assert_allclose(features["teacher_outputs"].numpy(),
                                   teacher.predict(inputs, verbose=0), rtol=1e-5, atol=1e-5)
        for row, label in zip(inputs, labels.numpy()):
            v, i = np.argwhere((table == row).all(-1))[0]
            seen_views.append(v)
            seen_examples.append(i)
            assert label == y[i]
    assert sorted(seen_examples) == list(range(len(x)))
    assert set(seen_views) == {0, 1, 2, 3}


def test_image_views_keep_uint8_and_match_kdtf_data_augment_settings():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    inp = keras.Input((8, 8, 3), dtype="uint8")
    h = keras.layers.Rescaling(1 / 255)(inp)
    teacher = keras.Model(inp, keras.layers.Dense(4)(keras.layers.Flatten()(h)))
    cache = caching.TeacherCache.build(
        teacher, x, views=2, augment=kdtf.data.Augment(random_crop_padding=2, flip=True))
    assert isinstance(cache.augment, caching.ImageCropFlip)
    assert cache.augment.get_config() == {"random_crop_padding": 2, "flip": True}
    views = cache.inputs(np.arange(6), 1)
    assert views.dtype == np.uint8 and views.shape == x.shape
    np.testing.assert_array_equal(cache.inputs([4], 1)[0], views[4])


def test_memory_bytes():
    x, _ = _data(n=30)
    teacher = _teacher()
    augment = caching.SignalShift(1)
    dense16 = caching.TeacherCache.build(teacher, x, views=3, augment=augment)
    assert dense16.memory_bytes == 30 * 3 * 5 * 2
    dense32 = caching.TeacherCache.build(teacher, x, dtype="float32")
    assert dense32.memory_bytes == 30 * 5 * 4
    top2 = caching.TeacherCache.build(teacher, x, views=3, augment=augment, top_k=2)
    # values (float16) + indices (int16) + one tail value (float16) per view.
    assert top2.memory_bytes == 30 * 3 * (2 * 2 + 2 * 2 + 2)
    full = caching.TeacherCache.build(teacher, x, top_k=5)
    assert full.memory_bytes == 30 * (5 * 2 + 5 * 2)  # no tail when k == C
    assert top2.memory_bytes == sum(a.nbytes for a in top2.arrays.values())


def test_synthetic_inputs_still_go_through_the_teacher():
    x, y = _data(n=32)
    recorder = _BatchRecorder()
    keras.utils.set_random_seed(0)
    teacher = _teacher(recorder=recorder)
    cache = caching.TeacherCache.build(teacher, x, dtype="float32")
    d = kdtf.Distiller(teacher=teacher, student=_student(), sampler=kdtf.samplers.Mixup(seed=0),
                       synthetic_ratio=0.5)
    # The shared method: cached rows are returned as is, synthetic rows are the
    # teacher's online outputs.
    x_syn = x[:8] * 0.5
    fake = np.full((16, 5), 7.0, np.float32)
    to_numpy = keras.ops.convert_to_numpy
    out = to_numpy(d.teacher_outputs(np.concatenate([x[:16], x_syn]), fake, 16)["output"])
    np.testing.assert_array_equal(out[:16], fake)
    np.testing.assert_allclose(out[16:], to_numpy(teacher(x_syn, training=False)), rtol=1e-5,
                               atol=1e-6)
    # In fit, the teacher is traced on the 8 synthetic rows only, never on the
    # 16 real ones (nor on the 24 of real + synthetic).
    d.compile(optimizer="sgd", loss=CE)
    recorder.seen.clear()
    hist = d.fit(cache.dataset(y, batch_size=16, drop_remainder=True), epochs=1, verbose=0)
    assert "synthetic_loss" in hist.history and np.isfinite(hist.history["synthetic_loss"][0])
    assert 8 in recorder.seen and 16 not in recorder.seen and 24 not in recorder.seen
    # Without a sampler the teacher does not run at all in training.
    d2 = kdtf.Distiller(teacher=teacher, student=_student())
    d2.compile(optimizer="sgd", loss=CE)
    recorder.seen.clear()
    d2.fit(cache.dataset(y, batch_size=16, drop_remainder=True), epochs=1, verbose=0)
    d2.evaluate(cache.dataset(y, batch_size=16, drop_remainder=True), verbose=0)
    assert not [s for s in recorder.seen if s is not None]


def test_cache_for_another_teacher_output_size_is_an_error():
    x, y = _data()
    other = _teacher(c=7)
    cache = caching.TeacherCache.build(other, x)
    d = kdtf.Distiller(teacher=_teacher(), student=_student())
    d.compile(optimizer="sgd", loss=CE)
    with pytest.raises(ValueError, match="built for another teacher"):
        d.fit(cache.dataset(y, batch_size=16), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="Rebuild the cache"):
        cache.check_teacher(_teacher())


def test_cache_for_another_number_of_examples_is_an_error():
    x, y = _data(n=64)
    cache = caching.TeacherCache.build(_teacher(), x)
    with pytest.raises(ValueError, match="64 examples"):
        cache.dataset(y[:50])
    with pytest.raises(ValueError, match="64 examples"):
        cache.dataset(np.concatenate([y, y]))
    with pytest.raises(ValueError, match="64 examples"):
        cache.dataset(y, x=x[:10])
    with pytest.raises(ValueError, match=r"cached teacher outputs"):
        d = kdtf.Distiller(teacher=_teacher(), student=_student())
        d.teacher_outputs(tf.constant(x[:8]), np.zeros((6, 5), np.float32))


def test_bad_settings_are_clear_errors():
    x, _ = _data(n=16)
    teacher = _teacher()
    with pytest.raises(ValueError, match="needs `augment`"):
        caching.TeacherCache.build(teacher, x, views=2)
    with pytest.raises(ValueError, match="top_k"):
        caching.TeacherCache.build(teacher, x, top_k=6)
    with pytest.raises(ValueError, match="dtype"):
        caching.TeacherCache.build(teacher, x, dtype="int8")
    with pytest.raises(ValueError, match="SignalShift"):
        caching.TeacherCache.build(teacher, x.reshape(16, 2, 2, 3), augment=caching.SignalShift())
    with pytest.raises(TypeError, match="augment"):
        caching.TeacherCache.build(teacher, x, augment="flip")
    with pytest.raises(ValueError, match="max_shift"):
        caching.SignalShift(max_shift=-1)
    cache = caching.TeacherCache.build(teacher, x)
    with pytest.raises(ValueError, match="indices"):
        cache.outputs([16])
    # Cached outputs cannot feed feature losses.
    from kdtf.losses.feature import FeatureMSE

    inp = keras.Input((12,))
    student = keras.Model(inp, keras.layers.Dense(5, name="logits")(
        keras.layers.Dense(32, name="hidden")(inp)))
    d = kdtf.Distiller(teacher=teacher, student=student,
                       distillation_losses=[FeatureMSE("logits", "logits")])
    with pytest.raises(ValueError, match="final output only"):
        d.teacher_outputs(tf.constant(x), np.zeros((16, 5), np.float32))
    with pytest.raises(ValueError, match="keys"):
        d.unpack_inputs({"teacher_outputs": 1, "extra": 2})


def test_save_and_load_round_trip(tmp_path):
    x, y = _data(n=24)
    teacher = _teacher()
    cache = caching.TeacherCache.build(teacher, x, views=2, augment=caching.SignalShift(2, 0.1),
                                       top_k=3, seed=5)
    path = str(tmp_path / "cache.npz")
    cache.save(path)
    loaded = caching.TeacherCache.load(path, x=x)
    assert loaded.get_config() == cache.get_config()
    assert loaded.memory_bytes == cache.memory_bytes
    idx = np.arange(24)
    np.testing.assert_array_equal(loaded.outputs(idx, 1), cache.outputs(idx, 1))
    np.testing.assert_array_equal(loaded.inputs(idx, 1), cache.inputs(idx, 1))
    augment = caching.SignalShift.from_config(caching.SignalShift(2, 0.1, 0.3).get_config())
    assert augment.get_config() == {"max_shift": 2, "scale": 0.1, "noise_std": 0.3}
    with pytest.raises(ValueError, match="no inputs"):
        caching.TeacherCache.load(path).dataset(y)


def test_online_augmented_dataset_draws_fresh_views_each_epoch():
    x, y = _data(n=20)
    augment = caching.SignalShift(max_shift=2, scale=0.1)
    ds = caching.augmented_dataset(x, y, augment, batch_size=20, seed=0)
    first, labels = next(iter(ds))
    second, _ = next(iter(ds))
    np.testing.assert_array_equal(labels.numpy(), y)
    assert not np.allclose(first.numpy(), second.numpy())
    again = caching.augmented_dataset(x, y, augment, batch_size=20, seed=0)
    np.testing.assert_array_equal(next(iter(again))[0].numpy(), first.numpy())
    with pytest.raises(ValueError, match="shape"):
        caching.augmented_dataset(x, y[:5], augment)
