"""Fast checks of studies.methods: its whole machinery on a tiny budget.

The real study (results/methods.md) runs every method on two pairs for tens
of epochs; here MNIST-1D with a 1-epoch teacher, ERM and KD at 1 and 2
epochs, each method's default only and seed 0 go through the same code
(budget check, selection, evaluation, run cache, time limit, markdown).
Only the structure is checked, not the numbers.
"""
import json
import os

import pytest

from studies import methods


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("methods_study"))


def _argv(workdir, *extra, rows="none,kd"):
    return ["--pairs=mnist1d", f"--rows={rows}", "--seeds=0", "--epochs=1", "--max_epochs=2",
            "--teacher_epochs=1", "--grid=default", f"--workdir={workdir}",
            f"--output={os.path.join(workdir, 'methods.md')}", *extra]


@pytest.fixture(scope="module")
def first_run(workdir):
    """The tiny study, run once per process: the tests below that need its run
    cache depend on this, not on running after the first test (pytest-xdist
    may give them another worker)."""
    logs = []
    results = methods.main(_argv(workdir), log=logs.append)
    return results, logs, open(os.path.join(workdir, "methods.md")).read()


def test_tiny_study_writes_the_tables(workdir, first_run):
    results, logs, text = first_run
    for row in ("| teacher |", "| student, ERM (labels only) |", "| student, KD |",
                "Budget check", "| 1 -> 2 |", "Appendix: selection",
                "Produced by `python -m studies.methods --pairs=mnist1d"):
        assert row in text, row
    assert "DIST" not in text.split("## Appendix")[0]  # only the rows asked for
    assert "Student budget: **" in text
    res = results[0]
    assert res["epochs"] in (1, 2) and set(res["evaluation"]) == {"none", "kd"}
    assert len(res["evaluation"]["kd"]) == 1
    # 4 budget runs (ERM, KD at 1 and 2 epochs); selection and seed 0 reuse them.
    assert sum(" e1 s0:" in m or " e2 s0:" in m for m in logs) == 4
    saved = json.load(open(os.path.join(workdir, "methods.json")))  # beside the markdown
    assert saved[0]["selected"]["kd"] == "temperature=4"
    assert "history" not in saved[0]["evaluation"]["kd"][0]  # kept in the run cache only
    assert saved[0]["evaluation"]["kd"][0]["val_curve"]


def test_rerun_reuses_the_cache(workdir, first_run):
    logs = []
    methods.main(_argv(workdir), log=logs.append)
    assert not logs  # every run came from <workdir>/methods_study/


def test_time_limit_writes_what_finished(workdir, first_run):
    logs = []
    methods.main(_argv(workdir, "--max_minutes=1e-9", rows="none,kd,dist"), log=logs.append)
    text = open(os.path.join(workdir, "methods.md")).read()
    assert "Stopped early" in text
    assert "| student, KD |" in text and "| student, DIST |" in text
    dist_row = next(line for line in text.splitlines() if line.startswith("| student, DIST |"))
    assert "not run" in dist_row


def test_max_epochs_below_the_first_check_is_a_flag_error(capsys):
    with pytest.raises(SystemExit):
        methods.parse_args(["--pairs=mnist", "--epochs=10", "--max_epochs=15"])
    assert "--max_epochs must be at least 2 x the first budget (20 for mnist" in capsys.readouterr().err
    # The pair's own first budget (PAIR_EPOCHS) when --epochs is left at 0.
    with pytest.raises(SystemExit):
        methods.parse_args(["--pairs=mnist1d", f"--max_epochs={methods.PAIR_EPOCHS['mnist1d']}"])
    assert methods.parse_args(["--pairs=mnist", "--epochs=10", "--max_epochs=20"]).max_epochs == 20


def test_grid_defaults_come_first():
    for pair in methods.PAIRS:
        full, default = methods.grid(pair), methods.grid(pair, "default")
        assert set(full) == set(methods.ROW_KEYS)
        assert all(default[row] == full[row][:1] for row in full)
    assert methods.grid("mnist1d")["kd"][0].label() == "temperature=4"
    with pytest.raises(ValueError):
        methods.grid("mnist1d", "huge")
