#!/usr/bin/env bash
# Installs what kvcache's build needs on Debian 12 / Ubuntu 24.04, only what is missing.
# Safe to rerun. Sourced or run by demo.sh and test.sh.
set -euo pipefail
packages=(cmake ninja-build g++ make pkg-config catch2 libfmt-dev libbenchmark-dev libxxhash-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "kvcache setup: installing ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "kvcache setup: all build dependencies present"
fi
if command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; then
  echo "kvcache setup: CUDA toolkit found: kvcache::cuda will be built"
else
  echo "kvcache setup: no CUDA toolkit: building the host library only"
fi
