"""End-to-end tests of apps/regression_demo.py."""
import os

import app_runner


def _run(*flags):
    return app_runner.run("regression_demo.py", *flags, check=False, timeout=300)


def test_help_explains_every_flag():
    out = _run("--help").stdout
    for flag in ("epochs", "seed", "output", "sampler"):
        assert f"--{flag}" in out, flag
    assert "mixup" in out and "PNG" in out


def test_writes_png(tmp_path):
    path = os.path.join(tmp_path, "sub", "demo.png")
    proc = _run("--epochs=1", f"--output={path}", "--sampler=noise")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 10_000
    for name in ("teacher", "student ERM", "student KD on means", "extracurricular (noise)"):
        assert name in proc.stdout, name


def test_bad_input_is_a_one_line_error(tmp_path):
    proc = _run("--epochs=1", f"--output={tmp_path}/demo.jpg")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "error: --output must be a .png path" in proc.stderr
    proc = _run("--sampler=bogus")
    assert proc.returncode in (1, 2)  # absl's own flag errors
    assert "Traceback" not in proc.stderr and "sampler" in proc.stderr
