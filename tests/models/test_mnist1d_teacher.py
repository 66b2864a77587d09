"""The MNIST-1D teacher reaches >= 90% test accuracy with a short Adam run (slow: ~40 s)."""
import keras
import pytest

from kdtf import models


@pytest.mark.slow
def test_mnist1d_cnn_reaches_90_percent():
    from mnist1d.data import get_dataset_args
    from mnist1d.data import make_dataset

    data = make_dataset(get_dataset_args())  # 4000 train / 1000 test signals
    model = models.get("mnist1d_cnn")
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(data["x"], data["y"], batch_size=100, epochs=40, verbose=0)
    _, accuracy = model.evaluate(data["x_test"], data["y_test"], verbose=0)
    assert accuracy >= 0.90
