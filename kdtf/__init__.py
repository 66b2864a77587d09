"""kdtf: knowledge distillation for Keras 3 and TensorFlow."""
from kdtf import losses

__version__ = "0.1.0"
