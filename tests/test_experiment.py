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
