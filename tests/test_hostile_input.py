"""Hostile input: damaged or unsafe model files, bad data, mismatched models."""
import os

import keras
import numpy as np
import pytest

import kdtf
from pipeline import experiment


def _tiny(inputs=4, outputs=3):
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(outputs)])


def _saved(tmp_path, model, name="m.keras"):
    path = str(tmp_path / name)
    model.save(path)
    return path


def test_truncated_and_garbage_keras_files(tmp_path):
    path = _saved(tmp_path, _tiny())
    data = open(path, "rb").read()
    truncated = str(tmp_path / "truncated.keras")
    open(truncated, "wb").write(data[: len(data) // 2])
    garbage = str(tmp_path / "garbage.keras")
    open(garbage, "wb").write(os.urandom(2048))
    for bad in (truncated, garbage):
        # Named as corrupt, never as "File not found" (Keras's own message for them).
        with pytest.raises(ValueError, match=r"teacher: .*(not a \.keras file|could not load)") as e:
            experiment.load_model(bad, "teacher")
        assert "not found" not in str(e.value).lower()
    with pytest.raises(FileNotFoundError, match="teacher: no such file"):
        experiment.load_model(str(tmp_path / "missing.keras"), "teacher")
    assert experiment.load_model(path).count_params() == 15


def test_lambda_layer_is_refused_in_safe_mode(tmp_path):
    marker = str(tmp_path / "ran")
    inputs = keras.Input((4,))
    # The lambda leaves a file behind whenever its code runs.
    outputs = keras.layers.Lambda(lambda x: (open(marker, "w").close(), x * 2.0)[1])(inputs)
    path = _saved(tmp_path, keras.Model(inputs, outputs), "lambda.keras")
    os.remove(marker)
    with pytest.raises(ValueError, match=r"model: could not load .*(unsafe|safe_mode|Lambda)"):
        experiment.load_model(path)
    assert not os.path.exists(marker)  # no code from the file ran


def _distiller():
    d = kdtf.Distiller(_tiny(), _tiny(), kdtf.losses.KD(2.0))
    d.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return d


def test_nan_inputs_stop_training_with_a_message_naming_the_step():
    x = np.ones((8, 4), "float32")
    x[5, 1] = np.nan
    y = np.zeros(8, "int32")
    d = _distiller()
    before = [w.copy() for w in d.student.get_weights()]
    with pytest.raises(kdtf.callbacks.NonFiniteLossError, match="epoch 1, step 2"):
        d.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    # The bad step's update was skipped: only step 1 changed the weights.
    assert all(np.isfinite(w).all() for w in d.student.get_weights())
    assert any(not np.array_equal(a, b) for a, b in zip(before, d.student.get_weights()))


def test_data_validation_names_the_problem():
    from kdtf.data import validate_arrays

    x = np.zeros((4, 4), "float32")
    with pytest.raises(ValueError, match=r"label"):
        validate_arrays(x, np.array([0, 1, 2, 7]), 3, name="x_train")
    with pytest.raises(ValueError, match=r"(?i)empty"):
        validate_arrays(x[:0], np.zeros(0, "int32"), 3, name="x_train")
    with pytest.raises((ValueError, TypeError), match=r"(?i)dtype|numeric"):
        validate_arrays(np.array([["a"] * 4] * 4), np.zeros(4, "int32"), 3, name="x_train")


def test_teacher_and_student_with_different_input_shapes():
    with pytest.raises(ValueError, match="incompatible inputs"):
        kdtf.Distiller(_tiny(inputs=4), _tiny(inputs=5))
