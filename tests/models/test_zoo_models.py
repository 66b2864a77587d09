"""Every zoo model: builds, gives float32 logits, names its stages/features/logits."""
import keras
import numpy as np
import pytest

from kdtf import models

# Stage output shapes (H, W, C) of the CIFAR models on 32x32 inputs, read off the
# forward passes of the RepDistiller (CRD) PyTorch definitions (f1..f3 / f1..f4).
CIFAR_STAGE_SHAPES = {
    "resnet20": [(32, 32, 16), (16, 16, 32), (8, 8, 64)],
    "resnet56": [(32, 32, 16), (16, 16, 32), (8, 8, 64)],
    "resnet8x4": [(32, 32, 64), (16, 16, 128), (8, 8, 256)],
    "resnet32x4": [(32, 32, 64), (16, 16, 128), (8, 8, 256)],
    "wrn_40_2": [(32, 32, 32), (16, 16, 64), (8, 8, 128)],
    "wrn_16_2": [(32, 32, 32), (16, 16, 64), (8, 8, 128)],
    "wrn_40_1": [(32, 32, 16), (16, 16, 32), (8, 8, 64)],
    "vgg8": [(32, 32, 64), (16, 16, 128), (8, 8, 256), (4, 4, 512), (4, 4, 512)],
    "vgg13": [(32, 32, 64), (16, 16, 128), (8, 8, 256), (4, 4, 512), (4, 4, 512)],
    "mobilenetv2": [(16, 16, 12), (8, 8, 16), (4, 4, 48), (2, 2, 160)],
    "shufflenetv2": [(16, 16, 116), (8, 8, 232), (4, 4, 464)],
}
# Penultimate feature width (input of the reference classifier).
FEATURE_DIMS = {
    "resnet20": 64, "resnet56": 64, "resnet8x4": 256, "resnet32x4": 256,
    "wrn_40_2": 128, "wrn_16_2": 128, "wrn_40_1": 64, "vgg8": 512, "vgg13": 512,
    "mobilenetv2": 1280, "shufflenetv2": 1024,
}


def _default_classes(name):
    return 10 if name.startswith("mnist") else 100


@pytest.mark.parametrize("name", models.available())
def test_builds_and_outputs_logits(zoo_model, name):
    m = zoo_model(name)
    assert isinstance(m, keras.Model)
    assert m.name == name
    assert m.built
    batch = np.random.default_rng(0).random((3,) + m.input_shape[1:]).astype("float32")
    logits = m(batch, training=False)
    assert tuple(logits.shape) == (3, _default_classes(name))
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    logits = keras.ops.convert_to_numpy(logits)
    assert np.all(np.isfinite(logits))
    # Raw logits: rows are not probability vectors.
    assert not np.allclose(logits.sum(axis=1), 1.0)


@pytest.mark.parametrize("name", models.available())
def test_named_layers(zoo_model, name):
    m = zoo_model(name)
    logits_layer = m.get_layer("logits")
    assert isinstance(logits_layer, keras.layers.Dense)
    assert logits_layer.dtype_policy.compute_dtype == "float32"
    assert logits_layer.activation is keras.activations.linear
    assert m.layers[-1] is logits_layer
    features = m.get_layer("features")
    assert len(features.output.shape) == 2
    assert logits_layer.input is features.output
    stages = models.stage_endpoints(m)
    assert stages == [f"stage{i}" for i in range(1, len(stages) + 1)]
    assert len(stages) >= 2
    for stage in stages:
        m.get_layer(stage)  # raises if missing
    # Endpoints are in forward order: each stage's output feeds the next stage.
    layer_order = [layer.name for layer in m.layers]
    positions = [layer_order.index(s) for s in stages]
    assert positions == sorted(positions)
    assert positions[-1] < layer_order.index("features")


@pytest.mark.parametrize("name", sorted(CIFAR_STAGE_SHAPES))
def test_cifar_stage_shapes_match_reference(zoo_model, name):
    m = zoo_model(name)
    shapes = [tuple(m.get_layer(s).output.shape[1:]) for s in models.stage_endpoints(m)]
    assert shapes == CIFAR_STAGE_SHAPES[name]
    assert m.get_layer("features").output.shape[-1] == FEATURE_DIMS[name]


@pytest.mark.parametrize("name", ["mnist1d_cnn", "mnist1d_mlp", "mnist1d_cnn_small",
                                  "mnist1d_cnn_wide", "mnist1d_mlp256"])
def test_mnist1d_models_have_two_or_three_stages(zoo_model, name):
    assert len(models.stage_endpoints(zoo_model(name))) in (2, 3)


def test_mnist1d_mlp256_is_the_reference_residual_mlp():
    m = models.get("mnist1d_mlp256")
    assert m.count_params() == 78858  # 40*256+256 + 256*256+256 + 256*10+10
    x = np.random.default_rng(0).normal(size=(5, 40)).astype("float32")
    (w1, b1), (w2, b2), (w3, b3) = (m.get_layer(n).get_weights()
                                    for n in ("stage1", "dense2", "logits"))
    h = np.maximum(x @ w1 + b1, 0)
    h = h + np.maximum(h @ w2 + b2, 0)
    want = h @ w3 + b3
    got = np.asarray(m(x))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_custom_num_classes():
    m = models.get("wrn_16_2", num_classes=7)
    assert tuple(m(np.zeros((2, 32, 32, 3), "float32")).shape) == (2, 7)
