"""kdtf with the Keras architectures users bring: keras.applications models.

Random weights, small inputs: these tests check that the setups work or are
refused at construction with a fix, not accuracy.
"""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import kdtf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _images(n=8, size=32, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 255, size=(n, size, size, 3)).astype("float32"),
            rng.integers(0, classes, size=n).astype("int32"))


def _small_cnn(size=32, classes=10):
    """A student that costs little to trace: these tests are about the teacher."""
    return keras.Sequential([keras.Input((size, size, 3)), keras.layers.Rescaling(1 / 255),
                             keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(classes)])


def _mobilenet(size=32, **kwargs):
    kwargs.setdefault("classifier_activation", None)
    return keras.applications.MobileNetV3Small(input_shape=(size, size, 3), weights=None,
                                               classes=10, **kwargs)


@pytest.mark.slow  # building and tracing ResNet50: ~70 s on 2 cores; a keras.applications
# softmax output is detected and distilled exactly in tests/test_softmax_outputs.py
@pytest.mark.tf_only(reason="ResNet50 once is enough")
def test_resnet50_softmax_teacher_to_mobilenet_student_trains(capsys):
    teacher = keras.applications.ResNet50(input_shape=(32, 32, 3), weights=None, classes=10)
    assert teacher.layers[-1].activation.__name__ == "softmax"  # the Keras default
    d = kdtf.Distiller(teacher, _mobilenet(), kdtf.losses.KD(4.0))
    assert "layer 'predictions'" in capsys.readouterr().err
    d.compile(optimizer="adam", loss=CE)
    x, y = _images()
    h = d.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(h["distillation_loss"][0]) and h["distillation_loss"][0] > 0


def test_two_head_models_are_refused_at_construction():
    def two_heads(name):
        inp = keras.Input((6,))
        h = keras.layers.Dense(8, activation="relu")(inp)
        return keras.Model(inp, [keras.layers.Dense(3, name="a")(h),
                                 keras.layers.Dense(2, name="b")(h)], name=name)

    with pytest.raises(ValueError, match=r"2 outputs.*model.outputs\[i\]"):
        kdtf.Distiller(two_heads("t"), two_heads("s"))
    # The fix the message gives works: one head each, the same i.
    t, s = two_heads("t"), two_heads("s")
    d = kdtf.Distiller(keras.Model(t.inputs, t.outputs[0]), keras.Model(s.inputs, s.outputs[0]))
    d.compile(optimizer="adam", loss=CE)
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    d.fit(x, np.arange(16) % 3, epochs=1, verbose=0)


def test_a_subclassed_model_returning_a_list_is_one_clear_error():
    class TwoOut(keras.Model):
        def __init__(self):
            super().__init__()
            self.a, self.b = keras.layers.Dense(3), keras.layers.Dense(3)

        def call(self, x, training=None):
            return [self.a(x), self.b(x)]

    x = np.zeros((4, 5), "float32")
    t, s = TwoOut(), TwoOut()
    t(x), s(x)
    d = kdtf.Distiller(t, s)
    d.compile(optimizer="adam", loss=CE)
    with pytest.raises(ValueError, match="distils models with one output"):
        d.fit(x, np.zeros(4, "int32"), epochs=1, verbose=0)


def test_teacher_at_another_image_size_through_resize_inputs():
    teacher, student = _mobilenet(64), _small_cnn(32)
    with pytest.raises(ValueError, match=r"kdtf\.models\.resize_inputs\(teacher, \(32, 32, 3\)\)"):
        kdtf.Distiller(teacher, student)
    resized = kdtf.models.resize_inputs(teacher, (32, 32, 3))
    x, y = _images()
    np.testing.assert_allclose(
        resized.predict(x, verbose=0),
        teacher.predict(keras.ops.image.resize(x, (64, 64)), verbose=0), rtol=1e-4, atol=1e-4)
    d = kdtf.Distiller(resized, student, kdtf.losses.KD(4.0))
    d.compile(optimizer="adam", loss=CE)
    assert np.isfinite(d.fit(x, y, batch_size=4, epochs=1, verbose=0).history["loss"][0])


def test_saved_distiller_loads_in_a_fresh_process(tmp_path):
    x, y = _images(n=4)
    d = kdtf.Distiller(_mobilenet(), _small_cnn(), kdtf.losses.DIST(4.0), student_loss_weight=0.3)
    d.compile(optimizer="adam", loss=CE)
    d.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "distiller.keras")
    d.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "want.npy", d.predict(x, verbose=0))
    script = (
        "import sys, numpy as np, keras, kdtf\n"
        f"d = keras.saving.load_model({path!r})\n"
        "assert type(d).__name__ == 'Distiller', type(d)\n"
        "assert d.student_loss_weight == 0.3\n"
        f"got = d.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)\n"
        f"np.testing.assert_allclose(got, np.load({str(tmp_path / 'want.npy')!r}), rtol=1e-5, "
        "atol=1e-5)\n"
        "print('loaded', type(d.distillation_losses[0]).__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded DIST" in result.stdout


def test_keras_applications_one_output_and_two_heads_are_refused_at_construction():
    def one_output():
        return keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None,
                                                   classes=1, classifier_activation=None)

    for loss in (kdtf.losses.KD(4.0), kdtf.losses.DIST(4.0)):
        with pytest.raises(ValueError, match=r"one output.*(mse|GaussianHead)"):
            kdtf.Distiller(one_output(), one_output(), loss)

    def two_heads():
        base = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None,
                                                   include_top=False, pooling="avg")
        return keras.Model(base.input, [keras.layers.Dense(10)(base.output),
                                        keras.layers.Dense(4)(base.output)])

    with pytest.raises(ValueError, match=r"2 outputs.*model.outputs\[i\]"):
        kdtf.Distiller(two_heads(), two_heads())
