"""Tests of pipeline.report (MAC/FLOP counts, the HTML report), the per-class metrics it
uses (against NumPy references), and the TensorBoard callbacks of kdtf.callbacks."""
import dataclasses
import glob
import json
import os
from html.parser import HTMLParser

import keras
import numpy as np
import pytest

from kdtf import callbacks
from pipeline import experiment
from kdtf import metrics
from pipeline.report import build
from pipeline.report import flops
from pipeline.report import plots


# ------------------------------------------------------------ metrics vs NumPy
def _ref_per_class(y, logits, c):
    pred = np.argmax(logits, axis=1)
    acc = np.full(c, np.nan)
    count = np.zeros(c, np.int64)
    for k in range(c):
        idx = [i for i in range(len(y)) if y[i] == k]
        count[k] = len(idx)
        if idx:
            acc[k] = sum(pred[i] == k for i in idx) / len(idx)
    return acc, count


def _ref_confusion(a, b, c):
    m = np.zeros((c, c), np.int64)
    for i, j in zip(a, b):
        m[i, j] += 1
    return m


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(300, 7)) * 3
    s = t + rng.normal(size=(300, 7)) * 2
    y = rng.integers(0, 6, size=300)  # class 6 has no example
    return y, t, s


def test_per_class_accuracy_matches_numpy(data):
    y, t, _ = data
    acc, count = metrics.per_class_accuracy(y, t)
    ref_acc, ref_count = _ref_per_class(y, t, 7)
    np.testing.assert_array_equal(count, ref_count)
    np.testing.assert_allclose(acc, ref_acc, equal_nan=True)
    assert np.isnan(acc[6]) and count[6] == 0
    # Count-weighted mean of the per-class accuracies is the accuracy.
    ok = count > 0
    assert np.isclose(np.sum(acc[ok] * count[ok]) / count.sum(), metrics.accuracy(y, t))
    # One-hot labels give the same.
    acc1, _ = metrics.per_class_accuracy(np.eye(7)[y], t)
    np.testing.assert_allclose(acc1, acc, equal_nan=True)


def test_confusion_matrices_match_numpy(data):
    y, t, s = data
    pt, ps = t.argmax(1), s.argmax(1)
    np.testing.assert_array_equal(metrics.confusion_matrix(y, ps, 7), _ref_confusion(y, ps, 7))
    m = metrics.teacher_student_confusion(t, s)
    np.testing.assert_array_equal(m, _ref_confusion(pt, ps, 7))
    assert m.sum() == len(y)
    assert np.isclose(np.trace(m) / m.sum(), metrics.agreement(t, s))
    np.testing.assert_array_equal(m.sum(axis=1), np.bincount(pt, minlength=7))
    assert metrics.confusion_matrix([0, 2], [1, 1]).shape == (3, 3)


@pytest.mark.parametrize("call,match", [
    (lambda: metrics.confusion_matrix([0, 1], [0]), "same length"),
    (lambda: metrics.confusion_matrix([0, 5], [0, 1], num_classes=3), r"\[0, 3\)"),
    (lambda: metrics.confusion_matrix([0.5], [0]), "integer"),
    (lambda: metrics.confusion_matrix([], []), "num_classes"),
    (lambda: metrics.per_class_accuracy([0, 1], [[1.0, 0.0]]), "labels"),
    (lambda: metrics.teacher_student_confusion([[1.0, 0.0]], [[1.0, 0.0, 2.0]]), "same shape"),
])
def test_metric_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------ MACs / FLOPs
def _macs(model, **kw):
    return [c.macs for c in flops.count_macs(model, **kw)]


def test_macs_of_dense_and_conv_layers():
    L = keras.layers
    inp = keras.Input((16, 16, 4))
    x = L.Conv2D(8, 3, padding="same")(inp)                 # 16*16 * 3*3*4*8
    x = L.Conv2D(8, 3, strides=2, padding="valid")(x)       # 7*7 * 3*3*8*8
    x = L.Conv2D(16, 1, groups=4)(x)                        # 7*7 * 1*1*2*16
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)  # 7*7 * 3*3*16*2
    x = L.SeparableConv2D(8, 3, padding="same")(x)          # 7*7 * (3*3*32 + 32*8)
    x = L.Conv2DTranspose(4, 2, strides=2)(x)               # input 7*7 * 2*2*8*4
    x = L.Dense(5)(x)                                       # 14*14 positions * 4*5
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(3)(x)                                     # 5*3
    model = keras.Model(inp, out)
    expected = [16 * 16 * 3 * 3 * 4 * 8, 7 * 7 * 3 * 3 * 8 * 8, 7 * 7 * 2 * 16, 7 * 7 * 9 * 32,
                7 * 7 * (9 * 32 + 32 * 8), 7 * 7 * 4 * 8 * 4, 14 * 14 * 4 * 5, 5 * 3]
    assert _macs(model) == expected
    c = flops.model_complexity(model)
    assert c["macs"] == sum(expected) and c["flops"] == 2 * sum(expected)
    assert c["params"] == model.count_params()
    assert [entry["kind"] for entry in c["layers"]][:2] == ["Conv2D", "Conv2D"]


def test_macs_of_conv1d_nested_shared_and_subclassed_models():
    L = keras.layers
    inner = keras.Sequential([keras.Input((10, 3)), L.Conv1D(4, 3, padding="same"), L.Flatten()])
    shared = L.Dense(6)
    inp = keras.Input((10, 3))
    h = inner(inp)                 # 10 * 3*3*4
    out = shared(shared(L.Dense(6)(h)))  # 40*6, then the shared 6*6 twice
    model = keras.Model(inp, out)
    assert _macs(model) == [10 * 3 * 3 * 4, 40 * 6, 36, 36]

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.a = L.Dense(8)
            self.b = L.Dense(2)

        def call(self, x):
            return self.b(self.a(x))

    sub = Sub()
    sub(np.zeros((1, 5), "float32"))
    assert _macs(sub, input_shape=(5,)) == [40, 16]
    with pytest.raises(ValueError, match="input_shape"):
        flops.count_macs(sub)
    # The wrappers are removed: calls are not counted afterwards.
    assert all("call" not in vars(layer) for layer in model._flatten_layers())


def test_macs_of_zoo_models():
    import kdtf

    assert flops.model_complexity(kdtf.models.get("mnist1d_mlp"))["macs"] == 40 * 100 + 100 * 100 + 100 * 10
    cnn = flops.model_complexity(kdtf.models.get("mnist1d_cnn"))
    assert cnn["macs"] == 40 * 5 * 1 * 32 + 20 * 5 * 32 * 64 + 20 * 5 * 64 * 64 + 64 * 10
    # resnet20 on CIFAR-100: the published 41M MACs ("FLOPs" in the papers).
    assert 40e6 < flops.model_complexity(kdtf.models.get("resnet20"))["macs"] < 42e6


# ------------------------------------------------------------ plots
def test_training_curves_one_row_per_sskd_phase():
    history = {"stage1/loss": [1.0, 0.5], "stage1/val_loss": [1.1, 0.6], "head/loss": [2.0, 1.0],
               "head/accuracy": [0.2, 0.4], "head/val_accuracy": [0.3, 0.5], "head/val_loss": [2, 1]}
    assert list(plots.split_phases(history)) == ["stage1", "head"]
    fig = plots.training_curves(history, "sskd")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["stage1: loss", "head: loss", "head: accuracy"]
    assert [len(ax.lines) for ax in fig.axes] == [2, 2, 2]
    # A distiller: total/task, distillation terms (no all-zero validation curve), accuracy.
    kd = {"loss": [1.0], "student_loss": [2.0], "distillation_loss": [0.3], "synthetic_loss": [0.2],
          "val_loss": [1.5], "val_student_loss": [1.5], "val_distillation_loss": [0.1],
          "val_synthetic_loss": [0.0], "accuracy": [0.5], "val_accuracy": [0.4]}
    fig = plots.training_curves(kd, "kd")
    assert [ax.get_title() for ax in fig.axes] == ["total and task loss", "distillation terms", "accuracy"]
    assert [len(ax.lines) for ax in fig.axes] == [4, 3, 2]
    png = plots.save_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_terms_in_order():
    h = {"val_loss": [1], "accuracy": [1], "synthetic_loss": [1], "loss": [1], "student_loss": [1],
         "distillation_loss": [1]}
    assert plots._loss_terms(h) == ["loss", "student_loss", "distillation_loss", "synthetic_loss"]


# ------------------------------------------------------------ the report, in-process
class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.sections, self.tables = [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.imgs.append(attrs)
        elif tag == "section":
            self.sections.append(attrs.get("id"))
        elif tag == "table":
            self.tables += 1


def _fake_run(tmp_path, methods=("none", "kd"), workdir=None):
    """A results JSON and untrained teacher/students saved where experiment.run saves them."""
    import kdtf

    cfg = experiment.RunConfig(method=methods[-1], teacher="mnist1d_cnn_small", epochs=2, teacher_epochs=1,
                               workdir=str(workdir or tmp_path / "w"), export="")
    splits = kdtf.data.load("mnist1d")
    keras.utils.set_random_seed(0)
    experiment.save_model_atomic(kdtf.models.get("mnist1d_cnn_small", input_shape=splits.input_shape,
                                                 num_classes=10), experiment.teacher_path(cfg))
    history = {"loss": [2.0, 1.5], "student_loss": [2.2, 1.7], "distillation_loss": [0.4, 0.3],
               "accuracy": [0.2, 0.3], "val_loss": [1.9, 1.6], "val_accuracy": [0.25, 0.3]}
    students = {}
    for method in methods:
        experiment.save_model_atomic(kdtf.models.get("mnist1d_mlp"), build.student_path(cfg, method))
        students[method] = {"history": history if method != "none" else
                            {k: v for k, v in history.items() if "_loss" not in k or k == "val_loss"}}
    results = {"config": dataclasses.asdict(cfg),
               "teacher": {}, "students": students, "seconds": 1.0}
    path = os.path.join(cfg.workdir, "results", f"{cfg.method}_mnist1d_mlp_s0.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    json.dump(results, open(path, "w"))
    return path


def test_build_report_in_process(tmp_path):
    path = _fake_run(tmp_path)
    # The workdir recorded in the config is gone (the run was moved): found beside the results.
    data = json.load(open(path))
    data["config"]["workdir"] = str(tmp_path / "moved_away")
    json.dump(data, open(path, "w"))
    out = tmp_path / "report"
    html_path = build.build_report(path, str(out), tflite=False, embed_images=False, num_bins=10)
    page = _Page()
    page.feed(open(html_path, encoding="utf-8").read())
    assert page.sections == ["summary", "efficiency", "curves", "reliability", "per-class",
                             "confusion", "config"]
    srcs = sorted(img["src"] for img in page.imgs)
    assert srcs == sorted(f"figures/{n}.png" for n in (
        "efficiency", "curves_none", "curves_kd", "reliability", "per_class_accuracy",
        "confusion_none", "confusion_kd"))
    for src in srcs:
        assert os.path.getsize(out / src) > 1000
    summary = json.load(open(out / "report.json"))
    assert set(summary["models"]) == {"teacher", "none", "kd"}
    assert summary["models"]["kd"]["macs"] == 15000
    assert summary["models"]["teacher"]["tflite"] is None
    assert 0 <= summary["models"]["kd"]["agreement"] <= 1
    assert summary["warnings"] == []


def test_a_model_overwritten_by_another_run_is_flagged(tmp_path):
    path = _fake_run(tmp_path)
    out = tmp_path / "first"
    build.build_report(path, str(out), tflite=False)
    measured = json.load(open(out / "report.json"))["models"]
    data = json.load(open(path))
    data["teacher"]["accuracy"] = measured["teacher"]["accuracy"]  # as the run recorded it
    data["students"]["kd"].update(accuracy=measured["kd"]["accuracy"], agreement=measured["kd"]["agreement"])
    data["students"]["none"]["accuracy"] = measured["none"]["accuracy"] + 0.05  # another model now
    json.dump(data, open(path, "w"))
    html_path = build.build_report(path, str(tmp_path / "second"), tflite=False)
    warnings = json.load(open(tmp_path / "second" / "report.json"))["warnings"]
    assert len(warnings) == 1 and "ERM" in warnings[0] and "none_mnist1d_mlp_s0.keras" in warnings[0]
    assert 'class="warn"' in open(html_path, encoding="utf-8").read()


@pytest.mark.parametrize("content,match", [
    (None, "no such file"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a run's results"),
    ('{"config": {}}', "no teacher, students"),
    ('{"config": {}, "teacher": {}, "students": {}}', "no trained students"),
])
def test_load_results_errors(tmp_path, content, match):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        build.load_results(str(path))


def test_missing_student_is_named(tmp_path):
    path = _fake_run(tmp_path)
    os.remove(build.student_path(experiment.RunConfig(workdir=str(tmp_path / "w")), "none"))
    with pytest.raises(FileNotFoundError, match="'none' student"):
        build.build_report(path, str(tmp_path / "out"), tflite=False)


# ------------------------------------------------------------ TensorBoard callbacks
def _scalars(log_dir):
    """{tag: [(step, value), ...]} of every event file under `log_dir` (not recursive)."""
    import tensorflow as tf

    out = {}
    for f in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(f):
            for v in event.summary.value:
                if not v.HasField("tensor") or v.tensor.dtype == tf.string.as_datatype_enum:
                    continue  # the model's config, written as text
                out.setdefault(v.tag, []).append((event.step, float(tf.make_ndarray(v.tensor))))
    return out


def _tiny_model(name="tiny"):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name=name)
    return model


def test_learning_rate_logger_writes_the_schedule_per_step(tmp_path):
    schedule = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=10)
    model = _tiny_model()
    model.compile(keras.optimizers.Adam(schedule), "mse")
    x, y = np.zeros((40, 3), "float32"), np.zeros((40, 2), "float32")
    log_dir = str(tmp_path / "tb")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0,
              callbacks=[keras.callbacks.TensorBoard(log_dir, update_freq=1),
                         callbacks.LearningRateLogger(log_dir)])
    logged = _scalars(os.path.join(log_dir, "train"))
    lr = logged["learning_rate"]
    assert [s for s, _ in lr] == list(range(1, 11))
    np.testing.assert_allclose([v for _, v in lr], [float(schedule(s - 1)) for s in range(1, 11)],
                               rtol=1e-6)
    assert [s for s, _ in logged["batch_loss"]] == list(range(1, 11))
    # Every other step.
    model2 = _tiny_model()
    model2.compile(keras.optimizers.Adam(schedule), "mse")
    model2.fit(x, y, batch_size=4, epochs=1, verbose=0,
               callbacks=[callbacks.LearningRateLogger(str(tmp_path / "tb2"), update_freq=2)])
    assert [s for s, _ in _scalars(str(tmp_path / "tb2" / "train"))["learning_rate"]] == [2, 4, 6, 8, 10]
    with pytest.raises(ValueError, match="update_freq"):
        callbacks.LearningRateLogger("x", update_freq=0)


def test_phase_tensorboard_gives_each_model_its_run(tmp_path):
    log_dir = str(tmp_path / "tb")
    cbs = [callbacks.PhaseTensorBoard(log_dir, update_freq=1),
           callbacks.LearningRateLogger(log_dir, per_model=True)]
    x, y = np.zeros((8, 3), "float32"), np.zeros((8, 2), "float32")
    for name in ("phase_a", "phase_b"):
        model = _tiny_model(name)
        model.compile("adam", "mse")
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=cbs)
    for name in ("phase_a", "phase_b"):
        logged = _scalars(os.path.join(log_dir, name, "train"))
        assert [s for s, _ in logged["batch_loss"]] == [1, 2]
        assert [s for s, _ in logged["learning_rate"]] == [1, 2]
