"""End-to-end test of apps/benchmark.py on tiny settings (one pair, one round)."""
import importlib.util
import json
import os

import pytest

import app_runner


NO_TENSORFLOW = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "no_tensorflow")


def _run(*flags, check=True, timeout=300, backend="tensorflow", tensorflow=True):
    env = dict(app_runner.ENV, KERAS_BACKEND=backend)
    if not tensorflow:  # as on the JAX-only GPU machine
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [NO_TENSORFLOW, env.get("PYTHONPATH")]))
    return app_runner.run("benchmark.py", *flags, check=check, timeout=timeout, env=env)


def test_help_explains_every_flag():
    out = _run("--help").stdout
    for flag in ("pairs", "modes", "inputs", "batch_size", "steps", "warmup_steps", "rounds",
                 "steps_per_execution", "jit_compile", "precision", "augment", "views",
                 "cifar_teacher", "cifar_student", "cifar_examples", "seed", "output"):
        assert f"--{flag}" in out or f"--[no]{flag}" in out, flag


def test_benchmark_end_to_end(tmp_path):
    out_md = str(tmp_path / "BENCHMARKS.md")
    # Extracurricular (the slowest to trace) is left out to stay well under a
    # minute; its Distiller path is tested in tests/test_distiller.py.
    proc = _run("--pairs=mnist1d", "--modes=kd,dist,cached", "--steps=2", "--warmup_steps=1",
                "--rounds=1", "--batch_size=32", f"--output={out_md}")
    text = proc.stdout
    for name in ("student only", "teacher inference", "keras.distillation KD", "kdtf KD",
                 "kdtf DIST", "kdtf cached KD", "tf.data pipeline alone"):
        assert name in text, name
    assert "kdtf EC" not in text
    for ratio in ("kdtf KD / keras.distillation KD", "share of the bound", "DIST / KD step time",
                  "cached KD / keras.distillation KD", "tfdata / memory"):
        assert ratio in text, ratio
    assert "KLDivergence()" in text  # says which loss keras.distillation used
    md = open(out_md).read()
    for needle in ("| machine |", "cores", "| backend | tensorflow", "| batch size | 32",
                   "| precision | float32", "input dtype float32", "apps/benchmark.py --pairs=mnist1d",
                   "images/s (median)", "peak RSS MiB"):
        assert needle in md, needle
    result = json.load(open(str(tmp_path / "BENCHMARKS.json")))
    rows = result["pairs"]["mnist1d"]["rows"]
    assert all(r["images_per_s"] > 0 and r["peak_rss_mib"] > 0 for r in rows)
    assert result["pairs"]["mnist1d"]["cache"]["memory_bytes"] == 3600 * 10 * 2


def test_augment_times_in_step_augmentation(tmp_path):
    out_md = str(tmp_path / "BENCHMARKS.md")
    _run("--pairs=cifar", "--modes=kd", "--inputs=memory", "--steps=2", "--warmup_steps=1",
         "--rounds=1", "--batch_size=32", "--augment", "--cifar_examples=256",
         "--cifar_student=mnist_cnn_small", f"--output={out_md}")
    md = open(out_md).read()
    assert "kdtf KD, augmented in step" in md and "RandomCropFlip" in md
    assert "KD augmented in step / kdtf KD, memory" in md
    # resnet20's BatchNorm folds: the unfolded step is timed beside it.
    assert "kdtf KD, teacher BatchNorm not folded" in md
    assert "KD with the teacher's BatchNorm not folded" in md
    rows = json.load(open(str(tmp_path / "BENCHMARKS.json")))["pairs"]["cifar"]["rows"]
    assert any(r["name"] == "kdtf KD, augmented in step" and r["images_per_s"] > 0 for r in rows)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax")
def test_jax_without_tensorflow(tmp_path):
    """The GPU machine's setting: Keras on JAX and no TensorFlow at all."""
    out_md = str(tmp_path / "BENCHMARKS.md")
    proc = _run("--pairs=mnist1d", "--modes=kd,cached", "--inputs=memory", "--steps=2",
                "--warmup_steps=1", "--rounds=1", "--batch_size=32", f"--output={out_md}",
                backend="jax", tensorflow=False)
    assert "blocked by" not in proc.stderr
    md = open(out_md).read()
    for needle in ("| backend | jax", "device arrays, converted once", "no `tfdata` rows",
                   "| kdtf cached KD | memory |", "cached KD / keras.distillation KD"):
        assert needle in md, needle
    assert "TensorFlow 2" not in md  # the report names no TensorFlow version
    result = json.load(open(str(tmp_path / "BENCHMARKS.json")))
    pair = result["pairs"]["mnist1d"]
    assert pair["tf_data"] is False and "tensorflow" not in result["versions"]
    assert all(r["images_per_s"] > 0 for r in pair["rows"])
    assert pair["cache"]["memory_bytes"] == 3600 * 10 * 2  # every training example, float16

    # tf.data inputs need TensorFlow: a one-line flag error, not a traceback.
    proc = _run("--inputs=memory,tfdata", check=False, timeout=120, backend="jax", tensorflow=False)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "inputs" in lines[0] and "TensorFlow" in lines[0], proc.stderr


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--pairs=bogus"], "pairs"),
        (["--modes=kd,bogus"], "modes"),
        (["--inputs="], "inputs"),
        (["--steps=3", "--steps_per_execution=2"], "steps"),
        (["--batch_size=1"], "batch_size"),
        (["--precision=float64"], "precision"),
        (["--jit_compile=maybe"], "jit_compile"),
        (["--cifar_teacher=bogus"], "valid values"),
        (["--rounds=0"], "rounds"),
        (["--cifar_examples=10"], "cifar_examples"),
    ],
)
def test_bad_flags_exit_2_with_one_line(flags, needle):
    proc = _run(*flags, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
