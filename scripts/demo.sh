#!/usr/bin/env bash
# Installs what is missing, builds Release, runs the main example (the serving simulator
# kvcache-sim; pass its flags, e.g. --json). Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/cuda-env.sh
cmake --preset release -DKVCACHE_BUILD_TESTS=OFF -DKVCACHE_BUILD_BENCHMARKS=OFF
cmake --build --preset release -j "$(nproc)" --target kvcache-sim kvcache-memory-tour
./build/release/examples/kvcache-sim "$@"
