"""Datasets as numpy splits, input checks and tf.data pipelines.

Example:

>>> import kdtf.data
>>> splits = kdtf.data.load("mnist1d").label_budget(0.1, seed=0)
>>> ds = kdtf.data.make_dataset(splits.x_train, splits.y_train, shuffle=True)
"""
from kdtf.data.datasets import DatasetNotAvailableError
from kdtf.data.datasets import Splits
from kdtf.data.datasets import available
from kdtf.data.datasets import generate_mnist1d
from kdtf.data.datasets import load
from kdtf.data.validation import validate_arrays

# The tf.data half (`kdtf.data.pipeline`) is imported on first use, so that
# the numpy half (`load`, `Splits`, `validate_arrays`) works on a machine
# without TensorFlow (JAX only).
_PIPELINE = ("Augment", "make_dataset", "one_iterator_per_fit")


def __getattr__(name):
    if name not in _PIPELINE:
        raise AttributeError(f"module 'kdtf.data' has no attribute {name!r}")
    try:
        from kdtf.data import pipeline
    except ImportError as e:
        raise ImportError(
            f"kdtf.data.{name} builds tf.data pipelines and needs TensorFlow, which cannot be "
            f"imported here ({e}). Install tensorflow, or feed numpy arrays or a Python "
            "generator to fit().") from e
    return getattr(pipeline, name)

__all__ = [
    "Augment",
    "DatasetNotAvailableError",
    "Splits",
    "available",
    "load",
    "make_dataset",
    "one_iterator_per_fit",
    "validate_arrays",
]
