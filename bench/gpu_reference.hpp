// What every GPU benchmark shares: skipping without a device, and the copy-bandwidth reference
// the kernels are reported against (a cudaMemcpyAsync device-to-device moving the same bytes in
// the same process). Needs kvcache::cuda and the CUDA runtime headers.
#pragma once

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "kvcache/core/cuda_error.hpp"
#include "kvcache/memory/buffer.hpp"
#include "kvcache/memory/stream.hpp"

namespace kvbench {

/// Marks the benchmark skipped (and runs no iteration) where there is no CUDA device.
inline bool skip_without_gpu(benchmark::State& state) {
  if (kvcache::cuda_device_count() > 0) return false;
  state.SkipWithError("no CUDA device");
  for (auto _ : state) {
  }
  return true;
}

/// Rate (bytes read + written per second) of cudaMemcpyAsync D2D moving `moved` bytes, i.e.
/// copying moved / 2: median of 9 event-timed copies after 3 warm-ups; measured once per size.
inline double memcpy_rate(std::int64_t moved) {
  using namespace kvcache;
  static std::mutex m;
  static std::map<std::int64_t, double> rates;
  std::lock_guard<std::mutex> lock(m);
  if (auto it = rates.find(moved); it != rates.end()) return it->second;
  const auto bytes = static_cast<std::size_t>(moved / 2);
  buffer<std::byte, cuda_space> a(bytes), b(bytes);
  stream s;
  const auto st = static_cast<cudaStream_t>(s.view().handle());
  KVCACHE_CUDA_TRY(cudaMemsetAsync(a.data(), 1, bytes, st));
  for (int i = 0; i < 3; ++i) {
    KVCACHE_CUDA_TRY(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, st));
  }
  std::vector<double> runs;
  event start, stop;
  for (int i = 0; i < 9; ++i) {
    start.record(s);
    KVCACHE_CUDA_TRY(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, st));
    stop.record(s);
    stop.synchronize();
    runs.push_back(static_cast<double>(2 * bytes) / (event::elapsed_ms(start, stop) / 1e3));
  }
  std::sort(runs.begin(), runs.end());
  return rates[moved] = runs[runs.size() / 2];
}

}  // namespace kvbench
