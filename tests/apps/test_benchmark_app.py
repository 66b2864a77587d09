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
                 "cifar_teacher", "cifar_student", "cifar_examples", "applications_image_size",
                 "applications_examples", "time_budget_s", "seed", "output"):
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
        (["--pairs=applications", "--applications_examples=4"], "applications_examples"),
        (["--applications_image_size=16"], "applications_image_size"),
        (["--time_budget_s=-1"], "time_budget_s"),
    ],
)
def test_bad_flags_exit_2_with_one_line(flags, needle):
    proc = _run(*flags, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_applications_models_are_what_a_user_builds():
    """The 'applications' pair: keras.applications models on uint8 images, logits out."""
    import keras
    import numpy as np

    from benchmarks import benchmark
    from kdtf import folding

    shape = (32, 32, 3)
    teacher = benchmark.applications_model(benchmark.APPLICATIONS_TEACHER, shape)
    student = benchmark.applications_model(benchmark.APPLICATIONS_STUDENT, shape)
    # The same weights as keras.applications' own (the rescaling has none).
    assert teacher.count_params() == keras.applications.ResNet50(
        weights=None, input_shape=shape, classes=1000).count_params()
    assert student.count_params() == keras.applications.MobileNetV3Small(
        weights=None, input_shape=shape, classes=1000).count_params()
    x = np.random.default_rng(0).integers(0, 256, size=(2,) + shape, dtype=np.uint8)
    for model in (teacher, student):
        assert keras.backend.standardize_dtype(model.inputs[0].dtype) == "uint8"
        logits = keras.ops.convert_to_numpy(model(x, training=False))
        assert logits.shape == (2, 1000)
        # classifier_activation=None: logits, not probabilities.
        assert not np.allclose(logits.sum(axis=-1), 1.0, rtol=1e-3)
    # Every BatchNorm of ResNet50 follows a convolution and folds (float32).
    forward = folding.fold_batchnorm(teacher)
    n_bn = sum(isinstance(l, keras.layers.BatchNormalization) for l in teacher.layers)
    assert forward is not None and forward.num_folded == n_bn == 53


@pytest.mark.slow
def test_applications_pair_end_to_end(tmp_path):
    """kdtf KD, folded and not, against keras.distillation on the applications pair (tiny)."""
    out_md = str(tmp_path / "apps.md")
    _run("--pairs=applications", "--applications_image_size=32", "--applications_examples=4",
         "--batch_size=4", "--modes=kd", "--inputs=memory", "--steps=2", "--warmup_steps=1",
         "--rounds=1", f"--output={out_md}")
    md = open(out_md).read()
    assert "## applications: keras.applications.ResNet50 -> keras.applications.MobileNetV3Small" in md
    pair = json.load(open(str(tmp_path / "apps.json")))["pairs"]["applications"]
    names = {r["name"] for r in pair["rows"]}
    assert {"student only", "teacher inference", "keras.distillation KD", "kdtf KD",
            "kdtf KD, teacher BatchNorm not folded"} <= names
    assert all(r["images_per_s"] > 0 for r in pair["rows"])
    assert any(r["name"].startswith("kdtf KD / keras.distillation") for r in pair["ratios"])
    assert "32x32x3" in pair["data"] and "1000 classes" in pair["data"]


def test_progress_after_each_round_and_time_budget():
    """run() hands the result to `progress` after each round; a spent budget stops the rounds."""
    from benchmarks import benchmark

    cfg = benchmark.BenchConfig(pairs=("mnist1d",), modes=("kd",), inputs=("memory",),
                                batch_size=16, steps=2, warmup_steps=1, rounds=3,
                                time_budget_s=1e-3)
    seen = []
    result = benchmark.run(cfg, log=lambda m: None,
                           progress=lambda r: seen.append((r["complete"],
                                                           r["pairs"]["mnist1d"]["rounds_done"])))
    # The first round always runs; the second would end past 1 ms.
    assert seen == [(False, 1)]
    pair = result["pairs"]["mnist1d"]
    assert result["complete"] is False and pair["rounds_done"] == 1
    assert "1 of 3 rounds" in result["stopped"]
    assert all(len(r["images_per_s_rounds"]) == 1 for r in pair["rows"])
    md = benchmark.to_markdown(result, "cmd")
    assert "**Incomplete: [mnist1d] 1 of 3 rounds" in md and "Rounds measured: 1 of 3." in md

    # Without a budget every round runs and progress sees each one.
    seen.clear()
    result = benchmark.run(benchmark.BenchConfig(
        pairs=("mnist1d",), modes=("kd",), inputs=("memory",), batch_size=16, steps=2,
        warmup_steps=1, rounds=2), log=lambda m: None,
        progress=lambda r: seen.append(r["pairs"]["mnist1d"]["rounds_done"]))
    assert seen == [1, 2] and result["complete"] is True and result["stopped"] == ""
    assert "Incomplete" not in benchmark.to_markdown(result, "cmd")
