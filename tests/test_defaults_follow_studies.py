"""The app defaults are what the studies selected on validation (issue 17, item 3).

Each dataset's defaults come from study tables (`SOURCES`: their JSONs beside
the markdown in results/, and the pair in each); for every method of those
tables, the setting selected on the validation split must be what
`pipeline.experiment.with_defaults` gives `apps/distill.py --dataset=<d>
--method=<m>` with no other flag. Change a default, or rerun a study and get
another selection, and this fails until the two agree again.
"""
import json
import os

import pytest

from pipeline import experiment
from studies.methods import ROWS

RESULTS = os.path.join(os.path.dirname(__file__), "..", "results")
# dataset -> [(results file, pair), ...], the first file first: results/defaults.json
# (the default job's methods and learning rates: the app's default pair on MNIST-1D,
# mnist1d_cnn -> mnist1d_mlp, the CNN pair on MNIST), then results/methods.json (every
# other method, on the CNN pairs) for the rows the first does not have.
SOURCES = {"mnist1d": [("defaults.json", "mnist1d_mlp"), ("methods.json", "mnist1d")],
           "mnist": [("defaults.json", "mnist"), ("methods.json", "mnist")]}
# Options a row's setting turns on (KD with logit standardization, "kd_ls"): given, as
# a user passes them, then the rest of its setting must be the defaults that come with
# them (OPTION_DEFAULTS).
OPTIONS = {option for option, _, _ in experiment.OPTION_DEFAULTS}
# Study settings that are not defaults: ReviewKD's stage pairing on MNIST (chosen
# for the study's time, studies.methods.REVIEWKD_STAGES).
STUDY_ONLY = ("stages",)


def _selected(dataset):
    out = {}
    for name, pair in SOURCES[dataset]:
        with open(os.path.join(RESULTS, name)) as f:
            data = json.load(f)
        results = data["results"] if isinstance(data, dict) else data
        res = next((r for r in results if r["name"] == pair), None)
        if res is None:  # the pair is not in this table (yet)
            continue
        for row, runs in res.get("evaluation", {}).items():
            if runs and row not in out:
                out[row] = {k: v for k, v in runs[0]["settings"].items() if k not in STUDY_ONLY}
    return out


@pytest.mark.parametrize("dataset", sorted(SOURCES))
def test_app_defaults_are_the_selected_settings(dataset):
    selected = _selected(dataset)
    assert selected, f"{SOURCES[dataset]}: no selected setting"
    for row, settings in selected.items():
        method = dict(ROWS).get(row, row)  # a table row's registry method
        given = {k: v for k, v in settings.items() if k in OPTIONS}
        cfg = experiment.with_defaults(experiment.RunConfig(method=method, dataset=dataset, **given))
        for key, value in settings.items():
            assert getattr(cfg, key) == pytest.approx(value), (
                f"{dataset} {method}: the study selected {key}={value}, the default is "
                f"{getattr(cfg, key)}")


@pytest.mark.parametrize("dataset", sorted(SOURCES))
def test_crd_negatives_are_what_the_study_ran(dataset):
    # Not selected (studies.methods fixes it for all CRD runs), but the app's default.
    from studies import methods as methods_study

    cfg = experiment.with_defaults(experiment.RunConfig(method="crd", dataset=dataset))
    assert cfg.crd_negatives == methods_study.CRD_NEGATIVES
