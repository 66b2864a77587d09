"""Tests for kdtf.data.validate_arrays."""
import numpy as np
import pytest

from kdtf.data import validate_arrays


def test_valid_inputs_pass():
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    assert validate_arrays(x, np.array([0, 1, 2, 1, 0]), num_classes=3) is None
    validate_arrays(x, np.array([[0], [1], [2], [1], [0]]))  # (N, 1) labels
    validate_arrays(x, np.array([0.0, 1.0, 2.0, 1.0, 0.0]), num_classes=3)
    validate_arrays(np.zeros((2, 4, 4, 1), "uint8"))


def test_empty():
    with pytest.raises(ValueError, match="`x_train` is empty"):
        validate_arrays(np.zeros((0, 3)), name="x_train")


def test_nan_inf_count_and_location():
    x = np.zeros((4, 3), "float32")
    x[2, 1] = np.nan
    x[3, 0] = np.inf
    x[3, 2] = np.nan
    with pytest.raises(ValueError) as e:
        validate_arrays(x)
    msg = str(e.value)
    assert "3 non-finite" in msg and "2 NaN, 1 Inf" in msg
    assert "(2, 1)" in msg


def test_non_numeric_dtype():
    with pytest.raises(TypeError, match="numeric dtype"):
        validate_arrays(np.array([["a", "b"]]))
    with pytest.raises(TypeError, match="numeric dtype"):
        validate_arrays(np.array([[1 + 2j]]))
    with pytest.raises(TypeError, match="integer class labels"):
        validate_arrays(np.zeros((2, 1)), np.array(["a", "b"]))


def test_non_integer_label_named():
    with pytest.raises(ValueError, match=r"`y_val`.*0\.5 at index 1"):
        validate_arrays(np.zeros((3, 1)), np.array([0.0, 0.5, 1.0]),
                        name="x_val")


def test_out_of_range_labels_name_value_and_range():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"label 7 at index 2.*\[0, 4\]"):
        validate_arrays(x, np.array([0, 1, 7, 2]), num_classes=5)
    with pytest.raises(ValueError, match=r"label -1 at index 0"):
        validate_arrays(x, np.array([-1, 1, 0, 2]))


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="3 inputs vs 2 labels"):
        validate_arrays(np.zeros((3, 2)), np.array([0, 1]))


def test_bad_label_shape_and_num_classes():
    with pytest.raises(ValueError, match="one-hot"):
        validate_arrays(np.zeros((3, 2)), np.eye(3))
    with pytest.raises(ValueError, match="num_classes"):
        validate_arrays(np.zeros((3, 2)), np.array([0, 1, 0]), num_classes=0)
