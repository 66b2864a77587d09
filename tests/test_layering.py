"""The source tree's layers: kdtf < pipeline < studies, benchmarks < apps.

The library (`kdtf/`) holds mechanisms only and never imports the layers
beside it; the run pipeline never imports the studies, the benchmarks or the
apps; nothing but the apps imports the apps. The check reads every module's
imports with `ast` (function-level imports included), so it needs no layer
to be importable. The deprecated shims of `kdtf._moved` are the one
exception, and must hold nothing but `alias(__name__)`.
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# layer -> the top-level packages it may import besides its own
ALLOWED = {
    "kdtf": set(),
    "pipeline": {"kdtf"},
    "studies": {"kdtf", "pipeline"},
    "benchmarks": {"kdtf", "pipeline"},
    "apps": {"kdtf", "pipeline", "studies", "benchmarks"},
}


def _modules(layer):
    top = os.path.join(ROOT, layer)
    for directory, _, files in os.walk(top):
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def _imported_layers(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in ALLOWED:
                yield top, node.lineno


def _is_shim(path):
    from kdtf import _moved

    relative = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
    return relative.removesuffix(".__init__") in _moved.MOVED


def _violations(layer):
    found = []
    for path in _modules(layer):
        if layer == "kdtf" and _is_shim(path):
            continue
        for top, line in _imported_layers(path):
            if top != layer and top not in ALLOWED[layer]:
                found.append(f"{os.path.relpath(path, ROOT)}:{line} imports {top}")
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_the_layers_below(layer):
    if not os.path.isdir(os.path.join(ROOT, layer)):
        pytest.skip(f"{layer}/ is not in this test's files (e.g. a Bazel sandbox)")
    assert _violations(layer) == []


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    bad = tmp_path / "kdtf" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("def f():\n    from pipeline import experiment\n    import apps.distill\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", str(tmp_path))
    assert _violations("kdtf") == ["kdtf/bad.py:2 imports pipeline", "kdtf/bad.py:3 imports apps"]


def test_shims_hold_only_the_alias():
    from kdtf import _moved

    for old in _moved.MOVED:
        path = os.path.join(ROOT, *old.split("."))
        path = os.path.join(path, "__init__.py") if os.path.isdir(path) else path + ".py"
        body = [n for n in ast.parse(open(path).read()).body
                if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        assert [ast.unparse(n) for n in body] == ["from kdtf._moved import alias", "alias(__name__)"], path


@pytest.mark.parametrize("old,new", [
    ("kdtf.experiment", "pipeline.experiment"), ("kdtf.benchmark", "benchmarks.benchmark"),
    ("kdtf.regression", "studies.regression"), ("kdtf.studies.soak", "studies.soak"),
    ("kdtf.report.build", "pipeline.report.build"),
])
def test_old_names_still_work_with_a_warning_and_are_the_new_modules(old, new):
    import importlib
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")) as record:
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)  # one module, not a copy
    assert any(r.filename == __file__ for r in record)  # blamed on the importer


def test_old_attribute_names_warn_where_they_are_used():
    import kdtf
    import pipeline.experiment

    kdtf.__dict__.pop("experiment", None)
    with pytest.warns(DeprecationWarning, match=r"pipeline\.experiment") as record:
        module = kdtf.experiment
    assert module is pipeline.experiment
    assert record[0].filename == __file__


def test_python_dash_m_runs_a_moved_study_by_its_old_name(tmp_path):
    # From another folder: the editable install exposes only `kdtf`, and the
    # old name finds `studies` beside it.
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-W", "default", "-m", "kdtf.studies.soak", "--help"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage: soak.py" in proc.stdout and "moved to studies.soak" in proc.stderr
