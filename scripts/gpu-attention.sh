#!/usr/bin/env bash
# On a machine with a GPU: the attention part of scripts/gpu-check.sh alone, for kernel work:
# builds kvcache-bench-attention and kvcache-test-attention-decode-gpu (cuda preset), runs the GPU
# test (unless KVCACHE_SKIP_TESTS=1), the benchmark (filter KVCACHE_BENCH_FILTER, default all)
# and bench/attention/sdpa_reference.py (unless KVCACHE_SKIP_SDPA=1). KVCACHE_VARIANT_FLAGS:
# also build the benchmark in build/variant with these extra CUDA flags (e.g. -DNAME=VALUE) and
# run it after the main one. Logs under $OUT (default ./gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
source scripts/cuda-env.sh
inc=()
[[ -d .carry/include ]] && inc=(-I"$PWD/.carry/include")
targets=(kvcache-bench-attention kvcache-test-attention-decode-gpu)
cmake --preset cuda -DCMAKE_CXX_FLAGS="${inc[*]}" -DCMAKE_CUDA_FLAGS="${inc[*]}" >"$OUT/configure.log" 2>&1 ||
  { echo "configure FAILED"; tail -20 "$OUT/configure.log"; exit 1; }
cmake --build build/cuda -j "$(nproc)" --target "${targets[@]}" >"$OUT/build.log" 2>&1 ||
  { echo "build FAILED"; grep -E "error" "$OUT/build.log" | head -20; exit 1; }
echo "build ok"
if [[ -n "${KVCACHE_VARIANT_FLAGS:-}" ]]; then
  cmake -S . -B build/variant -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVCACHE_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DKVCACHE_BUILD_TESTS=OFF -DKVCACHE_BUILD_EXAMPLES=OFF \
    -DKVCACHE_BUILD_BENCHMARKS=ON -DCMAKE_CXX_FLAGS="${inc[*]}" \
    -DCMAKE_CUDA_FLAGS="${inc[*]} ${KVCACHE_VARIANT_FLAGS}" >"$OUT/configure-variant.log" 2>&1 &&
    cmake --build build/variant -j "$(nproc)" --target kvcache-bench-attention >"$OUT/build-variant.log" 2>&1 ||
    { echo "variant build FAILED"; grep -E "error" "$OUT/build-variant.log" | head; }
fi
status=0
if [[ -z "${KVCACHE_SKIP_TESTS:-}" ]]; then
  build/cuda/tests/attention/kvcache-test-attention-decode-gpu >"$OUT/test.log" 2>&1 || status=1
  echo "gpu test: $(tail -n 2 "$OUT/test.log" | head -1)"
  [[ $status == 0 ]] || grep -E -B5 -A15 "FAILED" "$OUT/test.log" | head -60
fi
filter=${KVCACHE_BENCH_FILTER:-.}
show() { grep -E "^bm_" "$1" | awk '{printf "%-45s", $1; for (i=2;i<=NF;i++) if ($i ~ /^(us|fraction_of_memcpy|ctas_per_sm|chunks)=/) printf " %s", $i; print ""}'; }
build/cuda/bench/kvcache-bench-attention --benchmark_filter="$filter" --benchmark_min_time=0.2 \
  --benchmark_counters_tabular=false >"$OUT/bench.txt" 2>&1 || status=1
echo "== main"; show "$OUT/bench.txt"
if [[ -x build/variant/bench/kvcache-bench-attention && -n "${KVCACHE_VARIANT_FLAGS:-}" ]]; then
  build/variant/bench/kvcache-bench-attention --benchmark_filter="$filter" --benchmark_min_time=0.2 \
    >"$OUT/bench-variant.txt" 2>&1 || status=1
  echo "== variant (${KVCACHE_VARIANT_FLAGS})"; show "$OUT/bench-variant.txt"
fi
if [[ -z "${KVCACHE_SKIP_SDPA:-}" ]]; then
  PYTHONUNBUFFERED=1 python3 bench/attention/sdpa_reference.py --out "$OUT/sdpa_reference.json" \
    >"$OUT/sdpa.txt" 2>&1 || status=1
  echo "== sdpa"; cat "$OUT/sdpa.txt"
fi
# KVCACHE_NCU: ';'-separated benchmark filters, each profiled with Nsight Compute (one launch of
# the decode kernel: speed of light, memory, warp states, occupancy, scheduler)
if [[ -n "${KVCACHE_NCU:-}" ]]; then
  ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  IFS=';' read -ra cases <<<"$KVCACHE_NCU"
  n=0
  for c in "${cases[@]}"; do
    n=$((n + 1))
    "$ncu" -k regex:decode_kernel --launch-skip 3 --launch-count 1 --section SpeedOfLight \
      --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy \
      --section SchedulerStats --section LaunchStats \
      build/cuda/bench/kvcache-bench-attention --benchmark_filter="$c" --benchmark_min_time=0.01 \
      >"$OUT/ncu-$n.txt" 2>&1 || echo "ncu $c failed"
    echo "== ncu $c"
    grep -E "Duration|DRAM Throughput|Memory Throughput|L2 Hit|Achieved Occupancy|Theoretical Occupancy|Issued Warp|No Eligible|Active Warps Per|Eligible Warps|Warp Cycles Per Issued|Registers Per|Block Limit|Mem Busy|Max Bandwidth|L1/TEX Hit|stall|Stall" "$OUT/ncu-$n.txt" | head -40
  done
fi
exit $status
