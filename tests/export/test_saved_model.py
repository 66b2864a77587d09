"""Tests for kdtf.export.saved_model."""
import importlib
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdtf import export


def test_signature_names_and_outputs(tiny_model, random_data, tmp_path):
    path = export.saved_model(tiny_model, tmp_path / "sm")
    assert path == str(tmp_path / "sm")
    loaded = tf.saved_model.load(path)
    assert list(loaded.signatures) == ["serving_default"]
    serving = loaded.signatures["serving_default"]
    _, kwargs = serving.structured_input_signature
    assert list(kwargs) == ["inputs"]
    assert kwargs["inputs"].shape.as_list() == [None, 40]
    assert kwargs["inputs"].dtype == tf.float32
    assert list(serving.structured_outputs) == ["logits"]

    x = random_data[1][:7]
    out = serving(inputs=tf.constant(x))["logits"].numpy()
    np.testing.assert_allclose(out, tiny_model.predict(x, verbose=0),
                               atol=1e-5)
    assert os.listdir(tmp_path) == ["sm"]


def test_overwrite_protection(tiny_model, tmp_path):
    path = tmp_path / "sm"
    path.mkdir()
    (path / "keep.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="overwrite"):
        export.saved_model(tiny_model, path)
    assert os.listdir(path) == ["keep.txt"]
    export.saved_model(tiny_model, path, overwrite=True)
    assert "saved_model.pb" in os.listdir(path)
    assert "keep.txt" not in os.listdir(path)
    assert os.listdir(tmp_path) == ["sm"]


def test_failure_midway_leaves_no_directory(tiny_model, tmp_path,
                                            monkeypatch):
    module = importlib.import_module("kdtf.export.saved_model")
    real_write = module.write_saved_model

    def write_then_fail(model, path, **kwargs):
        real_write(model, path, **kwargs)
        assert os.listdir(path)  # A full SavedModel exists in the temp dir.
        raise RuntimeError("crash after writing")

    monkeypatch.setattr(module, "write_saved_model", write_then_fail)
    with pytest.raises(RuntimeError, match="crash"):
        export.saved_model(tiny_model, tmp_path / "sm")
    assert os.listdir(tmp_path) == []


def test_rejects_models_that_cannot_be_exported(tmp_path):
    a, b = keras.Input((4,)), keras.Input((4,))
    two_inputs = keras.Model([a, b], keras.layers.Add()([a, b]))
    with pytest.raises(ValueError, match="exactly one input"):
        export.saved_model(two_inputs, tmp_path / "sm")
    with pytest.raises(TypeError, match="keras.Model"):
        export.saved_model("not a model", tmp_path / "sm")
    assert os.listdir(tmp_path) == []
