"""The app defaults are what the studies selected on validation (issue 17, item 3).

Each dataset's defaults come from one study table (`SOURCES`: its JSON beside
the markdown in results/, and the pair in it); for every method of that table,
the setting it selected on the validation split must be what
`pipeline.experiment.with_defaults` gives `apps/distill.py --dataset=<d>
--method=<m>` with no other flag. Change a default, or rerun a study and get
another selection, and this fails until the two agree again.
"""
import json
import os

import pytest

from pipeline import experiment

RESULTS = os.path.join(os.path.dirname(__file__), "..", "results")
# dataset -> (results file, pair): the app's default pair on MNIST-1D (mnist1d_cnn ->
# mnist1d_mlp), the CNN pair on MNIST.
SOURCES = {"mnist1d": ("defaults.json", "mnist1d_mlp"), "mnist": ("defaults.json", "mnist")}
# Rows of those tables that are not a registry method.
NOT_METHODS = {"none": "none"}


def _selected(dataset):
    name, pair = SOURCES[dataset]
    with open(os.path.join(RESULTS, name)) as f:
        data = json.load(f)
    results = data["results"] if isinstance(data, dict) else data
    res = next(r for r in results if r["name"] == pair)
    out = {}
    for row, runs in res["evaluation"].items():
        if runs:
            out[row] = runs[0]["settings"]
    return out


@pytest.mark.parametrize("dataset", sorted(SOURCES))
def test_app_defaults_are_the_selected_settings(dataset):
    selected = _selected(dataset)
    assert selected, f"{SOURCES[dataset]}: no selected setting"
    for row, settings in selected.items():
        method = NOT_METHODS.get(row, row)
        cfg = experiment.with_defaults(experiment.RunConfig(method=method, dataset=dataset))
        for key, value in settings.items():
            assert getattr(cfg, key) == pytest.approx(value), (
                f"{dataset} {method}: the study selected {key}={value}, the default is "
                f"{getattr(cfg, key)}")
