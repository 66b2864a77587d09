"""Reliability of apps/distill.py: bit-identical reruns, resume after SIGKILL."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import app_runner
from app_runner import ENV

APP = app_runner.app_path("distill.py")


def _weights(path):
    import keras

    import kdtf

    kdtf.register_all()
    return [np.asarray(w) for w in keras.saving.load_model(path, compile=False).weights]


def _distill(workdir, *flags):
    return app_runner.run("distill.py", f"--workdir={workdir}", "--verbose=0", "--export=",
                          "--nocompare_erm", *flags)


@pytest.mark.slow  # two app runs (~35 s); in one process: tests/test_distiller.py's
# test_fit_on_a_dataset_keeps_one_iterator_and_stays_reproducible
def test_same_seed_gives_bit_identical_students(tmp_path):
    flags = ("--method=extracurricular", "--sampler=mixup", "--epochs=2", "--teacher_epochs=1",
             "--seed=3")
    runs = []
    for name in ("a", "b"):
        out = _distill(tmp_path / name, *flags)
        result = json.load(open(out.stdout.strip().splitlines()[-1].split("results: ")[1]))
        runs.append(_weights(result["files"]["students"]["extracurricular"]))
    assert len(runs[0]) == len(runs[1]) > 0
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_sigkill_mid_epoch_then_rerun_resumes(tmp_path):
    work = tmp_path / "w"
    flags = [f"--workdir={work}", "--verbose=1", "--export=", "--nocompare_erm",
             "--method=kd", "--epochs=15", "--teacher_epochs=1", "--batch_size=32"]
    _distill(work, "--method=none", "--epochs=1", "--teacher_epochs=1")  # teacher cached
    proc = subprocess.Popen([sys.executable, APP, *flags], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill once a backup of at least one finished epoch exists, mid-epoch.
    deadline = time.time() + 300
    pointer = None
    while time.time() < deadline and pointer is None and proc.poll() is None:
        for root, _, files in os.walk(work):
            if "latest" in files and "backup" in root and "student_kd" in root:
                pointer = os.path.join(root, "latest")
        time.sleep(0.2)
    assert pointer is not None and proc.poll() is None, "no backup before the run ended"
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    backup_dir = os.path.dirname(pointer)
    epoch_done = int(open(pointer).read().strip().split("-")[1])
    assert 1 <= epoch_done < 15
    run_dir = os.path.dirname(os.path.dirname(backup_dir))
    assert not os.path.exists(os.path.join(run_dir, "students", "kd.keras"))
    assert not os.path.exists(os.path.join(run_dir, "results.json"))
    # The same command resumes from the backup and finishes the planned epochs.
    out = app_runner.run("distill.py", *flags)
    assert "resuming from" in out.stderr
    result = json.load(open(out.stdout.strip().splitlines()[-1].split("results: ")[1]))
    history = result["students"]["kd"]["history"]["loss"]
    assert len(history) == 15 - epoch_done
    assert result["files"]["run_dir"] == run_dir
    assert result["students"]["kd"]["accuracy"] > 0.3
    assert not os.path.exists(backup_dir)  # cleaned up after a normal end
