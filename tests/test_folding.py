"""kdtf.folding: the teacher's inference pass with BatchNorm folded into its convolutions (both backends)."""
import keras
import numpy as np
import pytest

import kdtf
from kdtf import folding
from kdtf import models


def _randomise_batchnorm(model, seed=0):
    """Statistics and affine terms far from the identity, so folding has work to do."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape) * 0.5)
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=layer.moving_variance.shape))
            layer.gamma.assign(rng.uniform(0.5, 1.5, size=layer.gamma.shape))
            layer.beta.assign(rng.normal(size=layer.beta.shape) * 0.3)


def _count(model, cls):
    return sum(isinstance(layer, cls) for layer in model.layers)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _small_conv_bn():
    return keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(4, 3, use_bias=False),
                             keras.layers.BatchNormalization(), keras.layers.ReLU(),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])


_TF_ONLY = pytest.mark.tf_only(reason="the same backend-agnostic code as resnet20; keeps the JAX run short")


@pytest.mark.parametrize("name,expected", [
    ("resnet20", "all"),
    pytest.param("vgg8", "all", marks=_TF_ONLY),
    pytest.param("wrn_16_2", "some", marks=_TF_ONLY),
    pytest.param("mobilenetv2", "some", marks=_TF_ONLY),
])
def test_folded_pass_equals_the_model_in_inference(name, expected):
    model = models.get(name, input_shape=(32, 32, 3), num_classes=10, input_dtype="uint8")
    _randomise_batchnorm(model)
    forward = folding.fold_batchnorm(model)
    assert forward is not None
    bn = _count(model, keras.layers.BatchNormalization)
    # resnet/vgg: every BN follows a conv. WRN's pre-activation BNs (BN before
    # conv) and MobileNetV2's BNs after depthwise convs stay as they are.
    assert forward.num_folded == bn if expected == "all" else 0 < forward.num_folded < bn
    x = np.random.default_rng(1).integers(0, 256, size=(4, 32, 32, 3)).astype("uint8")
    want = _np(model(x, training=False))
    got = _np(forward(x))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_folding_matches_a_numpy_reference_of_conv_then_batchnorm():
    """One Conv1D (with bias) -> BatchNorm, against the formula written out in NumPy."""
    inputs = keras.Input((6, 2))
    conv = keras.layers.Conv1D(3, 3, padding="same", use_bias=True)
    bn = keras.layers.BatchNormalization(epsilon=1e-3)
    model = keras.Model(inputs, bn(conv(inputs)))
    _randomise_batchnorm(model)
    forward = folding.fold_batchnorm(model)
    assert forward is not None and forward.num_folded == 1
    x = np.random.default_rng(2).normal(size=(2, 6, 2)).astype("float32")
    k, b = _np(conv.kernel), _np(conv.bias)
    padded = np.pad(x, [(0, 0), (1, 1), (0, 0)])
    y = np.stack([np.einsum("bkc,kcf->bf", padded[:, t:t + 3], k) for t in range(6)], axis=1) + b
    mean, var = _np(bn.moving_mean), _np(bn.moving_variance)
    gamma, beta = _np(bn.gamma), _np(bn.beta)
    reference = (y - mean) / np.sqrt(var + 1e-3) * gamma + beta
    np.testing.assert_allclose(_np(forward(x)), reference, rtol=1e-5, atol=1e-5)


def test_what_does_not_fold_runs_unfolded():
    inputs = keras.Input((8, 8, 2))
    conv = keras.layers.Conv2D(4, 3, padding="same")
    h = conv(inputs)
    bn = keras.layers.BatchNormalization()(h)
    # The conv's output also feeds another branch: folding BN into it would change that branch.
    model = keras.Model(inputs, keras.layers.Add()([bn, h]))
    assert folding.fold_batchnorm(model) is None
    # A conv with its own activation: BN after a ReLU is not affine in the conv's output.
    inputs = keras.Input((8, 8, 2))
    relu_conv = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    assert folding.fold_batchnorm(keras.Model(inputs, keras.layers.BatchNormalization()(relu_conv))) is None
    # No BatchNorm, or a subclassed model without a layer graph.
    mlp = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    assert folding.fold_batchnorm(mlp) is None

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(2, 1)
            self.bn = keras.layers.BatchNormalization()

        def call(self, x, training=False):
            return self.bn(self.conv(x), training=training)

    sub = Sub()
    sub(np.zeros((1, 4, 4, 2), "float32"))
    assert folding.fold_batchnorm(sub) is None


def test_sequential_models_fold_and_training_mode_is_refused():
    model = _small_conv_bn()
    _randomise_batchnorm(model)
    forward = folding.fold_batchnorm(model)
    assert forward is not None and forward.num_folded == 1
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 2)).astype("float32")
    np.testing.assert_allclose(_np(forward(x)), _np(model(x, training=False)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="inference mode"):
        forward(x, training=True)


def test_a_wrong_fold_is_caught_by_the_check(monkeypatch):
    model = _small_conv_bn()
    _randomise_batchnorm(model)
    monkeypatch.setattr(folding, "_folded_conv",
                        lambda conv, kernel, bias, inputs: conv.convolution_op(inputs, conv.kernel))
    with pytest.warns(UserWarning, match="unfolded"):
        assert folding.fold_batchnorm(model) is None


def test_folded_kernels_are_variables_refreshed_by_fit_and_evaluate():
    # Folded once per fit/evaluate into variables, not recomputed in every step;
    # a teacher changed between calls is refolded.
    teacher = _small_conv_bn()
    _randomise_batchnorm(teacher)
    student = keras.Sequential([keras.Input(teacher.input_shape[1:]), keras.layers.Flatten(),
                                keras.layers.Dense(teacher.output_shape[-1])])
    d = kdtf.Distiller(teacher, student, kdtf.losses.KD(2.0))
    assert d.folded_teacher.trainable is False
    tracked = {id(v) for v in d.non_trainable_variables}
    assert d.folded_teacher.weights and all(id(v) in tracked for v in d.folded_teacher.weights)
    d.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8,) + tuple(teacher.input_shape[1:])).astype("float32")
    y = np.zeros(8, "int32")
    d.fit(x, y, epochs=1, verbose=0)
    bn = next(l for l in teacher.layers if isinstance(l, keras.layers.BatchNormalization))
    bn.moving_mean.assign(bn.moving_mean + 3.0)  # the teacher changes between fits
    stale = d._teacher_forward(x)
    assert not np.allclose(keras.ops.convert_to_numpy(stale),
                           keras.ops.convert_to_numpy(teacher(x, training=False)), atol=1e-3)
    d.evaluate(x, y, verbose=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(d._teacher_forward(x)),
                               keras.ops.convert_to_numpy(teacher(x, training=False)),
                               rtol=1e-5, atol=1e-5)


def _distillers(seed=0):
    teacher = models.get("resnet8x4", input_shape=(32, 32, 3), num_classes=10, input_dtype="uint8")
    _randomise_batchnorm(teacher)
    student = models.get("mnist_cnn_small", input_shape=(32, 32, 3), num_classes=10,
                         input_dtype="uint8")
    out = []
    for fold in (True, False):
        s = keras.models.clone_model(student)
        s.set_weights(student.get_weights())
        d = kdtf.Distiller(teacher, s, kdtf.losses.KD(4.0), fold_teacher_batchnorm=fold)
        d.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        out.append(d)
    return teacher, out


def test_distiller_with_a_folded_teacher_trains_like_the_unfolded_one():
    teacher, (folded, plain) = _distillers()
    assert isinstance(folded._teacher_forward, folding.FoldedForward)
    assert plain._teacher_forward is teacher
    before = [_np(w).copy() for w in teacher.weights]
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, size=(32, 32, 32, 3)).astype("uint8")
    y = rng.integers(0, 10, size=32)
    h_folded = folded.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    h_plain = plain.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    for key in ("loss", "distillation_loss", "student_loss"):
        np.testing.assert_allclose(h_folded[key], h_plain[key], rtol=1e-4)
    for a, b in zip(folded.student.weights, plain.student.weights):
        np.testing.assert_allclose(_np(a), _np(b), rtol=1e-4, atol=1e-5)
    for w, b in zip(teacher.weights, before):  # the teacher's variables are only read
        np.testing.assert_array_equal(_np(w), b)


def test_the_flag_round_trips_and_is_checked(tmp_path):
    teacher = _small_conv_bn()
    student = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Flatten(), keras.layers.Dense(3)])
    for fold in (True, False):
        d = kdtf.Distiller(teacher, student, fold_teacher_batchnorm=fold)
        assert isinstance(d._teacher_forward, folding.FoldedForward) is fold
        d.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        assert d.get_config()["fold_teacher_batchnorm"] is fold
        path = str(tmp_path / f"d{fold}.keras")
        d.save(path)
        loaded = keras.models.load_model(path)
        assert loaded.fold_teacher_batchnorm is fold
        assert isinstance(loaded._teacher_forward, folding.FoldedForward) is fold
    with pytest.raises(TypeError, match="fold_teacher_batchnorm"):
        kdtf.Distiller(teacher, student, fold_teacher_batchnorm="yes")
