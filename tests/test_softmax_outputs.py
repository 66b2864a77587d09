"""Softmax-output teachers and students are distilled exactly (log-probabilities).

A model whose output layer ends in a softmax (the `keras.applications` default)
gives `p = softmax(z)`; kdtf's logit losses then work on `log p`, which equals
`z` up to a per-row constant, so softmax(log p / T) = softmax(z / T) and every
loss, gradient and metric matches the logits model's.
"""
import keras
import numpy as np
import pytest

import kdtf
from kdtf import heads

CE_LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _data(n=64, d=10, c=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = x[:, :c].argmax(axis=1).astype("int32")
    return x, y


def _logit_model(d=10, c=5, width=24, name="teacher", seed=1):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((d,))
    h = keras.layers.Dense(width, activation="relu")(inp)
    # Logits of scale ~10, so that log(p) really differs from a plain rescale.
    return keras.Model(inp, keras.layers.Dense(c, name="logits")(h * 3.0), name=name)


def _with_softmax(model, how):
    """The same layers (shared weights) with a softmax output of kind `how`."""
    if how == "layer":
        return keras.Model(model.inputs, keras.layers.Softmax(name="probs")(model.outputs[0]))
    if how == "activation":
        return keras.Model(model.inputs,
                           keras.layers.Activation("softmax", name="probs")(model.outputs[0]))
    # Dense(activation="softmax") with the logits layer's weights.
    hidden = model.get_layer("logits").input
    dense = keras.layers.Dense(model.outputs[0].shape[-1], activation="softmax", name="probs")
    out = keras.Model(model.inputs, dense(hidden))
    dense.set_weights(model.get_layer("logits").get_weights())
    return out


def _student(seed=2, softmax=False):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((10,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(5, activation="softmax" if softmax else None)])


def _train(teacher, student, loss, task_loss, epochs=3):
    x, y = _data()
    d = kdtf.Distiller(teacher, student, distillation_losses=loss, student_loss_weight=0.3)
    d.compile(optimizer=keras.optimizers.SGD(0.1), loss=task_loss)
    h = d.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=False)
    return d, h.history


@pytest.mark.parametrize("how", ["layer", "activation", "dense"])
def test_softmax_layers_are_detected(how):
    logits = _logit_model()
    assert heads.softmax_layer(logits) is None
    assert heads.softmax_layer(_with_softmax(logits, how)).name == "probs"


def test_keras_applications_default_is_detected():
    kwargs = dict(input_shape=(32, 32, 3), weights=None, classes=10)
    probs = keras.applications.MobileNetV3Small(**kwargs)
    assert heads.softmax_layer(probs).name == "predictions"
    assert heads.softmax_layer(
        keras.applications.MobileNetV3Small(classifier_activation=None, **kwargs)) is None


@pytest.mark.parametrize("loss", [
    lambda: kdtf.losses.KD(temperature=4.0),
    lambda: kdtf.losses.DIST(temperature=4.0),
    lambda: kdtf.losses.DistributionKL(temperature=2.0),
    lambda: keras.distillation.LogitsDistillation(temperature=3.0),
], ids=["kd", "dist", "distribution_kl", "keras_logits_distillation"])
@pytest.mark.parametrize("how", ["layer", "dense"])
def test_softmax_teacher_trains_like_its_logits(loss, how, capsys):
    teacher = _logit_model()
    d_logits, h_logits = _train(teacher, _student(), loss(), CE_LOGITS)
    capsys.readouterr()
    d_probs, h_probs = _train(_with_softmax(teacher, how), _student(), loss(), CE_LOGITS)
    assert "ends in a softmax: distilling its log-probabilities" in capsys.readouterr().err
    for key in ("loss", "distillation_loss", "student_loss"):
        np.testing.assert_allclose(h_probs[key], h_logits[key], rtol=2e-5, err_msg=key)
    for a, b in zip(d_probs.student.get_weights(), d_logits.student.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())


def test_softmax_student_trains_like_its_logits():
    teacher = _logit_model()
    ce_probs = keras.losses.SparseCategoricalCrossentropy(from_logits=False)
    d_logits, h_logits = _train(teacher, _student(), kdtf.losses.KD(4.0), CE_LOGITS)
    d_probs, h_probs = _train(teacher, _student(softmax=True), kdtf.losses.KD(4.0), ce_probs)
    np.testing.assert_allclose(h_probs["distillation_loss"], h_logits["distillation_loss"],
                               rtol=1e-4)
    np.testing.assert_allclose(h_probs["loss"], h_logits["loss"], rtol=1e-4)
    for a, b in zip(d_probs.student.get_weights(), d_logits.student.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * np.abs(b).max())


def test_metrics_of_a_softmax_teacher_match_its_logits():
    from pipeline import experiment

    x, y = _data(n=200, seed=3)
    splits = kdtf.data.Splits(x_train=x, y_train=y, x_val=x, y_val=y, x_test=x, y_test=y,
                              num_classes=5, input_shape=(10,), name="toy")
    teacher = _logit_model()
    student = _student()
    want = experiment.evaluate(student, splits, teacher)
    got = experiment.evaluate(student, splits, _with_softmax(teacher, "dense"))
    for key in ("accuracy", "ece", "agreement", "kl_to_teacher"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-6, err_msg=key)
    own_want = experiment.evaluate(teacher, splits)
    own_got = experiment.evaluate(_with_softmax(teacher, "layer"), splits)
    np.testing.assert_allclose(own_got["ece"], own_want["ece"], rtol=1e-4, atol=1e-6)
    # Read as logits, the probabilities would give another ECE entirely.
    probs = _with_softmax(teacher, "layer").predict(x, verbose=0)
    wrong = kdtf.metrics.expected_calibration_error(y, probs)
    assert abs(wrong - own_want["ece"]) > 0.1


def test_a_loss_that_needs_logits_is_refused_naming_the_layer():
    teacher = _with_softmax(_logit_model(), "dense")
    loss = keras.distillation.LogitsDistillation(temperature=2.0, loss="mse")
    with pytest.raises(ValueError, match=r"layer 'probs'.*classifier_activation=None"):
        kdtf.Distiller(teacher, _student(), distillation_losses=loss)


@pytest.mark.parametrize("loss", [kdtf.losses.KD, kdtf.losses.DIST])
def test_one_output_model_is_refused_for_logit_losses(loss):
    def one(name):
        inp = keras.Input((4,))
        return keras.Model(inp, keras.layers.Dense(1)(inp), name=name)

    with pytest.raises(ValueError, match=r"one output.*(mse|GaussianHead)"):
        kdtf.Distiller(one("t"), one("s"), distillation_losses=loss())
    # A regression distillation on the outputs works.
    kdtf.Distiller(one("t"), one("s"),
                   distillation_losses=keras.distillation.FeatureDistillation(loss="mse"))
