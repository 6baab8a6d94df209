#!/usr/bin/env bash
# One GPU lease, everything measured in it (device time is scarce: one call, bounded steps).
#   bash benchmarks/gpu_session.sh single      # kernels check, engine benchmark, full + quick profile
#   bash benchmarks/gpu_session.sh multi       # several GPUs: collectives, engine at scale, accuracy grid
#   bash benchmarks/gpu_session.sh accuracy    # one GPU: accuracy grid (TP 1), quick engine benchmark, decode diag
#   bash benchmarks/gpu_session.sh serving     # one GPU: CUDA-path tests, the serving runs (fit run + four loads) only
#   bash benchmarks/gpu_session.sh profile2    # one GPU: full profile (two attention head sizes), full engine benchmark
#   bash benchmarks/gpu_session.sh grid        # one GPU: the accuracy grid and serving runs (with the fit run) only
#   bash benchmarks/gpu_session.sh async       # one GPU: CUDA-path tests, full engine benchmark without HF (sync and async)
#   bash benchmarks/gpu_session.sh serving_async  # one GPU: the serving runs with the engine's async scheduling
#   bash benchmarks/gpu_session.sh bench_predict  # one GPU: `plan bench run` on the built-in engine, prediction beside measurement
#   bash benchmarks/gpu_session.sh grid2       # one GPU: CUDA-path tests, full profile, then the step grid on the same machine
#   bash benchmarks/gpu_session.sh machine     # one GPU: full profile, step grid and serving runs, all on one machine
#   bash benchmarks/gpu_session.sh grid70      # one GPU: full profile, then the step grid with the 70B fp8 case, one machine
#   bash benchmarks/gpu_session.sh fp8rows     # one GPU: fp8 CUDA-path tests, then the fp8 step grid (8B, 70B) with tuned 2-16 rows
#   bash benchmarks/gpu_session.sh contention  # one GPU: steps beside a busy interpreter / after idle / sustained, then bench_predict
#   bash benchmarks/gpu_session.sh probes      # one GPU: decode-attention tiles by head size, sustained GEMM clocks, eager vs piecewise prefill
#   bash benchmarks/gpu_session.sh smoke       # one GPU: CUDA-path tests, eager-step diagnosis (a short first call)
#   bash benchmarks/gpu_session.sh grid3       # one GPU: full profile, then the step grid (with 70B fp8), one machine
#   bash benchmarks/gpu_session.sh grid4       # one GPU: kernel tests, short-prefill kernels (eager diag), full profile,
#                                              # then the step grid (with 70B fp8), one machine; decode benchmark
#   bash benchmarks/gpu_session.sh grid5       # one GPU: full profile, then the step grid (cheap points measured more)
#   bash benchmarks/gpu_session.sh grid9       # the same with more GPU time for the grid (engines capture more graphs)
#   bash benchmarks/gpu_session.sh race        # linear-race tests, decode at batch 1-32, full profile, step grid
#   bash benchmarks/gpu_session.sh whole       # one GPU: CUDA-path tests, prefills (alone and beside 16 decodes) with and
#                                              # without whole-forward graphs, decode at batch 1-32
#   bash benchmarks/gpu_session.sh tune2       # one GPU: decode with and without the bf16 linear tuning, twice each
#                                              # in turn, and the decode diag
#   bash benchmarks/gpu_session.sh served      # one GPU: served mixed steps (bench_served_steps.py), then the
#                                              # serving runs with async scheduling (then grid9 on the same machine)
#   bash benchmarks/gpu_session.sh buckets     # one GPU: 1,024/2,048-token prompts beside 0/48 decodes with and without
#                                              # whole-forward graphs, served mixed steps, serving runs (async)
#   bash benchmarks/gpu_session.sh probe_mixed # one GPU: a prompt beside prefilled vs pretend-cached decodes, and
#                                              # its kernels (the 2026-12-02 timings: --decodes 0,16,48, no --profile)
#   bash benchmarks/gpu_session.sh graphs      # one GPU: CUDA-path tests, decode at 64-256 sequences with power-of-two
#                                              # decode graphs and with the finer set, twice each in turn
#   bash benchmarks/gpu_session.sh splits      # one GPU: the decode-attention kernel by batch, context and split count
#   bash benchmarks/gpu_session.sh split2      # one GPU: CUDA-path and kernel tests, decode at 48-256 sequences (1k and 4k
#                                              # context) with one split past a wave of programs and with two, in turn
#   bash benchmarks/gpu_session.sh rows        # one GPU: GEMMs and prefills with repeated vs random rows, then the full
#                                              # profile (then `step` on the same machine)
#   bash benchmarks/gpu_session.sh profile     # one GPU: CUDA-path tests, the full profile (then `step` on the same machine)
#   bash benchmarks/gpu_session.sh step        # one GPU: the step grid only (prompts of random ids since 2026-12-03)
#   bash benchmarks/gpu_session.sh eager       # one GPU: eager mixed steps (2,048-token prompt + 8 decodes, above the
#                                              # graph buckets) of Llama-3.2-1B fp8 and bf16: kernels and host ops
#   bash benchmarks/gpu_session.sh launch      # one GPU: the profiler's launch section only (bare launches, and the
#                                              # engine's eager issue interval)
#   bash benchmarks/gpu_session.sh engine_full # one GPU: CUDA-path tests, then the full engine benchmark with HF
#   bash benchmarks/gpu_session.sh tma         # one GPU: GEMV tests, then the decode linears: cuBLAS, Triton, Triton with TMA
#   bash benchmarks/gpu_session.sh tma2        # GEMV and race tests, then decode at batch 1-32 without / with the TMA GEMV
#                                              # in the linear race, twice each in turn
#   bash benchmarks/gpu_session.sh fold        # kernel, race and CUDA-path tests, then decode at batch 1-32 with the GEMVs
#                                              # up to 16 rows and no folded norms, then up to 32 rows, RMSNorms folded in
#   bash benchmarks/gpu_session.sh fold2       # the same with 32 rows unfolded first, then the decode diag
#   bash benchmarks/gpu_session.sh kvlayout    # decode-attention tests, then the kernel over KV layouts, block sizes and
#                                              # program orders, beside read-only bandwidth (PROBES=kvlayout,tail: and tails)
#   bash benchmarks/gpu_session.sh tail        # decode-attention tests, the tail probe, then decode at batch 1-256 with the
#                                              # last partial tile whole (PLAN_ENGINE_DECODE_TAIL=64) and in 16-token tiles
#                                              # in turn (REPS=2: twice; TESTS=1: CUDA-path tests first)
#   bash benchmarks/gpu_session.sh overlap     # one GPU: kernel tests, the two-half overlap probe (results/overlap_H200),
#                                              # then the engine benchmark without HF
#   bash benchmarks/gpu_session.sh recheck     # one GPU, one call: the step grid (TP 1) and the served runs with async
#                                              # scheduling, for the shipped calibration to predict (never fitted);
#                                              # MODELS=1b,70b DTYPES=fp8: only those cases of the grid
#   bash benchmarks/gpu_session.sh full1       # one GPU: tests, eager diag, profile, accuracy grid + serving, fp8
#                                              # decode speed, quick engine benchmark; all in $OUT/results.tar.gz
# Run from the repo root on the GPU machine with the carried wheels in .whl/. Results land in $OUT.
set -uo pipefail
: "${OUT:?set OUT}"
python3 -m pip install -q --no-index --no-deps --target .site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/.site:$PWD PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
step() { local name=$1 limit=$2; shift 2; local t0=$(date +%s)
  echo "== $name"; timeout "$limit" "$@"; local rc=$?; echo "== $name: $(( $(date +%s) - t0 )) s, exit $rc"; }
nvidia-smi --query-gpu=name,memory.total,driver_version,uuid,serial,power.limit,clocks.max.sm --format=csv
GPU=$(python3 -c "from profilers.device import detect_gpus; print(detect_gpus().catalog_name)")
case "${1:-single}" in
recheck)
  step accuracy 300 python3 benchmarks/bench_accuracy.py --only step --out-dir "$OUT" --gpu-budget-s 190 --tp 1 \
      --models "${MODELS:-1b,8b,14b,70b}" --dtypes "${DTYPES:-bf16,fp8}" 2>&1 | tail -9
  step serving 285 python3 benchmarks/bench_accuracy.py --only serving --async-scheduling --out-dir "$OUT" --gpu-budget-s 60 2>&1 | tail -5
  ;;
overlap)
  step kernels 120 python3 -m pytest -q -x tests/test_engine_kernels.py 2>&1 | tail -15
  step overlap 150 python3 benchmarks/results/overlap_H200/overlap_exp.py "$OUT/overlap.json" 2>&1 | tail -30
  step engine 260 python3 benchmarks/bench_engine.py --no-hf --out "$OUT/engine_$GPU.json" 2>&1 | tail -40
  ;;
single)
  QUICK=${QUICK:-}
  step kernels 90 python3 -m pytest -q -x tests/test_engine_kernels.py 2>&1 | tail -15
  step engine 260 python3 benchmarks/bench_engine.py $QUICK --out "$OUT/engine_$GPU.json" 2>&1 | tail -40
  step profile 200 python3 -m profilers.cli profile --out "$OUT/$GPU.yaml" --no-progress 2>&1 | tail -15
  step quick 75 python3 -m profilers.cli profile --quick --out "$OUT/$GPU.quick.yaml" --no-progress 2>&1 | tail -5
  python3 -m profilers.validate "$OUT/$GPU.yaml" > "$OUT/$GPU.validate.md" 2>&1; tail -30 "$OUT/$GPU.validate.md"
  ;;
multi)
  N=$(nvidia-smi -L | wc -l)
  for g in cublas triton; do
    step "gemv-$g" 45 python3 benchmarks/bench_engine.py --decode-only --batches 1,8,64 --gemv $g \
        --out "$OUT/gemv_$g.json" --trace /tmp/gemv_$g.jsonl 2>&1 | tail -8
  done
  step collectives 80 python3 -m profilers.cli profile --collectives-only --gpus "$N" --no-progress \
      --merge-into "hw_profiles/measured/$GPU.yaml" --out "$OUT/$GPU.yaml" 2>&1 | tail -8
  step scale 200 python3 benchmarks/bench_engine_scale.py --case-timeout 100 --out "$OUT/scale_${GPU}x$N.json" \
      2>&1 | tail -25
  step accuracy 200 python3 benchmarks/bench_accuracy.py --out-dir "$OUT" --gpu-budget-s 100 2>&1 | tail -25
  ;;
accuracy)
  step accuracy 330 python3 benchmarks/bench_accuracy.py --out-dir "$OUT" --gpu-budget-s 230 --tp 1 2>&1 | tail -25
  step engine 80 python3 benchmarks/bench_engine.py --quick --no-hf --out "$OUT/engine_$GPU.json" \
      --trace /tmp/engine.jsonl 2>&1 | tail -20
  step diag 80 python3 benchmarks/engine_decode_diag.py --batches 1,64 --steps 20 --out "$OUT/diag_$GPU.json" \
      2>&1 | tail -40
  ;;
serving)
  step tests 150 python3 -m pytest -q -x tests/test_engine_cuda_paths.py tests/test_engine_kernels.py 2>&1 | tail -8
  step serving 360 python3 benchmarks/bench_accuracy.py --only serving --out-dir "$OUT" --gpu-budget-s 60 2>&1 | tail -5
  ;;
full1)
  R=$OUT/r; mkdir -p "$R"
  step tests 150 python3 -m pytest -q -x tests/test_engine_cuda_paths.py tests/test_engine_kernels.py 2>&1 | tail -8
  step eager 100 python3 benchmarks/engine_eager_diag.py --out "$R/eager_diag_$GPU.json" 2>&1 | tail -45
  step profile 100 python3 -m profilers.cli profile --out "$R/$GPU.yaml" --no-progress 2>&1 | tail -6
  python3 -m profilers.validate "$R/$GPU.yaml" > "$R/$GPU.validate.md" 2>&1; tail -16 "$R/$GPU.validate.md"
  step accuracy 300 python3 benchmarks/bench_accuracy.py --out-dir "$R" --gpu-budget-s 200 --tp 1 2>&1 | tail -10
  step fp8 90 python3 benchmarks/bench_engine_scale.py --only a --case-timeout 80 --out "$R/scale_${GPU}x1.json" 2>&1 | tail -8
  step engine 60 python3 benchmarks/bench_engine.py --quick --no-hf --out "$R/engine_$GPU.json" --trace /tmp/e.jsonl 2>&1 | tail -14
  tar czf "$OUT/results.tar.gz" -C "$R" . && rm -rf "$R"
  ;;
profile2)
  R=$OUT/r; mkdir -p "$R"
  step profile 120 python3 -m profilers.cli profile --out "$R/$GPU.yaml" --no-progress 2>&1 | tail -6
  python3 -m profilers.validate "$R/$GPU.yaml" > "$R/$GPU.validate.md" 2>&1; tail -16 "$R/$GPU.validate.md"
  step engine 280 python3 benchmarks/bench_engine.py --out "$R/engine_$GPU.json" --trace /tmp/e.jsonl 2>&1 | tail -24
  tar czf "$OUT/results.tar.gz" -C "$R" . && rm -rf "$R"
  ;;
grid)
  step accuracy 420 python3 benchmarks/bench_accuracy.py --out-dir "$OUT" --gpu-budget-s 200 --tp 1 2>&1 | tail -12
  ;;
async)
  step tests 150 python3 -m pytest -q -x tests/test_engine_cuda_paths.py tests/test_engine_kernels.py 2>&1 | tail -8
  step engine 360 python3 benchmarks/bench_engine.py --no-hf --out "$OUT/engine_$GPU.json" --trace /tmp/e.jsonl 2>&1 | tail -30
  ;;
serving_async)
  step serving 360 python3 benchmarks/bench_accuracy.py --only serving --async-scheduling --out-dir "$OUT" --gpu-budget-s 60 2>&1 | tail -5
  ;;
grid70)
  step profile 160 python3 -m profilers.cli profile --out "$OUT/profile.yaml" --no-progress 2>&1 | tail -6
  step accuracy 450 python3 benchmarks/bench_accuracy.py --only step --out-dir "$OUT" --gpu-budget-s 330 --tp 1 2>&1 | tail -12
  ;;
fp8rows)
  step tests 120 python3 -m pytest -q -x tests/test_engine_cuda_paths.py -k "fp8" 2>&1 | tail -5
  step accuracy 300 python3 benchmarks/bench_accuracy.py --only step --models 8b,70b --dtypes fp8 --tp 1 --out-dir "$OUT" \
      --gpu-budget-s 200 2>&1 | tail -6
  python3 -c "import json; [print(c['model'], c['kv_cache'].get('fp8_gemv_rows')) for c in json.load(open('$OUT/step.json'))['cases']]"
  ;;
contention)
  step contention 150 python3 benchmarks/engine_probes.py --only contention --out "$OUT/contention_$GPU.json" 2>&1 | tail -12
  bash "$0" bench_predict
  ;;
bench_predict)
  python3 -c "from planner.schemas import Plan; Plan(model='Llama-3.1-8B', hardware='H200', max_num_seqs=256, max_num_batched_tokens=8192, max_model_len=8448).dump('/tmp/plan.yaml')"
  step bench 200 python3 -m planner.cli bench run --plan /tmp/plan.yaml --backend builtin --sweep-rates 10,20 \
      --num-requests 240 --warmup 4 --input-len 1024 --output-len 128 --json "$OUT/bench_runs.json" \
      --html "$OUT/bench.html" --no-db --startup-timeout 300 2>&1 | tail -40
  ;;
machine)
  step profile 160 python3 -m profilers.cli profile --out "$OUT/$GPU.yaml" --no-progress 2>&1 | tail -6
  step accuracy 240 python3 benchmarks/bench_accuracy.py --only step --out-dir "$OUT" --gpu-budget-s 150 --tp 1 2>&1 | tail -8
  step serving 300 python3 benchmarks/bench_accuracy.py --only serving --out-dir "$OUT" --gpu-budget-s 60 2>&1 | tail -5
  ;;
grid2)
  step tests 150 python3 -m pytest -q -x tests/test_engine_cuda_paths.py tests/test_engine_kernels.py 2>&1 | tail -8
  step profile 160 python3 -m profilers.cli profile --out "$OUT/$GPU.yaml" --no-progress 2>&1 | tail -6
  python3 -m profilers.validate "$OUT/$GPU.yaml" > "$OUT/$GPU.validate.md" 2>&1; tail -16 "$OUT/$GPU.validate.md"
  step accuracy 330 python3 benchmarks/bench_accuracy.py --only step --out-dir "$OUT" --gpu-budget-s 200 --tp 1 2>&1 | tail -12
  ;;
probes)
  step probes 240 python3 benchmarks/engine_probes.py --out "$OUT/probes_$GPU.json" 2>&1 | tail -60
  ;;
grid3)
  step profile 160 python3 -m profilers.cli profile --out "$OUT/profile.yaml" --no-progress 2>&1 | tail -6
  step accuracy 330 python3 benchmarks/bench_accuracy.py --only step --out-dir "$OUT" --gpu-budget-s 150 --tp 1 2>&1 | tail -9
  ;;
grid4)
  step tests 120 python3 -m pytest -q -x tests/test_engine_kernels.py tests/test_linear_tune.py 2>&1 | tail -4
  step eager 90 python3 benchmarks/engine_eager_diag.py --out "$OUT/eager_diag_$GPU.json" 2>&1 | grep -A14 "^prefill"
  step profile 200 python3 -m profilers.cli profile --out "$OUT/profile.yaml" --no-progress 2>&1 | tail -6
  step accuracy 300 python3 benchmarks/bench_accuracy.py --only step --out-dir "$OUT" --gpu-budget-s 150 --tp 1 2>&1 | tail -9
  step decode 150 python3 benchmarks/bench_engine.py --decode-only --no-hf --out "$OUT/engine_$GPU.json" 2>&1 | tail -9
  ;;
grid5)
  step profile 190 python3 -m profilers.cli profile --out "$OUT/profile.yaml" --no-progress 2>&1 | tail -6
  step accuracy 360 python3 benchmarks/bench_accuracy.py --only step --out-dir "$OUT" --gpu-budget-s 170 --tp 1 2>&1 | tail -9
  ;;
served)
  step served_steps 190 python3 benchmarks/bench_served_steps.py --out "$OUT/served_steps_$GPU.json" 2>&1 | tail -4
  step serving 370 python3 benchmarks/bench_accuracy.py --only serving --async-scheduling --out-dir "$OUT" \
      --gpu-budget-s 60 2>&1 | tail -5
  ;;
buckets)
  step graphs 150 python3 benchmarks/bench_prefill_graphs.py --models 8b --lengths 1024,1100,2048 --decodes 0,48 \
      --reps 10 --rounds 1 --out "$OUT/prefill_graphs_buckets_$GPU.json" 2>&1 | tail -12
  step served_steps 100 python3 benchmarks/bench_served_steps.py \
      --out "$OUT/served_steps_buckets_$GPU.json" 2>&1 | tail -3
  step serving 330 python3 benchmarks/bench_accuracy.py --only serving --async-scheduling --out-dir "$OUT" \
      --gpu-budget-s 60 2>&1 | tail -5
  ;;
probe_mixed)
  step probe 150 python3 benchmarks/probe_mixed_decodes.py --decodes 0,16 --reps 5 --profile \
      --out "$OUT/mixed_kernels_$GPU.json" 2>&1 | tail -70
  step probe2k 150 python3 benchmarks/probe_mixed_decodes.py --prompt 2100 --decodes 0,16 --reps 5 --profile \
      --out "$OUT/mixed_kernels_2k_$GPU.json" 2>&1 | tail -70
  ;;
rows)
  step rows 150 python3 benchmarks/engine_probes.py --only rows --out "$OUT/rows_$GPU.json" 2>&1 | tail -12
  step profile 190 python3 -m profilers.cli profile --out "$OUT/profile.yaml" --no-progress 2>&1 | tail -6
  ;;
profile)
  step tests 150 python3 -m pytest -q -x tests/test_engine_cuda_paths.py 2>&1 | tail -4
  step profile 400 python3 -m profilers.cli profile --out "$OUT/profile.yaml" --no-progress 2>&1 | tail -6
  python3 -m profilers.validate "$OUT/profile.yaml" > "$OUT/validate.md" 2>&1; tail -16 "$OUT/validate.md"
  ;;
step)
  step accuracy 540 python3 benchmarks/bench_accuracy.py --only step --out-dir "$OUT" --gpu-budget-s 250 --tp 1 2>&1 | tail -9
  ;;
eager)
  for dt in fp8 bf16; do
    step "eager_$dt" 170 python3 benchmarks/probe_mixed_decodes.py --model Llama-3.2-1B --weight-dtype $dt --prompt 2048 \
        --decodes 0,8 --reps 5 --profile --out "$OUT/eager_mixed_1b_${dt}_$GPU.json" 2>&1 | grep -v "^  decode" | head -80
  done
  ;;
launch)
  step launch 200 python3 -m profilers.cli profile --only launch --out "$OUT/launch.yaml" --no-progress 2>&1 | tail -4
  grep -A6 "^  launch:" "$OUT/launch.yaml"
  ;;
grid9)
  step profile 190 python3 -m profilers.cli profile --out "$OUT/profile.yaml" --no-progress 2>&1 | tail -6
  step accuracy 420 python3 benchmarks/bench_accuracy.py --only step --out-dir "$OUT" --gpu-budget-s 250 --tp 1 2>&1 | tail -9
  ;;
race)
  step tests 120 python3 -m pytest -q -x tests/test_linear_tune.py tests/test_engine_cuda_paths.py -k "tune or race or fp8_rows" 2>&1 | tail -4
  step decode 80 python3 benchmarks/bench_engine.py --decode-only --no-hf --batches 1,8,32 \
      --out "$OUT/engine_decode_$GPU.json" 2>&1 | tail -7
  step profile 190 python3 -m profilers.cli profile --out "$OUT/profile.yaml" --no-progress 2>&1 | tail -6
  step accuracy 330 python3 benchmarks/bench_accuracy.py --only step --out-dir "$OUT" --gpu-budget-s 240 --tp 1 2>&1 | tail -9
  ;;
whole)
  step tests 150 python3 -m pytest -q -x tests/test_engine_cuda_paths.py tests/test_engine_kernels.py 2>&1 | tail -4
  step prefill 330 python3 benchmarks/bench_prefill_graphs.py --lengths 16,128,512,2048 --decodes 0,16 --reps 15 \
      --out "$OUT/prefill_graphs_$GPU.json" 2>&1 | tail -12
  step decode 90 python3 benchmarks/bench_engine.py --decode-only --no-hf --batches 1,8,32 \
      --out "$OUT/engine_decode_$GPU.json" 2>&1 | tail -9
  ;;
graphs)
  step tests 150 python3 -m pytest -q -x tests/test_engine_cuda_paths.py tests/test_linear_tune.py 2>&1 | tail -4
  for i in 1 2; do
    step "pow2 $i" 120 env PLAN_ENGINE_GRAPH_BATCH_SIZES=1,2,4,8,16,32,64,128,256,512 python3 benchmarks/bench_engine.py \
        --decode-only --no-hf --batches 48,64,65,80,96,112,129,160,192,256 --out "$OUT/graphs_pow2_${i}_$GPU.json" 2>&1 | tail -12
    step "fine $i" 120 python3 benchmarks/bench_engine.py --decode-only --no-hf --batches 48,64,65,80,96,112,129,160,192,256 \
        --out "$OUT/graphs_fine_${i}_$GPU.json" 2>&1 | tail -12
  done
  ;;
splits)
  step splits 200 python3 benchmarks/engine_probes.py --only splits --out "$OUT/splits_$GPU.json" 2>&1 | tail -200
  ;;
split2)
  step tests 150 python3 -m pytest -q -x tests/test_engine_cuda_paths.py tests/test_engine_kernels.py tests/test_engine_shapes.py 2>&1 | tail -4
  for i in 1 2; do
    for rule in 0 1; do
      step "split past wave=$rule $i" 100 env PLAN_ENGINE_DECODE_SPLIT_PAST_WAVE=$rule python3 benchmarks/bench_engine.py \
          --decode-only --no-hf --batches 64,72,80,96,112,144,160,224,256 --out "$OUT/split2_${rule}_${i}_$GPU.json" 2>&1 | tail -11
      step "4k split past wave=$rule $i" 100 env PLAN_ENGINE_DECODE_SPLIT_PAST_WAVE=$rule python3 benchmarks/bench_engine.py \
          --decode-only --no-hf --batches 64,72,80,96,112,144,160 --context 4096 \
          --out "$OUT/split2_4k_${rule}_${i}_$GPU.json" 2>&1 | tail -9
    done
  done
  ;;
engine_full)
  step tests 150 python3 -m pytest -q -x tests/test_engine_cuda_paths.py tests/test_engine_kernels.py 2>&1 | tail -4
  step engine 420 python3 benchmarks/bench_engine.py --out "$OUT/engine_$GPU.json" --trace /tmp/e.jsonl 2>&1 | tail -30
  ;;
tune2)
  step tests 150 python3 -m pytest -q -x tests/test_engine_kernels.py tests/test_linear_tune.py 2>&1 | tail -4
  for i in 1 2; do
    step "untuned $i" 150 env PLAN_ENGINE_TUNE_LINEAR=0 python3 benchmarks/bench_engine.py --decode-only --no-hf \
        --out "$OUT/engine_untuned${i}_$GPU.json" 2>&1 | tail -9
    step "tuned $i" 150 python3 benchmarks/bench_engine.py --decode-only --no-hf --out "$OUT/engine_tuned${i}_$GPU.json" 2>&1 | tail -9
  done
  step diag 100 python3 benchmarks/engine_decode_diag.py --batches 1,8,64,256 --out "$OUT/diag_tuned_$GPU.json" 2>&1 | tail -3
  ;;
tma)
  step tests 90 python3 -m pytest -q -x tests/test_engine_kernels.py -k gemv 2>&1 | tail -4
  step probe 420 python3 benchmarks/engine_probes.py --only gemv_tma --out "$OUT/probe_gemv_tma_$GPU.json" 2>&1 | tail -18
  ;;
tma2)
  step tests 120 python3 -m pytest -q -x tests/test_engine_kernels.py tests/test_linear_tune.py -k "gemv or tune" 2>&1 | tail -4
  for t in 0 1 0 1; do
    step "tma=$t" 100 env PLAN_ENGINE_TMA_GEMV=$t python3 benchmarks/bench_engine.py --decode-only --no-hf \
        --batches 1,8,16,32 --out "$OUT/tma${t}_$RANDOM.json" 2>&1 | tail -6
  done
  ;;
fold)
  step tests 240 python3 -m pytest -q -x tests/test_engine_kernels.py tests/test_linear_tune.py \
      tests/test_engine_cuda_paths.py 2>&1 | tail -6
  for v in 16_0 32_1; do
    step "rows_fold=$v" 150 env PLAN_ENGINE_GEMV_MAX_ROWS=${v%_*} PLAN_ENGINE_FUSED_NORMS=${v#*_} \
        python3 benchmarks/bench_engine.py --decode-only --no-hf --batches 1,4,8,16,24,32 \
        --out "$OUT/fold_${v}_a_$GPU.json" 2>&1 | tail -9
  done
  ;;
fold2)
  for v in 32_0 16_0 32_1; do
    step "rows_fold=$v" 150 env PLAN_ENGINE_GEMV_MAX_ROWS=${v%_*} PLAN_ENGINE_FUSED_NORMS=${v#*_} \
        python3 benchmarks/bench_engine.py --decode-only --no-hf --batches 1,4,8,16,24,32 \
        --out "$OUT/fold_${v}_b_$GPU.json" 2>&1 | tail -9
  done
  step diag 150 python3 benchmarks/engine_decode_diag.py --batches 1,16,32 --no-ops --out "$OUT/diag_fold_$GPU.json" \
      2>&1 | tail -30
  ;;
kvlayout)
  step tests 150 python3 -m pytest -q -x tests/test_engine_kernels.py -k "decode_attention or qk_norm_rope" 2>&1 | tail -4
  step kvlayout 300 python3 benchmarks/engine_probes.py --only ${PROBES:-kvlayout} --out "$OUT/kvlayout_$GPU.json" 2>&1 | tail -80
  ;;
tail)
  [ -n "${TESTS:-}" ] && step cuda_paths 200 python3 -m pytest -q -x tests/test_engine_cuda_paths.py 2>&1 | tail -4
  step tests 150 python3 -m pytest -q -x tests/test_engine_kernels.py -k "decode_attention" 2>&1 | tail -4
  [ -z "${TESTS:-}" ] && step tail 200 python3 benchmarks/engine_probes.py --only tail --out "$OUT/tail_$GPU.json" 2>&1 | tail -62
  for i in $(seq 1 "${REPS:-1}"); do
    for v in 64 16; do
      step "tail=$v $i" 150 env PLAN_ENGINE_DECODE_TAIL=$v python3 benchmarks/bench_engine.py --decode-only --no-hf \
          --batches 1,8,32,64,128,256 --out "$OUT/tail_${v}_${i}_$GPU.json" 2>&1 | tail -9
    done
  done
  ;;
smoke)
  step tests 150 python3 -m pytest -q -x tests/test_engine_cuda_paths.py tests/test_engine_kernels.py 2>&1 | tail -15
  step eager 150 python3 benchmarks/engine_eager_diag.py --out "$OUT/eager_diag_$GPU.json" 2>&1 | tail -45
  ;;
esac
