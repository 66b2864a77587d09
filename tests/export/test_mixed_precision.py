"""kdtf.export of students trained under mixed precision: converted from a float32 copy."""
import os

import keras
import numpy as np
import pytest

from kdtf import export
from kdtf.export.verify import _interpreter_class


def _build_under(policy, build):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        return build()
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _mobilenet():
    return keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=10,
                                               classifier_activation=None)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, size=(16, 32, 32, 3)).astype("float32")


def _run_tflite(path, x):
    interpreter = _interpreter_class()(model_path=str(path))
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


# bfloat16 with the slow tests: one MobileNet export per policy costs 15-30 s on 2 cores.
@pytest.mark.parametrize(
    "policy", ["mixed_float16", pytest.param("mixed_bfloat16", marks=pytest.mark.slow)])
def test_mixed_precision_mobilenet_exports(policy, images, tmp_path):
    model = _build_under(policy, _mobilenet)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert model.dtype_policy.name == policy
    copy = export.as_float32(model)
    assert copy is not model and model.dtype_policy.name == policy  # the model is untouched
    assert all(l.dtype_policy.compute_dtype == "float32" for l in copy.layers)
    for a, b in zip(model.weights, copy.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))

    report = export.tflite(model, tmp_path / "student.tflite", verify_data=images, min_agreement=0)
    assert report.quantization == "float32" and os.path.isfile(report.path)
    # The file computes what the float32 copy of the model computes.
    expected = copy.predict(images, verbose=0)
    actual = _run_tflite(report.path, images)
    assert actual.dtype == np.float32 and actual.shape == (16, 10)
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(actual, expected, atol=1e-4 * scale)
    if policy == "mixed_float16":
        int8 = export.tflite(model, tmp_path / "student_int8.tflite", quantization="int8",
                             representative_data=images, verify_data=images, min_agreement=0)
        assert int8.quantization == "int8" and int8.size_bytes < 0.5 * report.size_bytes


def test_float32_models_are_converted_as_they_are(tiny_model):
    assert export.as_float32(tiny_model) is tiny_model


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(10)

    def call(self, x):
        return self.dense(x)


def test_a_mixed_model_that_cannot_be_rebuilt_names_the_fix(tmp_path):
    model = _build_under("mixed_float16", _Subclassed)
    model(np.zeros((1, 40), "float32"))
    with pytest.raises(ValueError, match=r"set_global_policy\('float32'\)") as info:
        export.as_float32(model)
    assert "set_weights" in str(info.value) and "\n" not in str(info.value)
