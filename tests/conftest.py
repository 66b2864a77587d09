"""Shared pytest setup: quiet TensorFlow, seeded runs, per-backend tests.

Tests run on the Keras backend named by `KERAS_BACKEND` (TensorFlow when
unset). Tests marked `tf_only(reason=...)` or `jax_only(reason=...)` (see
pytest.ini) are skipped, with their reason, on the other backend. The
`gradients` fixture differentiates on whichever backend is active.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

_BACKEND_MARKERS = {"tf_only": "tensorflow", "jax_only": "jax"}


def pytest_collection_modifyitems(config, items):
    import keras

    backend = keras.backend.backend()
    for item in items:
        for marker_name, wanted in _BACKEND_MARKERS.items():
            marker = item.get_closest_marker(marker_name)
            if marker is None or backend == wanted:
                continue
            reason = marker.kwargs.get("reason") or (
                marker.args[0] if marker.args else "backend-specific test"
            )
            item.add_marker(
                pytest.mark.skip(
                    reason=f"{marker_name} (backend is {backend}): {reason}"
                )
            )


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    np.random.seed(0)
    yield


def _gradients(fn, tensors, variables=()):
    """Gradients of the scalar `fn(*tensors)` on the active Keras backend.

    Args:
        fn: function of the tensors returning a scalar.
        tensors: list of float arrays to differentiate with respect to.
        variables: Keras variables that `fn` reads (e.g. layer weights) and
            that are differentiated too.

    Returns:
        `(value, grads)`: float value and a list of numpy gradients, one per
        tensor then one per variable (zeros where `fn` does not depend on it).
    """
    import keras

    backend = keras.backend.backend()
    tensors = [np.asarray(t, "float32") for t in tensors]
    variables = list(variables)
    if backend == "tensorflow":
        import tensorflow as tf

        watched = [tf.constant(t) for t in tensors]
        with tf.GradientTape() as tape:
            for t in watched:
                tape.watch(t)
            value = fn(*watched)
        sources = watched + [v.value for v in variables]
        grads = tape.gradient(
            value, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        return float(value), [np.asarray(g) for g in grads]
    if backend == "jax":
        import jax

        def scalar(tensor_values, variable_values):
            mapping = list(zip(variables, variable_values))
            with keras.StatelessScope(state_mapping=mapping):
                return fn(*tensor_values)

        value, (g_t, g_v) = jax.value_and_grad(scalar, argnums=(0, 1))(
            tensors, [v.value for v in variables]
        )
        return float(value), [np.asarray(g) for g in list(g_t) + list(g_v)]
    raise NotImplementedError(f"no gradients for the {backend} backend")


@pytest.fixture
def gradients():
    """`gradients(fn, tensors, variables=())` on the active backend."""
    return _gradients
