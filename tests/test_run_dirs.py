"""Run directories of pipeline.experiment: nothing a run wrote is replaced silently.

Each test runs `experiment.run` in-process on a tiny `.npz` dataset (1 epoch),
so the fingerprints, the teacher records and the refusals are checked without
the apps' start-up cost (tests/apps/test_own_models_app.py covers the app).
"""
import json
import os

import numpy as np
import pytest

from pipeline import experiment


def _write_data(path, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(120) % 3
    x = rng.normal(size=(120, 40)).astype(np.float32) + y[:, None]
    np.savez(path, x_train=x[:90], y_train=y[:90], x_test=x[90:], y_test=y[90:])


@pytest.fixture
def cfg(tmp_path):
    _write_data(tmp_path / "d.npz")
    return experiment.RunConfig(
        dataset=f"npz:{tmp_path / 'd.npz'}", method="kd", epochs=1, teacher_epochs=1, batch_size=32,
        workdir=str(tmp_path / "w"), compare_erm=False, export="", verbose=0,
    )


def _forbid_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("trained before the check")

    monkeypatch.setattr(experiment, "train_teacher", fail)
    monkeypatch.setattr(experiment, "train_student", fail)


def _teachers(cfg):
    return sorted(f for f in os.listdir(os.path.join(cfg.workdir, "teachers")) if f.endswith(".keras"))


def test_run_writes_into_its_own_directory_and_prints_it(cfg, capsys):
    result = experiment.run(cfg)
    run_dir = result["files"]["run_dir"]
    assert f"[kdtf] run directory: {run_dir}" in capsys.readouterr().err
    assert os.path.basename(run_dir).startswith("kd_mnist1d_mlp_")
    assert result["results_file"] == os.path.join(run_dir, "results.json")
    assert result["files"]["students"] == {"kd": os.path.join(run_dir, "students", "kd.keras")}
    settings = json.load(open(os.path.join(run_dir, "run.json")))
    assert settings["data_fingerprint"] == experiment.load_data(cfg)[0].fingerprint()


def test_second_run_with_other_epochs_does_not_overwrite_the_first(cfg):
    first = experiment.run(cfg)
    student = first["files"]["students"]["kd"]
    before = open(student, "rb").read(), open(first["results_file"], "rb").read()
    second = experiment.run(experiment.dataclasses.replace(cfg, epochs=2))
    assert second["files"]["run_dir"] != first["files"]["run_dir"]
    assert (open(student, "rb").read(), open(first["results_file"], "rb").read()) == before
    assert len(second["students"]["kd"]["history"]["loss"]) == 2


def test_a_finished_run_is_refused_before_training_unless_overwrite(cfg, monkeypatch):
    first = experiment.run(cfg)
    with monkeypatch.context() as m:
        _forbid_training(m)
        with pytest.raises(FileExistsError, match="finished run.*--overwrite"):
            experiment.run(cfg)
    stamp = os.path.getmtime(first["results_file"])
    again = experiment.run(experiment.dataclasses.replace(cfg, overwrite=True))
    assert again["results_file"] == first["results_file"]
    assert os.path.getmtime(first["results_file"]) > stamp


def test_an_interrupted_run_reuses_its_finished_students(cfg, monkeypatch, capsys):
    first = experiment.run(cfg)
    os.remove(first["results_file"])  # as if killed after the student was saved
    monkeypatch.setattr(experiment, "train_student", None)  # must not be called
    again = experiment.run(cfg)
    assert "reusing the finished 'kd' student" in capsys.readouterr().err
    assert again["students"]["kd"]["accuracy"] == first["students"]["kd"]["accuracy"]
    assert again["students"]["kd"]["history"] == first["students"]["kd"]["history"]


def test_same_name_other_data_retrains_the_teacher(cfg, tmp_path, capsys):
    first = experiment.run(cfg)
    _write_data(tmp_path / "d.npz", seed=1)  # the same file name and shapes, other data
    capsys.readouterr()
    second = experiment.run(cfg)
    err = capsys.readouterr().err
    assert "reusing teacher" not in err and "training teacher" in err
    assert len(_teachers(cfg)) == 2
    assert second["files"]["teacher"] != first["files"]["teacher"]
    assert second["files"]["run_dir"] != first["files"]["run_dir"]
    assert os.path.exists(first["results_file"])


def test_a_cached_teacher_with_another_record_is_refused(cfg, monkeypatch, capsys):
    first = experiment.run(cfg)
    record = experiment.teacher_record_path(first["files"]["teacher"])
    settings = json.load(open(record))
    json.dump({**settings, "data_fingerprint": "0" * 12}, open(record, "w"))
    other = experiment.dataclasses.replace(cfg, epochs=2)
    with monkeypatch.context() as m:
        _forbid_training(m)
        with pytest.raises(ValueError, match="settings record that does not match.*--overwrite"):
            experiment.run(other)
        os.remove(record)
        with pytest.raises(ValueError, match="no settings record.*--overwrite"):
            experiment.run(other)
    capsys.readouterr()
    experiment.run(experiment.dataclasses.replace(other, overwrite=True))
    assert "training teacher" in capsys.readouterr().err
    assert json.load(open(record)) == settings  # retrained on this data, record rewritten


def test_a_teacher_file_trained_on_other_data_is_refused(cfg, tmp_path, monkeypatch):
    full, _ = experiment.load_data(cfg)
    path = str(tmp_path / "t.keras")
    experiment.train_teacher(experiment.dataclasses.replace(cfg, workdir=str(tmp_path / "t")), full,
                             path)
    assert os.path.exists(experiment.teacher_record_path(path))
    _write_data(tmp_path / "d.npz", seed=1)
    _forbid_training(monkeypatch)
    with pytest.raises(ValueError, match="trained on other data"):
        experiment.run(experiment.dataclasses.replace(cfg, teacher=path))


def test_explicit_export_that_exists_is_refused_before_training(cfg, tmp_path, monkeypatch):
    target = tmp_path / "s.tflite"
    target.write_bytes(b"the user's file")
    _forbid_training(monkeypatch)
    with pytest.raises(FileExistsError, match="export: .*--overwrite"):
        experiment.run(experiment.dataclasses.replace(cfg, export=str(target)))
    assert target.read_bytes() == b"the user's file"
    assert not os.path.exists(cfg.workdir)


def test_default_export_goes_into_the_run_directory(cfg):
    result = experiment.run(experiment.dataclasses.replace(cfg, export="auto"))
    assert result["files"]["export"] == os.path.join(result["files"]["run_dir"], "student.tflite")
    assert os.path.getsize(result["files"]["export"]) > 0


@pytest.mark.parametrize("method,stages", [("fitnets", ""), ("sskd", ""), ("sskd", "stage1:bogus")])
def test_stage_problems_fail_before_any_training(cfg, monkeypatch, method, stages):
    _forbid_training(monkeypatch)
    with pytest.raises(ValueError, match=r"^stages: .*(stage1|stage2)"):
        experiment.run(experiment.dataclasses.replace(cfg, method=method, stages=stages))


def test_a_student_that_does_not_fit_the_data_fails_before_training(cfg, tmp_path, monkeypatch):
    import keras

    inputs = keras.Input((40,))
    student = keras.Model(inputs, keras.layers.Dense(5)(inputs))  # 5 outputs, 3 classes
    student.save(tmp_path / "s.keras")
    _forbid_training(monkeypatch)
    with pytest.raises(ValueError, match="student: .* 5 outputs .* 3 classes"):
        experiment.run(experiment.dataclasses.replace(cfg, student=str(tmp_path / "s.keras")))


def test_study_checks_every_method_before_running_any(cfg, monkeypatch):
    _forbid_training(monkeypatch)
    with pytest.raises(ValueError, match="^stages: --method=fitnets"):
        experiment.study(cfg, ["none", "kd", "fitnets"], [0, 1])


def test_min_agreement_reaches_the_export_and_a_failed_export_can_be_rerun(cfg, monkeypatch):
    from kdtf import export

    seen = []

    def failing_tflite(model, path, **kwargs):
        seen.append(kwargs["min_agreement"])
        raise export.VerificationError("agreement 50.0% is below min_agreement 99.0%")

    with monkeypatch.context() as m:
        m.setattr(export, "tflite", failing_tflite)
        with pytest.raises(export.VerificationError):
            experiment.run(experiment.dataclasses.replace(cfg, export="auto", min_agreement=0.99))
    assert seen == [0.99]
    run_dir = experiment.run_directory(cfg, experiment.load_data(cfg)[0])
    assert not os.path.exists(os.path.join(run_dir, "results.json"))
    # min_agreement does not name the run: the rerun reuses the trained student.
    monkeypatch.setattr(experiment, "train_student", None)
    result = experiment.run(experiment.dataclasses.replace(cfg, export="auto", min_agreement=0.5))
    assert result["files"]["run_dir"] == run_dir and result["export"]["top1_agreement"] >= 0.5
