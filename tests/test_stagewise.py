import os

import keras
import numpy as np
import pytest

import kdtf.models
from kdtf import stagewise
from kdtf.stagewise import StagewiseDistiller


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype("float32")
    y = (x[:, :3].argmax(1)).astype("int32")
    return x, y


def _bn_net(widths, name):
    """Two stages of Dense + BN + ReLU ending in layers "stage1", "stage2"."""
    inp = keras.Input((16,))
    h = inp
    for k, w in enumerate(widths, 1):
        h = keras.layers.Dense(w, name=f"dense{k}")(h)
        h = keras.layers.BatchNormalization(name=f"bn{k}")(h)
        h = keras.layers.ReLU(name=f"stage{k}")(h)
    out = keras.layers.Dense(3, name="logits")(h)
    return keras.Model(inp, out, name=name)


EAGER = {"run_eagerly": True}  # tiny data: tracing would dominate the runtime


def _weights(layers):
    return [w.numpy().copy() for layer in layers for w in layer.weights]


def _assert_same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


# ------------------------------------------------------------------- views
def test_stage_models_of_zoo_models():
    model = kdtf.models.get("mnist1d_cnn")
    shapes = [tuple(e.output.shape) for e in stagewise.stage_models(model)]
    assert shapes == [(None, 40, 32), (None, 20, 64), (None, 20, 64)]
    x = np.random.default_rng(0).normal(size=(2, 40)).astype("float32")
    ref = keras.Model(model.inputs, model.get_layer("stage2").output)(x)
    np.testing.assert_allclose(stagewise.stage_models(model, ["stage2"])[0](x), ref)


@pytest.mark.parametrize("name", ["mnist1d_cnn_small", "mnist_cnn_small", "mnist_cnn"])
def test_slices_compose_to_the_model(name):
    model = kdtf.models.get(name)
    stages, head = stagewise.student_parts(model)
    assert len(stages) == len(kdtf.models.stage_endpoints(model))
    x = np.random.default_rng(0).normal(size=(3,) + tuple(model.input.shape[1:])).astype("float32")
    h = x
    for stage in stages:
        h = stage(h)
    np.testing.assert_allclose(head(h), model(x), rtol=1e-5, atol=1e-6)
    # The slices share the model's weights.
    assert stages[-1].layers[-1] is model.get_layer(kdtf.models.stage_endpoints(model)[-1])


def test_stage2_slice_holds_only_its_layers():
    model = kdtf.models.get("mnist_cnn")
    sub = stagewise.stage_submodel(model, "stage1", "stage2")
    expected = [l.name for l in model.layers if l.name.startswith("stage2")]
    assert [l.name for l in sub.layers][1:] == expected and len(expected) >= 2
    assert tuple(sub.input.shape) == (None, 14, 14, 32)


def test_unknown_stage_name_lists_layers():
    model = kdtf.models.get("mnist1d_cnn_small")
    with pytest.raises(ValueError, match=r"no layer named 'stage9'.*stage1.*logits"):
        stagewise.stage_models(model, ["stage9"])
    with pytest.raises(ValueError, match="no layer named"):
        stagewise.stage_submodel(model, "nope", "stage2")
    with pytest.raises(ValueError, match="no layer named"):
        StagewiseDistiller(model, kdtf.models.get("mnist1d_cnn_small"), stages=["stage1", "bad"])


def test_slice_in_wrong_order_or_across_a_skip_is_an_error():
    model = kdtf.models.get("mnist1d_cnn_small")
    with pytest.raises(ValueError, match="does not come after|depends on tensors"):
        stagewise.stage_submodel(model, "stage2", "stage1")
    inp = keras.Input((8,))
    a = keras.layers.Dense(8, name="a")(inp)
    b = keras.layers.Dense(8, name="b")(a)
    c = keras.layers.Add(name="c")([b, inp])  # skip from before "a"
    skip = keras.Model(inp, c)
    with pytest.raises(ValueError, match="depends on tensors computed before 'a'"):
        stagewise.stage_submodel(skip, "a", "c")


class _SubclassedTeacher(keras.Model):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.d1 = keras.layers.Dense(8, activation="relu")
        self.d2 = keras.layers.Dense(8, activation="relu")
        self.out = keras.layers.Dense(3)

    def stage_outputs(self, x, training=False):
        h1 = self.d1(x)
        return [h1, self.d2(h1)]

    def call(self, x, training=False):
        return self.out(self.stage_outputs(x, training)[-1])


def test_subclassed_teacher_with_stage_outputs():
    teacher = _SubclassedTeacher()
    x, y = _data(32)
    teacher(x)
    extractors = stagewise.stage_models(teacher, ["stage1", "stage2"])
    np.testing.assert_allclose(extractors[1](x), teacher.stage_outputs(x)[1])
    with pytest.raises(ValueError, match="stage1"):
        stagewise.stage_models(teacher, ["dense"])
    sskd = StagewiseDistiller(
        teacher, _bn_net((4, 6), "s"), stages=["stage1", "stage2"], input_shape=(16,),
        compile_options=EAGER,
    )
    assert [a.teacher_shape for a in sskd.adapters] == [(8,), (8,)]
    hist = sskd.fit(x, y, epochs_per_stage=1, head_epochs=1, verbose=0)
    assert list(hist) == ["stage1", "stage2", "head"]


# ---------------------------------------------------------------- training
def test_phases_freeze_earlier_stages_and_skip_later_ones():
    x, y = _data()
    teacher, student = _bn_net((12, 10), "t"), _bn_net((4, 6), "s")
    sskd = StagewiseDistiller(teacher, student)
    stage1 = [student.get_layer(n) for n in ("dense1", "bn1")]
    stage2 = [student.get_layer(n) for n in ("dense2", "bn2")]
    head = [student.get_layer("logits")]
    teacher_before = _weights(teacher.layers)

    init = _weights(stage1 + stage2 + head)
    sskd.fit(x, epochs_per_stage=[2, 0], head_epochs=0, batch_size=16, verbose=0)
    after1 = _weights(stage1 + stage2 + head)
    n1 = len(_weights(stage1))
    # Stage 1 trained (weights and BN statistics moved), the rest untouched.
    assert all(not np.array_equal(a, b) for a, b in zip(init[:n1], after1[:n1]))
    _assert_same(init[n1:], after1[n1:])

    sskd.fit(x, epochs_per_stage=[0, 2], head_epochs=0, batch_size=16, verbose=0)
    after2 = _weights(stage1 + stage2 + head)
    # Phase 2: stage-1 weights AND BatchNorm moving statistics unchanged.
    _assert_same(after1[:n1], after2[:n1])
    n2 = n1 + len(_weights(stage2))
    assert all(not np.array_equal(a, b) for a, b in zip(after1[n1:n2], after2[n1:n2]))
    _assert_same(after1[n2:], after2[n2:])

    sskd.fit(x, y, epochs_per_stage=0, head_epochs=2, batch_size=16, verbose=0)
    after3 = _weights(stage1 + stage2 + head)
    _assert_same(after2[:n2], after3[:n2])  # backbone frozen in the head phase
    assert not np.array_equal(after2[n2], after3[n2])
    _assert_same(teacher_before, _weights(teacher.layers))

    # The adapters live in the losses, never in the student; flags restored.
    assert all(a is not None for a in sskd.adapters)
    adapter_ids = {id(w) for a in sskd.adapters for w in a.weights}
    assert not any(id(w) in adapter_ids for w in student.weights)
    assert all(l.trainable for l in student.layers)
    assert all(l.trainable for l in teacher.layers)

    # Phase 1 is a Distiller of the stage-1 prefixes, computing stage 1 only:
    # no stage-2 or head layer in its graph, and no task loss.
    phase1 = sskd.phase_model(1)
    assert isinstance(phase1, kdtf.Distiller) and phase1.student_loss_weight == 0
    layers = {id(l) for l in phase1._flatten_layers()}
    assert not any(id(l) in layers for l in stage2 + head)
    assert all(id(l) in layers for l in stage1)


def test_backbone_uses_unlabelled_inputs_and_head_needs_labels():
    x, y = _data(32)
    x_unl, _ = _data(64, seed=1)

    class CountBatches(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batches = []

        def on_train_batch_end(self, batch, logs=None):
            self.batches.append(self.model.name)

    counter = CountBatches()
    sskd = StagewiseDistiller(_bn_net((12, 10), "t"), _bn_net((4, 6), "s"), compile_options=EAGER)
    sskd.fit(x, y, epochs_per_stage=1, head_epochs=1, x_unlabeled=x_unl,
             batch_size=16, callbacks=[counter], verbose=0)
    assert counter.batches.count("sskd_phase1") == 6  # (32 + 64) / 16
    assert counter.batches.count("sskd_head") == 2  # labelled only
    with pytest.raises(ValueError, match="`y`"):
        sskd.fit(x, epochs_per_stage=1, head_epochs=1, verbose=0)
    hist = sskd.fit(x_unl, epochs_per_stage=1, head_epochs=0, verbose=0)
    assert list(hist) == ["stage1", "stage2"]


def test_dataset_inputs():
    import tensorflow as tf

    x, y = _data(32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    sskd = StagewiseDistiller(_bn_net((12, 10), "t"), _bn_net((4, 6), "s"), compile_options=EAGER)
    hist = sskd.fit(ds, epochs_per_stage=1, head_epochs=1, validation_data=ds,
                    x_unlabeled=x[:16], verbose=0)
    # A backbone phase is a Distiller run: its feature loss, no task loss.
    assert {"distillation_loss", "val_distillation_loss"} <= set(hist["stage1"])
    np.testing.assert_allclose(hist["stage1"]["student_loss"], 0.0)
    assert "val_accuracy" in hist["head"]


def test_interrupted_run_resumes_at_next_phase(tmp_path, capsys):
    x, y = _data()
    ckpt = str(tmp_path / "ckpt")

    class Stop(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            raise RuntimeError("interrupted")

    def make():
        keras.utils.set_random_seed(0)
        return StagewiseDistiller(_bn_net((12, 10), "t"), _bn_net((4, 6), "s"), compile_options=EAGER)

    first = make()
    with pytest.raises(RuntimeError, match="interrupted"):
        first.fit(x, y, epochs_per_stage=2, head_epochs=1, batch_size=16,
                  checkpoint_dir=ckpt, callbacks=[Stop()], verbose=1)
    # One kdtf.callbacks.BackupAndRestore folder per phase that ran.
    assert sorted(os.listdir(ckpt)) == ["phase1_stage1"]
    assert os.path.exists(os.path.join(ckpt, "phase1_stage1", "latest"))
    stage1_at_crash = _weights([first.student.get_layer("dense1"), first.student.get_layer("bn1")])
    out = capsys.readouterr().out
    assert "Phase 1 of 3" in out and "Phase 2 of 3" not in out

    second = make()  # fresh models, as after a restart
    hist = second.fit(x, y, epochs_per_stage=2, head_epochs=1, batch_size=16,
                      checkpoint_dir=ckpt, verbose=1)
    assert list(hist) == ["stage2", "head"]
    out = capsys.readouterr().out
    assert "Phase 1 of 3" not in out and "Phase 2 of 3" in out and "Phase 3 of 3" in out
    _assert_same(stage1_at_crash, _weights(
        [second.student.get_layer("dense1"), second.student.get_layer("bn1")]))
    # A finished run only restores the student.
    third = make()
    assert third.fit(x, y, epochs_per_stage=2, head_epochs=1, checkpoint_dir=ckpt, verbose=0) == {}
    _assert_same(_weights(second.student.layers), _weights(third.student.layers))


def test_resume_in_the_middle_of_a_phase(tmp_path):
    x, y = _data(32)
    ckpt = str(tmp_path / "ckpt")

    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if self.model.name == "sskd_phase2":
                raise RuntimeError("stop")

    class Epochs(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_epoch_begin(self, epoch, logs=None):
            self.seen.append((self.model.name, epoch))

    sskd = StagewiseDistiller(_bn_net((12, 10), "t"), _bn_net((4, 6), "s"), compile_options=EAGER)
    with pytest.raises(RuntimeError):
        sskd.fit(x, y, epochs_per_stage=3, head_epochs=0, batch_size=16,
                 checkpoint_dir=ckpt, callbacks=[StopAfterFirstEpoch()], verbose=0)
    epochs = Epochs()
    sskd2 = StagewiseDistiller(_bn_net((12, 10), "t"), _bn_net((4, 6), "s"), compile_options=EAGER)
    sskd2.fit(x, y, epochs_per_stage=3, head_epochs=0, batch_size=16,
              checkpoint_dir=ckpt, callbacks=[epochs], verbose=0)
    assert epochs.seen == [("sskd_phase2", 1), ("sskd_phase2", 2)]
    with pytest.raises(ValueError, match="other settings"):
        StagewiseDistiller(_bn_net((12, 10), "t"), _bn_net((5, 6), "s")).fit(
            x, y, epochs_per_stage=1, checkpoint_dir=ckpt, verbose=0)


def test_bad_arguments():
    t, s = _bn_net((12, 10), "t"), _bn_net((4, 6), "s")
    with pytest.raises(TypeError, match="teacher"):
        StagewiseDistiller("t", s)
    with pytest.raises(ValueError, match="one value per stage"):
        StagewiseDistiller(t, s, backbone_epochs=[1, 2, 3])
    with pytest.raises(ValueError, match="head_epochs"):
        StagewiseDistiller(t, s, head_epochs=-1)
    with pytest.raises(TypeError, match="stages"):
        StagewiseDistiller(t, s, stages="stage1")
    with pytest.raises(ValueError, match="stages"):
        StagewiseDistiller(kdtf.models.get("mnist1d_cnn"), kdtf.models.get("mnist1d_mlp"))
    with pytest.raises(ValueError, match="adapter=False"):
        StagewiseDistiller(t, s, adapter=False)


# ------------------------------------------------------------ head phase
def _scaled_net(scale, width=32, name="s", seed=0):
    """One stage: Dense + ReLU, multiplied by `scale` (the layer "stage1")."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((16,))
    h = keras.layers.Dense(width, activation="relu", name="dense1")(inp)
    h = keras.layers.Rescaling(scale, name="stage1")(h)
    return keras.Model(inp, keras.layers.Dense(3, name="logits")(h), name=name)


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model(x), 1) == y))


def _head_only(scale, head_init="auto", **kwargs):
    """Trains only the head of a random one-stage student (3 classes)."""
    x, y = _data(256)
    student = _scaled_net(scale)
    sskd = StagewiseDistiller(_scaled_net(1.0, 24, "t", seed=1), student,
                              head_init=head_init, compile_options=EAGER, **kwargs)
    sskd.fit(x, y, epochs_per_stage=0, head_epochs=kwargs.get("head_epochs", 3),
             batch_size=32, verbose=0)
    return sskd


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_head_phase_does_not_depend_on_the_scale_of_frozen_features(scale):
    # The bug: the BatchNorm adapters leave the scale of the student's
    # features free, and a head trained from scratch on frozen features
    # stayed at chance (MNIST-1D: 11%). A random ReLU layer's features hold
    # enough to predict these labels (~75%) at any scale.
    x_test, y_test = _data(512, seed=1)
    sskd = _head_only(scale)
    assert sskd.head_init == "ridge"
    assert _accuracy(sskd.student, x_test, y_test) > 0.65
    info = sskd.head_init_info
    assert info["kept"] in ("closed_form", "fine_tuned")
    # The head kept is the one with the lower loss on the labelled data.
    x, y = _data(256)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    np.testing.assert_allclose(float(ce(y, sskd.student(x))),
                               min(info["loss"], info["fine_tuned_loss"]), rtol=1e-4)


def test_without_closed_form_start_the_head_stays_near_chance():
    # What the old head phase did with the same budget: 3 classes, ~1/3.
    x_test, y_test = _data(512, seed=1)
    for scale in (1e-3, 1e3):
        sskd = _head_only(scale, head_init=None)
        assert sskd.head_init is None and sskd.head_init_info is None
        assert _accuracy(sskd.student, x_test, y_test) < 0.5


def test_closed_form_start_is_scale_invariant_and_optimal():
    x, y = _data(256)
    logits = []
    for scale in (1e-2, 1e2):
        sskd = _head_only(scale, head_epochs=1, head_optimizer=keras.optimizers.SGD(0.0))
        assert sskd.head_init_info["kept"] == "fine_tuned"  # lr 0: equal losses
        logits.append(np.asarray(sskd.student(x)))
    np.testing.assert_allclose(logits[0], logits[1], rtol=1e-3, atol=1e-3)
    # The logit scale minimises the cross-entropy: any other scale is worse.
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    best = float(ce(y, logits[0]))
    for factor in (0.8, 1.25):
        assert float(ce(y, factor * logits[0])) > best


def test_diverging_head_optimizer_falls_back_to_the_closed_form(tmp_path):
    x, y = _data(256)
    ckpt = str(tmp_path / "ckpt")
    sskd = _head_only(1.0, head_optimizer=keras.optimizers.SGD(1e4))
    info = sskd.head_init_info
    assert info["kept"] == "closed_form" and info["fine_tuned_loss"] > info["loss"]
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    np.testing.assert_allclose(float(ce(y, sskd.student(x))), info["loss"], rtol=1e-4)

    # With a checkpoint, a finished run restores the head that was kept.
    def make():
        return StagewiseDistiller(_scaled_net(1.0, 24, "t", seed=1), _scaled_net(1.0),
                                  head_optimizer=keras.optimizers.SGD(1e4),
                                  compile_options=EAGER)

    first = make()
    first.fit(x, y, epochs_per_stage=0, head_epochs=2, batch_size=32,
              checkpoint_dir=ckpt, verbose=0)
    assert first.head_init_info["kept"] == "closed_form"
    second = make()
    assert second.fit(x, y, epochs_per_stage=0, head_epochs=2, checkpoint_dir=ckpt, verbose=0) == {}
    _assert_same(_weights(first.student.layers), _weights(second.student.layers))


def test_ridge_fit_matches_the_normal_equations():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(200, 6)) * [1, 2, 3, 4, 5, 6] + 7.0
    labels = rng.integers(0, 4, size=200)
    targets = np.eye(4)[labels]
    stats = stagewise._GramStats(6, 4)
    for i in range(0, 200, 64):  # streamed in batches
        stats.add(h[i:i + 64], targets[i:i + 64])
    kernel, bias, alpha = stagewise._ridge_gcv(stats)
    assert alpha in stagewise._RIDGE_ALPHAS
    hc = h - h.mean(0)
    gram = hc.T @ hc
    lam = alpha * np.linalg.eigvalsh(gram).mean()
    ref = np.linalg.solve(gram + lam * np.eye(6), hc.T @ (targets - targets.mean(0)))
    np.testing.assert_allclose(kernel, ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bias, targets.mean(0) - h.mean(0) @ ref, rtol=1e-4, atol=1e-5)
    # Scaling the features scales the kernel inversely (same predictions).
    stats10 = stagewise._GramStats(6, 4)
    stats10.add(10 * h, targets)
    kernel10, bias10, alpha10 = stagewise._ridge_gcv(stats10)
    assert alpha10 == alpha
    np.testing.assert_allclose(10 * kernel10, kernel, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(bias10, bias, rtol=1e-3, atol=1e-5)


def test_one_hot_labels_and_datasets():
    import tensorflow as tf

    x, y = _data(256)
    y1 = np.eye(3, dtype="float32")[y]
    x_test, y_test = _data(512, seed=1)
    student = _scaled_net(1e-3)
    sskd = StagewiseDistiller(
        _scaled_net(1.0, 24, "t", seed=1), student,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        head_init="ridge", compile_options=EAGER,
    )
    ds = tf.data.Dataset.from_tensor_slices((x, y1)).batch(64)
    sskd.fit(ds, epochs_per_stage=0, head_epochs=1, verbose=0)
    assert sskd.head_init_info is not None
    assert _accuracy(student, x_test, y_test) > 0.65


class _SubclassedStudent(keras.Model):
    """A subclassed student whose head is a Sequential ending in Dense."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.s1 = keras.Sequential([keras.layers.Dense(32, activation="relu")])
        self.h = keras.Sequential([keras.layers.Rescaling(1e-3), keras.layers.Dense(3)])

    def stage_submodels(self):
        return [self.s1, self.h]

    def call(self, x, training=False):
        return self.h(self.s1(x, training=training), training=training)


def test_subclassed_student_with_sequential_head():
    x, y = _data(256)
    x_test, y_test = _data(512, seed=1)
    keras.utils.set_random_seed(0)
    student = _SubclassedStudent()
    sskd = StagewiseDistiller(_scaled_net(1.0, 24, "t", seed=1), student,
                              stages=[("stage1", "stage1")], input_shape=(16,),
                              head_init="ridge", compile_options=EAGER)
    sskd.fit(x, y, epochs_per_stage=0, head_epochs=1, batch_size=32, verbose=0)
    assert _accuracy(student, x_test, y_test) > 0.65


def test_head_init_arguments():
    t, s = _bn_net((12, 10), "t"), _bn_net((4, 6), "s")
    with pytest.raises(ValueError, match="head_init"):
        StagewiseDistiller(t, s, head_init="lstsq")
    assert StagewiseDistiller(t, s).head_init == "ridge"

    inp = keras.Input((16,))
    h = keras.layers.Dense(4, activation="relu", name="stage1")(inp)
    h = keras.layers.Dense(6, activation="relu", name="stage2")(h)
    softmax = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
    with pytest.raises(ValueError, match="activation 'softmax'"):
        StagewiseDistiller(t, softmax, head_init="ridge")
    assert StagewiseDistiller(t, softmax).head_init is None  # auto: old behaviour
    with pytest.raises(ValueError, match="from_logits=True"):
        StagewiseDistiller(t, s, loss="mse", head_init="ridge")
    with pytest.raises(ValueError, match="from_logits=True"):
        StagewiseDistiller(t, s, loss=keras.losses.SparseCategoricalCrossentropy(), head_init="ridge")
    assert StagewiseDistiller(t, s, loss=keras.losses.MeanSquaredError()).head_init is None
    assert StagewiseDistiller(t, s, head_init=None).head_init is None


# ------------------------------------------------- through the Distiller
def _conv_bn_net(widths, name):
    """Conv + BN + ReLU stages "stage1", "stage2" on 8x8x1 images."""
    inp = keras.Input((8, 8, 1))
    h = inp
    for k, w in enumerate(widths, 1):
        h = keras.layers.Conv2D(w, 3, padding="same", name=f"conv{k}")(h)
        h = keras.layers.BatchNormalization(name=f"bn{k}")(h)
        h = keras.layers.ReLU(name=f"stage{k}")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(3, name="logits")(h), name=name)


def test_backbone_phases_fold_the_teacher_and_stop_on_a_non_finite_loss():
    keras.utils.set_random_seed(0)
    teacher, student = _conv_bn_net((8, 8), "t"), _conv_bn_net((4, 4), "s")
    rng = np.random.default_rng(0)
    for bn in ("bn1", "bn2"):  # non-trivial statistics, so folding changes kernels
        layer = teacher.get_layer(bn)
        layer.moving_mean.assign(rng.normal(size=8).astype("float32"))
        layer.moving_variance.assign(rng.uniform(0.5, 2, size=8).astype("float32"))
    sskd = StagewiseDistiller(teacher, student)
    # Each backbone phase is a Distiller: its teacher prefix runs folded.
    phase = sskd.phase_model(2)
    assert hasattr(phase, "folded_teacher")
    x = rng.normal(size=(32, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(
        phase.teacher_outputs(x)["stage2"], stagewise.stage_models(teacher, ["stage2"])[0](x),
        rtol=1e-4, atol=1e-4)
    # The Distiller's guard: a NaN input stops the phase before any update.
    x[5, 3, 3, 0] = np.nan
    before = _weights(student.layers)
    with pytest.raises(kdtf.callbacks.NonFiniteLossError, match="Non-finite loss"):
        sskd.fit(x, epochs_per_stage=1, head_epochs=0, batch_size=32, verbose=0)
    _assert_same(before, _weights(student.layers))
