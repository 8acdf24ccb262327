#!/usr/bin/env bash
# Installs what is missing, builds (dev preset: CUDA where nvcc is found), runs every test, then
# builds the host-only asan preset (ASan + UBSan) and runs the host tests under it.
# Exits non-zero on any failure. Safe to rerun (reuses build/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/cuda-env.sh
jobs=$(nproc)
start=$(date +%s)

echo "=== kvcache: dev build"
cmake --preset dev
cmake --build --preset dev -j "$jobs"
echo "=== kvcache: dev tests"
ctest --preset dev -j "$jobs"

echo "=== kvcache: asan build (host only)"
cmake --preset asan
cmake --build --preset asan -j "$jobs"
echo "=== kvcache: asan tests"
ctest --preset asan -j "$jobs"

echo "=== kvcache: all tests passed in $(( $(date +%s) - start )) s"
