"""apps/distill.py with the user's own Keras teacher, student and data (an .npz
file and a folder of PNGs), and its refusals before any training."""
import json
import os

import numpy as np

from app_runner import run as _run

SIZE = (8, 8)
CLASSES = 3


def _models(folder):
    """A user-built teacher and student (not from the zoo), saved as .keras."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((*SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    teacher = keras.Model(inputs, keras.layers.Dense(CLASSES)(x), name="my_teacher")
    inputs = keras.Input((*SIZE, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    student = keras.Model(inputs, keras.layers.Dense(CLASSES)(x), name="my_student")
    paths = str(folder / "teacher.keras"), str(folder / "student.keras")
    teacher.save(paths[0])
    student.save(paths[1])
    return paths


def _images(folder, rng):
    from PIL import Image

    for c in range(CLASSES):
        os.makedirs(folder / f"class_{c}")
        for i in range(6):
            img = rng.integers(0, 80, size=(*SIZE, 3)) + 80 * c
            Image.fromarray(img.astype(np.uint8)).save(folder / f"class_{c}" / f"{i}.png")


def _result(proc):
    return json.load(open(proc.stdout.strip().splitlines()[-1].split("results: ")[1]))


def test_own_teacher_student_npz_and_image_folder(tmp_path):
    teacher, student = _models(tmp_path)
    rng = np.random.default_rng(0)
    y = np.arange(60) % CLASSES
    x = (rng.integers(0, 80, size=(60, *SIZE, 3)) + 80 * y[:, None, None, None]).astype(np.uint8)
    np.savez(tmp_path / "data.npz", x_train=x[:45], y_train=y[:45], x_test=x[45:], y_test=y[45:])
    _images(tmp_path / "images", rng)
    common = [f"--teacher={teacher}", f"--student={student}", "--method=kd", "--epochs=1", "--batch_size=8",
              f"--workdir={tmp_path / 'w'}", "--verbose=0"]
    for dataset in (f"--dataset=npz:{tmp_path / 'data.npz'}",
                    f"--dataset=dir:{tmp_path / 'images'}", ):
        proc = _run("distill.py", dataset, "--image_size=8,8", *common)
        result = _result(proc)
        run_dir = result["files"]["run_dir"]
        assert os.path.basename(run_dir).startswith("kd_student_")
        assert f"run directory: {run_dir}" in proc.stderr
        assert set(result["students"]) == {"none", "kd"}
        assert result["files"]["teacher"] == teacher  # the user's teacher, never retrained
        assert result["files"]["export"] == os.path.join(run_dir, "student.tflite")
        assert result["export"]["top1_agreement"] > 0.9
        assert "student (KD)" in proc.stdout
    assert result["students"]["kd"]["params"] == 8 * 8 * 3 * CLASSES + CLASSES
    assert not os.path.exists(tmp_path / "w" / "teachers")


def test_existing_export_is_a_one_line_error_before_training(tmp_path):
    target = tmp_path / "mine.tflite"
    target.write_bytes(b"keep me")
    proc = _run("distill.py", f"--export={target}", f"--workdir={tmp_path / 'w'}", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "--overwrite" in errors[0] and "mine.tflite" in errors[0]
    assert "training" not in proc.stderr and target.read_bytes() == b"keep me"


def test_fitnets_with_the_default_student_fails_before_training(tmp_path):
    proc = _run("distill.py", "--method=fitnets", f"--workdir={tmp_path / 'w'}", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "error: stages: --method=fitnets" in proc.stderr and "--stages" in proc.stderr
    assert "training" not in proc.stderr
