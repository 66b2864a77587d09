import keras
import numpy as np
import pytest

import kdtf
from kdtf.losses.reviewkd import ABF, ReviewFusion, ReviewKD, hierarchical_context_loss


def _rng(seed=0):
    return np.random.default_rng(seed)


def _np_adaptive_pool(x, level):
    """PyTorch's adaptive_avg_pool2d on [B, H, W, C] (float64)."""
    b, h, w, c = x.shape
    out = np.zeros((b, level, level, c))
    for i in range(level):
        h0, h1 = int(np.floor(i * h / level)), int(np.ceil((i + 1) * h / level))
        for j in range(level):
            w0, w1 = int(np.floor(j * w / level)), int(np.ceil((j + 1) * w / level))
            out[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
    return out


def _np_hcl(fs_list, ft_list):
    """The official `hcl` per example: (mse + sum cnt * pooled mse) / tot, summed."""
    total = 0.0
    for fs, ft in zip(fs_list, ft_list):
        fs, ft = fs.astype("float64"), ft.astype("float64")
        fs, ft = [f[:, None, None] if f.ndim == 2 else f[:, :, None] if f.ndim == 3 else f
                  for f in (fs, ft)]
        h = fs.shape[1]
        loss = ((fs - ft) ** 2).mean(axis=(1, 2, 3))
        cnt = tot = 1.0
        for level in (4, 2, 1):
            if level >= h:
                continue
            cnt /= 2.0
            ps, pt = _np_adaptive_pool(fs, level), _np_adaptive_pool(ft, level)
            loss = loss + ((ps - pt) ** 2).mean(axis=(1, 2, 3)) * cnt
            tot += cnt
        total = total + loss / tot
    return total


SHAPES = [(8, 8, 3), (4, 4, 5), (6, 6, 2), (2, 3, 4), (1, 1, 7), (9,), (10, 3)]


@pytest.mark.parametrize("batch,scale", [(2, 1.0), (64, 1000.0)])
def test_hcl_matches_numpy(batch, scale):
    rng = _rng(batch)
    fs = [(scale * rng.normal(size=(batch,) + s)).astype("float32") for s in SHAPES]
    ft = [(scale * rng.normal(size=(batch,) + s)).astype("float32") for s in SHAPES]
    np.testing.assert_allclose(hierarchical_context_loss(fs, ft), _np_hcl(fs, ft), rtol=1e-5)
    # One stage at a time, too (each level's weight matters).
    for a, b in zip(fs, ft):
        np.testing.assert_allclose(hierarchical_context_loss([a], [b]), _np_hcl([a], [b]),
                                   rtol=1e-5)


def test_hcl_properties():
    f = [_rng(0).normal(size=(3,) + s).astype("float32") for s in SHAPES[:3]]
    np.testing.assert_array_equal(hierarchical_context_loss(f, f), np.zeros(3))
    # A constant offset c moves every level by c^2: the weighted mean is c^2 per stage.
    shifted = [x + 2.0 for x in f]
    np.testing.assert_allclose(hierarchical_context_loss(shifted, f), np.full(3, 4.0 * 3),
                               rtol=1e-6)
    # Noise that averages out within 2x2 cells: only the full map (weight 1/1.875 at 8x8)
    # and no pooled level sees it.
    checker = np.tile(np.array([[1.0, -1.0], [-1.0, 1.0]], "float32"), (4, 4))[None, :, :, None]
    value = hierarchical_context_loss([checker], [np.zeros_like(checker)])
    np.testing.assert_allclose(value, [1.0 / 1.875], rtol=1e-6)
    with pytest.raises(ValueError, match="teacher_features"):
        hierarchical_context_loss(f, f[:2])
    with pytest.raises(ValueError, match=r"student_features\[0\]"):
        hierarchical_context_loss([f[0]], [f[1]])


def _np_conv(x, kernel):
    """'same' convolution, stride 1, no bias: x [B, H, W, C], kernel [k, k, C, O]."""
    k = kernel.shape[0]
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
    for i in range(k):
        for j in range(k):
            out += xp[:, i:i + x.shape[1], j:j + x.shape[2]] @ kernel[i, j]
    return out


def _np_bn(x, layer):
    gamma, beta, mean, var = [np.asarray(w, "float64") for w in layer.get_weights()]
    return gamma * (x - mean) / np.sqrt(var + layer.epsilon) + beta


def _np_nearest(x, size):
    hi = np.floor(np.arange(size[0]) * x.shape[1] / size[0]).astype(int)
    wi = np.floor(np.arange(size[1]) * x.shape[2] / size[1]).astype(int)
    return x[:, hi][:, :, wi]


def _np_fusion(fusion, features):
    outputs, residual = [None] * len(features), None
    for i in reversed(range(len(features))):
        abf, x = fusion.abfs[i], features[i].astype("float64")
        x = x[:, None, None] if x.ndim == 2 else x[:, :, None] if x.ndim == 3 else x
        x = _np_bn(_np_conv(x, abf.conv1.get_weights()[0]), abf.norm1)
        if abf.att_conv is not None:
            r = _np_nearest(residual, x.shape[1:3])
            w, b = abf.att_conv.get_weights()
            att = 1.0 / (1.0 + np.exp(-(np.concatenate([x, r], -1) @ w[0, 0] + b)))
            x = x * att[..., :1] + r * att[..., 1:]
        x = _np_nearest(x, fusion.teacher_shapes[i][:2])
        outputs[i] = _np_bn(_np_conv(x, abf.conv2.get_weights()[0]), abf.norm2)
        residual = x
    return outputs


def _randomize_batchnorm(layer, rng):
    for sub in layer._flatten_layers():
        if isinstance(sub, keras.layers.BatchNormalization):
            c = sub.gamma.shape[0]
            sub.set_weights([rng.uniform(0.5, 2, c), rng.normal(size=c), rng.normal(size=c),
                             rng.uniform(0.5, 2, c)])


@pytest.mark.parametrize("batch", [2, 64])
def test_fusion_and_loss_match_numpy(batch):
    # Shallow to deep: a map upsampled to the teacher's size, a map resized down, a vector.
    t_shapes, s_shapes = [(8, 8, 6), (2, 2, 8), (12,)], [(4, 4, 3), (4, 4, 5), (7,)]
    if batch == 2:  # sequences: L x 1 maps
        t_shapes, s_shapes = [(8, 6), (4, 8), (12,)], [(8, 3), (2, 5), (7,)]
    loss = ReviewKD(["a", "b", "c"], ["a", "b", "c"], warmup_steps=10, reduction=None)
    fusion = loss.build_adapter(t_shapes, s_shapes)
    assert isinstance(fusion, ReviewFusion) and fusion.mid_channels == 7
    assert [abf.fuse for abf in fusion.abfs] == [True, True, False]
    rng = _rng(batch)
    _randomize_batchnorm(fusion, rng)
    s = [(100.0 * rng.normal(size=(batch,) + sh)).astype("float32") for sh in s_shapes]
    t = [(100.0 * rng.normal(size=(batch,) + sh)).astype("float32") for sh in t_shapes]
    want = _np_fusion(fusion, s)
    got = fusion(s, training=False)
    for g, w in zip(got, want):  # float32 convolutions: errors relative to the map's scale
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * np.abs(w).max())
    expected = _np_hcl(want, t)
    np.testing.assert_allclose(loss(t, s, training=False, step=None), expected, rtol=1e-5)
    # Linear warm-up: half way at step 5, full from step 10.
    np.testing.assert_allclose(loss(t, s, training=False, step=5), 0.5 * expected, rtol=1e-5)
    np.testing.assert_allclose(loss(t, s, training=False, step=30), expected, rtol=1e-5)


def test_gradients_reach_the_abf_modules_and_student_features(gradients):
    loss = ReviewKD(["a", "b"], ["a", "b"])
    fusion = loss.build_adapter([(4, 4, 3), (2, 2, 4)], [(4, 4, 2), (2, 2, 3)])
    s0 = _rng(0).normal(size=(5, 4, 4, 2)).astype("float32")
    s1 = _rng(1).normal(size=(5, 2, 2, 3)).astype("float32")
    t = [_rng(2).normal(size=(5, 4, 4, 3)).astype("float32"),
         _rng(3).normal(size=(5, 2, 2, 4)).astype("float32")]
    weights = fusion.trainable_weights
    _, grads = gradients(lambda a, b: loss(t, [a, b], training=True), [s0, s1], weights)
    assert all(np.isfinite(g).all() for g in grads)
    assert np.abs(grads[0]).sum() > 0 and np.abs(grads[1]).sum() > 0
    kernels = [i for i, w in enumerate(weights) if "kernel" in w.path]
    assert len(kernels) == 5 and all(np.abs(grads[2 + i]).sum() > 0 for i in kernels)


def test_mixed_precision_inputs_computed_in_float32():
    loss = ReviewKD(["a"], ["a"])
    loss.build_adapter([(2, 2, 3)], [(2, 2, 3)])
    f = np.full((2, 2, 2, 3), 1000.0, "float16")
    value = loss([f], [f], training=False)
    assert value.dtype == "float32" and np.isfinite(value)
    assert all(w.dtype == "float32" for w in loss.adapter.weights)


def test_bad_arguments_and_shapes():
    with pytest.raises(TypeError, match="teacher_layer_names"):
        ReviewKD("a", ["a"])
    with pytest.raises(TypeError, match="student_layer_names"):
        ReviewKD(["a"], [])
    with pytest.raises(ValueError, match="pair stages"):
        ReviewKD(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="warmup_steps"):
        ReviewKD(["a"], ["a"], warmup_steps=-1)
    loss = ReviewKD(["a", "b"], ["c", "d"])
    f = [np.zeros((2, 2, 2, 3), "float32")] * 2
    with pytest.raises(ValueError, match="build_adapter"):
        loss(f, f, training=False)
    with pytest.raises(ValueError, match="student_shapes"):
        loss.build_adapter([(2, 2, 3)] * 2, [(2, 2, 3)])
    with pytest.raises(ValueError, match="'d'"):
        loss.build_adapter([(2, 2, 3)] * 2, [(2, 2, 3), (2, 3, 1, 1)])
    loss.build_adapter([(2, 2, 3)] * 2, [(2, 2, 3)] * 2)
    with pytest.raises(ValueError, match="student_outputs"):
        loss(f, f[:1], training=False)
    with pytest.raises(ValueError, match=r"teacher_outputs\[1\]"):
        loss([f[0], np.zeros((2, 4, 4, 3), "float32")], f, training=False)


def test_config_round_trip():
    loss = ReviewKD(["t1", "t2"], ["s1", "s2"], warmup_steps=40, mid_channels=16, name="rkd")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(clone, ReviewKD) and clone.get_config() == loss.get_config()
    assert (clone.teacher_layer_names, clone.student_layer_names, clone.warmup_steps,
            clone.mid_channels, clone.name) == (["t1", "t2"], ["s1", "s2"], 40, 16, "rkd")
    abf = ABF(4, 6, fuse=True, name="x")
    assert ABF.from_config(abf.get_config()).get_config() == abf.get_config()


def _net(name, c1, c2, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4, 4, 1))
    h = keras.layers.Conv2D(c1, 3, padding="same", activation="relu", name="stage1")(inputs)
    h = keras.layers.Conv2D(c2, 3, strides=2, padding="same", activation="relu", name="stage2")(h)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(pooled), name=name)


def test_distiller_fit_trains_and_saves_the_abf_modules(tmp_path):
    x = _rng(0).normal(size=(32, 4, 4, 1)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int32")
    names = ["stage1", "stage2", "pool"]
    loss = ReviewKD(names, names)
    d = kdtf.Distiller(_net("t", 6, 8, 0), _net("s", 3, 4, 1), [loss, kdtf.losses.KD(4.0)])
    fusion = loss.adapter
    assert d.adapters == [fusion] and fusion.student_shapes == [(4, 4, 3), (2, 2, 4), (1, 1, 4)]
    d.compile(keras.optimizers.SGD(0.1),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.numpy().copy() for w in fusion.trainable_weights]
    d.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert all(not np.allclose(a, w.numpy()) for a, w in zip(before, fusion.trainable_weights)
               if "kernel" in w.path)
    assert not any("abf" in w.path for w in d.student.weights)
    path = str(tmp_path / "reviewkd.keras")
    d.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(loaded.distillation_losses[0].adapter.weights, fusion.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
