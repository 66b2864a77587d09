import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdtf

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _data(n=96, d=12, c=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = (x[:, :c].argmax(axis=1)).astype("int32")
    return x, y


def _teacher(d=12, c=4):
    inp = keras.Input((d,))
    h = keras.layers.Dense(32)(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Dropout(0.5)(keras.layers.ReLU()(h))
    model = keras.Model(inp, keras.layers.Dense(c)(h), name="teacher")
    return model


def _student(d=12, c=4, name="student"):
    return keras.Sequential(
        [keras.Input((d,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(c)],
        name=name,
    )


def _distiller(**kwargs):
    kwargs.setdefault("distillation_losses", kdtf.losses.KD(temperature=2.0))
    d = kdtf.Distiller(teacher=_teacher(), student=_student(), **kwargs)
    return d


def test_fit_logs_each_term_and_trains():
    x, y = _data()
    d = _distiller()
    d.compile(optimizer=keras.optimizers.Adam(1e-2), loss=CE, metrics=["accuracy"])
    hist = d.fit(x, y, batch_size=32, epochs=3, verbose=0, validation_data=(x, y))
    for key in ("loss", "student_loss", "distillation_loss", "accuracy", "val_loss",
                "val_student_loss", "val_distillation_loss", "val_accuracy"):
        assert key in hist.history, key
    assert hist.history["student_loss"][-1] < hist.history["student_loss"][0]
    assert hist.history["total_loss"] == hist.history["loss"]  # keras.distillation's name
    assert "val_total_loss" in hist.history
    result = d.evaluate(x, y, verbose=0, return_dict=True)
    # evaluate(): `loss` is the total objective (as in keras.distillation and
    # in fit), `student_loss` the student's own task loss.
    s, t = d.student.predict(x, verbose=0), d.teacher.predict(x, verbose=0)
    want_student = float(CE(y, s))
    want_distill = float(kdtf.losses.KD(2.0)(t, s))
    np.testing.assert_allclose(result["student_loss"], want_student, rtol=1e-4)
    np.testing.assert_allclose(result["distillation_loss"], want_distill, rtol=1e-4)
    np.testing.assert_allclose(result["loss"], 0.5 * want_student + 0.5 * want_distill, rtol=1e-4)
    np.testing.assert_allclose(result["total_loss"], result["loss"], rtol=1e-6)


def test_total_is_weighted_sum_of_terms():
    x, y = _data(n=32)
    d = _distiller(student_loss_weight=0.3, distillation_loss_weights=[2.0])
    d.compile(optimizer=keras.optimizers.SGD(0.0), loss=CE)
    d.fit(x, y, batch_size=32, epochs=1, verbose=0)
    logs = {m.name: float(m.result()) for m in d.metrics}
    s = d.student(x, training=True)  # SGD(0) leaves weights unchanged
    t = d.teacher(x, training=False)
    want_student = float(CE(y, s))
    want_distill = 2.0 * float(kdtf.losses.KD(2.0)(t, s))
    np.testing.assert_allclose(logs["student_loss"], want_student, rtol=1e-5)
    np.testing.assert_allclose(logs["distillation_loss"], want_distill, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], 0.3 * want_student + 0.7 * want_distill, rtol=1e-5)


def test_teacher_weights_and_batchnorm_statistics_unchanged():
    x, y = _data()
    d = _distiller()
    teacher = d.teacher
    before = [v.numpy().copy() for v in teacher.weights]
    assert any("moving" in v.path for v in teacher.weights)
    d.compile(optimizer="adam", loss=CE)
    d.fit(x, y, batch_size=16, epochs=2, verbose=0)
    for v, b in zip(teacher.weights, before):
        np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)
    assert not teacher.trainable


class _Counting(keras.Model):
    """Wraps a model and counts its calls and the `training` flags used."""

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner
        self.calls = []

    def call(self, x, training=None):
        self.calls.append(training)
        return self.inner(x, training=training)


def test_one_teacher_and_one_student_forward_per_step():
    x, y = _data(n=32)
    teacher, student = _Counting(_teacher()), _Counting(_student())
    d = kdtf.Distiller(teacher, student, kdtf.losses.DIST())
    d.compile(optimizer="adam", loss=CE, run_eagerly=True)
    d.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0)  # builds everything
    teacher.calls.clear(), student.calls.clear()
    d.train_on_batch(x, y)  # one train step, on either backend
    assert teacher.calls == [False]
    assert student.calls == [True]


@pytest.mark.parametrize("jit_compile,steps_per_execution", [(False, 1), (True, 4), (False, 3)])
def test_tf_data_sample_weights_spe_and_jit(jit_compile, steps_per_execution):
    x, y = _data()
    w = np.where(y == 0, 0.0, 1.0).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(16)
    d = _distiller(distillation_losses=[kdtf.losses.KD(2.0), kdtf.losses.DIST(2.0)])
    d.compile(optimizer="adam", loss=CE, metrics=["accuracy"], jit_compile=jit_compile,
              steps_per_execution=steps_per_execution)
    hist = d.fit(ds, epochs=2, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()


def test_sample_weight_zero_removes_examples():
    x, y = _data(n=32)
    d = _distiller()
    d.compile(optimizer=keras.optimizers.SGD(0.0), loss=CE)
    w = np.zeros(32, "float32")
    w[:16] = 1
    d.fit(x, y, sample_weight=w, batch_size=32, epochs=1, verbose=0)
    logs = {m.name: float(m.result()) for m in d.metrics}
    s = d.student(x, training=True)
    t = d.teacher(x, training=False)
    want = float(kdtf.losses.KD(2.0)(t[:16], s[:16])) / 2  # mean over all 32
    np.testing.assert_allclose(logs["distillation_loss"], want, rtol=1e-5)


def test_save_and_reload_keras_file(tmp_path):
    x, y = _data()
    d = _distiller(distillation_losses=[kdtf.losses.DIST(4.0, beta=2.0)], student_loss_weight=0.25)
    d.compile(optimizer="adam", loss=CE, metrics=["accuracy"])
    d.fit(x, y, batch_size=32, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "distiller.keras")
    d.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, kdtf.Distiller)
    assert loaded.student_loss_weight == 0.25
    assert isinstance(loaded.distillation_losses[0], kdtf.losses.DIST)
    assert loaded.distillation_losses[0].beta == 2.0
    np.testing.assert_allclose(loaded.predict(x, verbose=0), d.predict(x, verbose=0), atol=1e-6)
    np.testing.assert_allclose(
        loaded.teacher.predict(x, verbose=0), d.teacher.predict(x, verbose=0), atol=1e-6
    )
    loaded.fit(x, y, batch_size=32, epochs=1, verbose=0)  # still trainable


def test_incompatible_outputs_raise():
    with pytest.raises(ValueError, match="incompatible outputs"):
        kdtf.Distiller(_teacher(c=4), _student(c=5))


def test_incompatible_inputs_raise():
    with pytest.raises(ValueError, match="incompatible inputs"):
        kdtf.Distiller(_teacher(d=12), _student(d=8))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"student_loss_weight": 1.5}, "student_loss_weight"),
        ({"distillation_loss_weights": [1.0, 2.0]}, "distillation_loss_weights"),
        ({"distillation_losses": "nope"}, "valid names"),
        ({"synthetic_loss_weight": -1}, "synthetic_loss_weight"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _distiller(**kwargs)


def test_not_a_model():
    # ValueError, as keras.distillation raises.
    with pytest.raises(ValueError, match="`teacher` must be a keras.Model"):
        kdtf.Distiller(lambda x: x, _student())


def test_compile_requires_task_loss():
    d = _distiller()
    with pytest.raises(ValueError, match="`loss`"):
        d.compile(optimizer="adam")


def test_unlabelled_distillation():
    x, _ = _data()
    d = _distiller(student_loss_weight=0.0)
    d.compile(optimizer="adam")
    hist = d.fit(x, batch_size=32, epochs=2, verbose=0)
    assert hist.history["distillation_loss"][-1] < hist.history["distillation_loss"][0]


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path):
    x, y = _data()
    d = _distiller()
    d.compile(optimizer="adam", loss=CE)
    ckpt = os.path.join(tmp_path, "best.weights.h5")
    cb = keras.callbacks.ModelCheckpoint(ckpt, save_weights_only=True)
    d.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[cb])
    saved = open(ckpt, "rb").read()
    weights = [v.numpy().copy() for v in d.student.weights]
    bad = x.copy()
    bad[40] = np.nan  # in the second batch of 32
    with pytest.raises(kdtf.callbacks.NonFiniteLossError, match=r"epoch 1, step 2"):
        d.fit(bad, y, batch_size=32, epochs=2, verbose=0, callbacks=[cb], shuffle=False)
    assert open(ckpt, "rb").read() == saved
    # The bad step's update was skipped: weights are finite.
    assert all(np.isfinite(v.numpy()).all() for v in d.student.weights)
    assert not np.array_equal(weights[0], d.student.weights[0].numpy())  # step 1 trained


class _FeatureL2(kdtf.losses.DistillationLoss):
    """A minimal feature loss following the Distiller's feature protocol."""

    same_shape = False

    def __init__(self, teacher_layer_name, student_layer_name, **kwargs):
        super().__init__(**kwargs)
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self.adapter = None

    def build_adapter(self, teacher_shape, student_shape):
        self.adapter = keras.layers.Dense(teacher_shape[-1], name="adapter")
        self.adapter.build((None,) + tuple(student_shape))

    def call(self, teacher_features, student_features):
        return keras.ops.mean((self.adapter(student_features) - teacher_features) ** 2, axis=-1)


def _named(d, c, width, name):
    inp = keras.Input((d,))
    h = keras.layers.Dense(width, activation="relu", name="hidden")(inp)
    return keras.Model(inp, keras.layers.Dense(c, name="logits")(h), name=name)


def test_feature_losses_get_named_layers_and_train_adapters():
    x, y = _data()
    teacher, student = _named(12, 4, 32, "t"), _named(12, 4, 8, "s")
    loss = _FeatureL2("hidden", "hidden", name="feat_l2")
    d = kdtf.Distiller(teacher, student, [kdtf.losses.KD(2.0), loss], [1.0, 0.5])
    assert loss.adapter is not None and d.adapters == [loss.adapter]
    before = loss.adapter.kernel.numpy().copy()
    d.compile(optimizer="adam", loss=CE)
    d.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert not np.array_equal(before, loss.adapter.kernel.numpy())
    assert all(w.path.split("/")[0] != "adapter" for w in d.student.weights)
    # The distillation term is KD on logits plus 0.5 x the feature loss.
    t_feat = keras.Model(teacher.inputs, teacher.get_layer("hidden").output)(x)
    s_feat = keras.Model(student.inputs, student.get_layer("hidden").output)(x)
    want = float(kdtf.losses.KD(2.0)(teacher(x), student(x))) + 0.5 * float(loss(t_feat, s_feat))
    logs = d.evaluate(x, y, batch_size=96, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["distillation_loss"], want, rtol=1e-4)


def test_unknown_feature_layer_lists_valid_names():
    with pytest.raises(ValueError, match="valid layer names: .*hidden"):
        kdtf.Distiller(_named(12, 4, 32, "t"), _named(12, 4, 8, "s"), _FeatureL2("nope", "hidden"))


def test_fit_on_a_dataset_keeps_one_iterator_and_stays_reproducible():
    x, y = _data()

    def run(fit, shuffle):
        keras.utils.set_random_seed(0)
        ds = kdtf.data.make_dataset(x, y, batch_size=32, shuffle=shuffle, seed=1)
        val = kdtf.data.make_dataset(x[:40], y[:40], batch_size=16)
        d = _distiller()
        d.compile(optimizer="adam", loss=CE, metrics=["accuracy"])
        history = fit(d, ds, epochs=3, verbose=0, validation_data=val)
        return [v.numpy() for v in d.student.weights], history.history

    def assert_same(a, b):
        for u, v in zip(a[0], b[0]):
            np.testing.assert_array_equal(u, v)
        assert a[1] == b[1]

    # Unshuffled, the batches are Keras's own (a fresh iterator every epoch).
    assert_same(run(kdtf.Distiller.fit, False), run(keras.Model.fit, False))
    # Shuffled: the same seed gives the same run; the first epoch is Keras's.
    ours = run(kdtf.Distiller.fit, True)
    assert_same(ours, run(kdtf.Distiller.fit, True))
    plain = run(keras.Model.fit, True)
    assert ours[1]["loss"][0] == plain[1]["loss"][0]


def test_non_finite_step_leaves_weights_and_adam_state_untouched():
    x, y = _data(n=64)
    bad = x.copy()
    bad[40] = np.nan  # in the second batch of 32

    def distiller():
        keras.utils.set_random_seed(0)
        # A BatchNorm student: its moving statistics must not take the NaN step either.
        student = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16),
                                    keras.layers.BatchNormalization(), keras.layers.ReLU(),
                                    keras.layers.Dense(4)], name="bn_student")
        d = kdtf.Distiller(_teacher(), student, kdtf.losses.KD(temperature=2.0))
        d.compile(optimizer=keras.optimizers.Adam(1e-2), loss=CE)
        return d

    one_step = distiller()
    one_step.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0, shuffle=False)
    stopped = distiller()
    with pytest.raises(kdtf.callbacks.NonFiniteLossError, match=r"epoch 1, step 2"):
        stopped.fit(bad, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    assert any("moving" in v.path for v in stopped.student.weights)
    # Adam with zeroed gradients would still move the weights by momentum.
    for a, b in zip(one_step.student.weights + one_step.optimizer.variables,
                    stopped.student.weights + stopped.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert int(keras.ops.convert_to_numpy(stopped.optimizer.iterations)) == 1
