#!/usr/bin/env bash
# Downloads, here, the wheels the GPU machine of the `device` tool lacks for
# kdtf on Keras-on-JAX: its image has JAX (CUDA), h5py, rich, ml-dtypes,
# absl-py, attrs, wrapt and cloudpickle, but no Keras 3.15 and no TensorFlow
# Probability (tensorflow-probability 0.25 fails on its JAX 0.11: take
# tfp-nightly). Wheels go to .whl/ (ignored by git; carried with
# `carry: [".whl"]`): pure-Python ones in .whl/any, compiled ones per CPython
# version in .whl/cp3XX, so tools/device_benchmark.sh installs the set that
# matches the Python it finds there.
#
# Usage (repository root, with pip and a registry): bash tools/fetch_device_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl/any

# Versions checked together here (KERAS_BACKEND=jax, jax 0.10.2 on CPU, no
# TensorFlow installed): python apps/benchmark.py --inputs=memory ... rc 0.
PURE="keras==3.15.1 namex==0.1.0 tfp-nightly==0.26.0.dev20261027 gast==0.7.0 decorator==5.3.1"
COMPILED="optree==0.20.0 dm-tree==0.1.10"
PLATFORMS=""
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS="$PLATFORMS --platform $p"
done
python3 -m pip download -q --no-deps --only-binary=:all: -d .whl/any $PURE
for v in 3.11 3.12 3.13; do
  tag=cp${v/./}
  mkdir -p ".whl/$tag"
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$v" \
    --implementation cp $PLATFORMS -d ".whl/$tag" $COMPILED
done
du -sh .whl
ls -R .whl
