"""Regression distillation end to end on tiny settings (studies.regression)."""
import math

import numpy as np
import pytest

import keras

from studies import regression
from kdtf.heads import CategoricalHead


@pytest.fixture(scope="module")
def sine():
    return regression.heteroscedastic_sine(num_train=120, num_test=200, num_labelled=24, seed=0)


def test_sine_data_has_the_documented_gap_and_noise():
    data = regression.heteroscedastic_sine(num_train=2000, num_test=10, seed=1)
    x = data.x_train[:, 0]
    assert x.min() >= -1 and x.max() <= 1
    assert not np.any((x > 0.1) & (x < 0.5))
    resid = data.y_train[:, 0] - np.sin(3 * x)
    left, right = resid[x < -0.5], resid[x > 0.6]
    np.testing.assert_allclose(left.std(), regression.sine_noise_std(-0.75), atol=0.02)
    np.testing.assert_allclose(right.std(), regression.sine_noise_std(0.8), atol=0.04)
    assert data.labelled[0].shape == (40, 1) and data.unlabelled.shape == (1960, 1)


def test_auto_mpg_is_standardised():
    data = regression.auto_mpg(seed=0)
    assert data.x_train.shape[1] == 7 and len(data.x_train) + len(data.x_test) == 392
    np.testing.assert_allclose(data.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(data.y_train.std(), 1, atol=1e-5)
    assert 5 < data.y_scale < 10  # mpg std
    assert np.all(np.isfinite(data.x_train)) and np.all(np.isfinite(data.x_test))


def test_diabetes_is_standardised_and_split_by_seed():
    data = regression.diabetes(seed=0)
    assert data.x_train.shape[1] == 10 and len(data.x_train) + len(data.x_test) == 442
    np.testing.assert_allclose(data.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(data.y_train.std(), 1, atol=1e-5)
    assert 70 < data.y_scale < 85  # the progression measure's std is ~77
    assert data.num_labelled == round(0.25 * len(data.x_train))
    other = regression.diabetes(seed=1)
    assert not np.array_equal(data.x_test, other.x_test)


def test_evaluate_matches_definitions(sine):
    model = regression.mlp(1, [4], name="m")
    r = regression.evaluate(model, sine, teacher=model)
    mean, std = regression.predict_gaussian(model, sine.x_test)
    err = sine.y_test - mean
    assert r["rmse"] == pytest.approx(float(np.sqrt(np.mean(err ** 2))))
    nll = np.mean(np.log(std) + err ** 2 / (2 * std ** 2) + 0.5 * math.log(2 * math.pi))
    assert r["nll"] == pytest.approx(float(nll))
    assert r["kl_to_teacher"] == pytest.approx(0.0, abs=1e-9)


def test_end_to_end_small_runs_and_distillation_helps():
    methods = ("erm", "kd_means", "extracurricular", "oracle")
    result = regression.run_experiment("sine", seeds=(0,), methods=methods, teacher_steps=300,
                                       steps=400, log=None)
    runs = result["runs"]
    assert set(runs) == {"teacher", *methods}
    for name, per_seed in runs.items():
        assert len(per_seed) == 1
        for key, value in per_seed[0].items():
            assert math.isfinite(value), (name, key)
        if name != "teacher":
            assert per_seed[0]["kl_to_teacher"] >= 0
    # Matching the teacher's distribution brings the student closer to it.
    kl = {m: runs[m][0]["kl_to_teacher"] for m in methods}
    assert kl["extracurricular"] < kl["erm"] and kl["oracle"] < kl["erm"]
    table = regression.results_table(result)
    assert table.count("\n| sine |") == 5 and "±" in table
    # Each student against ERM: the relative RMSE change and the NLL difference.
    erm, ec = runs["erm"][0], runs["extracurricular"][0]
    row = next(line for line in table.splitlines() if "extracurricular" in line)
    assert f"{100 * (ec['rmse'] - erm['rmse']) / erm['rmse']:+.1f}%" in row
    assert f"{ec['nll'] - erm['nll']:+.3f}" in row


def test_bad_input(sine):
    teacher = regression.mlp(1, [4])
    with pytest.raises(ValueError, match="valid methods"):
        regression.fit_student("bogus", sine, teacher, [4], 10)
    with pytest.raises(ValueError, match="valid names"):
        regression.run_experiment("boston", seeds=(0,))
    with pytest.raises(ValueError, match="valid names"):
        regression.make_sampler("bogus", sine)
    with pytest.raises(ValueError, match="steps"):
        regression.fit_teacher(sine, [4], 0)
    with pytest.raises(ValueError, match="num_labelled"):
        regression.heteroscedastic_sine(num_train=10, num_labelled=20)
    # A regression student distilled from a classification teacher.
    classifier = keras.Sequential([keras.Input((1,)), CategoricalHead(2)])
    with pytest.raises(ValueError, match="GaussianHead"):
        regression.fit_student("extracurricular", sine, classifier, [4], 10)
