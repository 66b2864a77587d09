"""Shared `main` for kdtf's Bazel `py_test` targets.

Each `kdtf_py_test` (tools/testing.bzl) runs this file with the path of one
pytest-style test file as its first argument. It runs pytest on that file only
and exits with pytest's status, so Bazel sees a failing or empty test file as a
failed target.

Example:
    python tools/pytest_main.py tests/losses/test_kd.py
"""

import os
import sys

import pytest


def main(argv):
    """Runs pytest on the test file in `argv[1]`.

    Args:
        argv: `sys.argv`: the program name, the test file, then any extra
            pytest arguments.

    Returns:
        pytest's exit status (0 when every test passed).
    """
    if len(argv) < 2:
        sys.stderr.write("usage: pytest_main.py TEST_FILE [PYTEST_ARGS...]\n")
        return 2
    # Bazel runs tests from the workspace root inside the runfiles tree, which
    # has no setup.py to mark it: name it as pytest's rootdir so conftest.py
    # files up to tests/ are loaded, as in a plain `pytest` run from the repo.
    args = [argv[1], "-q", "-p", "no:cacheprovider", "--rootdir", os.getcwd()]
    # Bazel asks for a JUnit XML report here; pytest can write one.
    xml_output = os.environ.get("XML_OUTPUT_FILE")
    if xml_output:
        args.append("--junitxml=" + xml_output)
    args.extend(argv[2:])
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
