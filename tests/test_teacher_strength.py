"""studies.teacher_strength on a tiny budget: three teachers, KD and DIST, ERM once, the tables."""
import json
import os

import numpy as np
import pytest

from studies import teacher_strength


def _fake(teacher, params, kd, dist):
    row = lambda test: {"test": test, "agreement": [None] * len(test), "seconds": 1.0,  # noqa: E731
                        "curve": [0.5, 0.6, 0.7, 0.8]}
    return {"teacher": teacher, "pair": teacher, "test": 0.9, "val": 0.9, "params": params,
            "rows": {"kd_t4": row(kd), "kd_t1": row(kd), "dist": row(dist)}}


def test_margins_are_paired_per_seed_differences():
    res = {"erm": {"test": [0.90, 0.80], "seconds": 1.0},
           "teachers": [_fake("a", 10, [0.91, 0.83], [0.93, 0.84])]}
    args = teacher_strength.parse_args(["--seeds=0,1", "--epochs=4"])
    text = teacher_strength.to_markdown(res, args, "cmd", 60.0)
    row = next(line for line in text.splitlines() if line.startswith("| `a` |"))
    d = np.array([0.93, 0.84]) - np.array([0.91, 0.83])
    assert f"{d.mean():+.4f} ± {np.std(d, ddof=1):.4f}" in row  # DIST - KD
    assert "+0.0200 ± 0.0141" in row  # KD - ERM: 0.01 and 0.03
    assert "Produced by `cmd`" in text


def test_bad_flags_name_the_flag(capsys):
    with pytest.raises(SystemExit):
        teacher_strength.parse_args(["--seeds=a"])
    assert "--seeds" in capsys.readouterr().err


@pytest.mark.slow  # 3 one-epoch teachers and 11 one-epoch students: ~40 s on 2 cores
def test_tiny_study_trains_three_teachers_and_writes_the_table(tmp_path):
    out = str(tmp_path / "ts.md")
    res = teacher_strength.main(["--seeds=0,1", "--epochs=1", "--teacher_epochs=1",
                                 f"--workdir={tmp_path}", f"--output={out}"], log=lambda m: None)
    assert [t["teacher"] for t in res["teachers"]] == [
        "mnist1d_cnn_small", "mnist1d_cnn", "mnist1d_cnn_wide"]
    assert [t["params"] for t in res["teachers"]] == sorted(t["params"] for t in res["teachers"])
    for t in res["teachers"]:
        assert [len(t["rows"][k]["test"]) for k in ("kd_t4", "kd_t1", "dist")] == [2, 2, 2]
    assert len(res["erm"]["test"]) == 2
    text = open(out).read()
    assert text.count("\n| `mnist1d_cnn") == 6  # two tables, three teachers each
    assert set(json.load(open(os.path.join(tmp_path, "ts.json")))) == {"teachers", "erm"}
