"""kdtf.augmentation.RandomCropFlip and the Distiller's on-device augmentation (both backends)."""
import keras
import numpy as np
import pytest

import kdtf
from kdtf.augmentation import RandomCropFlip


def _images(n=6, h=5, w=7, c=2, dtype="uint8", seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 255, size=(n, h, w, c)).astype(dtype)


def _candidates(image, p):
    """Every pad-and-crop of `image` at every offset, flipped and not (NumPy reference)."""
    h, w = image.shape[:2]
    padded = np.pad(image, [(p, p), (p, p), (0, 0)])
    for dy in range(2 * p + 1):
        for dx in range(2 * p + 1):
            crop = padded[dy:dy + h, dx:dx + w]
            yield crop
            yield crop[:, ::-1]


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_each_image_is_a_padded_crop_possibly_flipped(dtype):
    x = _images(dtype=dtype)
    layer = RandomCropFlip(padding=2, seed=1)
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    assert out.shape == x.shape and out.dtype == np.dtype(dtype)
    for image, augmented in zip(x, out):
        assert any(np.array_equal(augmented, c) for c in _candidates(image, 2))
    # Per image: some images moved, and not all alike.
    assert not np.array_equal(out, x)
    moved = [not np.array_equal(a, b) for a, b in zip(out, x)]
    assert sum(moved) >= 2


def test_inference_is_identity_and_padding_zero_flip_off_is_identity():
    x = _images()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(RandomCropFlip(seed=0)(x)), x)
    same = RandomCropFlip(padding=0, flip=False, seed=0)(x, training=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(same), x)
    flipped = keras.ops.convert_to_numpy(RandomCropFlip(padding=0, seed=0)(x, training=True))
    for image, out in zip(x, flipped):
        assert np.array_equal(out, image) or np.array_equal(out, image[:, ::-1])


def test_seeded_and_new_draws_each_call():
    x = _images()
    a1 = keras.ops.convert_to_numpy(RandomCropFlip(2, seed=3)(x, training=True))
    layer = RandomCropFlip(2, seed=3)
    b1 = keras.ops.convert_to_numpy(layer(x, training=True))
    b2 = keras.ops.convert_to_numpy(layer(x, training=True))
    np.testing.assert_array_equal(a1, b1)
    assert not np.array_equal(b1, b2)


def test_bad_arguments_and_shapes():
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="padding"):
            RandomCropFlip(padding=bad)
    with pytest.raises(TypeError, match="flip"):
        RandomCropFlip(flip="yes")
    with pytest.raises(TypeError, match="seed"):
        RandomCropFlip(seed="0")
    with pytest.raises(ValueError, match=r"\[batch, height, width, channels\]"):
        RandomCropFlip()(np.zeros((2, 40), "float32"), training=True)


def test_config_roundtrip():
    layer = RandomCropFlip(padding=3, flip=False, seed=9, name="aug")
    again = RandomCropFlip.from_config(layer.get_config())
    assert (again.padding, again.flip, again.seed, again.name) == (3, False, 9, "aug")


def _image_model(name):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((5, 7, 2)), keras.layers.Rescaling(1 / 255),
                             keras.layers.Flatten(), keras.layers.Dense(3)], name=name)


def _copy(model, name):
    twin = _image_model(name)
    twin.set_weights(model.get_weights())
    return twin


def test_teacher_and_student_see_the_same_augmented_view():
    # A student identical to the teacher has zero KD loss only if both models
    # get the same view of each image; the flattening model is not
    # translation-invariant, so different views would give a positive loss.
    teacher = _image_model("teacher")
    x, y = _images(n=16), np.arange(16) % 3
    d = kdtf.Distiller(teacher, _copy(teacher, "student"), kdtf.losses.KD(temperature=1.0),
                       student_loss_weight=0.0, augmentation=RandomCropFlip(2, seed=0))
    d.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = d.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert logs["distillation_loss"][0] == pytest.approx(0.0, abs=1e-6)
    # Control: a student that gets its own view has a positive loss.
    student = _copy(teacher, "student2")
    own_view = keras.Sequential([keras.Input((5, 7, 2)), RandomCropFlip(2, seed=5), student])
    d = kdtf.Distiller(teacher, own_view, kdtf.losses.KD(temperature=1.0), student_loss_weight=0.0)
    d.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = d.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert logs["distillation_loss"][0] > 1e-4


def test_distiller_augmentation_changes_training_and_roundtrips(tmp_path):
    x, y = _images(n=32), np.arange(32) % 3

    def run(augmentation):
        teacher = _image_model("teacher")
        d = kdtf.Distiller(teacher, _image_model("student"), kdtf.losses.KD(), seed=0,
                           augmentation=augmentation)
        d.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        d.fit(x, y, batch_size=8, epochs=2, verbose=0)
        return d

    layer = RandomCropFlip(2, seed=0)
    before = keras.ops.convert_to_numpy(layer.seed_generator.state).copy()
    plain, augmented = run(None), run(layer)
    # The layer's seed advanced through the steps (on JAX too, where the
    # step is stateless): each step draws new crops.
    assert not np.array_equal(before, keras.ops.convert_to_numpy(layer.seed_generator.state))
    assert not np.allclose(plain.student.get_weights()[0], augmented.student.get_weights()[0])
    # evaluate() does not augment: two calls agree.
    a = augmented.evaluate(x, y, verbose=0, return_dict=True)
    b = augmented.evaluate(x, y, verbose=0, return_dict=True)
    assert a == b
    path = str(tmp_path / "d.keras")
    augmented.save(path)
    kdtf.register_all()
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.augmentation, RandomCropFlip) and loaded.augmentation.padding == 2


def test_augmentation_argument_errors():
    teacher = _image_model("teacher")
    with pytest.raises(TypeError, match="augmentation"):
        kdtf.Distiller(teacher, _image_model("student"), augmentation=lambda x: x)
    d = kdtf.Distiller(teacher, _image_model("student"), augmentation=RandomCropFlip(seed=0))
    d.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = _images(n=8)
    cached = {"inputs": x, "teacher_outputs": np.zeros((8, 3), "float32")}
    with pytest.raises(ValueError, match="augmentation.*cached"):
        d.fit(cached, np.zeros(8, "int32"), batch_size=4, epochs=1, verbose=0)


def _numpy_crop_flip(images, offsets, flip, p):
    padded = np.pad(images, [(0, 0), (p, p), (p, p), (0, 0)])
    h, w = images.shape[1:3]
    out = np.stack([padded[i, r:r + h, c:c + w] for i, (r, c) in enumerate(offsets)])
    return np.where(flip[:, None, None, None], out[:, :, ::-1], out)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("on_tf_ops", [False, True])
def test_crop_flip_is_the_numpy_crop_and_flip_on_either_ops(dtype, on_tf_ops):
    # The one crop + flip behind the layer, kdtf.data.Augment and the teacher cache's
    # ImageCropFlip (the last two run it on TensorFlow's ops inside tf.data).
    from kdtf import augmentation

    rng = np.random.default_rng(0)
    images = (rng.uniform(0, 255, (6, 7, 5, 3))).astype(dtype)
    offsets = rng.integers(0, 7, (6, 2)).astype("int32")  # padding 3: [0, 6]
    flip = rng.uniform(size=6) < 0.5
    backend = augmentation.TF_OPS if on_tf_ops else None
    got = augmentation.crop_flip(images, offsets, flip, 3, backend=backend)
    got = got.numpy() if on_tf_ops else keras.ops.convert_to_numpy(got)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, _numpy_crop_flip(images, offsets, flip, 3))
