"""DKD against a NumPy reference of the paper's formula (Zhao et al., CVPR 2022)."""
import keras
import numpy as np
import pytest

import kdtf
from kdtf import losses


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def dkd_reference(t, s, y, alpha, beta, tau):
    """Per-example DKD in float64, written from the paper: b = [p_t, 1 - p_t], p_hat."""
    pt, ps = _softmax(t / tau), _softmax(s / tau)
    out = []
    for i, c in enumerate(y):
        bt = np.array([pt[i, c], 1 - pt[i, c]])
        bs = np.array([ps[i, c], 1 - ps[i, c]])
        tckd = np.sum(bt * np.log(bt / bs))
        keep = np.arange(t.shape[1]) != c
        qt, qs = _softmax(t[i, keep] / tau), _softmax(s[i, keep] / tau)
        nckd = np.sum(qt * np.log(qt / qs))
        out.append(tau ** 2 * (alpha * tckd + beta * nckd))
    return np.array(out)


@pytest.mark.parametrize("batch,classes,scale", [(2, 3, 1.0), (64, 10, 3.0), (16, 100, 8.0)])
def test_matches_the_paper_formula(batch, classes, scale):
    rng = np.random.default_rng(batch + classes)
    t = (rng.normal(size=(batch, classes)) * scale).astype("float32")
    s = (rng.normal(size=(batch, classes)) * scale).astype("float32")
    y = rng.integers(0, classes, size=batch)
    loss = losses.DKD(alpha=0.7, beta=8.0, temperature=4.0, reduction="none")
    got = keras.ops.convert_to_numpy(loss(t, s, labels=y))
    want = dkd_reference(t.astype(np.float64), s.astype(np.float64), y, 0.7, 8.0, 4.0)
    # Float32 log-softmaxes carry ~1e-7 absolute error per term, times tau^2 = 16.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6 * 4.0 ** 2)


def test_one_hot_labels_zero_for_identical_and_kd_decomposition():
    rng = np.random.default_rng(1)
    t = rng.normal(size=(8, 5)).astype("float32") * 2
    s = rng.normal(size=(8, 5)).astype("float32") * 2
    y = rng.integers(0, 5, size=8)
    sparse = float(losses.DKD(temperature=2.0)(t, s, labels=y))
    one_hot = float(losses.DKD(temperature=2.0)(t, s, labels=np.eye(5)[y]))
    np.testing.assert_allclose(sparse, one_hot, rtol=1e-6)
    assert float(losses.DKD()(t, t, labels=y)) == pytest.approx(0.0, abs=1e-6)
    # The paper's identity: KD = TCKD + (1 - p_t^T) * NCKD, per example.
    tckd = dkd_reference(t, s, y, 1.0, 0.0, 2.0)
    nckd = dkd_reference(t, s, y, 0.0, 1.0, 2.0)
    p_target = _softmax(t / 2.0)[np.arange(8), y]
    kd = keras.ops.convert_to_numpy(losses.KD(2.0, reduction="none")(t, s))
    np.testing.assert_allclose(kd, tckd + (1 - p_target) * nckd, rtol=1e-4)


def test_warmup_and_config_round_trip():
    rng = np.random.default_rng(2)
    t, s = rng.normal(size=(4, 6)).astype("float32"), rng.normal(size=(4, 6)).astype("float32")
    y = np.arange(4)
    loss = losses.DKD(warmup_steps=10)
    full = float(loss(t, s, labels=y, step=20))
    np.testing.assert_allclose(float(loss(t, s, labels=y, step=5)), 0.5 * full, rtol=1e-6)
    again = losses.DKD.from_config(loss.get_config())
    assert again.get_config() == loss.get_config()
    assert isinstance(losses.get("dkd"), losses.DKD)
    with pytest.raises(ValueError, match="beta"):
        losses.DKD(beta=-1)


def test_the_distiller_passes_labels_and_step():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 4, size=32).astype("int32")
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    d = kdtf.Distiller(teacher, student, losses.DKD(warmup_steps=4), student_loss_weight=0.0)
    d.compile(optimizer=keras.optimizers.SGD(0.0))  # weights stay, the step counts
    t, s = teacher(x), student(x)
    full = float(losses.DKD()(t, s, labels=y))
    logged = []
    for _ in range(3):  # optimizer steps 0, 1, 2: warm-up factors 0, 1/4, 2/4
        logged.append(d.fit(x, y, batch_size=32, epochs=1, verbose=0).history["distillation_loss"][0])
    np.testing.assert_allclose(logged, [0.0, 0.25 * full, 0.5 * full], rtol=1e-5, atol=1e-7)
    # The labels reached the loss: on the teacher's top class DKD differs.
    on_top_class = float(losses.DKD()(t, s, labels=keras.ops.argmax(t, axis=-1)))
    assert abs(on_top_class - full) > 1e-3
