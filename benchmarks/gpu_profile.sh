#!/usr/bin/env bash
# Measured hardware profiles on a GPU machine (see docs/profiling.md).
#
#   bash benchmarks/gpu_profile.sh single           # full profile, then a timed --quick run, then validation
#   bash benchmarks/gpu_profile.sh collectives N    # all-reduce/all-gather curves for groups of 2..N GPUs
#
# Run from the repository root, with PYTHONPATH holding the repository and pydantic. Writes under $OUT:
#   <GPU>.yaml (full profile), <GPU>.quick.yaml, <GPU>.validate.md, profile.log   (single)
#   <GPU>.yaml (collective curves, merged into hw_profiles/measured/<GPU>.yaml when that exists)  (collectives)
# Every step prints "== <step>: <seconds> s, exit <code>".
set -uo pipefail
: "${OUT:?set OUT to the output folder}"
mkdir -p "$OUT"
# NVLink multicast can take a shared host's GPUs out of service: keep it off everywhere.
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
PY=${PYTHON:-python3}
LOG="$OUT/profile.log"

timed() {  # timed STEP COMMAND...: run COMMAND, keep its output in the log, print its duration
    local step=$1 t0 rc
    shift
    t0=$(date +%s)
    echo "== $step: $*" | tee -a "$LOG"
    "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    echo "== $step: $(( $(date +%s) - t0 )) s, exit $rc" | tee -a "$LOG"
    return "$rc"
}

$PY -c "import pydantic, torch, pynvml" || { echo "pydantic, torch and pynvml must be importable"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,power.limit,driver_version \
    --format=csv | tee -a "$LOG"
GPU=$($PY -c "from profilers.device import detect_gpus; print(detect_gpus().catalog_name)" 2>>"$LOG") \
    || { echo "GPU detection failed, see $LOG"; exit 1; }

case "${1:-single}" in
single)
    timed full $PY -m profilers.cli profile --out "$OUT/$GPU.yaml" --no-progress
    timed quick $PY -m profilers.cli profile --quick --out "$OUT/$GPU.quick.yaml" --no-progress
    $PY -m profilers.validate "$OUT/$GPU.yaml" > "$OUT/$GPU.validate.md" && cat "$OUT/$GPU.validate.md"
    ;;
collectives)
    N=${2:?usage: gpu_profile.sh collectives N}
    timed "collectives-$N" $PY -m profilers.cli profile --collectives-only --gpus "$N" --out "$OUT/$GPU.yaml" \
        --no-progress
    ;;
*)
    echo "usage: gpu_profile.sh single | collectives N"; exit 2 ;;
esac
