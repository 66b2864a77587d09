"""Shared fixtures for kdtf.export tests: tiny models and MNIST-1D-shaped data."""
import numpy as np
import pytest

import keras


def make_tiny_model(seed=0, hidden=64):
    """A small Conv1D + Dense classifier for (40,) inputs, trained 5 steps."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((40,)),
        keras.layers.Reshape((40, 1)),
        keras.layers.Conv1D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(hidden, activation="relu"),
        keras.layers.Dense(10),
    ])
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(160, 40)).astype("float32")
    y = rng.integers(0, 10, size=160)
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    return model


@pytest.fixture(scope="session")
def tiny_model():
    return make_tiny_model()


@pytest.fixture(scope="session")
def random_data():
    """(x_calibration, x_test, y_test) with MNIST-1D shapes."""
    rng = np.random.default_rng(1)
    x_cal = rng.normal(size=(64, 40)).astype("float32")
    x_test = rng.normal(size=(128, 40)).astype("float32")
    y_test = rng.integers(0, 10, size=128)
    return x_cal, x_test, y_test
