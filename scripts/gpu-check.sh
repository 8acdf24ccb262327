#!/usr/bin/env bash
# On a machine with a GPU: builds the cuda preset (sm_90), runs every test (the gpu-labelled ones
# must pass, not skip) and every GPU benchmark. Logs and JSON under $OUT (default ./gpu-out).
# One call stays under 10 minutes on an H100.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
# Everything goes to $LOGS; at the end it is packed into $OUT/gpu-check-logs.tar.gz, and $OUT keeps
# summary.txt, benchmarks.txt and that archive (the device tool returns at most 8 files).
FINAL_OUT=$OUT
OUT=$FINAL_OUT/logs
mkdir -p "$OUT"
source scripts/cuda-env.sh
jobs=$(nproc)
status=0
log() { echo "[gpu-check $(date +%T)] $*" | tee -a "$OUT/summary.txt"; }

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv \
  >"$OUT/gpu.txt" 2>&1 || true
log "GPU: $(tail -n +2 "$OUT/gpu.txt" | head -1)"
extra=()
[[ -d .carry/include ]] && extra+=("-DCMAKE_CXX_FLAGS=-I$PWD/.carry/include" "-DCMAKE_CUDA_FLAGS=-I$PWD/.carry/include")
if ! cmake --preset cuda "${extra[@]}" >"$OUT/configure.log" 2>&1; then
  log "configure FAILED"; tail -30 "$OUT/configure.log"; exit 1
fi
# KVCACHE_BUILD_TARGETS (optional): build only these targets; KVCACHE_CTEST_EXCLUDE (optional):
# a ctest -E regex of tests left out (both for partial runs while a layer is in progress).
targets=()
[[ -n "${KVCACHE_BUILD_TARGETS:-}" ]] && targets=(--target ${KVCACHE_BUILD_TARGETS})
exclude=()
[[ -n "${KVCACHE_CTEST_EXCLUDE:-}" ]] && exclude=(-E "${KVCACHE_CTEST_EXCLUDE}")
if ! cmake --build --preset cuda -j "$jobs" "${targets[@]}" >"$OUT/build.log" 2>&1; then
  log "build FAILED"; grep -E "error|FAILED" "$OUT/build.log" | head -40; exit 1
fi
log "build ok"

# KVCACHE_SKIP_TESTS=1 / KVCACHE_SKIP_BENCH=1: leave out the tests or the benchmarks (a check
# split over two calls: the build stays on a warm machine). KVCACHE_SANITIZE=1: also run
# compute-sanitizer memcheck and racecheck on the attention GPU test (its f16 and quantized cases).
if [[ -z "${KVCACHE_SKIP_TESTS:-}" ]]; then
ctest --preset cuda -j 4 -LE gpu "${exclude[@]}" --timeout 600 >"$OUT/ctest-host.log" 2>&1 || status=1
log "host tests: $(grep -E 'tests passed|tests failed' "$OUT/ctest-host.log" | tail -1)"
ctest --preset cuda -L gpu "${exclude[@]}" --timeout 600 -V >"$OUT/ctest-gpu.log" 2>&1 || status=1
log "gpu tests: $(grep -E 'tests passed|tests failed' "$OUT/ctest-gpu.log" | tail -1)"
if grep -q "\*\*\*Skipped" "$OUT/ctest-gpu.log"; then log "a gpu test SKIPPED on a GPU machine"; status=1; fi
grep -E "Test +#.*(Passed|Failed|Skipped)|\*\*\*|shadow .*ops" "$OUT/ctest-gpu.log" | tee -a "$OUT/summary.txt"
fi
if [[ -n "${KVCACHE_SANITIZE:-}" ]]; then
  san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  t=build/cuda/tests/attention/kvcache-test-attention-decode-gpu
  for tool in memcheck racecheck; do
    if timeout 200 "$san" --tool "$tool" --error-exitcode 9 "$t" \
         "paged_decode_cuda matches the host on f16*,paged_decode_cuda on quantized pages*" \
         >"$OUT/sanitizer-$tool.log" 2>&1; then
      log "compute-sanitizer $tool: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-$tool.log" | tail -1)"
    else
      log "compute-sanitizer $tool FAILED (exit $?): $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-$tool.log" | tail -1)"
      status=1
    fi
  done
fi

for b in build/cuda/bench/kvcache-bench-*; do
  [[ -z "${KVCACHE_SKIP_BENCH:-}" && -x "$b" ]] || continue
  name=$(basename "$b")
  if [[ -n "${KVCACHE_BENCH_EXCLUDE:-}" && "$name" =~ ${KVCACHE_BENCH_EXCLUDE} ]]; then continue; fi
  filter=${KVCACHE_BENCH_FILTER:-.}
  if "$b" --benchmark_filter="$filter" --benchmark_min_time=0.2 \
       --benchmark_out="$OUT/$name.json" --benchmark_out_format=json >"$OUT/$name.txt" 2>&1; then
    log "$name ok"
  else
    log "$name FAILED"; status=1
  fi
done
# PyTorch SDPA (cuDNN and flash backends) on contiguous K/V: the reference of kvcache-bench-attention
if [[ -z "${KVCACHE_SKIP_BENCH:-}" && ! "kvcache-bench-attention" =~ ${KVCACHE_BENCH_EXCLUDE:-^$} ]]; then
  if PYTHONUNBUFFERED=1 python3 bench/attention/sdpa_reference.py --out "$OUT/sdpa_reference.json" \
       >"$OUT/kvcache-bench-attention-sdpa.txt" 2>&1; then
    log "sdpa_reference ok"
  else
    log "sdpa_reference FAILED"; status=1
  fi
fi
for f in "$OUT"/kvcache-bench-*.txt; do echo "== $(basename "$f")"; grep -vE "^-|^Run on|^CPU|^Load|^\*\*\*|L[123]" "$f" | cut -c1-150; done
log "done: status $status"
cp "$OUT/summary.txt" "$FINAL_OUT/summary.txt"
[[ -f "$OUT/sdpa_reference.json" ]] && cp "$OUT/sdpa_reference.json" "$FINAL_OUT/"
for f in "$OUT"/kvcache-bench-*.txt; do echo "== $(basename "$f")"; cat "$f"; done >"$FINAL_OUT/benchmarks.txt" 2>/dev/null
tar -C "$FINAL_OUT" -czf "$FINAL_OUT/gpu-check-logs.tar.gz" logs && rm -rf "$OUT"
exit $status
