"""kdtf.Distiller passes the distillation tests that ship inside the Keras wheel.

The two Keras test modules are run from site-packages (never copied into this
project) in a subprocess whose only change is `Distiller`, switched to
`kdtf.Distiller` by `tests/keras_compat/switch_distiller.py`.
"""
import os
import pathlib
import subprocess
import sys

import keras
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
KERAS_TESTS = pathlib.Path(keras.__file__).parent / "src" / "distillation"
MODULES = ("distiller_test.py", "distillation_loss_test.py")
# Keras's own tests that check something kdtf does on purpose differently (none
# today). Each entry: test id -> why; README "Switching from keras.distillation".
KNOWN_DIFFERENCES = {}


def _run_keras_tests(tmp_path, *extra):
    paths = [str(KERAS_TESTS / name) for name in MODULES]
    for path in paths:
        if not os.path.exists(path):
            pytest.skip(f"this Keras wheel does not ship {path}")
    deselect = [f"--deselect={KERAS_TESTS}/{t}" for t in KNOWN_DIFFERENCES]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
         "tests.keras_compat.switch_distiller", "-c", os.devnull, "--rootdir", str(tmp_path),
         "-W", "ignore::DeprecationWarning", *deselect, *extra, *paths],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )


@pytest.mark.tf_only(reason="run once; the subprocess uses the TensorFlow backend")
def test_keras_distillation_tests_pass_against_kdtf(tmp_path):
    result = _run_keras_tests(tmp_path)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "16 passed" in summary, summary


@pytest.mark.tf_only(reason="run once")
def test_the_switch_really_runs_kdtf(tmp_path):
    # The plugin must reach the tests: with a Distiller that refuses everything,
    # every Keras test that builds one fails.
    plugin = tmp_path / "refuse_plugin.py"
    plugin.write_text(
        "import keras.src.distillation.distiller as k\n"
        "class Refuse:\n"
        "    def __init__(self, *a, **kw):\n"
        "        raise RuntimeError('kdtf switch reached the test')\n"
        "def pytest_configure(config):\n"
        "    k.Distiller = Refuse\n"
    )
    env_path = f"{tmp_path}{os.pathsep}{ROOT}"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "refuse_plugin",
         "-c", os.devnull, "--rootdir", str(tmp_path),
         str(KERAS_TESTS / "distiller_test.py")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": env_path}, capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode != 0
    assert "kdtf switch reached the test" in result.stdout


def _pair(seed=0):
    keras.utils.set_random_seed(seed)
    t = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="t_out")])
    s = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="s_hidden"),
                          keras.layers.Dense(4, name="s_out")])
    return t, s


def test_logits_distillation_default_is_real_kd_with_one_warning():
    import numpy as np

    import kdtf
    from kdtf.losses import keras_compat

    keras_compat._WARNED.discard("kl")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype("float32")
    t, s = _pair()
    with pytest.warns(UserWarning, match="keras.distillation applies the KL") as record:
        d = kdtf.Distiller(t, s, keras.distillation.LogitsDistillation(temperature=3.0),
                           student_loss_weight=0.0)
        kdtf.Distiller(t, s, keras.distillation.LogitsDistillation(temperature=2.0))
    assert sum("keras.distillation applies" in str(w.message) for w in record) == 1
    d.compile(optimizer=keras.optimizers.SGD(0.0))
    got = d.evaluate(x, verbose=0, return_dict=True)["distillation_loss"]
    want = float(kdtf.losses.KD(temperature=3.0)(t(x), s(x)))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # keras.distillation's own value is another number (KL of the scaled logits).
    k = keras.distillation.Distiller(t, s, keras.distillation.LogitsDistillation(temperature=3.0),
                                     student_loss_weight=0.0)
    k.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    theirs = float(k.compute_loss(x=x, y=None, y_pred=s(x)))
    assert abs(theirs - want) > 1e-3 * abs(want)


def test_a_user_written_distillation_loss_subclass_trains():
    import numpy as np

    import kdtf

    class MeanGap(keras.distillation.DistillationLoss):
        """A user's own loss: squared gap of the mean logits."""

        def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
            gap = keras.ops.mean(teacher_outputs, axis=-1) - keras.ops.mean(student_outputs, axis=-1)
            return keras.ops.mean(gap ** 2)

    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 6)).astype("float32")
    t, s = _pair(1)
    d = kdtf.Distiller(t, s, [MeanGap(), keras.distillation.FeatureDistillation(
        loss="mse", teacher_layer_name="t_out", student_layer_name="s_out")],
        distillation_loss_weights=[2.0, 0.5], student_loss_weight=0.0)
    d.compile(optimizer=keras.optimizers.SGD(0.0))
    got = d.evaluate(x, verbose=0, return_dict=True)["distillation_loss"]
    tx, sx = keras.ops.convert_to_numpy(t(x)), keras.ops.convert_to_numpy(s(x))
    want = 2.0 * np.mean((tx.mean(-1) - sx.mean(-1)) ** 2) + 0.5 * np.mean((tx - sx) ** 2)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    d.compile(optimizer=keras.optimizers.Adam(1e-2))
    h = d.fit(x, epochs=5, verbose=0).history["distillation_loss"]
    assert h[-1] < h[0]
