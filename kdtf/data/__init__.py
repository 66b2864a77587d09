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
from kdtf.data.pipeline import Augment
from kdtf.data.pipeline import make_dataset
from kdtf.data.pipeline import one_iterator_per_fit
from kdtf.data.validation import validate_arrays

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
