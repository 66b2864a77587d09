"""Fast checks of studies.calibration on a tiny model and tiny data.

The real study (results/calibration.md) trains students on MNIST-1D and MNIST;
here an untrained 6x6 CNN goes through the same code path (every calibration
source, int8 export, LiteRT verification, markdown table) in seconds. Only the
table's structure is checked, not the numbers.
"""
import keras
import numpy as np
import pytest

from kdtf.data.datasets import Splits
from studies import calibration


def _tiny_splits(shape, n_train=40, n_test=16, num_classes=3):
    rng = np.random.default_rng(0)

    def x(n):
        return rng.uniform(0.0, 1.0, (n, *shape)).astype("float32")

    def y(n):
        return rng.integers(0, num_classes, n).astype("int32")

    return Splits(x_train=x(n_train), y_train=y(n_train), x_val=x(0), y_val=y(0),
                  x_test=x(n_test), y_test=y(n_test), num_classes=num_classes,
                  input_shape=tuple(shape), name="tiny")


def _tiny_cnn(shape, num_classes=3):
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(2, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


def test_applicable_sources():
    keys, skipped = calibration.applicable_sources((40,))
    assert "cutmix" in skipped and "cutmix" not in keys
    assert "gmm_full" in keys
    keys, skipped = calibration.applicable_sources((28, 28, 1), max_full_dim=100)
    assert "cutmix" in keys and "gmm_full" in skipped
    keys, skipped = calibration.applicable_sources((6, 6, 1))
    assert keys == [k for k, _ in calibration.SOURCES] and not skipped


@pytest.mark.parametrize("shape", [(12,), (6, 6, 1)])
def test_calibration_inputs_shapes(shape):
    x_real = calibration.real_subset(_tiny_splits(shape).x_train, 10, seed=1)
    assert x_real.shape == (10, *shape)
    keys, _ = calibration.applicable_sources(shape)
    for key in keys:
        x_cal = calibration.calibration_inputs(key, x_real, seed=1, data_range=(0.0, 1.0))
        assert x_cal.shape == x_real.shape, key
        assert x_cal.dtype == np.float32 and np.all(np.isfinite(x_cal)), key


def test_short_error_drops_locations():
    error = ('ConverterError: <unknown>:0: error: loc(callsite(fused["A:", "b@f"] at '
             'fused["C", "d"])): \'tfl.fully_connected\' op operand #0 must be float')
    short = calibration.short_error(error)
    assert "loc(" not in short and "fused" not in short
    assert short.startswith("ConverterError") and "tfl.fully_connected" in short


@pytest.mark.slow  # a tiny study (~17 s); results/calibration.md's own command reruns it
def test_calibration_table_has_every_source(tmp_path):
    shape = (6, 6, 1)
    splits = _tiny_splits(shape)
    model = _tiny_cnn(shape)
    res = calibration.run_calibration(model, splits, seeds=(0,), num_samples=8,
                                      outdir=str(tmp_path), log=lambda m: None)
    assert res["sources"] == [k for k, _ in calibration.SOURCES]
    assert {r["source"] for r in res["rows"]} == set(res["sources"])
    for row in res["rows"]:
        for field in ("top1_agreement", "accuracy", "max_abs_error", "mean_abs_error"):
            assert np.isfinite(row[field]), (row["source"], field)
    res.update(setting={"student": "tiny_cnn", "epochs": 0}, params=model.count_params(),
               test_size=len(splits.x_test), seconds=1.0)
    text = calibration.to_markdown({"machine": "test", "calibration": {"tiny": res}},
                                   "python -m studies.calibration", 1.0)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    for _, label in calibration.SOURCES:
        assert any(line.startswith(f"| {label} |") for line in table), label
    assert any("float32 TFLite" in line for line in table)
