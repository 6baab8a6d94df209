#!/usr/bin/env bash
# One GPU lease, everything measured in it (device time is scarce: one call, bounded steps).
#   bash benchmarks/gpu_session.sh single      # kernels check, engine benchmark, full + quick profile
# Run from the repo root on the GPU machine with the carried wheels in .whl/. Results land in $OUT.
set -uo pipefail
: "${OUT:?set OUT}"
python3 -m pip install -q --no-index --no-deps --target .site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/.site:$PWD PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
step() { local name=$1 limit=$2; shift 2; local t0=$(date +%s)
  echo "== $name"; timeout "$limit" "$@"; local rc=$?; echo "== $name: $(( $(date +%s) - t0 )) s, exit $rc"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
GPU=$(python3 -c "from profilers.device import detect_gpus; print(detect_gpus().catalog_name)")
case "${1:-single}" in
single)
  QUICK=${QUICK:-}
  step kernels 90 python3 -m pytest -q -x tests/test_engine_kernels.py 2>&1 | tail -15
  step engine 260 python3 benchmarks/bench_engine.py $QUICK --out "$OUT/engine_$GPU.json" 2>&1 | tail -40
  step profile 200 python3 -m profilers.cli profile --out "$OUT/$GPU.yaml" --no-progress 2>&1 | tail -15
  step quick 75 python3 -m profilers.cli profile --quick --out "$OUT/$GPU.quick.yaml" --no-progress 2>&1 | tail -5
  python3 -m profilers.validate "$OUT/$GPU.yaml" > "$OUT/$GPU.validate.md" 2>&1; tail -30 "$OUT/$GPU.validate.md"
  ;;
esac
