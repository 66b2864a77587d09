"""Fuzz: the apps given random invalid flag values exit 1 or 2 with one line."""
import random
import re

import pytest

import app_runner

APPS = ("distill.py", "train_teacher.py", "evaluate.py", "export.py", "study.py",
        "regression_demo.py")
# Flags where any string is a valid value (paths of outputs): a fuzzed value
# would start a real run, so they are left out.
ANY_STRING = {"workdir", "output", "export"}
BAD_VALUES = ["", "nan", "-inf", "1e999", "-1", "0", "abc", "3.5.1", "🙂", "--", "x" * 300,
              "/nonexistent/dir/file.keras", "1,2,,3", "None", "true false", "-0.0001"]


def _flags(app):
    out = app_runner.run(app, "--help", timeout=120).stdout
    names = sorted(set(re.findall(r"^\s+--(?:\[no\])?([a-z_0-9]+)", out, re.M)))
    return [n for n in names if n not in ANY_STRING]


def _cases(n=24, seed=0):
    rng = random.Random(seed)
    flags = {}  # each app's --help (an app start) only when a case needs it
    cases = []
    while len(cases) < n:
        app = rng.choice(APPS)
        if app not in flags:
            flags[app] = _flags(app)
        flag, value = rng.choice(flags[app]), rng.choice(BAD_VALUES)
        cases.append((app, flag, value))
    return cases


def test_random_invalid_flags_never_give_a_traceback(tmp_path):
    # 4 cases in the fast suite (each starts an app: ~8 s on 2 cores); the slow test
    # below tries 48 more.
    _check(_cases(n=4), tmp_path)


@pytest.mark.slow
def test_many_more_random_invalid_flags_never_give_a_traceback(tmp_path):
    _check(_cases(n=48, seed=1), tmp_path)


def _check(cases, tmp_path):
    failures = []
    for app, flag, value in cases:
        # A second bad flag keeps a value that happens to be valid from
        # starting a real run (--epochs=0, or a missing model file).
        if app in ("evaluate.py", "export.py"):
            guard = [] if flag == "model" else ["--model=/nonexistent/m.keras"]
        else:
            guard = [] if flag == "epochs" else ["--epochs=0"]
        extra = [f"--workdir={tmp_path}"] if app in ("distill.py", "train_teacher.py", "study.py") else []
        proc = app_runner.run(app, f"--{flag}={value}", *guard, *extra, check=False, timeout=180)
        lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
        if (proc.returncode not in (1, 2) or "Traceback" in proc.stderr or len(lines) != 1
                or "Unknown command line flag" in proc.stderr):
            failures.append((app, flag, value, proc.returncode, proc.stderr[-800:]))
    assert not failures, failures
