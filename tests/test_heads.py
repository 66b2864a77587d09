"""Tests of kdtf.heads: shapes, clamping, config round trips, family checks."""
import numpy as np
import pytest

import keras

from kdtf import heads
from kdtf.heads import CategoricalHead, GaussianHead, split_gaussian
from kdtf.losses.distribution import DistributionKL
from kdtf.losses.gaussian import MeanMSE


def _model(head, input_dim=3):
    return keras.Sequential([keras.Input((input_dim,)), keras.layers.Dense(8), head])


def test_gaussian_head_shape_and_split():
    out = GaussianHead(3)(np.random.rand(5, 4).astype("float32"))
    assert tuple(out.shape) == (5, 6)
    mean, log_var = split_gaussian(out)
    assert tuple(mean.shape) == (5, 3) and tuple(log_var.shape) == (5, 3)
    np.testing.assert_array_equal(np.asarray(mean), np.asarray(out)[:, :3])


def test_gaussian_head_clamps_log_variance():
    head = GaussianHead(2, min_log_var=-1.0, max_log_var=2.0)
    head.build((None, 1))
    head.log_var_dense.kernel.assign(np.array([[100.0, -100.0]], "float32"))
    head.log_var_dense.bias.assign(np.zeros(2, "float32"))
    x = np.array([[1.0], [-1.0], [0.001]], "float32")
    _, log_var = split_gaussian(head(x))
    log_var = np.asarray(log_var)
    np.testing.assert_allclose(log_var[0], [2.0, -1.0])
    np.testing.assert_allclose(log_var[1], [-1.0, 2.0])
    np.testing.assert_allclose(log_var[2], [0.1, -0.1], rtol=1e-5)


def test_categorical_head_logits():
    out = CategoricalHead(4)(np.random.rand(2, 7).astype("float32"))
    assert tuple(out.shape) == (2, 4)


@pytest.mark.parametrize("head", [GaussianHead(2, min_log_var=-5, max_log_var=3),
                                  CategoricalHead(5)])
def test_config_and_keras_file_round_trip(head, tmp_path):
    config = head.get_config()
    clone = type(head).from_config(config)
    assert clone.get_config() == config
    model = _model(head)
    x = np.random.rand(4, 3).astype("float32")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)
    assert type(loaded.layers[-1]) is type(head)


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_log_var"):
        GaussianHead(1, min_log_var=2, max_log_var=1)
    with pytest.raises(ValueError, match="output_dim"):
        GaussianHead(0)
    with pytest.raises(TypeError, match="num_classes"):
        CategoricalHead(2.5)
    with pytest.raises(ValueError, match="even last dimension"):
        split_gaussian(np.zeros((2, 3), "float32"))


def test_output_family_and_compatibility():
    gaussian, categorical = _model(GaussianHead(1)), _model(CategoricalHead(2))
    plain = _model(keras.layers.Dense(2))
    assert heads.output_family(gaussian) == "gaussian"
    assert heads.output_family(categorical) == "categorical"
    assert heads.output_family(plain) is None
    heads.check_compatible(gaussian, _model(GaussianHead(1)), [DistributionKL("gaussian")])
    heads.check_compatible(categorical, plain, DistributionKL("categorical"))
    # A regression head on a classification teacher, either way round.
    with pytest.raises(ValueError, match="GaussianHead"):
        heads.check_compatible(categorical, gaussian)
    with pytest.raises(ValueError, match="GaussianHead"):
        heads.check_compatible(plain, gaussian)
    with pytest.raises(ValueError, match="GaussianHead"):
        heads.check_compatible(gaussian, categorical)
    with pytest.raises(ValueError, match="family='categorical'"):
        heads.check_compatible(categorical, categorical, [MeanMSE()])
    with pytest.raises(ValueError, match="family='gaussian'"):
        heads.check_compatible(gaussian, gaussian, [DistributionKL("categorical")])


def test_distiller_refuses_a_regression_student_of_a_classifier():
    import kdtf

    categorical, gaussian = _model(CategoricalHead(2)), _model(GaussianHead(1))
    with pytest.raises(ValueError, match="same output distribution"):
        kdtf.Distiller(categorical, gaussian, DistributionKL("categorical"))
    with pytest.raises(ValueError, match="family='gaussian'"):
        kdtf.Distiller(gaussian, _model(GaussianHead(1)), DistributionKL("categorical"))
    kdtf.Distiller(gaussian, _model(GaussianHead(1)), DistributionKL("gaussian"))
