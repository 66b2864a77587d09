"""End-to-end test of apps/benchmark.py on tiny settings (one pair, one round)."""
import importlib.util
import json
import os

import pytest

import app_runner
from app_runner import SLOW_CASE


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


@pytest.mark.slow  # a ResNet-20 pair (~30 s on 2 cores); RandomCropFlip and folding have unit tests
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
        pytest.param(["--modes=kd,bogus"], "modes", marks=SLOW_CASE),
        pytest.param(["--inputs="], "inputs", marks=SLOW_CASE),
        (["--steps=3", "--steps_per_execution=2"], "steps"),
        pytest.param(["--batch_size=1"], "batch_size", marks=SLOW_CASE),
        pytest.param(["--precision=float64"], "precision", marks=SLOW_CASE),
        pytest.param(["--jit_compile=maybe"], "jit_compile", marks=SLOW_CASE),
        pytest.param(["--cifar_teacher=bogus"], "valid values", marks=SLOW_CASE),
        pytest.param(["--rounds=0"], "rounds", marks=SLOW_CASE),
        pytest.param(["--cifar_examples=10"], "cifar_examples", marks=SLOW_CASE),
        (["--pairs=applications", "--applications_examples=4"], "applications_examples"),
        pytest.param(["--applications_image_size=16"], "applications_image_size", marks=SLOW_CASE),
        pytest.param(["--time_budget_s=-1"], "time_budget_s", marks=SLOW_CASE),
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


def _distiller_methods():
    from kdtf import methods as methods_lib

    return [m.name for m in methods_lib.REGISTRY.values() if m.trainer == "distiller"]


def test_methods_table_ratios_and_not_applicable():
    """Step time x KD is the median of per-round step-time ratios; n/a rows keep their reason."""
    from benchmarks import benchmark

    entries = [
        {"method": "kd", "configuration": "kdtf KD", "note": "", "not_applicable": ""},
        {"method": "crd", "configuration": "kdtf CRD", "note": "bank", "not_applicable": ""},
        {"method": "at", "configuration": "kdtf AT", "note": "",
         "not_applicable": "AT takes feature maps"},
    ]
    kd = [100.0, 200.0, 100.0]  # images/s per round
    rows = benchmark.methods_table(entries, kd, {"kdtf KD": kd, "kdtf CRD": [50.0, 50.0, 20.0]},
                                   batch_size=10)
    assert [r["method"] for r in rows] == ["kd", "crd", "at"]
    assert rows[0]["x_kd"] == 1.0 and rows[0]["step_ms"] == 100.0
    assert rows[1]["x_kd_rounds"] == [2.0, 4.0, 5.0] and rows[1]["x_kd"] == 4.0
    assert rows[1]["step_ms"] == 1000 * 10 / 50.0  # from the median images/s
    assert rows[2]["x_kd"] is None and rows[2]["step_ms"] is None
    md = "\n".join(benchmark.methods_markdown(rows))
    assert "| kd | kdtf KD | 100.0 | 1.00 | 1.00, 1.00, 1.00 |" in md
    assert "| crd | kdtf CRD | 200.0 | 4.00 | 2.00, 4.00, 5.00 | bank |" in md
    assert "| at | - | - | - | - | not applicable: AT takes feature maps |" in md
    text = "\n".join(benchmark.methods_text(rows))
    assert "not applicable: AT takes feature maps" in text and "4.00" in text
    # Every distillation method of the registry has a row, and KD with logit standardization.
    entries = benchmark.method_entries()
    assert [e[1] for e in entries if e[0] != benchmark.LOGIT_STANDARDIZATION] == _distiller_methods()
    assert (benchmark.LOGIT_STANDARDIZATION, "kd", {"logit_standardization": True},
            "kdtf KD, logit standardization") in entries
    assert benchmark.one_line(ValueError("a\n  b")) == "a b"
    long = ValueError("'features' is not a layer; valid layer names: " + ", ".join(["conv"] * 80))
    assert benchmark.one_line(long) == "'features' is not a layer..."


def test_methods_mode_builds_every_method_or_says_why():
    """On MNIST-1D's flat MLP student, FitNets and AT are 'not applicable' with the reason;
    every other distillation method is built through the registry (CRD with indexed batches)."""
    from benchmarks import benchmark

    cfg = benchmark.BenchConfig(pairs=("mnist1d",), modes=("kd", "methods"), inputs=("memory",),
                                batch_size=16, steps=2, warmup_steps=1, rounds=1)
    pair = benchmark._Pair(cfg, "mnist1d", log=lambda m: None)
    assert [e["method"] for e in pair.methods if e["method"] != benchmark.LOGIT_STANDARDIZATION] \
        == _distiller_methods()
    names = {c.name for c in pair.contenders}
    for entry in pair.methods:
        if entry["method"] in ("fitnets", "at"):
            assert entry["not_applicable"] and "\n" not in entry["not_applicable"], entry
            assert "rank" in entry["not_applicable"] or "spatial" in entry["not_applicable"]
        else:
            assert not entry["not_applicable"] and entry["configuration"] in names, entry
    ec = next(c for c in pair.contenders if c.name == "kdtf EC")  # the registry's settings
    assert "sampler gmm (full covariance), synthetic_ratio 4: 4x the real batch" in ec.note, ec.note
    crd = next(c for c in pair.contenders if c.name == "kdtf CRD")
    assert crd.model.needs_index and "3600 examples" in crd.note and "1024 negatives" in crd.note
    x, _ = next(iter(crd.dataset))
    assert set(x) == {"inputs", "index"}


@pytest.mark.slow
def test_methods_mode_end_to_end(tmp_path):
    """--modes=methods times every distillation method beside KD, or says why it cannot run."""
    out_md = str(tmp_path / "methods.md")
    proc = _run("--pairs=mnist1d,cifar", "--modes=kd,methods", "--inputs=memory", "--steps=2",
                "--warmup_steps=1", "--rounds=1", "--batch_size=8", "--cifar_examples=32",
                f"--output={out_md}", timeout=600)
    md = open(out_md).read()
    assert "| method | configuration | ms/step | x KD" in md
    result = json.load(open(str(tmp_path / "methods.json")))
    for pair_name in ("mnist1d", "cifar"):
        rows = {r["method"]: r for r in result["pairs"][pair_name]["methods"]}
        assert set(rows) == set(_distiller_methods()) | {"kd + logit_standardization"}
        for name, row in rows.items():
            assert (row["x_kd"] or 0) > 0 or row["not_applicable"], (pair_name, row)
            needle = (f"| {name} | - | - | - | - | not applicable: " if row["not_applicable"]
                      else f"| {name} | {row['configuration']} | ")
            assert needle in md, needle
        assert rows["kd"]["x_kd"] == 1.0
    mnist1d = {r["method"]: r for r in result["pairs"]["mnist1d"]["methods"]}
    assert mnist1d["at"]["not_applicable"] and mnist1d["fitnets"]["not_applicable"]
    cifar = {r["method"]: r for r in result["pairs"]["cifar"]["methods"]}
    assert all(not r["not_applicable"] for r in cifar.values())  # conv student: all run
    assert "stages=stage2:stage1,stage3:stage2" in cifar["at"]["note"]
    assert "not applicable: " in proc.stdout and "x KD" in proc.stdout
