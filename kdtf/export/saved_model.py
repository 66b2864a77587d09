"""Export of Keras models to TensorFlow SavedModels with a named signature."""

import os

import keras
import tensorflow as tf

from kdtf import atomic

SIGNATURE_KEY = "serving_default"
INPUT_NAME = "inputs"
OUTPUT_NAME = "logits"


def input_spec(model, name=INPUT_NAME):
    """Returns the `tf.TensorSpec` of the single input of `model`.

    The batch dimension is left unknown (`None`) so that the exported
    function accepts any batch size.

    Args:
        model: A built `keras.Model` with exactly one input.
        name: The name given to the input in the serving signature.

    Returns:
        A `tf.TensorSpec` of shape `[None, *input_shape]`.

    Example:

    >>> model = keras.Sequential([keras.Input((40,)), keras.layers.Dense(10)])
    >>> input_spec(model)
    TensorSpec(shape=(None, 40), dtype=tf.float32, name='inputs')
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model, got {type(model).__name__}."
        )
    from kdtf.models import known_inputs

    inputs = known_inputs(model)
    if not inputs:
        raise ValueError(
            "`model` has no defined inputs. Build it from `keras.Input` "
            "(Sequential or functional API) before exporting it."
        )
    if len(inputs) != 1:
        raise ValueError(
            f"`model` must have exactly one input to be exported, it has "
            f"{len(inputs)}."
        )
    shape = tuple(inputs[0].shape)[1:]
    if any(dim is None for dim in shape):
        raise ValueError(
            f"`model` input must have a fully known shape apart from the "
            f"batch dimension, got {tuple(inputs[0].shape)}."
        )
    dtype = tf.as_dtype(keras.backend.standardize_dtype(inputs[0].dtype))
    return tf.TensorSpec(shape=(None, *shape), dtype=dtype, name=name)


def _check_single_output(model):
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    if outputs is not None and len(outputs) != 1:
        raise ValueError(
            f"`model` must have exactly one output to be exported, it has "
            f"{len(outputs)}."
        )


def write_saved_model(model, path, input_name=INPUT_NAME,
                      output_name=OUTPUT_NAME):
    """Writes `model` as a SavedModel to `path` (not atomic, no checks).

    This is the building block used by `saved_model` and by the TFLite
    converter. Prefer `saved_model`, which writes atomically.

    Args:
        model: A `keras.Model` with one input and one output.
        path: Directory to write (may exist and be empty).
        input_name: Name of the input in the serving signature.
        output_name: Name of the output in the serving signature.

    Returns:
        `path`.

    Example:

    >>> model = keras.Sequential([keras.Input((40,)), keras.layers.Dense(10)])
    >>> write_saved_model(model, "/tmp/sm_scratch")
    '/tmp/sm_scratch'
    """
    spec = input_spec(model, name=input_name)
    _check_single_output(model)

    def serve(inputs):
        return {output_name: model(inputs, training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=SIGNATURE_KEY, fn=serve, input_signature=[spec])
    archive.write_out(os.fspath(path), verbose=False)
    return path


def saved_model(model, path, overwrite=False):
    """Exports `model` as a TensorFlow SavedModel with a named signature.

    The SavedModel has one signature, `serving_default`, that takes a float
    tensor named `"inputs"` of shape `[batch, *input_shape]` and returns a
    dict `{"logits": [batch, num_outputs]}`. The directory is written
    atomically: to a temporary sibling first, then renamed into place.

    Args:
        model: A `keras.Model` with one input and one output, built from
            `keras.Input`.
        path: Destination directory.
        overwrite: Whether an existing `path` may be replaced. If False and
            `path` exists, `FileExistsError` is raised.

    Returns:
        The absolute path of the SavedModel directory.

    Example:

    >>> model = keras.Sequential([keras.Input((40,)), keras.layers.Dense(10)])
    >>> path = saved_model(model, "/tmp/student_savedmodel", overwrite=True)
    >>> loaded = tf.saved_model.load(path)
    >>> out = loaded.signatures["serving_default"](inputs=tf.zeros([2, 40]))
    >>> out["logits"].shape
    TensorShape([2, 10])
    """
    # Fail fast on bad models before touching the file system.
    input_spec(model)
    _check_single_output(model)
    with atomic.atomic_path(path, overwrite=overwrite, directory=True) as tmp:
        write_saved_model(model, tmp)
    return os.path.abspath(os.fspath(path))
