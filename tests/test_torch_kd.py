"""benchmarks/torch_kd.py, the plain PyTorch KD loop of the GPU call, on tiny sizes.

Skipped where PyTorch does not import (CI has none); the GPU machine has it.
"""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "torch_kd.py")
if not os.path.isfile(SCRIPT):  # e.g. a Bazel sandbox: benchmarks/ is no part of //kdtf
    pytest.skip("benchmarks/torch_kd.py is not in this test's files", allow_module_level=True)


def _module():
    spec = importlib.util.spec_from_file_location("torch_kd", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*flags, check=True):
    proc = subprocess.run([sys.executable, SCRIPT, *flags], capture_output=True, text=True,
                          cwd=ROOT, timeout=600,
                          # One thread: on a small shared CPU, PyTorch's OpenMP threads
                          # oversubscribed by other processes run ~20x slower.
                          env=dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1"))
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.parametrize("name", ["resnet8x4", "resnet32x4", "resnet20"])
def test_parameter_counts_match_the_keras_models(name):
    """PyTorch parameters + BatchNorm statistics == Keras count_params (trainable == trainable)."""
    from kdtf import models

    keras_model = models.get(name, input_dtype="uint8")
    keras_trainable = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
    counts = _module().parameter_counts(_module().build(name))
    assert counts["total"] == keras_model.count_params()
    assert counts["trainable"] == keras_trainable


def test_kd_loss_is_the_kdtf_objective():
    """0.5 CE + 0.5 tau^2 KL(p_t || p_s), checked against a NumPy computation."""
    m = _module()
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 7)) * 3, rng.normal(size=(5, 7)) * 3
    y = rng.integers(0, 7, size=5)

    def log_softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    tau = 4.0
    ce = -log_softmax(s)[np.arange(5), y].mean()
    lt, ls = log_softmax(t / tau), log_softmax(s / tau)
    kl = (np.exp(lt) * (lt - ls)).sum(axis=-1).mean()
    expected = 0.5 * ce + 0.5 * tau ** 2 * kl
    got = m.kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), temperature=tau).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_eager_loop_end_to_end(tmp_path):
    """Every mode timed, the JSON in benchmarks.benchmark's layout, the comparison with a Keras run."""
    keras_json = tmp_path / "keras.json"
    rows = [{"name": "kdtf KD", "input": "memory", "images_per_s": 1000.0},
            {"name": "keras.distillation KD", "input": "memory", "images_per_s": 900.0}]
    keras_json.write_text(json.dumps({"settings": {"batch_size": 4}, "pairs": {
        "cifar": {"teacher": "resnet20", "student": "resnet8x4", "rows": rows},
        # another pair: no ratio to it
        "other": {"teacher": "resnet56", "student": "resnet8x4", "rows": rows}}}))
    out = tmp_path / "t.md"
    proc = _run("--device=cpu", "--no-compile", "--amp=none", "--no-channels_last",
                "--teacher=resnet20", "--student=resnet8x4", "--batch_size=4", "--steps=3",
                "--warmup_steps=1", "--rounds=2", f"--compare={keras_json}", f"--output={out}")
    assert "1,233,540 parameters + 2,752 BatchNorm statistics" in proc.stderr
    result = json.loads((tmp_path / "t.json").read_text())
    assert result["complete"] is True and result["backend"] == "pytorch"
    pair = result["pairs"]["cifar"]
    assert pair["rounds_done"] == 2
    assert [r["name"] for r in pair["rows"]] == ["PyTorch KD", "PyTorch student only",
                                                 "PyTorch teacher inference"]
    for row in pair["rows"]:
        assert len(row["images_per_s_rounds"]) == 2 and row["images_per_s"] > 0
        assert row["step_ms"] == pytest.approx(1000 * 4 / row["images_per_s"], rel=1e-9)
    ratios = {r["name"]: r["median"] for r in pair["ratios"]}
    kd = pair["rows"][0]["images_per_s"]
    kdtf_ratio = [v for k, v in ratios.items() if k.startswith("kdtf KD (Keras run)")]
    assert kdtf_ratio == [pytest.approx(1000.0 / kd, rel=1e-9)]
    assert len([k for k in ratios if "(Keras run)" in k]) == 2
    assert any(k.startswith("PyTorch KD share of the bound") for k in ratios)
    md = out.read_text()
    assert "| PyTorch KD (teacher eval + no_grad) | memory |" in md and "Incomplete" not in md


def test_time_budget_cuts_rounds(tmp_path):
    out = tmp_path / "t.md"
    _run("--device=cpu", "--no-compile", "--amp=none", "--teacher=resnet20",
         "--student=resnet20", "--modes=kd", "--batch_size=2", "--steps=2", "--warmup_steps=1",
         "--rounds=4", "--time_budget_s=0.001", f"--output={out}")
    result = json.loads((tmp_path / "t.json").read_text())
    assert result["complete"] is False and result["pairs"]["cifar"]["rounds_done"] == 1
    assert "1 of 4 rounds" in result["stopped"] and "**Incomplete:" in out.read_text()


@pytest.mark.parametrize("flags,needle", [
    (["--modes=kd,bogus"], "--modes"),
    (["--steps=1"], "--steps"),
    (["--teacher=vgg8"], "--teacher"),
    (["--compare=/nonexistent.json"], "--compare"),
])
def test_bad_flags_exit_2_with_one_line(flags, needle):
    proc = _run(*flags, check=False)
    assert proc.returncode == 2
    errors = [l for l in proc.stderr.splitlines() if "error:" in l]
    assert len(errors) == 1 and needle in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_compiled_bf16_channels_last_step(tmp_path):
    """The GPU configuration (torch.compile, bf16 autocast, channels_last) on the CPU."""
    out = tmp_path / "t.md"
    _run("--device=cpu", "--teacher=resnet20", "--student=resnet20", "--modes=kd",
         "--batch_size=4", "--steps=2", "--warmup_steps=2", "--rounds=1", f"--output={out}")
    result = json.loads((tmp_path / "t.json").read_text())
    assert result["complete"] is True and result["settings"]["compile"] is True
    assert result["pairs"]["cifar"]["rows"][0]["images_per_s"] > 0
