"""kdtf: knowledge distillation for Keras 3 and TensorFlow."""
from kdtf import callbacks
from kdtf import losses
from kdtf.distiller import Distiller

__version__ = "0.1.0"
