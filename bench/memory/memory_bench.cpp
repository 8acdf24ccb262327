// kvcache-bench-memory: allocate + free through each resource, and the device copy bandwidth
// that the GPU benchmarks of later layers are measured against.
#include <benchmark/benchmark.h>

#include "defaults.hpp"
#include "kvcache/memory/host_resource.hpp"
#include "kvcache/memory/limiting_adaptor.hpp"
#include "kvcache/memory/statistics_adaptor.hpp"
#ifdef KVCACHE_HAS_CUDA
#include <cuda_runtime_api.h>

#include "kvcache/core/cuda_error.hpp"
#include "kvcache/memory/cuda_async_pool_resource.hpp"
#include "kvcache/memory/cuda_resource.hpp"
#include "kvcache/memory/pinned_host_resource.hpp"
#endif

using namespace kvcache;

namespace {
struct host_case {
  static constexpr const char* name = "host";
  host_resource r;
  auto& get() { return r; }
};
struct limited_host_case {
  host_resource up;
  limiting_adaptor<host_resource> r{up, std::size_t{1} << 40};
  auto& get() { return r; }
};
struct counted_host_case {
  host_resource up;
  statistics_adaptor<host_resource> r{up};
  auto& get() { return r; }
};
#ifdef KVCACHE_HAS_CUDA
struct cuda_case {
  cuda_resource r;
  auto& get() { return r; }
};
struct cuda_pool_case {
  cuda_async_pool_resource r{std::size_t{64} << 20};
  auto& get() { return r; }
};
struct pinned_case {
  pinned_host_resource r;
  auto& get() { return r; }
};
template <class Case>
constexpr bool needs_gpu = !std::is_same_v<Case, host_case> &&
                           !std::is_same_v<Case, limited_host_case> &&
                           !std::is_same_v<Case, counted_host_case>;
#else
template <class Case>
constexpr bool needs_gpu = false;
#endif

bool gpu_present() {
#ifdef KVCACHE_HAS_CUDA
  return cuda_device_count() > 0;
#else
  return false;
#endif
}

template <class Case>
void bm_allocate_free(benchmark::State& state) {
  if (needs_gpu<Case> && !gpu_present()) {
    state.SkipWithError("no CUDA device");
    for (auto _ : state) {
    }
    return;
  }
  Case c;
  auto& r = c.get();
  const auto bytes = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    void* p = r.allocate(bytes, 256);
    benchmark::DoNotOptimize(p);
    r.deallocate(p, bytes, 256);
  }
  state.SetItemsProcessed(state.iterations());
}
}  // namespace

BENCHMARK_TEMPLATE(bm_allocate_free, host_case)->Apply(kvbench::allocation_sizes);
BENCHMARK_TEMPLATE(bm_allocate_free, limited_host_case)->Apply(kvbench::allocation_sizes);
BENCHMARK_TEMPLATE(bm_allocate_free, counted_host_case)->Apply(kvbench::allocation_sizes);
#ifdef KVCACHE_HAS_CUDA
BENCHMARK_TEMPLATE(bm_allocate_free, cuda_case)->Apply(kvbench::allocation_sizes);
BENCHMARK_TEMPLATE(bm_allocate_free, cuda_pool_case)->Apply(kvbench::allocation_sizes);
BENCHMARK_TEMPLATE(bm_allocate_free, pinned_case)->Apply(kvbench::allocation_sizes);

namespace {
// Device-to-device cudaMemcpy: the reference copy bandwidth (bytes read + bytes written per second).
void bm_cuda_memcpy_d2d(benchmark::State& state) {
  if (!gpu_present()) {
    state.SkipWithError("no CUDA device");
    for (auto _ : state) {
    }
    return;
  }
  const auto bytes = static_cast<std::size_t>(state.range(0));
  cuda_resource r;
  void* a = r.allocate(bytes, 256);
  void* b = r.allocate(bytes, 256);
  KVCACHE_CUDA_TRY(cudaMemset(a, 1, bytes));
  cudaEvent_t start, stop;
  KVCACHE_CUDA_TRY(cudaEventCreate(&start));
  KVCACHE_CUDA_TRY(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i) KVCACHE_CUDA_TRY(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
  for (auto _ : state) {
    KVCACHE_CUDA_TRY(cudaEventRecord(start));
    KVCACHE_CUDA_TRY(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
    KVCACHE_CUDA_TRY(cudaEventRecord(stop));
    KVCACHE_CUDA_TRY(cudaEventSynchronize(stop));
    float ms = 0;
    KVCACHE_CUDA_TRY(cudaEventElapsedTime(&ms, start, stop));
    state.SetIterationTime(ms / 1e3);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * 2 *
                          static_cast<std::int64_t>(bytes));
  KVCACHE_CUDA_TRY(cudaEventDestroy(start));
  KVCACHE_CUDA_TRY(cudaEventDestroy(stop));
  r.deallocate(a, bytes, 256);
  r.deallocate(b, bytes, 256);
}
}  // namespace
BENCHMARK(bm_cuda_memcpy_d2d)->Apply(kvbench::bandwidth_sizes)->UseManualTime()->Unit(benchmark::kMicrosecond);
#endif


