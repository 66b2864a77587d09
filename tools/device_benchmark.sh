#!/usr/bin/env bash
# Issue 19's GPU measurements in ONE call of the `device` tool, in three
# parts, each writing into $OUT:
#   1. keras: the prepared benchmark (issue 7): Keras on JAX, bfloat16, XLA,
#      resnet32x4 -> resnet8x4 on CIFAR-100-shaped uint8 images, batch 256,
#      steps_per_execution 20; kdtf KD, DIST, extracurricular (Mixup, a
#      synthetic batch as large as the real one), cached-teacher KD and KD
#      with crop + flip inside the step, against keras.distillation,
#      student-only training and teacher inference (the bound); interleaved
#      rounds, medians.                  -> BENCHMARKS_gpu.md/.json, benchmark.log
#   2. torch: benchmarks/torch_kd.py, a plain PyTorch KD loop for the same
#      pair (bf16 autocast, channels_last, torch.compile, fused Adam), its
#      student-only and teacher-inference steps, and the ratio to part 1's
#      kdtf KD.                          -> torch_kd.md/.json, torch_kd.log
#   3. applications: keras.applications ResNet50 -> MobileNetV3Small (random
#      weights, logits out) at 224x224, batch 128, kdtf KD (teacher BatchNorm
#      folded, and not) vs keras.distillation, plus the two baselines. Float32
#      (XLA's default GPU precision), because only float32 convolutions fold:
#      under bf16 there would be no unfolded row to compare.
#                                        -> BENCHMARKS_gpu_applications.md/.json,
#                                           applications.log
# plus env.txt (GPU, driver, JAX, Keras, TFP, PyTorch versions) and parts.txt
# (each part's exit status, seconds and time limit).
#
# The GPU machine has JAX and PyTorch but neither TensorFlow nor Keras 3.15
# nor TFP, so:
#   1. here, once:   bash tools/fetch_device_wheels.sh      (fills .whl/)
#   2. device tool:  run(command="bash tools/device_benchmark.sh",
#                        carry=[".whl"], timeout_s=560)
#
# Time: the whole call must end within DEVICE_BUDGET (540 s) so that the
# tool's 560 s limit is never hit. Estimated per part on an H200 (no GPU run
# of this script has happened yet; XLA and Inductor compile times are guesses
# from CPU runs):
#   setup (wheels, env.txt)                                      ~ 20 s
#   keras         8 configurations: XLA compile ~15-25 s each   ~120-200 s
#                 + teacher cache (51,200 images) ~10 s
#                 + 3 rounds x 8 x 200 steps at ~3-10 ms         ~ 30-60 s
#                 reserved for it: whatever is left after the other parts' reserves
#   torch         torch.compile of 3 steps                      ~ 40-80 s
#                 + 3 rounds x 3 x 200 steps at ~2-8 ms          ~ 10-15 s
#                 reserve TORCH_BUDGET=100 s
#   applications  5 configurations: XLA compile ~20-30 s each   ~100-150 s
#                 + 3 rounds x 5 x 40 steps at ~10-50 ms         ~ 10-30 s
#                 reserve APPS_BUDGET=150 s
# Each part runs under `timeout` with a limit of the time left minus the
# reserves of the parts after it (so time a part does not use goes to the
# next), and is told --time_budget_s a little below that limit: it then
# starts no round that would end past it and writes its report after every
# round, so a part cut short still leaves the rounds it measured. A part
# that fails or times out is recorded in parts.txt and the next part runs;
# the script exits 0 when every part completed (its report says
# "complete": true), 1 otherwise; parts.txt gives each part's status (3:
# cut by its time budget, 124: timed out).
#
# Environment (all optional; a CPU smoke run sets small sizes here):
#   PYTHON          interpreter (default python3)
#   OUT             output folder (the device tool sets it)
#   DEVICE_BUDGET   seconds for the whole script (default 540)
#   BENCH_ROUNDS, BENCH_STEPS (3, 200), BENCH_FLAGS (extra apps/benchmark.py
#                   flags for part 1, appended so they override)
#   TORCH_ROUNDS, TORCH_STEPS (3, 200), TORCH_BUDGET (100), TORCH_FLAGS
#                   (extra benchmarks/torch_kd.py flags)
#   APPS_ROUNDS, APPS_STEPS (3, 40), APPS_IMAGE_SIZE (224), APPS_BATCH (128),
#   APPS_BUDGET (150), APPS_FLAGS (extra apps/benchmark.py flags for part 3)
#   PARTS           which parts to run, default "keras torch applications"
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$SECONDS
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/kdtf_device}
TOTAL=${DEVICE_BUDGET:-540}
TORCH_BUDGET=${TORCH_BUDGET:-100}
APPS_BUDGET=${APPS_BUDGET:-150}
PARTS=${PARTS:-keras torch applications}
mkdir -p "$OUT"
: > "$OUT/parts.txt"
ORIGINAL_PYTHONPATH=${PYTHONPATH:-}
failed=0

record() {  # record NAME STATUS SECONDS LIMIT NOTE
  printf '%-13s rc=%-4s %4ss of limit %4ss  %s\n' "$1" "$2" "$3" "$4" "$5" | tee -a "$OUT/parts.txt"
  [ "$2" = 0 ] || failed=1
}

wanted() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# limit RESERVE: seconds left for this part, keeping RESERVE for the later ones.
limit() { echo $(( TOTAL - (SECONDS - T0) - $1 )); }

# run_part NAME RESERVE LOG REPORT_JSON COMMAND...; "@BUDGET@" in COMMAND
# becomes the part's --time_budget_s (its limit less 25 s for start-up and
# the report).
run_part() {
  local name=$1 reserve=$2 log=$3 report=$4; shift 4
  local left start status args=()
  left=$(limit "$reserve")
  if [ "$left" -lt 60 ]; then
    record "$name" skip 0 "$left" "not run: under 60 s left"
    return
  fi
  for a in "$@"; do args+=("${a//@BUDGET@/$((left - 25))}"); done
  start=$SECONDS
  echo "== $name: limit ${left}s: ${args[*]}" | tee "$OUT/$log"
  timeout -k 10 "$left" "${args[@]}" 2>&1 | tee -a "$OUT/$log"
  status=${PIPESTATUS[0]}
  local note=ok complete
  complete=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("complete"))' \
             "$report" 2>/dev/null || echo "no report")
  case $status in
    0) [ "$complete" = True ] || { note="incomplete: $complete (see its report)"; status=3; } ;;
    124|137) note="timed out; report: $complete" ;;
    *) note="failed (see $log); report: $complete" ;;
  esac
  echo "== $name exit status $status" | tee -a "$OUT/$log"
  record "$name" "$status" $(( SECONDS - start )) "$left" "$note"
}

# ------------------------------------------------------------------ setup
keras_ready=1
tag=$("$PYTHON" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
if [ ! -d ".whl/$tag" ]; then
  echo "no wheels for $tag in .whl/: run tools/fetch_device_wheels.sh here and carry .whl" >&2
  keras_ready=0
elif ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/kdtf_site .whl/any/*.whl ".whl/$tag"/*.whl; then
  echo "installing the wheels failed" >&2
  keras_ready=0
fi
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "nvidia-smi: none"
  PYTHONPATH=/tmp/kdtf_site${ORIGINAL_PYTHONPATH:+:$ORIGINAL_PYTHONPATH} KERAS_BACKEND=jax \
    "$PYTHON" -c "import jax, keras, tensorflow_probability as tfp; \
print('jax', jax.__version__, jax.devices()); print('keras', keras.__version__); \
print('tfp', tfp.__version__)"
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'cudnn', torch.backends.cudnn.version(), 'gpu', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/env.txt"
record setup "$(( keras_ready ? 0 : 1 ))" $(( SECONDS - T0 )) "-" \
  "$([ $keras_ready = 1 ] && echo "wheels installed" || echo "no Keras: parts keras and applications skipped")"

keras_env=(env PYTHONPATH=/tmp/kdtf_site${ORIGINAL_PYTHONPATH:+:$ORIGINAL_PYTHONPATH}
           KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3)

# ------------------------------------------------------------ 1. keras
if wanted keras && [ $keras_ready = 1 ]; then
  reserve=0
  wanted torch && reserve=$(( reserve + TORCH_BUDGET ))
  wanted applications && reserve=$(( reserve + APPS_BUDGET ))
  # shellcheck disable=SC2086
  run_part keras "$reserve" benchmark.log "$OUT/BENCHMARKS_gpu.json" "${keras_env[@]}" "$PYTHON" apps/benchmark.py \
    --pairs=cifar --cifar_teacher=resnet32x4 --cifar_student=resnet8x4 --cifar_examples=51200 \
    --batch_size=256 --precision=mixed_bfloat16 --jit_compile=true --steps_per_execution=20 \
    --inputs=memory --modes=kd,dist,extracurricular,cached --augment \
    --rounds="${BENCH_ROUNDS:-3}" --steps="${BENCH_STEPS:-200}" --warmup_steps=40 \
    --time_budget_s=@BUDGET@ --output="$OUT/BENCHMARKS_gpu.md" ${BENCH_FLAGS:-}
elif wanted keras; then
  record keras skip 0 - "not run: no Keras (setup)"
fi

# ------------------------------------------------------------ 2. torch
if wanted torch; then
  reserve=0
  wanted applications && [ $keras_ready = 1 ] && reserve=$APPS_BUDGET
  compare=()
  [ -f "$OUT/BENCHMARKS_gpu.json" ] && compare=(--compare="$OUT/BENCHMARKS_gpu.json")
  # shellcheck disable=SC2086
  run_part torch "$reserve" torch_kd.log "$OUT/torch_kd.json" env PYTHONPATH="$ORIGINAL_PYTHONPATH" PYTHONUNBUFFERED=1 \
    "$PYTHON" benchmarks/torch_kd.py --teacher=resnet32x4 --student=resnet8x4 --batch_size=256 \
    --amp=bf16 --channels_last --compile --modes=kd,student,teacher \
    --rounds="${TORCH_ROUNDS:-3}" --steps="${TORCH_STEPS:-200}" --warmup_steps=20 \
    --time_budget_s=@BUDGET@ "${compare[@]}" --output="$OUT/torch_kd.md" ${TORCH_FLAGS:-}
fi

# ------------------------------------------------------ 3. applications
if wanted applications && [ $keras_ready = 1 ]; then
  # shellcheck disable=SC2086
  run_part applications 5 applications.log "$OUT/BENCHMARKS_gpu_applications.json" \
    "${keras_env[@]}" "$PYTHON" apps/benchmark.py \
    --pairs=applications --applications_image_size="${APPS_IMAGE_SIZE:-224}" \
    --batch_size="${APPS_BATCH:-128}" --applications_examples="${APPS_BATCH:-128}" \
    --precision=float32 --jit_compile=true --steps_per_execution=10 --inputs=memory --modes=kd \
    --rounds="${APPS_ROUNDS:-3}" --steps="${APPS_STEPS:-40}" --warmup_steps=10 \
    --time_budget_s=@BUDGET@ --output="$OUT/BENCHMARKS_gpu_applications.md" ${APPS_FLAGS:-}
elif wanted applications; then
  record applications skip 0 - "not run: no Keras (setup)"
fi

echo "total $(( SECONDS - T0 ))s of $TOTAL s" | tee -a "$OUT/parts.txt"
exit "$failed"
