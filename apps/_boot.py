"""Imported first by every app: the repository on `sys.path`, TensorFlow's C++ logs off.

An app reports what goes wrong itself, in one line. TensorFlow's C++ log lines
(E-level included, such as tf.data's "NodeDef mentions attribute ...") are noise
to its user, and their level can only be set before TensorFlow loads, which
`import kdtf` does. `TF_CPP_MIN_LOG_LEVEL=0` or `KDTF_TF_LOGS=1` shows them.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if not os.environ.get("KDTF_TF_LOGS"):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
