#!/usr/bin/env bash
# Installs what is missing, builds Release, runs the main example. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/cuda-env.sh
cmake --preset release -DKVCACHE_BUILD_TESTS=OFF -DKVCACHE_BUILD_BENCHMARKS=OFF
cmake --build --preset release -j "$(nproc)" --target kvcache-memory-tour
./build/release/examples/kvcache-memory-tour "$@"
