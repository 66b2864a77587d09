"""Bazel macros for kdtf's tests."""

def _pytest_support():
    """conftest.py files and pytest config a test in this package needs."""
    files = ["//tests:pytest_support"]
    if native.package_name() != "tests":
        files += native.glob(["conftest.py"])
    return files

def kdtf_py_test(name, src = None, deps = None, data = None, tags = None, size = None, **kwargs):
    """A `py_test` that runs one pytest-style test file.

    Args:
        name: target name, usually the file name without `.py`.
        src: the test file; defaults to `name + ".py"`.
        deps: extra `py_library` deps; `//kdtf` is always added.
        data: extra data files.
        tags: Bazel tags; use `["slow"]` for tests that take more than ~30 s,
            which keeps them out of `//:fast_tests` and tools/bazel_test.sh.
        size: Bazel test size; defaults to "medium" (300 s timeout), or
            "large" (900 s) for tests tagged "slow".
        **kwargs: passed to `py_test`.

    Example:
        kdtf_py_test(name = "test_kd_loss")
        kdtf_py_test(name = "test_train_mnist", tags = ["slow"])
    """
    src = src or (name + ".py")
    tags = tags or []
    if size == None:
        size = "large" if "slow" in tags else "medium"
    native.py_test(
        name = name,
        srcs = [src, "//tools:pytest_main.py"],
        main = "//tools:pytest_main.py",
        args = ["$(location %s)" % src],
        deps = (deps or []) + ["//kdtf"],
        data = (data or []) + _pytest_support(),
        python_version = "PY3",
        srcs_version = "PY3",
        legacy_create_init = 0,
        size = size,
        tags = tags,
        **kwargs
    )

def kdtf_py_tests(slow = None, exclude = None, deps = None, data = None):
    """One `kdtf_py_test` per `test_*.py` file in this package, plus suites.

    New test files are picked up without editing the BUILD file; list the
    ones that take more than ~30 s in `slow` so the fast suite stays short.

    Args:
        slow: test names (file names without `.py`) to tag "slow".
        exclude: test file names (with `.py`) to leave out.
        deps: extra `py_library` deps for every test.
        data: extra data files for every test.

    Defines `:fast` (the tests not tagged slow; `//:fast_tests` lists it) and
    `:all_tests` (every test here; `//:all_tests` lists it).

    Example:
        kdtf_py_tests(slow = ["test_train_mnist"])
    """
    slow = slow or []
    files = native.glob(["test_*.py"], exclude = exclude or [])

    # Helper scripts and data beside the tests (e.g. a script a test runs in a
    # subprocess, a fixture file) are in every test's runfiles.
    helpers = native.glob(
        ["*.py", "testdata/**", "*.json", "*.npz", "*.csv", "*.txt"],
        exclude = ["test_*.py", "conftest.py", "BUILD"],
    )
    data = (data or []) + helpers
    names = [f[:-len(".py")] for f in files]
    for name in slow:
        if name not in names:
            fail("kdtf_py_tests: slow test %r has no file %s.py in this package" % (name, name))
    for name in names:
        kdtf_py_test(
            name = name,
            deps = deps,
            data = data,
            tags = ["slow"] if name in slow else [],
        )
    # A test_suite with no `tests` holds every test of this package, and its
    # `tags` filter applies to those (it does not reach into nested suites,
    # which is why //:fast_tests lists each package's `:fast`).
    native.test_suite(name = "fast", tags = ["-slow"])
    native.test_suite(name = "all_tests")

def kdtf_py_binaries(deps = None, data = None, exclude = None):
    """One `py_binary` per top-level `*.py` file in this package.

    Every binary also gets `:lib`, a `py_library` of all `.py` files here, so
    apps can share helper modules.

    Args:
        deps: extra deps for every binary; `//kdtf` is always added.
        data: extra data files for every binary.
        exclude: file names (with `.py`) that are helpers, not apps.

    Example:
        kdtf_py_binaries(exclude = ["common.py"])
    """
    exclude = (exclude or []) + ["__init__.py", "conftest.py"]
    native.py_library(
        name = "lib",
        srcs = native.glob(["**/*.py"]),
        data = native.glob(["**/*.json", "**/*.yaml", "**/*.txt"]),
        srcs_version = "PY3",
        deps = (deps or []) + ["//kdtf"],
    )
    for f in native.glob(["*.py"], exclude = exclude + native.glob(["test_*.py"])):
        native.py_binary(
            name = f[:-len(".py")],
            srcs = [f],
            main = f,
            deps = (deps or []) + [":lib", "//kdtf"],
            data = data or [],
            python_version = "PY3",
            srcs_version = "PY3",
            legacy_create_init = 0,
        )
