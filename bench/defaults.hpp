// Shared axes and helpers of kvcache's benchmarks.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>

namespace kvbench {
/// Allocation sizes: a small metadata block, a 64 KiB page, a 2 MiB Llama-3-8B span page.
inline void allocation_sizes(benchmark::internal::Benchmark* b) {
  for (std::int64_t bytes : {256, 64 << 10, 2 << 20}) b->Arg(bytes);
}
/// Bytes moved by bandwidth benchmarks: at least 256 MiB, as the issues ask.
inline void bandwidth_sizes(benchmark::internal::Benchmark* b) {
  for (std::int64_t mib : {256, 1024}) b->Arg(mib << 20);
}
}  // namespace kvbench
