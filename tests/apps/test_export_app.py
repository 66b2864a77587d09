"""End-to-end tests of apps/export.py, run as a script in a subprocess."""
import os

import numpy as np
import pytest

import app_runner
from app_runner import SLOW_CASE

FLAGS = ("model", "output", "format", "quantization", "int8_io", "dataset",
         "num_calibration", "verify", "min_agreement", "overwrite")


def run_app(*args, timeout=300, quiet_env=False):
    env = dict(app_runner.ENV)
    env.pop("PYTHONPATH", None)  # The app must work without installing kdtf.
    if quiet_env:  # as a user runs it: the app's own log settings must keep stderr clean
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)
        env.pop("KDTF_TF_LOGS", None)
    return app_runner.run("export.py", *args, check=False, timeout=timeout, env=env)


def error_lines(result):
    return [line for line in result.stderr.splitlines()
            if line.startswith("error:")]


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A saved .keras student with a (40, 1) input and a .npz dataset."""
    import keras

    directory = tmp_path_factory.mktemp("export_app")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((40, 1)),
        keras.layers.Conv1D(8, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    model_path = str(directory / "student.keras")
    model.save(model_path)
    rng = np.random.default_rng(0)
    data_path = str(directory / "data.npz")
    # (n, 40) arrays: the app reshapes them to the model's (40, 1) input.
    np.savez(data_path,
             x_train=rng.normal(size=(64, 40)).astype("float32"),
             x_test=rng.normal(size=(48, 40)).astype("float32"),
             y_test=rng.integers(0, 10, size=48))
    return directory, model_path, data_path


def test_help_lists_and_explains_every_flag():
    result = run_app("--help", quiet_env=True)
    assert result.returncode in (0, 1)  # absl exits 1 after --help.
    assert result.stderr.strip() == "", result.stderr[-3000:]  # no TensorFlow noise
    text = result.stdout
    assert "TFLite" in text and "SavedModel" in text
    for name in FLAGS:
        assert f"--{name}" in text or f"--[no]{name}" in text, name
    lines = text.splitlines()
    for name in FLAGS:
        line = next(l for l in lines
                    if l.strip().startswith((f"--{name}:", f"--[no]{name}:")))
        explanation = line.split(":", 1)[1].strip()
        assert len(explanation) > 10, (name, line)
    assert "<none|dynamic|float16|int8>" in text
    assert "<tflite|saved_model>" in text


@pytest.mark.parametrize("args,flag", [
    (["--quantization=int4"], "--quantization"),
    pytest.param(["--format=onnx"], "--format", marks=SLOW_CASE),
    pytest.param(["--num_calibration=0"], "--num_calibration", marks=SLOW_CASE),
    (["--model=/does/not/exist.keras"], "--model"),
    pytest.param(["--output=/does/not/exist/m.tflite"], "--output", marks=SLOW_CASE),
    pytest.param(["--int8_io"], "int8_io", marks=SLOW_CASE),
    (["--format=saved_model", "--quantization=int8"], "saved_model"),
    pytest.param(["--min_agreement=1.5"], "--min_agreement", marks=SLOW_CASE),
    pytest.param(["--min_agreement=-0.1"], "--min_agreement", marks=SLOW_CASE),
    (["--noverify", "--min_agreement=0.9"], "--min_agreement"),
    pytest.param(["--format=saved_model", "--min_agreement=0.9"], "--min_agreement", marks=SLOW_CASE),
])
def test_bad_flag_exits_nonzero_with_one_line(student, args, flag):
    directory, model_path, _ = student
    base = [f"--model={model_path}", f"--output={directory}/bad.tflite"]
    result = run_app(*base, *args)
    assert result.returncode in (1, 2)
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and flag in lines[0]
    assert "Traceback" not in result.stderr
    assert not os.path.exists(directory / "bad.tflite")


def test_missing_required_flag():
    result = run_app("--output=/tmp/x.tflite")
    assert result.returncode == 2
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "--model" in lines[0], result.stderr


def test_int8_export_run_and_overwrite_protection(student):
    directory, model_path, data_path = student
    output = directory / "student_int8.tflite"
    args = [f"--model={model_path}", f"--output={output}",
            "--quantization=int8", "--int8_io", f"--dataset={data_path}",
            "--num_calibration=32"]
    # No TF_CPP_MIN_LOG_LEVEL from the caller: still no TensorFlow or LiteRT noise.
    result = run_app(*args, quiet_env=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.strip() == "", result.stderr[-3000:]
    assert output.exists() and output.read_bytes()[4:8] == b"TFL3"
    assert "TFLite export (int8, int8 I/O)" in result.stdout
    assert "on 48 samples" in result.stdout
    assert "accuracy" in result.stdout and "latency" in result.stdout

    before = output.read_bytes()
    again = run_app(*args)
    assert again.returncode == 1
    errors = error_lines(again)
    assert len(errors) == 1 and "overwrite" in errors[0], again.stderr[-2000:]
    assert "Traceback" not in again.stderr
    assert output.read_bytes() == before


def test_saved_model_export_run(student):
    directory, model_path, _ = student
    output = directory / "student_savedmodel"
    result = run_app(f"--model={model_path}", f"--output={output}",
                     "--format=saved_model")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (output / "saved_model.pb").exists()
    assert "serving_default" in result.stdout


@pytest.mark.parametrize("source", [pytest.param("gmm", marks=SLOW_CASE), "noise"])
def test_int8_calibration_from_a_sampler(student, source):
    directory, model_path, data_path = student
    output = directory / f"student_int8_{source}.tflite"
    result = run_app(f"--model={model_path}", f"--output={output}", "--quantization=int8",
                     f"--dataset={data_path}", "--num_calibration=32",
                     f"--calibration_source={source}",
                     # 48 near-tied random-model samples: a miss or two is 2-4 points.
                     "--min_agreement=0.9")
    assert result.returncode == 0, result.stderr[-2000:]
    assert output.read_bytes()[4:8] == b"TFL3"
    assert "agreement" in result.stdout


def test_cutmix_calibration_on_flat_inputs_is_a_clear_error(student):
    directory, model_path, data_path = student
    output = directory / "student_int8_cutmix.tflite"
    result = run_app(f"--model={model_path}", f"--output={output}", "--quantization=int8",
                     f"--dataset={data_path}", "--calibration_source=cutmix")
    assert result.returncode == 1
    errors = error_lines(result)
    assert len(errors) == 1 and "CutMix" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not output.exists()


def test_failed_verification_exits_nonzero_and_keeps_no_file_at_output(student):
    """int8 calibrated on inputs 30x larger than the test inputs: agreement far below 97%."""
    directory, model_path, _ = student
    rng = np.random.default_rng(1)
    data_path = str(directory / "miscalibrating.npz")
    np.savez(data_path, x_train=30 * rng.normal(size=(64, 40)).astype("float32"),
             x_test=rng.normal(size=(48, 40)).astype("float32"),
             y_test=rng.integers(0, 10, size=48))
    output = directory / "bad_int8.tflite"
    args = [f"--model={model_path}", f"--output={output}", "--quantization=int8",
            f"--dataset={data_path}", "--num_calibration=64"]
    result = run_app(*args)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    line = lines[0]
    assert line.startswith("error: TFLite export (int8) failed verification")
    assert "97.00%" in line and "--min_agreement" in line, line
    measured = float(line.split("Keras model ")[1].split("%")[0])
    assert measured < 97.0
    assert "Traceback" not in result.stderr
    assert not output.exists()
    failed = directory / "bad_int8.failed.tflite"
    assert failed.read_bytes()[4:8] == b"TFL3" and str(failed) in line

    # The same export with the check disabled is written and reports the agreement.
    passed = run_app(*args, "--min_agreement=0")
    assert passed.returncode == 0, passed.stderr[-2000:]
    assert output.read_bytes()[4:8] == b"TFL3"
    assert f"{measured:.2f}% top-1" in passed.stdout
