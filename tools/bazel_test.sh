#!/usr/bin/env bash
# Runs kdtf's fast Bazel test suite (//:fast_tests) offline.
#
# Usage:
#   tools/bazel_test.sh [EXTRA_BAZEL_TEST_ARGS...] [TARGETS...]
#
# Installs Bazel 4.2.3 (Debian's bazel-bootstrap, with bazel-platforms and
# bazel-rules-java) with apt-get when it is missing, then runs `bazel test` with
# local stand-ins for the repositories Bazel would otherwise download (see
# third_party/bazel/README.md). Targets default to //:fast_tests (tests tagged
# "slow" are left out); name targets (e.g. //:all_tests or //tests/losses:test_kd)
# to run those instead, slow ones included.
#
# Environment:
#   KDTF_PYTHON      Python interpreter with kdtf's dependencies (TensorFlow,
#                    Keras, pytest). Default: python3 of the active venv; with
#                    no venv active, ./.venv/bin/python if it exists; else
#                    python3 on PATH.
#   KDTF_BAZEL_ROOT  Bazel's output root (default /tmp/kdtf-bazel-$USER); the
#                    output base below it is keyed by the checkout's path.
#   CI               When set, test results are never taken from the cache.
#
# Exits with bazel's status; the last lines say what happened.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$repo" || exit 2
say() { printf 'bazel_test: %s\n' "$*"; }

# --- Bazel -------------------------------------------------------------------
platforms_dir=/usr/share/bazel/tools/platforms
rules_java_dir=/usr/share/bazel/rules/java
if ! command -v bazel >/dev/null 2>&1 || [ ! -d "$platforms_dir" ] || [ ! -d "$rules_java_dir" ]; then
  say "installing bazel-bootstrap, bazel-platforms, bazel-rules-java with apt-get"
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else
      say "FAILED: bazel is missing and this user cannot run apt-get (not root, no sudo)"; exit 2
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q >/dev/null ||
    { say "FAILED: apt-get update"; exit 2; }
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      bazel-bootstrap bazel-platforms bazel-rules-java </dev/null >/dev/null ||
    { say "FAILED: apt-get install bazel-bootstrap bazel-platforms bazel-rules-java"; exit 2; }
fi
command -v bazel >/dev/null 2>&1 || { say "FAILED: no bazel on PATH after installing it"; exit 2; }

# --- Python ------------------------------------------------------------------
python="${KDTF_PYTHON:-}"
if [ -z "$python" ]; then
  if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$repo/.venv/bin/python" ]; then
    python="$repo/.venv/bin/python"
  else
    python="$(command -v python3 || true)"
  fi
fi
[ -n "$python" ] || { say "FAILED: no python3 on PATH; set KDTF_PYTHON"; exit 2; }
case "$python" in
  /*) ;;
  */*) python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")" ;;
  *) python="$(command -v "$python" || true)" ;;
esac
# Kept as given, symlinks and all: a venv's bin/python must stay in the venv.
if ! "$python" -c 'import pytest' >/dev/null 2>&1; then
  say "FAILED: $python cannot import pytest; activate kdtf's venv or set KDTF_PYTHON"
  exit 2
fi
say "python: $python"

# --- test directories that Bazel would miss ------------------------------------
for dir in $(find tests -name 'test_*.py' -not -path '*/__pycache__/*' -exec dirname {} \; | sort -u); do
  if [ ! -f "$dir/BUILD" ]; then
    say "WARNING: $dir has test files but no BUILD file: Bazel does not run them"
  elif ! grep -q "\"//$dir:fast\"" BUILD; then
    say "WARNING: //$dir:fast is not listed in //:fast_tests (top-level BUILD)"
  fi
done

# --- bazel test --------------------------------------------------------------
output_root="${KDTF_BAZEL_ROOT:-/tmp/kdtf-bazel-$(id -un)}"
mkdir -p "$output_root"

args=()
targets=()
for a in "$@"; do
  case "$a" in
    //*|@*|:*) targets+=("$a") ;;
    *) args+=("$a") ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  targets=(//:fast_tests)
  args=(--test_tag_filters=-slow ${args[@]+"${args[@]}"})  # belt and braces
fi
if [ -n "${CI:-}" ]; then args+=(--nocache_test_results); fi

log="$(mktemp "${TMPDIR:-/tmp}/kdtf-bazel-test.XXXXXX.log")"
start=$(date +%s)
# --max_idle_secs: the server stays up briefly for a quick second run, then exits.
bazel \
  --output_user_root="$output_root" \
  --max_idle_secs=600 \
  test \
  --repo_env=KDTF_PYTHON="$python" \
  --override_repository=rules_cc="$repo/third_party/bazel/rules_cc" \
  --override_repository=remote_coverage_tools="$repo/third_party/bazel/remote_coverage_tools" \
  --override_repository=platforms="$platforms_dir" \
  --override_repository=rules_java="$rules_java_dir" \
  --test_output=errors \
  --keep_going \
  --color=no --curses=no \
  ${args[@]+"${args[@]}"} \
  -- "${targets[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
elapsed=$(( $(date +%s) - start ))

# Bazel's per-target summary lines: "//pkg:target   (cached) PASSED in 3.1s".
passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log")
failed=$(grep -cE '^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|FLAKY|INCOMPLETE|NO STATUS|REMOTE FAILURE)' "$log")
rm -f "$log"

echo
if [ "$status" -eq 0 ]; then
  say "OK: bazel test ${targets[*]} passed in ${elapsed}s"
elif [ "$status" -eq 4 ]; then
  say "FAILED: bazel test ${targets[*]} found no test targets (exit 4) in ${elapsed}s"
elif [ "$status" -eq 3 ]; then
  say "FAILED: bazel test ${targets[*]}: some tests failed (exit 3) in ${elapsed}s"
else
  say "FAILED: bazel test ${targets[*]} exited $status (build or setup error) after ${elapsed}s"
fi
say "$passed passed, $failed failed"
exit "$status"
