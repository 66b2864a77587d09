"""Repository rule: the Python interpreter that runs kdtf's py_binary/py_test.

Bazel 4.2.3 ignores `--python_path` once Python toolchains are on (the default),
so the interpreter is registered as a toolchain instead. The interpreter comes
from `$KDTF_PYTHON` (an absolute path, exported by tools/bazel_test.sh), or else
`python3` on PATH. A venv's `bin/python` is used as is (not resolved), so the
venv's site-packages (TensorFlow, Keras, pytest) are visible to the tests.
"""

def _kdtf_python_impl(rctx):
    python = rctx.os.environ.get("KDTF_PYTHON", "")
    if not python:
        found = rctx.which("python3")
        if found == None:
            fail("kdtf_python: set KDTF_PYTHON to a Python 3 interpreter or put python3 on PATH")
        python = str(found)
    if not python.startswith("/"):
        fail("kdtf_python: KDTF_PYTHON must be an absolute path, got %r" % python)
    probe = rctx.execute([python, "-c", "import sys; print(sys.version_info[0])"])
    if probe.return_code != 0 or probe.stdout.strip() != "3":
        fail("kdtf_python: %r is not a working Python 3 interpreter: %s" % (python, probe.stderr))

    # Linux limits a shebang line to 127 bytes on older kernels.
    shebang = "#!" + python if len(python) < 120 and " " not in python else "#!/usr/bin/env python3"
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name)
    rctx.file("BUILD", """\
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

package(default_visibility = ["//visibility:public"])

py_runtime(
    name = "py3_runtime",
    interpreter_path = "{python}",
    python_version = "PY3",
    stub_shebang = "{shebang}",
)

py_runtime_pair(
    name = "runtime_pair",
    py3_runtime = ":py3_runtime",
)

toolchain(
    name = "toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
""".format(python = python, shebang = shebang))

kdtf_python = repository_rule(
    implementation = _kdtf_python_impl,
    environ = ["KDTF_PYTHON", "PATH"],
    local = True,
)
