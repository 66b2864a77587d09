import keras
import numpy as np
import pytest

import kdtf
from kdtf.losses.crd import CRD, ContrastHead, nce_loss

EPS = 1e-7


def _rng(seed=0):
    return np.random.default_rng(seed)


def _normalize(x):
    return x / np.sqrt((x ** 2).sum(-1, keepdims=True))


def _np_crd_step(head, t, s, index, negatives, z, bank_s, bank_t):
    """The paper's formula in NumPy (float64): loss, new Z, new banks."""
    wt, bt = [np.asarray(w, "float64") for w in head.embed_teacher.get_weights()]
    ws, bs = [np.asarray(w, "float64") for w in head.embed_student.get_weights()]
    e_t = _normalize(t.reshape(len(t), -1).astype("float64") @ wt + bt)
    e_s = _normalize(s.reshape(len(s), -1).astype("float64") @ ws + bs)
    columns = np.concatenate([index[:, None], negatives], axis=1)
    tau, n, k, m = head.temperature, head.num_examples, negatives.shape[1], head.momentum
    out_t = np.exp(np.einsum("bkd,bd->bk", bank_s[columns], e_t) / tau)  # teacher anchor
    out_s = np.exp(np.einsum("bkd,bd->bk", bank_t[columns], e_s) / tau)  # student anchor
    z = z.copy()
    if z[0] < 0:
        z[0] = out_s.mean() * n
    if z[1] < 0:
        z[1] = out_t.mean() * n

    def nce(p):
        noise = k / n
        d1 = np.log(p[:, 0] / (p[:, 0] + noise + EPS))
        d0 = np.log(noise / (p[:, 1:] + noise + EPS))
        return -(d1 + d0.sum(1))

    loss = nce(out_t / z[1]) + nce(out_s / z[0])
    bank_s, bank_t = bank_s.copy(), bank_t.copy()
    bank_s[index] = _normalize(m * bank_s[index] + (1 - m) * e_s)
    bank_t[index] = _normalize(m * bank_t[index] + (1 - m) * e_t)
    return loss, z, bank_s, bank_t


@pytest.mark.parametrize("batch,t_shape,s_shape,dim,scale", [
    (2, (10,), (6,), 16, 1.0),
    (64, (3, 4, 5), (7,), 128, 1000.0),  # a feature map, large activations
])
def test_loss_and_bank_update_match_numpy(batch, t_shape, s_shape, dim, scale):
    n, k = 200, 30
    rng = _rng(batch)
    loss = CRD("t", "s", num_examples=n, embedding_dim=dim, num_negatives=k, seed=3,
               reduction=None)
    head = loss.build_adapter(t_shape, s_shape)
    assert isinstance(head, ContrastHead) and loss.adapter is head
    memory = head.memory
    bank_s = _normalize(rng.normal(size=(n, dim)))
    bank_t = _normalize(rng.normal(size=(n, dim)))
    memory.student_bank.assign(bank_s.astype("float32"))
    memory.teacher_bank.assign(bank_t.astype("float32"))
    bank_s, bank_t = memory.student_bank.numpy().astype("float64"), memory.teacher_bank.numpy()
    bank_t = bank_t.astype("float64")
    z = np.array([-1.0, -1.0])
    for step in range(2):  # the first step sets Z, the second reuses it
        t = (scale * rng.normal(size=(batch,) + t_shape)).astype("float32")
        s = (scale * rng.normal(size=(batch,) + s_shape)).astype("float32")
        index = rng.choice(n, size=batch, replace=False).astype("int32")
        negatives = rng.integers(0, n, size=(batch, k)).astype("int32")
        want, z, bank_s, bank_t = _np_crd_step(head, t, s, index, negatives, z, bank_s, bank_t)
        got = head.contrast(t, s, index, negatives, training=True)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        np.testing.assert_allclose(memory.z.numpy(), z, rtol=1e-5)
        np.testing.assert_allclose(memory.student_bank.numpy(), bank_s, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(memory.teacher_bank.numpy(), bank_t, rtol=1e-5, atol=1e-6)
    # Updated rows are unit vectors; the others are untouched.
    np.testing.assert_allclose(np.linalg.norm(memory.student_bank.numpy()[index], axis=1), 1.0,
                               rtol=1e-5)


def test_call_draws_uniform_negatives_from_the_bank_seed():
    n, k, batch = 50, 8, 4
    t = _rng(0).normal(size=(batch, 5)).astype("float32")
    s = _rng(1).normal(size=(batch, 3)).astype("float32")
    index = np.array([3, 7, 11, 49])
    a = CRD("t", "s", num_examples=n, embedding_dim=8, num_negatives=k, seed=4, reduction=None)
    b = CRD("t", "s", num_examples=n, embedding_dim=8, num_negatives=k, seed=4, reduction=None)
    a.build_adapter((5,), (3,))
    b.build_adapter((5,), (3,))
    negatives = keras.random.randint((batch, k), 0, n, seed=keras.random.SeedGenerator(4),
                                     dtype="int32")
    got = a(t, s, index=index, training=True)
    want = b.adapter.contrast(t, s, index, negatives, training=True)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for x, y in zip(a.adapter.weights, b.adapter.weights):
        np.testing.assert_array_equal(np.asarray(x.numpy()), np.asarray(y.numpy()))
    drawn = keras.ops.convert_to_numpy(a.adapter.sample_negatives(1000, training=False))
    assert drawn.min() >= 0 and drawn.max() < n and len(np.unique(drawn)) == n


def test_no_index_or_evaluation_leaves_the_bank_alone():
    loss = CRD("t", "s", num_examples=20, embedding_dim=4, num_negatives=5, seed=0,
               reduction=None)
    loss.build_adapter((3,), (3,))
    t = _rng(0).normal(size=(4, 3)).astype("float32")
    state = [np.asarray(v.numpy()).copy() for v in loss.adapter.memory.weights]
    np.testing.assert_array_equal(loss(t, t, index=None, training=True), np.zeros(4))
    value = loss(t, t, index=np.arange(4), training=False)  # evaluation: a loss, no update
    assert np.isfinite(value).all() and (np.asarray(value) > 0).all()
    for v, before in zip(loss.adapter.memory.weights, state):
        np.testing.assert_array_equal(np.asarray(v.numpy()), before)
    # Called without context, the loss is 0 (no index): no error, no update.
    np.testing.assert_array_equal(loss(t, t), np.zeros(4))


def test_nce_loss_function():
    p = np.array([[2.0, 0.1, 0.3], [0.5, 0.5, 0.5]], "float32")
    noise = 2 / 10
    want = -(np.log(p[:, 0] / (p[:, 0] + noise + EPS))
             + np.log(noise / (p[:, 1:] + noise + EPS)).sum(1))
    np.testing.assert_allclose(nce_loss(p, 10), want, rtol=1e-6)


def test_gradients_reach_heads_and_student_features(gradients):
    loss = CRD("t", "s", num_examples=30, embedding_dim=8, num_negatives=6, seed=1)
    head = loss.build_adapter((5,), (4,))
    t = _rng(0).normal(size=(6, 5)).astype("float32")
    s = _rng(1).normal(size=(6, 4)).astype("float32")
    negatives = _rng(2).integers(0, 30, size=(6, 6)).astype("int32")
    weights = head.trainable_weights
    assert len(weights) == 4 and not any("bank" in w.path for w in weights)
    _, grads = gradients(
        lambda t_, s_: keras.ops.mean(head.contrast(t_, s_, np.arange(6), negatives,
                                                    training=False)), [t, s], weights)
    assert all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in grads[1:])


def test_mixed_precision_inputs_computed_in_float32():
    loss = CRD("t", "s", num_examples=10, embedding_dim=4, num_negatives=3, seed=0)
    loss.build_adapter((3,), (3,))
    t = np.full((2, 3), 1000.0, "float16")
    value = loss(t, t, index=np.array([0, 1]), training=True)
    assert value.dtype == "float32" and np.isfinite(value)


def test_bad_arguments_and_shapes():
    with pytest.raises(TypeError, match="teacher_layer_name"):
        CRD(None, "s", num_examples=5)
    with pytest.raises(ValueError, match="num_examples"):
        CRD("t", "s", num_examples=0)
    with pytest.raises(ValueError, match="num_negatives"):
        CRD("t", "s", num_examples=5, num_negatives=2.5)
    with pytest.raises(ValueError, match="temperature"):
        CRD("t", "s", num_examples=5, temperature=0)
    with pytest.raises(ValueError, match="momentum"):
        CRD("t", "s", num_examples=5, momentum=1.0)
    loss = CRD("t", "s", num_examples=5, num_negatives=2)
    x = np.zeros((2, 3), "float32")
    with pytest.raises(ValueError, match="build_adapter"):
        loss(x, x, index=np.arange(2), training=True)
    with pytest.raises(ValueError, match="student_shape"):
        loss.build_adapter((3,), (None,))
    loss.build_adapter((3,), (3,))
    with pytest.raises(ValueError, match="student_outputs"):
        loss(x, np.zeros((2, 4), "float32"), index=np.arange(2), training=True)
    with pytest.raises(ValueError, match="index"):
        loss(x, x, index=np.zeros((2, 1), "int32"), training=True)


def test_config_round_trip():
    loss = CRD("pool", "gap", num_examples=500, embedding_dim=32, num_negatives=64,
               temperature=0.1, momentum=0.9, seed=7, name="crd2")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(clone, CRD) and clone.get_config() == loss.get_config()
    assert (clone.teacher_layer_name, clone.num_examples, clone.num_negatives, clone.momentum,
            clone.seed, clone.name) == ("pool", 500, 64, 0.9, 7, "crd2")


def _tiny(width, name, seed):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((12,))
    h = keras.layers.Dense(width, activation="relu", name="hidden")(inp)
    return keras.Model(inp, keras.layers.Dense(4, name="logits")(h), name=name)


def _distiller(seed=0):
    loss = CRD("hidden", "hidden", num_examples=64, embedding_dim=8, num_negatives=16,
               seed=seed)
    d = kdtf.Distiller(_tiny(16, "t", 0), _tiny(6, "s", seed), [loss], [0.8])
    d.compile(keras.optimizers.SGD(0.1),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return d, loss


def _data():
    x = _rng(0).normal(size=(64, 12)).astype("float32")
    return x, x[:, :4].argmax(1).astype("int32")


def _state(d):
    head = d.adapters[0]
    return [np.asarray(v.numpy()) for v in d.student.weights + head.weights
            + [head.memory.seed_generator.state]]


def test_distiller_fit_numpy_and_tf_data_update_the_bank(tmp_path):
    x, y = _data()
    d, loss = _distiller()
    memory = loss.adapter.memory
    bank = memory.student_bank.numpy().copy()
    kernel = loss.adapter.embed_student.kernel.numpy().copy()
    d.fit({"inputs": x, "index": np.arange(64)}, y, epochs=1, batch_size=16, verbose=0)
    moved = np.abs(memory.student_bank.numpy() - bank).max(axis=1)
    assert (moved > 0).all()  # each example's row was updated once
    assert (memory.z.numpy() > 0).all()
    assert not np.allclose(kernel, loss.adapter.embed_student.kernel.numpy())
    assert all("bank" not in w.path and "embed" not in w.path for w in d.student.weights)
    # tf.data: the index attached before shuffling.
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(({"inputs": x, "index": np.arange(64)}, y))
    bank = memory.student_bank.numpy().copy()
    d.fit(ds.shuffle(64, seed=0).batch(16), epochs=1, verbose=0)
    assert (np.abs(memory.student_bank.numpy() - bank).max(axis=1) > 0).all()
    # .keras files keep the bank, Z, the sampler's seed and the heads.
    path = str(tmp_path / "crd.keras")
    d.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(_state(loaded), _state(d)):
        np.testing.assert_array_equal(a, b)
    assert isinstance(loaded.distillation_losses[0], CRD)
    # The index must come with training batches (last: a failed fit leaves
    # a JAX model's variables detached).
    with pytest.raises(ValueError, match="index"):
        d.fit(x, y, epochs=1, batch_size=16, verbose=0)


def test_resume_restores_the_bank(tmp_path):
    x, y = _data()
    data = {"inputs": x, "index": np.arange(64)}
    straight, _ = _distiller()
    straight.fit(data, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    backup = str(tmp_path / "backup")
    first, _ = _distiller()
    first.fit(data, y, epochs=1, batch_size=16, shuffle=False, verbose=0,
              callbacks=[kdtf.callbacks.BackupAndRestore(backup, delete_checkpoint=False)])
    # A fresh process would rebuild everything: other initial values, then the backup.
    resumed, _ = _distiller(seed=9)
    callback = kdtf.callbacks.BackupAndRestore(backup)
    resumed.fit(data, y, epochs=2, batch_size=16, shuffle=False, verbose=0, callbacks=[callback])
    assert callback.restored_epoch == 1
    for a, b in zip(_state(resumed), _state(straight)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
