"""Makes `import tensorflow` fail, as on the JAX-only GPU machine.

Put this folder on PYTHONPATH: Python imports `sitecustomize` at start-up,
before any test code, and this one refuses TensorFlow (and tf_keras, which
imports it) with the ModuleNotFoundError a machine without it raises.
"""
import importlib.abc
import sys

_BLOCKED = ("tensorflow", "tf_keras")


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by {__file__})", name=name)
        return None


sys.meta_path.insert(0, _NoTensorFlow())
