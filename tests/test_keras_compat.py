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
