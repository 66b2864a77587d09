"""Distillation losses, called as `loss(teacher_outputs, student_outputs)`.

All losses are `keras.losses.Loss` subclasses computed in float32.
"""
import keras

from kdtf.losses.base import DistillationLoss
from kdtf.losses.dist import DIST
from kdtf.losses.kd import KD

_BY_NAME = {"kd": KD, "dist": DIST}


def get(identifier, **kwargs):
    """Returns a distillation loss from a name ("kd", "dist") or an instance.

    Args:
        identifier: a `DistillationLoss`, a loss config dict, or a name.
        **kwargs: constructor arguments when `identifier` is a name.

    Returns:
        A `keras.losses.Loss`.
    """
    if isinstance(identifier, keras.losses.Loss):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()](**kwargs)
    raise ValueError(
        f"Unknown distillation loss {identifier!r}; valid names: "
        f"{sorted(_BY_NAME)}."
    )

