"""Tests of pipeline.experiment's settings (the flags of apps/distill.py)."""
import pytest

from pipeline import experiment
from kdtf import models


def test_parse_stages():
    assert experiment.parse_stages("") is None
    assert experiment.parse_stages("stage1, stage2") == ["stage1", "stage2"]
    assert experiment.parse_stages("stage3:stage2,stage1") == [("stage3", "stage2"), "stage1"]
    for bad in ("stage1,,stage2", "a:b:c", ":stage1"):
        with pytest.raises(ValueError, match="stages"):
            experiment.parse_stages(bad)


def test_check_stages_names_the_model_and_valid_stages():
    teacher = models.get("mnist1d_cnn")
    student = models.get("mnist1d_cnn_small")
    assert experiment.check_stages(teacher, student, ["stage1", ("stage3", "stage2")]) == (
        ["stage1", "stage3"], ["stage1", "stage2"])
    with pytest.raises(ValueError, match=r"student 'mnist1d_cnn_small'.*'stage9'.*stage1, stage2"):
        experiment.check_stages(teacher, student, [("stage1", "stage9")])


@pytest.mark.parametrize("field,value", [
    ("method", "bogus"), ("feature_weight", -1.0), ("stage_epochs", 0), ("stages", "a::b"),
])
def test_validate_names_the_bad_setting(field, value):
    cfg = experiment.RunConfig(**{field: value})
    with pytest.raises(ValueError, match=field):
        cfg.validate()


def test_validate_checks_the_export_directory_before_training(tmp_path):
    work = str(tmp_path / "work")  # made by the run, so exporting into it is fine
    experiment.RunConfig(workdir=work, export=f"{work}/s.tflite").validate()
    experiment.RunConfig(workdir=work, export=str(tmp_path / "s.tflite")).validate()
    experiment.RunConfig(workdir=work, export="").validate()
    with pytest.raises(FileNotFoundError, match=r"export: .*missing.*does not exist"):
        experiment.RunConfig(workdir=work, export=str(tmp_path / "missing" / "s.tflite")).validate()


def test_a_loss_that_needs_the_index_gets_indexed_batches_from_the_pipeline(tmp_path):
    # CRD keeps a memory-bank row per training example: the pipeline gives it the
    # number of examples and batches {"inputs", "index"} (kdtf.batches).
    import math

    import numpy as np

    from kdtf import data as data_lib

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 40)).astype("float32")
    y = rng.integers(0, 10, 96).astype("int32")
    splits = data_lib.Splits(x_train=x[:64], y_train=y[:64], x_val=x[64:80], y_val=y[64:80],
                             x_test=x[80:], y_test=y[80:], num_classes=10, input_shape=(40,),
                             name="tiny")
    cfg = experiment.RunConfig(method="crd", epochs=1, batch_size=32, workdir=str(tmp_path),
                               crd_negatives=16, verbose=0)
    _, history = experiment.train_student(cfg, splits, models.get("mnist1d_cnn"), "crd",
                                          run_dir=str(tmp_path / "run"))
    loss = history["distillation_loss"][-1]
    assert math.isfinite(loss) and loss > 0


def test_fitnets_and_sskd_runs_through_the_pipeline(tmp_path):
    # The pipeline part of apps/distill.py --method=fitnets|sskd, in-process (the app's
    # flags and start-up are tested by tests/apps/test_distill_app.py).
    import dataclasses
    import os

    base = experiment.RunConfig(
        student="mnist1d_cnn_small", epochs=1, teacher_epochs=1, workdir=str(tmp_path),
        compare_erm=False, export="", verbose=0)
    result = experiment.run(dataclasses.replace(base, method="fitnets", feature_weight=10.0))
    assert set(result["students"]) == {"fitnets"} and result["config"]["feature_weight"] == 10
    result = experiment.run(dataclasses.replace(base, method="sskd", stage_epochs=1,
                                                stages="stage1,stage2"))
    history = result["students"]["sskd"]["history"]
    assert {"stage1/loss", "stage2/loss", "head/loss"} <= set(history)
    assert 0 <= result["students"]["sskd"]["accuracy"] <= 1
    # A resumable checkpoint inside the run directory.
    assert os.path.isdir(os.path.join(result["files"]["run_dir"], "student_sskd", "checkpoints"))


def _image_splits(n=64, side=28, seed=0):
    import numpy as np

    from kdtf import data as data_lib

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 255, size=(n, side, side, 1)).astype("uint8")
    y = np.arange(n) % 10
    return data_lib.Splits(x, y, x[:10], y[:10], x[:10], y[:10], 10, (side, side, 1), "images")


def test_teacher_augmentation_auto_shifts_images_only():
    import dataclasses

    cfg = experiment.RunConfig()
    full, _ = experiment.load_data(cfg)  # MNIST-1D: signals
    images = _image_splits()
    assert experiment.teacher_augmentation(cfg, full) == "none"
    assert experiment.teacher_augmentation(cfg, images) == "shift"
    assert experiment._teacher_augment(cfg, full, 0) is None
    assert experiment._teacher_augment(cfg, images, 0).random_crop_padding == 2  # 28 / 14
    assert experiment._teacher_augment(cfg, _image_splits(side=224), 0).random_crop_padding == 16
    off = dataclasses.replace(cfg, teacher_augmentation="none")
    assert experiment._teacher_augment(off, images, 0) is None
    with pytest.raises(ValueError, match="teacher_augmentation: shift translates images"):
        experiment.teacher_augmentation(dataclasses.replace(cfg, teacher_augmentation="shift"),
                                        full)


def test_teacher_augmentation_is_hashed_only_when_on():
    import dataclasses

    cfg = experiment.RunConfig()
    full, _ = experiment.load_data(cfg)
    off = dataclasses.replace(cfg, teacher_augmentation="none")
    # Off on signals: the names of teachers and runs made before the setting existed.
    assert "teacher_augmentation" not in experiment.teacher_settings(cfg, full)
    assert experiment.teacher_path(cfg, full) == experiment.teacher_path(off, full)
    assert experiment.run_directory(cfg, full) == experiment.run_directory(off, full)
    images = _image_splits()
    on = experiment.teacher_settings(cfg, images)
    assert on["teacher_augmentation"] == "shift"
    assert on != experiment.teacher_settings(off, images)
    assert experiment.run_settings(cfg, images) != experiment.run_settings(off, images)


def test_student_augmentation_shifts_signals_and_images_and_is_hashed_only_when_on():
    import dataclasses

    cfg = experiment.RunConfig()
    full, _ = experiment.load_data(cfg)  # MNIST-1D: signals of length 40
    on = dataclasses.replace(cfg, augmentation="shift")
    assert experiment._student_augment(cfg, full, 0) is None
    aug = experiment._student_augment(on, full, 3)
    assert (aug.random_crop_padding, aug.flip, aug.seed) == (4, False, 3)  # 40 / 10
    assert experiment._student_augment(on, _image_splits(), 0).random_crop_padding == 2
    # Off: the names of runs made before the setting existed; on: a run of its own.
    assert "augmentation" not in experiment.run_settings(cfg, full)
    assert experiment.run_settings(on, full)["augmentation"] == "shift"
    assert experiment.run_directory(on, full) != experiment.run_directory(cfg, full)
    assert experiment.fingerprint(on) != experiment.fingerprint(cfg)
    assert experiment.teacher_path(on, full) == experiment.teacher_path(cfg, full)
    with pytest.raises(ValueError, match="augmentation: --method=sskd.*--augmentation=none"):
        dataclasses.replace(on, method="sskd").validate()
    with pytest.raises(ValueError, match="augmentation"):
        experiment.RunConfig(augmentation="mixup").validate()
    # Checked with the models, before any training: inputs that are neither.
    volumes = dataclasses.replace(_image_splits(), input_shape=(4, 4, 4, 1))
    with pytest.raises(ValueError, match=r"augmentation: shift translates.*--augmentation=none"):
        experiment._student_augment(on, volumes, 0)


def test_student_augmentation_reaches_the_training_batches(monkeypatch, tmp_path):
    """ERM and the distiller both train on shifted views when it is on."""
    import dataclasses

    import numpy as np

    seen = []
    real = experiment._datasets

    def spy(cfg, splits, seed, index=False, augment=None):
        seen.append(augment)
        return real(cfg, splits, seed, index=index, augment=augment)

    monkeypatch.setattr(experiment, "_datasets", spy)
    cfg = experiment.RunConfig(epochs=1, verbose=0, augmentation="shift", teacher="mnist1d_cnn",
                               workdir=str(tmp_path))
    full, _ = experiment.load_data(cfg)
    small = dataclasses.replace(full, x_train=full.x_train[:256], y_train=full.y_train[:256])
    teacher = models.get("mnist1d_cnn", input_shape=full.input_shape, num_classes=10)
    for method in ("none", "kd"):
        seen.clear()
        experiment.train_student(cfg, small, teacher, method, run_dir=None)
        assert seen and all(a is not None and a.random_crop_padding == 4 for a in seen)
    # Same shuffle, each example a zero-padded window of itself, not all unshifted.
    plain = next(iter(real(cfg, small, 0)[0]))[0].numpy()
    shifted = next(iter(real(cfg, small, 0, augment=experiment._student_augment(cfg, small, 0))[0]))
    shifted = shifted[0].numpy()
    offsets = []
    for x, v in zip(plain, shifted):
        padded = np.pad(x, (4, 4))
        offsets.append([d for d in range(9) if np.array_equal(padded[d:d + 40], v)][0])
    assert len(set(offsets)) > 3


def test_teacher_learning_rate_defaults_and_hashing():
    import dataclasses

    d = experiment.with_defaults
    # MNIST: students at 1e-2 (selected on validation), the CNN teacher at 3e-3.
    mnist = d(experiment.RunConfig(dataset="mnist"))
    assert (mnist.learning_rate, mnist.teacher_learning_rate) == (1e-2, 3e-3)
    # A --learning_rate the user gives is the teacher's too unless it has its own.
    given = d(experiment.RunConfig(dataset="mnist", learning_rate=5e-3))
    assert given.teacher_learning_rate == 5e-3
    own = d(experiment.RunConfig(dataset="mnist", learning_rate=5e-3, teacher_learning_rate=1e-3))
    assert (own.learning_rate, own.teacher_learning_rate) == (5e-3, 1e-3)
    assert d(own) == own  # idempotent
    cfg = experiment.RunConfig()
    full, _ = experiment.load_data(cfg)
    assert d(cfg).teacher_learning_rate == d(cfg).learning_rate == 1e-2
    # Equal rates leave the setting out of the run's hash (runs made before it keep
    # their names); a differing one is hashed, and names the teacher's record.
    assert "teacher_learning_rate" not in experiment.run_settings(cfg, full)
    slow = dataclasses.replace(cfg, teacher_learning_rate=1e-3)
    assert experiment.run_settings(slow, full)["teacher_learning_rate"] == 1e-3
    assert experiment.run_directory(slow, full) != experiment.run_directory(cfg, full)
    assert experiment.teacher_settings(slow, full)["learning_rate"] == 1e-3
    assert experiment.teacher_path(slow, full) != experiment.teacher_path(cfg, full)
    assert float(experiment._optimizer(slow, 10, role="teacher").learning_rate) == pytest.approx(1e-3)
    assert float(experiment._optimizer(slow, 10).learning_rate) == pytest.approx(1e-2)


def test_the_teacher_trains_on_shifted_images(tmp_path, monkeypatch):
    from kdtf import data as data_lib

    seen = []
    real = data_lib.make_dataset

    def spy(*args, **kwargs):
        seen.append(kwargs.get("augment"))
        return real(*args, **kwargs)

    monkeypatch.setattr(data_lib, "make_dataset", spy)
    cfg = experiment.RunConfig(dataset="mnist", teacher="mnist_cnn_small", teacher_epochs=1,
                               batch_size=32, workdir=str(tmp_path), verbose=0)
    experiment.train_teacher(cfg, _image_splits(), str(tmp_path / "t.keras"))
    shifts = [a for a in seen if a is not None]
    assert len(shifts) == 1 and shifts[0].random_crop_padding == 2 and not shifts[0].flip
