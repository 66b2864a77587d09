"""kdtf.callbacks.MemoryLogger and the soak study's report (the 30-minute run itself is not in CI)."""
import keras
import numpy as np
import pytest

from kdtf import callbacks
from studies import soak


def test_memory_logger_records_rss_every_epoch():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    mem = callbacks.MemoryLogger()
    model.fit(np.zeros((8, 3), "float32"), np.zeros((8, 2), "float32"), epochs=3, verbose=0,
              callbacks=[mem])
    assert [r[0] for r in mem.history] == [0, 1, 2]
    assert all(r[2] > 10 for r in mem.history)  # MiB: a Python process with TF is far above


def test_growth_is_measured_after_warmup():
    rows = [(0, 0.0, 500.0), (1, 1.0, 1000.0), (2, 2.0, 1010.0), (3, 3.0, 1100.0)]
    assert callbacks.MemoryLogger.growth(rows, warmup=2) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="warmup"):
        callbacks.MemoryLogger.growth(rows[:2], warmup=2)


def test_report_flags_a_leak():
    res = {"minutes": 30.0, "epochs": 11, "fit_calls": 2, "warmup_epochs": 1,
           "rss_mib": [1000.0 + 10 * i for i in range(11)], "rss_min": 1000.0, "rss_max": 1100.0,
           "growth": 0.10, "val_accuracy": [0.5, 0.6], "steps_per_epoch": 29}
    assert "FAILS" in soak.to_markdown(res, "cmd")
    res["growth"] = 0.01
    assert "passes" in soak.to_markdown(res, "cmd")


def test_slope_is_least_squares_kib_per_epoch():
    assert soak._slope_kib([100.0, 101.0, 102.0, 103.0]) == pytest.approx(1024.0)
    assert soak._slope_kib([100.0, 100.5, 100.0, 100.5]) == pytest.approx(0.1 * 1024)
    assert soak._slope_kib([5.0]) == 0.0
