"""studies.sskd: its rows, the verdict's paired comparisons, the table and a tiny end-to-end run."""
import json
import os

import pytest

from studies import sskd


def test_rows_cover_erm_kd_three_fitnets_weights_sskd_and_its_control():
    keys = [k for k, _, _ in sskd.rows("mnist1d", 30)]
    assert keys == ["erm", "kd", "fitnets_0.1", "fitnets_1", "fitnets_10", "sskd", "sskd_control"]
    by = {k: c for k, _, c in sskd.rows("mnist1d", 30)}
    assert by["sskd"].settings()["stage_epochs"] == 30
    assert by["sskd_control"].settings()["stage_epochs"] == 0  # no backbone phases
    assert by["kd"].settings()["temperature"] == 1.0
    assert {k: c for k, _, c in sskd.rows("mnist", 10)}["kd"].settings()["temperature"] == 4.0


def _entry(accs):
    rows = [{"key": k, "label": k, "test": a, "agreement": a, "seconds": 1.0,
             "history": {"stage1/loss": [4.0, 2.0, 1.0, 1.0], "head/val_accuracy": [0.5] * 4}}
            for k, a in accs.items()]
    return {"pair": "p", "teacher": "t", "student": "s", "epochs": 4, "stage_epochs": 4,
            "teacher_metrics": {"test": 0.9, "val": 0.9, "params": 10}, "rows": rows}


def test_verdict_compares_paired_differences_to_two_standard_errors():
    entry = _entry({"erm": [0.80, 0.81, 0.82], "kd": [0.85, 0.86, 0.87],
                    "fitnets_0.1": [0.70, 0.70, 0.71], "fitnets_1": [0.84, 0.84, 0.86],
                    "fitnets_10": [0.50, 0.50, 0.50], "sskd": [0.84, 0.85, 0.86],
                    "sskd_control": [0.84, 0.86, 0.85]})
    text = sskd.verdict(entry)
    assert "above ERM (+0.0400 ± 0.0000)" in text
    assert "below kd (-0.0100 ± 0.0000)" in text
    assert "level with fitnets_1" in text  # the best FitNets weight is the one compared
    assert "level with its control without backbone phases (+0.0000 ± 0.0100)" in text


def test_markdown_shows_each_phase_loss_curve():
    entry = _entry({k: [0.5, 0.6] for k in ("erm", "kd", "fitnets_0.1", "fitnets_1",
                                             "fitnets_10", "sskd", "sskd_control")})
    args = sskd.parse_args(["--seeds=0,1"])
    text = sskd.to_markdown([entry], args, "cmd", 60.0)
    assert "| stage1 | 4 / 2 / 1 / 1 |" in text and "**Verdict.**" in text


def test_bad_flags_name_the_flag(capsys):
    for argv, flag in ((["--pairs=bogus"], "--pairs"), (["--stage_epochs=0"], "--stage_epochs")):
        with pytest.raises(SystemExit):
            sskd.parse_args(argv)
        assert flag in capsys.readouterr().err


@pytest.mark.slow  # a one-epoch teacher and 14 one-epoch students: ~40 s on 2 cores
def test_tiny_study_end_to_end(tmp_path):
    out = str(tmp_path / "sskd.md")
    results = sskd.main(["--pairs=mnist1d", "--seeds=0,1", "--epochs=1", "--stage_epochs=1",
                         "--teacher_epochs=1", f"--workdir={tmp_path}", f"--output={out}"],
                        log=lambda m: None)
    assert [r["key"] for r in results[0]["rows"]][-2:] == ["sskd", "sskd_control"]
    text = open(out).read()
    assert "| stage3 |" in text and "**Verdict.**" in text
    assert json.load(open(os.path.join(tmp_path, "sskd.json")))[0]["pair"] == "mnist1d"
