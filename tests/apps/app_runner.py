"""Runs an app of `apps/` in a subprocess, as a user would: shared by tests/apps."""
import os
import subprocess
import sys

import pytest

# Each bad-flag case starts an app, so TensorFlow (~8 s on 2 cores): CI keeps a
# few per app, one of each kind of check, and the rest run with the slow tests.
SLOW_CASE = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Quiet TensorFlow logs, and the CPU even on a machine with a GPU.
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def app_path(app):
    """The path of `apps/<app>`."""
    return os.path.join(ROOT, "apps", app)


def run(app, *flags, check=True, timeout=600, env=None):
    """Runs `python apps/<app> <flags>` from the repository root.

    Args:
        app: the app's file name, e.g. "distill.py".
        *flags: its command-line arguments.
        check: raise an AssertionError with the app's output when it exits
            with a non-zero status.
        timeout: seconds before the run is killed (a test failure).
        env: the environment; `ENV` by default.

    Returns:
        The `subprocess.CompletedProcess`, with text `stdout` and `stderr`.
    """
    proc = subprocess.run([sys.executable, app_path(app), *flags], capture_output=True, text=True,
                          env=ENV if env is None else env, cwd=ROOT, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{app} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
