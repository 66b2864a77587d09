#!/usr/bin/env bash
# Issue 7's GPU measurements in one call of the `device` tool: Keras on JAX,
# bfloat16, XLA, resnet32x4 -> resnet8x4 on CIFAR-100-shaped uint8 images,
# batch 256, steps_per_execution 20; kdtf KD, DIST, extracurricular (Mixup,
# a synthetic batch as large as the real one), cached-teacher KD and KD with
# crop + flip inside the step, against keras.distillation, student-only
# training and teacher inference (the bound), interleaved rounds, medians.
#
# The GPU machine has JAX but neither TensorFlow nor Keras 3.15 nor TFP, so:
#   1. here, once:   bash tools/fetch_device_wheels.sh      (fills .whl/)
#   2. device tool:  run(command="bash tools/device_benchmark.sh",
#                        carry=[".whl"], timeout_s=560)
# Results come back under $OUT: BENCHMARKS_gpu.md/.json (the report),
# benchmark.log (every round as it is measured, kept if the run is cut
# short) and env.txt (GPU, driver, JAX, Keras, TFP versions).
#
# Environment: PYTHON (interpreter, default python3), BENCH_TIMEOUT (seconds
# for the benchmark, default 480), BENCH_FLAGS (extra apps/benchmark.py
# flags, appended so they override, e.g. for a CPU smoke run of this script).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/kdtf_device}
mkdir -p "$OUT"
tag=$("$PYTHON" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
if [ ! -d ".whl/$tag" ]; then
  echo "no wheels for $tag in .whl/: run tools/fetch_device_wheels.sh here and carry .whl" >&2
  exit 2
fi
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/kdtf_site .whl/any/*.whl ".whl/$tag"/*.whl || exit 1
export PYTHONPATH=/tmp/kdtf_site${PYTHONPATH:+:$PYTHONPATH}
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "nvidia-smi: none"
  "$PYTHON" -c "import jax, keras, tensorflow_probability as tfp; \
print('jax', jax.__version__, jax.devices()); print('keras', keras.__version__); \
print('tfp', tfp.__version__)"
} 2>&1 | tee "$OUT/env.txt"
# shellcheck disable=SC2086
timeout "${BENCH_TIMEOUT:-480}" "$PYTHON" apps/benchmark.py \
  --pairs=cifar --cifar_teacher=resnet32x4 --cifar_student=resnet8x4 --cifar_examples=51200 \
  --batch_size=256 --precision=mixed_bfloat16 --jit_compile=true --steps_per_execution=20 \
  --inputs=memory --modes=kd,dist,extracurricular,cached --augment \
  --rounds=3 --steps=400 --warmup_steps=40 \
  --output="$OUT/BENCHMARKS_gpu.md" ${BENCH_FLAGS:-} 2>&1 | tee "$OUT/benchmark.log"
status=${PIPESTATUS[0]}
echo "benchmark exit status $status" | tee -a "$OUT/benchmark.log"
exit "$status"
