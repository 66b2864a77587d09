"""End-to-end tests of apps/distill.py, apps/train_teacher.py and apps/evaluate.py."""
import json
import os

import pytest

from app_runner import SLOW_CASE, run as _run


def test_help_explains_every_flag():
    out = _run("distill.py", "--help").stdout
    for flag in ("method", "teacher", "student", "dataset", "epochs", "temperature", "seed",
                 "student_loss_weight", "export", "quantization", "workdir", "overwrite",
                 "image_size", "data_dir", "min_agreement", "weight_decay"):
        assert f"--{flag}" in out or f"--[no]{flag}" in out, flag
    # The npz keys and the image-folder split are documented in --help.
    assert "x_train, y_train, x_test, y_test" in out and "subfolder per class" in " ".join(out.split())


def test_distill_end_to_end(tmp_path):
    work = str(tmp_path)
    tfl = os.path.join(work, "s.tflite")
    common = ["--epochs=1", "--teacher_epochs=1", f"--workdir={work}", "--verbose=0"]
    # As a user runs it (no TF_CPP_MIN_LOG_LEVEL): stderr holds kdtf's own lines only,
    # no TensorFlow noise (E-level tf.data NodeDef lines, absl INFO lines of the export).
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    proc = _run("distill.py", "--method=dist", f"--export={tfl}", *common, env=env)
    noise = [line for line in proc.stderr.splitlines() if not line.startswith("[kdtf] ")]
    assert noise == [], proc.stderr
    out = proc.stdout
    assert "student (ERM)" in out and "student (DIST)" in out and "teacher" in out
    assert os.path.getsize(tfl) > 0
    result_file = out.strip().splitlines()[-1].split("results: ")[1]
    result = json.load(open(result_file))
    assert set(result["students"]) == {"none", "dist"}
    assert result["export"]["top1_agreement"] > 0.9
    assert os.path.dirname(result_file) == result["files"]["run_dir"]
    assert f"run directory: {result['files']['run_dir']}" in proc.stderr
    # The teacher is cached (with its settings record) and reused by the next run.
    teachers = sorted(os.listdir(os.path.join(work, "teachers")))
    assert len(teachers) == 2 and teachers[0].endswith(".json") and teachers[1].endswith(".keras")
    out2 = _run("distill.py", "--method=kd", "--nocompare_erm", "--export=", *common)
    assert "reusing teacher" in out2.stderr
    result2 = json.load(open(out2.stdout.strip().splitlines()[-1].split("results: ")[1]))
    assert result2["files"]["run_dir"] != result["files"]["run_dir"]
    # evaluate.py on the saved student, with the teacher.
    student = result2["files"]["students"]["kd"]
    teacher = os.path.join(work, "teachers", teachers[1])
    ev = _run("evaluate.py", f"--model={student}", f"--teacher={teacher}", "--json").stdout
    metrics = json.loads(ev.strip().splitlines()[-1])
    assert 0 <= metrics["accuracy"] <= 1 and "agreement" in metrics


def test_train_teacher_app(tmp_path):
    path = os.path.join(tmp_path, "t.keras")
    out = _run("train_teacher.py", "--epochs=1", f"--output={path}", f"--workdir={tmp_path}",
               "--verbose=0", "--learning_rate=0.005").stdout
    assert "test accuracy" in out and os.path.exists(path)
    # The app's --learning_rate is the teacher's (RunConfig.teacher_learning_rate).
    with open(os.path.join(tmp_path, "t.json")) as f:
        assert json.load(f)["learning_rate"] == 0.005


@pytest.mark.parametrize(
    "app,flags,needle",
    [
        ("distill.py", ["--method=bogus"], "method"),
        pytest.param("distill.py", ["--student=bogus", "--epochs=1"], "valid values", marks=SLOW_CASE),
        pytest.param("distill.py", ["--teacher=bogus", "--epochs=1"], "valid values", marks=SLOW_CASE),
        pytest.param("distill.py", ["--dataset=bogus", "--epochs=1"], "valid values", marks=SLOW_CASE),
        pytest.param("distill.py", ["--teacher=/nonexistent/t.keras"], "no such file", marks=SLOW_CASE),
        ("distill.py", ["--temperature=-1"], "temperature"),
        ("evaluate.py", ["--model=/nonexistent.keras"], "no such file"),
        pytest.param("train_teacher.py", ["--model=bogus"], "--model: unknown 'bogus'; valid:",
                     marks=SLOW_CASE),
    ],
)
def test_bad_flags_give_one_line_error(app, flags, needle, tmp_path):
    proc = _run(app, *flags, f"--workdir={tmp_path}" if app != "evaluate.py" else "--split=test",
                check=False)
    assert proc.returncode in (1, 2)
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr


@pytest.mark.slow  # one more app start; the check itself: tests/test_stagewise.py
def test_unknown_stage_lists_the_valid_ones(tmp_path):
    proc = _run("distill.py", "--method=sskd", "--student=mnist1d_cnn_small", "--stages=bogus",
                "--epochs=1", "--teacher_epochs=1", f"--workdir={tmp_path}", "--verbose=0",
                "--export=", check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "stages" in proc.stderr and "'bogus'" in proc.stderr and "stage1" in proc.stderr
