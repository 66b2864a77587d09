"""The method registry (`kdtf.methods`) is the one list of methods and their settings."""
import dataclasses

import keras
import numpy as np
import pytest
from absl import flags

import kdtf
from kdtf import cli, methods
from pipeline import experiment


def _flags():
    values = flags.FlagValues()
    cli.define_flags(experiment.RunConfig, flag_values=values)
    values(["prog"])
    return values


def test_every_method_is_a_run_choice_and_a_flag_choice():
    assert experiment.METHODS == methods.names()
    assert {"none", "kd", "dist", "dkd", "extracurricular", "fitnets", "sskd"} <= set(methods.names())
    assert list(_flags()["method"].parser.enum_values) == list(methods.names())


def test_flag_defaults_are_the_library_defaults():
    values = _flags()
    for field in dataclasses.fields(experiment.RunConfig):
        assert values[field.name].value == field.default, field.name
    # A config from the default flags is the default config.
    assert cli.config_from_flags(experiment.RunConfig, flag_values=values) == experiment.RunConfig()


def test_every_method_setting_is_a_run_field():
    fields = {f.name: f for f in dataclasses.fields(experiment.RunConfig)}
    for setting in methods.settings():
        field = fields[setting.name]
        assert field.metadata["help"].startswith(setting.help)
        if setting.name in experiment.DATASET_DEPENDENT_SETTINGS:
            # Unset until with_defaults: the registry's default off the datasets that set one.
            assert field.default is None and field.metadata["type"] is type(setting.default)
            assert "Default: " in field.metadata["help"]
            cfg = experiment.with_defaults(experiment.RunConfig(dataset="npz:elsewhere.npz"))
            assert getattr(cfg, setting.name) == setting.default
        else:
            assert field.default == setting.default
            assert field.metadata["help"] == setting.help
    assert experiment.DATASET_DEPENDENT_SETTINGS  # the branch above is exercised


def test_a_method_setting_with_a_per_dataset_default():
    # DKD's beta on MNIST (pipeline.experiment.METHOD_DATASET_DEFAULTS): unset is the
    # dataset's value, an explicit one wins (also the registry's 8), other datasets get 8.
    registry = next(s for s in methods.settings() if s.name == "dkd_beta").default
    mnist = experiment.METHOD_DATASET_DEFAULTS[("dkd", "mnist")]["dkd_beta"]
    assert mnist != registry
    unset = experiment.RunConfig(method="dkd", dataset="mnist")
    assert experiment.with_defaults(unset).dkd_beta == mnist
    explicit = dataclasses.replace(unset, dkd_beta=registry)
    assert experiment.with_defaults(explicit).dkd_beta == registry
    assert experiment.fingerprint(unset) == experiment.fingerprint(
        dataclasses.replace(unset, dkd_beta=mnist)) != experiment.fingerprint(explicit)
    assert experiment.with_defaults(dataclasses.replace(unset, dataset="mnist1d")).dkd_beta \
        == experiment.METHOD_DATASET_DEFAULTS.get(("dkd", "mnist1d"), {}).get("dkd_beta", registry)
    teacher = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    student = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    d = experiment.make_distiller(unset, teacher, student, "dkd", steps_per_epoch=2)
    assert d.distillation_losses[0].beta == mnist
    fields = {f.name: f for f in dataclasses.fields(experiment.RunConfig)}
    assert f"dkd {mnist:g} on mnist" in fields["dkd_beta"].metadata["help"]


def test_bounds_and_choices_are_checked_from_the_declaration():
    with pytest.raises(ValueError, match="dkd_beta must be >= 0"):
        experiment.RunConfig(method="dkd", dkd_beta=-1.0).validate()
    with pytest.raises(ValueError, match="sampler: unknown value 'nope'"):
        experiment.RunConfig(sampler="nope").validate()
    with pytest.raises(ValueError, match="epochs must be a int"):
        experiment.RunConfig(epochs="3").validate()


def test_dkd_is_built_from_its_registry_entry():
    teacher = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    student = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    cfg = experiment.RunConfig(method="dkd", dkd_beta=2.0, dkd_warmup_epochs=1.5, temperature=3.0)
    d = experiment.make_distiller(cfg, teacher, student, "dkd", steps_per_epoch=10)
    (loss,) = d.distillation_losses
    assert isinstance(loss, kdtf.losses.DKD)
    assert (loss.beta, loss.temperature, loss.warmup_steps) == (2.0, 3.0, 15)


def test_register_refuses_a_second_entry_of_a_name_or_setting():
    with pytest.raises(ValueError, match="registered already"):
        methods.register(methods.Method("kd", "again", build=lambda cfg, ctx: {}))
    with pytest.raises(ValueError, match="registered already"):
        methods.register(methods.Method("kd2", "x", build=lambda cfg, ctx: {},
                                        settings=(methods.Setting("dkd_beta", 1.0, "x"),)))
    assert "kd2" not in methods.REGISTRY


def test_study_tables_name_rows_from_the_registry():
    rows = {"teacher": [0.9, 0.91], "dkd": [0.7, 0.72], "details": []}
    table = experiment.study_table(rows)
    assert "| student, DKD |" in table



def test_a_method_sets_its_own_default_of_a_shared_setting():
    teacher = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    student = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    x = np.random.default_rng(0).normal(size=(64, 5)).astype("float32")
    base = experiment.RunConfig()
    assert base.temperature is None  # unset: each method's own default
    assert methods.get("extracurricular").defaults == {"temperature": 1.0}
    # KD on MNIST-1D: its own per-dataset default (pipeline.experiment.METHOD_DATASET_DEFAULTS).
    assert experiment.with_defaults(dataclasses.replace(base, method="kd")).temperature == 1.0
    assert experiment.with_defaults(dataclasses.replace(
        base, method="kd", dataset="mnist")).temperature == 4.0
    base = dataclasses.replace(base, dataset="mnist")
    for method, want in (("kd", 4.0), ("dist", 4.0), ("dkd", 4.0), ("extracurricular", 1.0)):
        cfg = experiment.with_defaults(dataclasses.replace(base, method=method))
        assert cfg.temperature == want, method
        d = experiment.make_distiller(base, teacher, student, method, x_train=x, steps_per_epoch=2)
        assert d.distillation_losses[0].temperature == want, method
    # An explicit value wins, and unset or explicit default is one run (one fingerprint).
    explicit = dataclasses.replace(base, method="extracurricular", temperature=4.0)
    assert experiment.with_defaults(explicit).temperature == 4.0
    unset = dataclasses.replace(base, method="extracurricular")
    assert experiment.fingerprint(unset) == experiment.fingerprint(
        dataclasses.replace(unset, temperature=1.0)) != experiment.fingerprint(explicit)
    # Its --help names the per-method values.
    help_text = dataclasses.fields(experiment.RunConfig)[
        [f.name for f in dataclasses.fields(experiment.RunConfig)].index("temperature")].metadata["help"]
    assert "extracurricular 1" in help_text and "kd 1 on mnist1d" in help_text


@pytest.mark.parametrize("features,want", [(40, "full"), (256, "full"), (784, "diag")])
def test_gmm_covariance_auto_is_full_for_small_inputs(features, want):
    x = np.random.default_rng(0).normal(size=(300, features)).astype("float32")
    cfg = experiment.RunConfig(method="extracurricular", sampler="gmm")
    assert experiment.make_sampler(cfg, x).covariance == want
    cfg = dataclasses.replace(cfg, gmm_covariance="spherical")
    assert experiment.make_sampler(cfg, x).covariance == "spherical"


def test_the_learning_rate_default_depends_on_the_dataset():
    base = experiment.RunConfig()
    assert base.learning_rate is None
    assert experiment.with_defaults(base).learning_rate == 1e-2  # mnist1d (results/defaults.md)
    mnist = experiment.with_defaults(dataclasses.replace(base, dataset="mnist"))
    assert mnist.learning_rate == 1e-2  # the students; the teacher keeps 3e-3
    assert experiment.with_defaults(
        dataclasses.replace(base, dataset="npz:/some/file.npz")).learning_rate == 3e-3
    explicit = dataclasses.replace(base, learning_rate=0.05)
    assert experiment.with_defaults(explicit).learning_rate == 0.05
    assert experiment.fingerprint(base) == experiment.fingerprint(
        dataclasses.replace(base, learning_rate=1e-2))
    # The optimizer gets the resolved value.
    assert float(keras.ops.convert_to_numpy(
        experiment._optimizer(base, 10).learning_rate)) == pytest.approx(1e-2)


def test_an_option_brings_its_own_defaults():
    # KD with logit standardization: the paper's base temperature 2 and KD weight 9
    # (student_loss_weight 0.1) unless given; off, or with another method, as before.
    base = experiment.RunConfig(method="kd", dataset="mnist")
    on = dataclasses.replace(base, logit_standardization=True)
    assert (experiment.with_defaults(on).temperature, experiment.with_defaults(on).student_loss_weight) \
        == (2.0, 0.1)
    # On MNIST-1D the option's own weight there (selected on validation), the base temperature 2.
    mnist1d = experiment.with_defaults(dataclasses.replace(on, dataset="mnist1d"))
    assert (mnist1d.temperature, mnist1d.student_loss_weight) == (2.0, 0.5)
    assert experiment.with_defaults(dataclasses.replace(on, dataset="npz:x.npz")).student_loss_weight == 0.1
    assert experiment.with_defaults(base).temperature == 4.0
    assert experiment.with_defaults(base).student_loss_weight == 0.5
    dkd = experiment.with_defaults(dataclasses.replace(on, method="dkd"))
    assert (dkd.temperature, dkd.student_loss_weight) == (4.0, 0.5)
    explicit = experiment.with_defaults(dataclasses.replace(on, temperature=4.0))
    assert (explicit.temperature, explicit.student_loss_weight) == (4.0, 0.1)
    assert experiment.fingerprint(on) == experiment.fingerprint(
        dataclasses.replace(on, temperature=2.0, student_loss_weight=0.1))
