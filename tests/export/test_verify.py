"""Tests for kdtf.export.verify: ExportReport and verify_tflite."""
import json

import keras
import numpy as np
import pytest

from kdtf import export
from kdtf.export import verify


@pytest.fixture(scope="module")
def float_export(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("verify") / "float.tflite"
    export.tflite(tiny_model, path)
    return str(path)


def test_accuracy_and_agreement_are_computed_correctly(
        float_export, tiny_model, random_data):
    x = random_data[1]
    keras_pred = np.argmax(tiny_model.predict(x, verbose=0), axis=-1)
    labels = keras_pred.copy()
    labels[:32] = (labels[:32] + 1) % 10  # 32 of 128 labels made wrong.
    report = export.verify_tflite(float_export, tiny_model, x, labels,
                                  batch_size=50)
    assert report.num_samples == 128
    assert report.top1_agreement == 1.0
    assert report.keras_accuracy == pytest.approx(96 / 128)
    assert report.accuracy == pytest.approx(96 / 128)
    assert report.max_abs_error < 1e-4
    assert report.quantization == "float32"
    # One-hot labels give the same result.
    one_hot = keras.utils.to_categorical(labels, 10)
    again = export.verify_tflite(float_export, tiny_model, x, one_hot,
                                 num_latency_samples=0)
    assert again.accuracy == report.accuracy


def test_report_str_and_dict(float_export, tiny_model, random_data):
    report = export.verify_tflite(float_export, tiny_model, random_data[1],
                                  random_data[2], quantization="float32")
    text = str(report)
    for part in (float_export, "float32", "agreement", "100.00%",
                 "accuracy", "latency", "ms", "KiB"):
        assert part in text
    as_dict = report.to_dict()
    json.dumps(as_dict)
    assert set(as_dict) == {
        "path", "quantization", "size_bytes", "int8_io", "num_samples",
        "top1_agreement", "max_abs_error", "accuracy", "keras_accuracy",
        "latency_ms", "min_agreement"}
    assert as_dict["size_bytes"] == report.size_bytes
    unverified = verify.ExportReport(path="/x.tflite", quantization="int8",
                                     size_bytes=2048)
    assert not unverified.verified
    assert "not verified" in str(unverified) and "2.0 KiB" in str(unverified)


def test_bad_inputs(float_export, tiny_model, random_data, tmp_path):
    x = random_data[1]
    with pytest.raises(ValueError, match="one label per sample"):
        export.verify_tflite(float_export, tiny_model, x, np.zeros(3))
    with pytest.raises(ValueError, match="expects"):
        export.verify_tflite(float_export, tiny_model, np.zeros((4, 39)))
    with pytest.raises(ValueError, match="non-empty"):
        export.verify_tflite(float_export, tiny_model, np.zeros((0, 40)))
    with pytest.raises(ValueError, match="batch_size"):
        export.verify_tflite(float_export, tiny_model, x, batch_size=0)
    with pytest.raises(FileNotFoundError, match="path"):
        export.verify_tflite(tmp_path / "missing.tflite", tiny_model, x)


def test_quantize_dequantize_round_trip():
    detail = {"dtype": np.int8, "quantization": (0.5, -3)}
    x = np.array([-100.0, -1.0, 0.0, 0.74, 10.0, 100.0], dtype=np.float32)
    q = verify._quantize(x, detail)
    assert q.dtype == np.int8
    np.testing.assert_array_equal(q, [-128, -5, -3, -2, 17, 127])
    np.testing.assert_allclose(verify._dequantize(q, detail),
                               [-62.5, -1.0, 0.0, 0.5, 10.0, 65.0])


@pytest.fixture(scope="module")
def mnist1d_student():
    """A Conv1D student trained 10 epochs on MNIST-1D (~90% test accuracy)."""
    from kdtf import data

    splits = data.load("mnist1d")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((40,)),
        keras.layers.Reshape((40, 1)),
        keras.layers.Conv1D(32, 5, strides=2, padding="same",
                            activation="relu"),
        keras.layers.Conv1D(32, 3, strides=2, padding="same",
                            activation="relu"),
        keras.layers.Conv1D(32, 3, strides=2, padding="same",
                            activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    # Label smoothing keeps logits in a range int8 can represent finely.
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.CategoricalCrossentropy(from_logits=True,
                                             label_smoothing=0.1),
    )
    x_train = np.asarray(splits.x_train, dtype=np.float32)
    model.fit(x_train, keras.utils.to_categorical(splits.y_train, 10),
              epochs=10, batch_size=64, verbose=0)
    return model, splits


def test_int8_agrees_with_keras_on_mnist1d(mnist1d_student, tmp_path):
    model, splits = mnist1d_student
    x_test = np.asarray(splits.x_test, dtype=np.float32)
    report = export.tflite(
        model, tmp_path / "student_int8.tflite", quantization="int8",
        representative_data=np.asarray(splits.x_train[:200], np.float32),
        verify_data=x_test, verify_labels=splits.y_test)
    print(report)
    assert report.num_samples == len(x_test) == 1000
    assert report.keras_accuracy > 0.8  # The model learned something.
    assert report.top1_agreement >= 0.99
    assert abs(report.accuracy - report.keras_accuracy) <= 0.02


def test_verification_runs_with_litert_without_deprecation_warnings(float_export, tiny_model,
                                                                   random_data, recwarn):
    """ai-edge-litert is installed with kdtf: no fallback to the deprecated tf.lite.Interpreter."""
    assert verify._interpreter_class().__module__.startswith("ai_edge_litert")
    export.verify_tflite(float_export, tiny_model, random_data[1][:8], num_latency_samples=2)
    messages = [str(w.message) for w in recwarn]
    assert not [m for m in messages if "deprecat" in m.lower() or "tf.lite" in m], messages
