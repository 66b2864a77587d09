"""Tests for kdtf.export.tflite: conversion, quantization, safety."""
import importlib
import os

import numpy as np
import pytest
import tensorflow as tf

from kdtf import export
from kdtf.export.verify import _interpreter_class

tflite_module = importlib.import_module("kdtf.export.tflite")


@pytest.fixture(scope="module")
def exports(tiny_model, random_data, tmp_path_factory):
    """One verified export per quantization mode (converted once)."""
    x_cal, x_test, y_test = random_data
    directory = tmp_path_factory.mktemp("tflite")
    reports = {}
    for quantization in [None, "dynamic", "float16", "int8"]:
        reports[quantization] = export.tflite(
            tiny_model,
            directory / f"{quantization}.tflite",
            quantization=quantization,
            representative_data=x_cal if quantization == "int8" else None,
            verify_data=x_test,
            verify_labels=y_test,
        )
    return reports


@pytest.mark.parametrize("quantization,name", [
    (None, "float32"), ("dynamic", "dynamic"), ("float16", "float16"),
    ("int8", "int8"),
])
def test_each_quantization_exports_and_verifies(exports, tiny_model,
                                                random_data, quantization,
                                                name):
    report = exports[quantization]
    assert report.quantization == name
    assert os.path.getsize(report.path) == report.size_bytes > 0
    assert report.num_samples == len(random_data[1])
    assert report.latency_ms > 0
    assert report.int8_io is False
    assert 0.0 <= report.accuracy <= 1.0
    assert 0.0 <= report.keras_accuracy <= 1.0
    logits = tiny_model.predict(random_data[1], verbose=0)
    scale = float(np.abs(logits).max())
    tolerance = {"float32": 1e-5, "float16": 1e-2, "dynamic": 0.1,
                 "int8": 0.2}[name]
    assert report.max_abs_error <= tolerance * scale
    min_agreement = {"float32": 1.0, "float16": 0.98, "dynamic": 0.9,
                     "int8": 0.85}[name]
    assert report.top1_agreement >= min_agreement
    # The mode is recoverable from the file itself.
    again = export.verify_tflite(report.path, tiny_model, random_data[1][:8],
                                 num_latency_samples=0)
    assert again.quantization == name
    assert again.latency_ms is None


def test_quantization_shrinks_the_file(exports):
    sizes = {q: r.size_bytes for q, r in exports.items()}
    assert sizes["float16"] < 0.7 * sizes[None]
    assert sizes["dynamic"] < 0.5 * sizes[None]
    assert sizes["int8"] < 0.5 * sizes[None]


def test_int8_uses_only_integer_builtin_ops(exports):
    interpreter = _interpreter_class()(model_path=exports["int8"].path)
    interpreter.allocate_tensors()
    # Float input/output by default, quantized (int8) inside.
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert {"QUANTIZE", "DEQUANTIZE"} <= ops
    signatures = interpreter.get_signature_list()
    assert signatures == {
        "serving_default": {"inputs": ["inputs"], "outputs": ["logits"]}}


def test_int8_io(tiny_model, random_data, tmp_path):
    x_cal, x_test, y_test = random_data
    report = export.tflite(tiny_model, tmp_path / "io.tflite", "int8",
                           representative_data=x_cal, int8_io=True,
                           verify_data=x_test, verify_labels=y_test)
    assert report.int8_io is True
    assert report.quantization == "int8"
    interpreter = _interpreter_class()(model_path=report.path)
    detail = interpreter.get_input_details()[0]
    assert detail["dtype"] == np.int8
    assert detail["quantization"][0] > 0
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    assert report.top1_agreement >= 0.85
    # Outputs are dequantized before comparison, inputs quantized.
    scale = float(np.abs(tiny_model.predict(x_test, verbose=0)).max())
    assert report.max_abs_error <= 0.2 * scale
    assert "int8 I/O" in str(report)


@pytest.mark.parametrize("bad", ["int4", "INT16", "", 8])
def test_bad_quantization_name(tiny_model, tmp_path, bad):
    with pytest.raises(ValueError, match="quantization") as info:
        export.tflite(tiny_model, tmp_path / "m.tflite", quantization=bad)
    for valid in ("'dynamic'", "'float16'", "'int8'", "None"):
        assert valid in str(info.value)
    assert os.listdir(tmp_path) == []


def test_quantization_names_are_case_insensitive():
    assert tflite_module.normalize_quantization("INT8") == "int8"
    assert tflite_module.normalize_quantization("none") == "float32"
    assert tflite_module.normalize_quantization(None) == "float32"


def test_int8_requires_representative_data(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="representative_data"):
        export.tflite(tiny_model, tmp_path / "m.tflite", quantization="int8")
    with pytest.raises(ValueError, match="int8_io"):
        export.tflite(tiny_model, tmp_path / "m.tflite",
                      quantization="float16", int8_io=True)
    assert os.listdir(tmp_path) == []


def test_overwrite_protection(tiny_model, tmp_path, monkeypatch):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"previous export")
    calls = []
    real_convert = tflite_module.convert
    monkeypatch.setattr(tflite_module, "convert",
                        lambda *a, **k: calls.append(1) or real_convert(*a, **k))
    with pytest.raises(FileExistsError, match="overwrite") as info:
        export.tflite(tiny_model, path)
    assert str(path) in str(info.value)
    assert calls == []  # Refused before the (slow) conversion.
    assert path.read_bytes() == b"previous export"

    report = export.tflite(tiny_model, path, overwrite=True)
    assert path.read_bytes()[4:8] == b"TFL3"  # A flatbuffer now.
    assert report.size_bytes == os.path.getsize(path)
    assert not report.verified
    assert "not verified" in str(report)
    assert os.listdir(tmp_path) == ["m.tflite"]


def test_converter_failure_leaves_no_partial_file(tiny_model, tmp_path,
                                                  monkeypatch):
    real_from_saved_model = tf.lite.TFLiteConverter.from_saved_model

    def broken_converter(*args, **kwargs):
        converter = real_from_saved_model(*args, **kwargs)

        def fail():
            raise RuntimeError("converter crashed")

        converter.convert = fail
        return converter

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model",
                        broken_converter)
    with pytest.raises(RuntimeError, match="converter crashed"):
        export.tflite(tiny_model, tmp_path / "m.tflite")
    assert os.listdir(tmp_path) == []

    old = tmp_path / "old.tflite"
    old.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="converter crashed"):
        export.tflite(tiny_model, old, overwrite=True)
    assert old.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["old.tflite"]


def test_write_failure_leaves_no_partial_file(tiny_model, tmp_path,
                                              monkeypatch):
    atomic_module = importlib.import_module("kdtf.atomic")

    def fail(_):
        raise OSError("disk full")

    monkeypatch.setattr(atomic_module, "_fsync_path", fail)
    with pytest.raises(OSError, match="disk full"):
        export.tflite(tiny_model, tmp_path / "m.tflite")
    assert os.listdir(tmp_path) == []


def test_sampler_as_representative_data(tiny_model, random_data, tmp_path):
    x_cal, x_test, _ = random_data
    calls = []

    def sampler(x, seed=None):
        calls.append((x.shape, seed))
        noise = np.random.default_rng(seed).normal(0.0, 0.1, size=x.shape)
        return x + noise

    report = export.tflite(tiny_model, tmp_path / "s.tflite", "int8",
                           representative_data=(sampler, x_cal), seed=7,
                           verify_data=x_test)
    assert calls == [(x_cal.shape, 7)]
    assert report.quantization == "int8"
    assert report.top1_agreement >= 0.85

    # A sampler alone cannot be called without real data to draw from.
    with pytest.raises(ValueError, match=r"\(sampler, x_real\)"):
        export.tflite(tiny_model, tmp_path / "t.tflite", "int8",
                      representative_data=sampler)
    with pytest.raises(ValueError, match="shape"):
        export.tflite(tiny_model, tmp_path / "t.tflite", "int8",
                      representative_data=(lambda x, seed=None: x[:3], x_cal))


def test_representative_data_forms():
    batches_of = tflite_module.representative_batches
    x = np.arange(80, dtype="float64").reshape(2, 40)

    def generator():
        yield x
        yield [x[:1]]
        yield (x, np.zeros(2))
        yield {"inputs": x}

    shapes = [b.shape for b in batches_of(generator, (40,))]
    assert shapes == [(2, 40), (1, 40), (2, 40), (2, 40)]
    assert all(b.dtype == np.float32 for b in batches_of(generator, (40,)))
    assert [b.shape for b in batches_of(iter([x, x]), (40,))] == [(2, 40)] * 2
    assert [b.shape for b in batches_of(list(x), (40,))] == [(1, 40)] * 2
    assert batches_of(tf.constant(x), (40,))[0].shape == (2, 40)
    with pytest.raises(ValueError, match="representative_data"):
        batches_of(np.zeros((4, 39)), (40,))
    with pytest.raises(ValueError, match="no samples"):
        batches_of(np.zeros((0, 40)), (40,))
    with pytest.raises(TypeError, match="representative_data"):
        batches_of(3.0, (40,))


def test_default_thresholds_are_recorded(exports):
    for quantization, report in exports.items():
        name = tflite_module.normalize_quantization(quantization)
        assert report.min_agreement == export.DEFAULT_MIN_AGREEMENT[name]
        assert report.top1_agreement >= report.min_agreement
        assert "required: " in str(report)
    assert export.DEFAULT_MIN_AGREEMENT == {
        "float32": 0.999, "float16": 0.99, "dynamic": 0.99, "int8": 0.97}


def _badly_calibrated(tiny_model, random_data, path, **kwargs):
    """An int8 export calibrated on inputs 30x too large: its agreement falls to ~70%."""
    x_cal, x_test, y_test = random_data
    return export.tflite(tiny_model, path, "int8", representative_data=30 * x_cal,
                         verify_data=x_test, verify_labels=y_test, **kwargs)


def test_verification_failure_raises_and_keeps_the_file_aside(tiny_model, random_data,
                                                              tmp_path):
    path = tmp_path / "student.tflite"
    with pytest.raises(export.VerificationError) as info:
        _badly_calibrated(tiny_model, random_data, path)
    error = info.value
    assert isinstance(error, ValueError)
    message = str(error)
    assert "\n" not in message
    agreement = error.report.top1_agreement
    assert agreement < 0.97
    assert f"{100 * agreement:.2f}%" in message and "97.00%" in message
    assert "min_agreement=" in message and "--min_agreement" in message
    # Nothing under the final name; the failed file beside it, a real flatbuffer.
    assert not path.exists()
    failed = tmp_path / "student.failed.tflite"
    assert error.failed_path == str(failed) == export.failed_path(path)
    assert str(failed) in message
    assert failed.read_bytes()[4:8] == b"TFL3"
    assert sorted(os.listdir(tmp_path)) == ["student.failed.tflite"]
    # The report describes the kept file.
    again = export.verify_tflite(failed, tiny_model, random_data[1], num_latency_samples=0)
    assert again.top1_agreement == agreement

    # With overwrite=True, an earlier good file is left as it was.
    path.write_bytes(b"earlier export")
    with pytest.raises(export.VerificationError):
        _badly_calibrated(tiny_model, random_data, path, overwrite=True)
    assert path.read_bytes() == b"earlier export"
    assert sorted(os.listdir(tmp_path)) == ["student.failed.tflite", "student.tflite"]


def test_min_agreement_zero_disables_and_a_lower_one_passes(tiny_model, random_data, tmp_path):
    report = _badly_calibrated(tiny_model, random_data, tmp_path / "off.tflite", min_agreement=0)
    assert report.top1_agreement < 0.97 and report.min_agreement == 0
    assert (tmp_path / "off.tflite").read_bytes()[4:8] == b"TFL3"
    assert report.path == str(tmp_path / "off.tflite")
    low = report.top1_agreement - 0.05
    report = _badly_calibrated(tiny_model, random_data, tmp_path / "low.tflite", min_agreement=low)
    assert report.min_agreement == low and os.path.isfile(report.path)
    with pytest.raises(export.VerificationError):
        _badly_calibrated(tiny_model, random_data, tmp_path / "high.tflite",
                          min_agreement=report.top1_agreement + 0.01)
    assert not (tmp_path / "high.tflite").exists()


@pytest.mark.parametrize("bad", [1.5, -0.1, "0.9", True, float("nan")])
def test_bad_min_agreement_is_refused_before_conversion(tiny_model, random_data, tmp_path,
                                                        monkeypatch, bad):
    monkeypatch.setattr(tflite_module, "convert", lambda *a, **k: pytest.fail("converted"))
    with pytest.raises(ValueError, match="min_agreement") as info:
        export.tflite(tiny_model, tmp_path / "m.tflite", verify_data=random_data[1],
                      min_agreement=bad)
    assert "--min_agreement" in str(info.value)
    assert os.listdir(tmp_path) == []
