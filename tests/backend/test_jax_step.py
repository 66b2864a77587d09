"""The Distiller's JAX train and test steps (kdtf/backend/jax.py).

Run with `KERAS_BACKEND=jax`; under another backend the tests marked
`jax_only` are skipped. `test_jax_step_matches_tensorflow_step` runs on both
backends: it takes one step in this process and one in a subprocess on the
other backend (tests/backend/step_check.py), from the same weights and batch.
"""
import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import kdtf
from kdtf import samplers

HERE = os.path.dirname(os.path.abspath(__file__))
CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
JAX_ONLY = pytest.mark.jax_only(reason="exercises the JAX train step in-process")


def _step_check():
    spec = importlib.util.spec_from_file_location(
        "kdtf_step_check", os.path.join(HERE, "step_check.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


step_check = _step_check()


def mnist1d_like(n=256, seed=0):
    """Tiny MNIST-1D-like data: 10 smooth 40-sample templates, shifted and noisy."""
    rng = np.random.default_rng(seed)
    templates = np.cumsum(rng.normal(size=(10, 40)), axis=1)
    templates = (templates - templates.mean(1, keepdims=True)) / templates.std(
        1, keepdims=True
    )
    y = rng.integers(0, 10, size=n)
    shifts = rng.integers(-3, 4, size=n)
    x = np.stack([np.roll(templates[c], s) for c, s in zip(y, shifts)])
    x = x * rng.uniform(0.8, 1.2, size=(n, 1)) + 0.3 * rng.normal(size=x.shape)
    return x.astype("float32"), y.astype("int32")


X, Y = mnist1d_like()


@pytest.fixture(scope="module")
def teacher_weights():
    """Weights of a teacher trained briefly on the data (plain Keras fit)."""
    keras.utils.set_random_seed(1)
    teacher, _ = step_check.build_models()
    teacher.compile(optimizer=keras.optimizers.Adam(1e-2), loss=CE)
    teacher.fit(X, Y, batch_size=64, epochs=8, verbose=0)
    return teacher.get_weights()


def _teacher(weights):
    teacher, _ = step_check.build_models()
    teacher.set_weights(weights)
    return teacher


def _student():
    return keras.Sequential(
        [
            keras.Input((40,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(10),
        ],
        name="student",
    )


def _snapshot(variables):
    return [np.array(v.numpy(), copy=True) for v in variables]


@JAX_ONLY
def test_backend_is_jax_and_step_functions_are_the_jax_ones():
    from kdtf.backend import jax as jax_steps

    assert keras.backend.backend() == "jax"
    d = kdtf.Distiller(_teacher(_teacher_init()), _student())
    assert d._train_step_fn is jax_steps.train_step
    assert d._test_step_fn is jax_steps.test_step


def _teacher_init():
    teacher, _ = step_check.build_models()
    return teacher.get_weights()


@JAX_ONLY
def test_kd_fit_lowers_loss_and_keeps_the_teacher_bit_identical(teacher_weights):
    teacher = _teacher(teacher_weights)
    assert any("moving" in v.path for v in teacher.weights)
    d = kdtf.Distiller(teacher, _student(), kdtf.losses.KD(4.0), seed=0)
    d.compile(optimizer=keras.optimizers.Adam(1e-2), loss=CE, metrics=["accuracy"])
    teacher_before = _snapshot(teacher.weights)
    student_before = _snapshot(d.student.weights)
    hist = d.fit(X, Y, batch_size=32, epochs=4, verbose=0, validation_data=(X, Y))
    h = hist.history
    for key in ("loss", "student_loss", "distillation_loss", "accuracy",
                "val_loss", "val_distillation_loss", "val_accuracy"):
        assert key in h and np.all(np.isfinite(h[key])), key
    assert h["loss"][-1] < 0.8 * h["loss"][0], h["loss"]
    assert h["distillation_loss"][-1] < h["distillation_loss"][0]
    assert h["accuracy"][-1] > h["accuracy"][0]
    # The teacher (kernels and BatchNorm statistics) is bit-identical.
    for v, before in zip(teacher.weights, teacher_before):
        np.testing.assert_array_equal(v.numpy(), before, err_msg=v.path)
    assert not teacher.trainable
    # The student trained, BatchNorm statistics included.
    for v, before in zip(d.student.weights, student_before):
        assert not np.array_equal(v.numpy(), before), v.path
    # evaluate(): `loss` is the total objective, `student_loss` the task loss,
    # as on TensorFlow and in keras.distillation.
    result = d.evaluate(X, Y, batch_size=len(X), verbose=0, return_dict=True)
    s, t = d.student.predict(X, verbose=0), teacher.predict(X, verbose=0)
    want = float(CE(Y, s))
    np.testing.assert_allclose(result["student_loss"], want, rtol=1e-5)
    want_total = 0.5 * want + 0.5 * float(kdtf.losses.KD(4.0)(t, s))
    np.testing.assert_allclose(result["loss"], want_total, rtol=1e-5)


def _gmm(covariance):
    return samplers.GaussianMixture(4, covariance=covariance, seed=0).fit(
        X, iterations=10
    )


@JAX_ONLY
@pytest.mark.parametrize(
    "make",
    [
        lambda: samplers.Mixup(alpha=0.4, seed=3),
        lambda: _gmm("diag"),
        lambda: _gmm("full"),
    ],
    ids=["mixup", "gmm_diag", "gmm_full"],
)
def test_sampler_inside_fit_advances_the_seed(make, teacher_weights):
    sampler = make()
    teacher = _teacher(teacher_weights)
    d = kdtf.Distiller(teacher, _student(), kdtf.losses.KD(4.0), sampler=sampler,
                       synthetic_ratio=1.0, seed=5)
    d.compile(optimizer=keras.optimizers.Adam(1e-2), loss=CE)
    seed_state = d._seed_generator.state
    before = np.asarray(seed_state.numpy()).copy()
    sampler_before = _snapshot(sampler.non_trainable_weights)
    teacher_before = _snapshot(teacher.weights)
    epochs, steps = 2, len(X) // 32
    hist = d.fit(X, Y, batch_size=32, epochs=epochs, verbose=0)
    h = hist.history
    assert np.all(np.isfinite(h["loss"])) and np.all(np.isfinite(h["synthetic_loss"]))
    # Synthetic inputs were drawn and distilled on.
    assert all(v > 0 for v in h["synthetic_loss"])
    # The Distiller's SeedGenerator advanced once per step, in the state
    # that fit() wrote back.
    after = np.asarray(seed_state.numpy())
    np.testing.assert_array_equal(after, before + np.array([0, epochs * steps]))
    # Fitted sampler parameters and the teacher are untouched.
    for v, b in zip(sampler.non_trainable_weights, sampler_before):
        if v is not sampler.seed_generator.state:
            np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)
    for v, b in zip(teacher.weights, teacher_before):
        np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)


@JAX_ONLY
def test_synthetic_draws_follow_the_distiller_seed(teacher_weights):
    """Same Distiller seed: same training; another seed: other draws."""

    def train(seed):
        keras.utils.set_random_seed(0)
        d = kdtf.Distiller(_teacher(teacher_weights), _student(), kdtf.losses.KD(4.0),
                           sampler=samplers.GaussianNoise(0.5, seed=0), seed=seed)
        d.compile(optimizer=keras.optimizers.SGD(0.05), loss=CE)
        d.fit(X[:64], Y[:64], batch_size=32, epochs=1, verbose=0, shuffle=False)
        return [v.numpy() for v in d.student.trainable_weights]

    a, b, c = train(1), train(1), train(2)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert any(not np.allclose(u, w) for u, w in zip(a, c))


@JAX_ONLY
def test_nan_input_stops_with_an_error_and_skips_the_update(tmp_path, teacher_weights):
    teacher = _teacher(teacher_weights)
    d = kdtf.Distiller(teacher, _student(), kdtf.losses.KD(4.0))
    d.compile(optimizer=keras.optimizers.Adam(1e-2), loss=CE)
    ckpt = os.path.join(tmp_path, "last.weights.h5")
    cb = keras.callbacks.ModelCheckpoint(ckpt, save_weights_only=True)
    d.fit(X, Y, batch_size=32, epochs=1, verbose=0, callbacks=[cb])
    saved = open(ckpt, "rb").read()
    bad = X[:96].copy()
    bad[40] = np.nan  # in the second batch of 32
    with pytest.raises(kdtf.callbacks.NonFiniteLossError, match=r"epoch 1, step 2"):
        d.fit(bad, Y[:96], batch_size=32, epochs=2, verbose=0, callbacks=[cb],
              shuffle=False)
    assert open(ckpt, "rb").read() == saved
    assert all(np.isfinite(v.numpy()).all() for v in d.student.weights)

    # A NaN in the very first batch: nothing of the step is kept, student
    # weights, BatchNorm statistics and optimizer state included.
    student_before = _snapshot(d.student.weights)
    optimizer_before = _snapshot(d.optimizer.variables)
    teacher_before = _snapshot(teacher.weights)
    bad = X[:32].copy()
    bad[3, 7] = np.nan
    with pytest.raises(kdtf.callbacks.NonFiniteLossError, match=r"epoch 1, step 1"):
        d.fit(bad, Y[:32], batch_size=32, epochs=1, verbose=0)
    for v, b in zip(d.student.weights, student_before):
        np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)
    for v, b in zip(d.optimizer.variables, optimizer_before):
        np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)
    for v, b in zip(teacher.weights, teacher_before):
        np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)


@JAX_ONLY
def test_run_eagerly_and_unlabelled_batches(teacher_weights):
    """Eager (un-jitted) steps, and distilling without labels."""
    d = kdtf.Distiller(_teacher(teacher_weights), _student(), kdtf.losses.KD(4.0),
                       student_loss_weight=0.0)
    d.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    hist = d.fit(X[:64], batch_size=32, epochs=3, verbose=0)
    h = hist.history["distillation_loss"]
    assert h[-1] < h[0]
    logs = d.evaluate(X[:64], verbose=0, return_dict=True)
    assert np.isfinite(logs["distillation_loss"])


def _other_backend():
    return "tensorflow" if keras.backend.backend() == "jax" else "jax"


def _step_inputs(case):
    """The same initial weights and batch for every backend."""
    keras.utils.set_random_seed(4)
    teacher, student = step_check.build_models()
    w = np.linspace(0.0, 2.0, 32).astype("float32")
    arrays = {"case": np.array(case), "x": X[:32], "y": Y[:32], "sample_weight": w}
    for model, prefix in ((teacher, "teacher"), (student, "student")):
        for i, value in enumerate(model.get_weights()):
            arrays[f"{prefix}_{i}"] = value
    return arrays


@pytest.fixture(scope="module")
def other_backend_steps(tmp_path_factory):
    """`step_check.one_step` of every case on the other backend, in one subprocess."""
    other = _other_backend()
    if other == "jax" and importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (pip install -e .[test])")
    tmp = tmp_path_factory.mktemp("step_check")
    args = []
    for case in step_check.CASES:
        path_in, path_out = str(tmp / f"{case}_in.npz"), str(tmp / f"{case}_out.npz")
        np.savez(path_in, **_step_inputs(case))
        args += [path_in, path_out]
    env = dict(os.environ, KERAS_BACKEND=other)
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "step_check.py")] + args,
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {}
    for case, path_out in zip(step_check.CASES, args[1::2]):
        out = dict(np.load(path_out))
        assert str(out.pop("backend")) == other
        results[case] = out
    return results


@pytest.mark.parametrize("case", step_check.CASES)
def test_jax_step_matches_tensorflow_step(case, other_backend_steps):
    """One step from the same weights and batch: same losses and update.

    Runs on either backend: this process takes the step on the active one,
    a subprocess on the other (TensorFlow <-> JAX).
    """
    arrays = _step_inputs(case)
    here = step_check.one_step(arrays)
    there = other_backend_steps[case]
    assert set(here) == set(there)
    keys = ["train_loss", "train_student_loss", "train_distillation_loss",
            "eval_loss", "eval_distillation_loss", "train_accuracy"]
    if case == "synthetic":
        keys.append("train_synthetic_loss")
    for key in keys:
        assert key in here, key
    for key in sorted(here):
        # Losses and metrics within 1e-5; the weights after one SGD step
        # (so the gradients) and BatchNorm statistics too.
        np.testing.assert_allclose(
            here[key], there[key], rtol=0, atol=1e-5, err_msg=key
        )
    # The step changed the student's kernels and BatchNorm statistics (not
    # the bias before its BatchNorm, whose gradient is zero) and not the
    # teacher.
    _, student = step_check.build_models()
    for i, v in enumerate(student.weights):
        if "kernel" in v.path or "moving" in v.path:
            assert not np.array_equal(here[f"student_{i}"], arrays[f"student_{i}"]), v.path
    n_teacher = sum(1 for k in arrays if k.startswith("teacher_"))
    for i in range(n_teacher):
        np.testing.assert_array_equal(here[f"teacher_{i}"], arrays[f"teacher_{i}"])
