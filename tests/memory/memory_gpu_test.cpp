// GPU tests of the memory layer: the same resource contract over the CUDA models, streams,
// events and copies between every pair of spaces.
#include <cuda_runtime_api.h>

#include <memory>
#include <random>
#include <tuple>

#include "kvcache/core/cuda_error.hpp"
#include "kvcache/memory/buffer.hpp"
#include "kvcache/memory/copy.hpp"
#include "kvcache/memory/cuda_async_pool_resource.hpp"
#include "kvcache/memory/cuda_resource.hpp"
#include "kvcache/memory/host_resource.hpp"
#include "kvcache/memory/limiting_adaptor.hpp"
#include "kvcache/memory/pinned_host_resource.hpp"
#include "kvcache/memory/statistics_adaptor.hpp"
#include "memory/resource_contract.hpp"

using namespace kvcache;

static_assert(stream_ordered_resource<limiting_adaptor<cuda_async_pool_resource>>);
static_assert(stream_ordered_resource<statistics_adaptor<cuda_async_pool_resource>>);
static_assert(memory_resource<resource_ref<cuda_space>>);

namespace {
struct cuda_model {
  cuda_resource r;
  auto& get() { return r; }
};
struct pool_model {
  cuda_async_pool_resource r;
  auto& get() { return r; }
};
struct pinned_model {
  pinned_host_resource r;
  auto& get() { return r; }
};
struct stats_over_cuda_model {
  cuda_resource up;
  statistics_adaptor<cuda_resource> r{up};
  auto& get() { return r; }
};
struct limit_over_pool_model {
  cuda_async_pool_resource up;
  limiting_adaptor<cuda_async_pool_resource> r{up, std::size_t{1} << 34};
  auto& get() { return r; }
};
using gpu_models =
    std::tuple<cuda_model, pool_model, pinned_model, stats_over_cuda_model, limit_over_pool_model>;
}  // namespace

TEMPLATE_LIST_TEST_CASE("CUDA resources satisfy the memory_resource contract",
                        "[memory][resource][gpu]", gpu_models) {
  auto model = std::make_unique<TestType>();
  kvtest::check_resource_contract(model->get(), 256);
}

TEST_CASE("cudaMalloc failure is out_of_memory naming the bytes", "[memory][gpu]") {
  cuda_resource r;
  const std::size_t too_much = std::size_t{1} << 46;  // 64 TiB
  KVTEST_REQUIRE_ERROR(r.allocate(too_much, 256), errc::out_of_memory, std::to_string(too_much));
  KVTEST_REQUIRE_ERROR(r.allocate(64, 512), errc::not_supported, "alignment 512");
}

TEST_CASE("stream-ordered pool allocations on a stream", "[memory][gpu]") {
  cuda_async_pool_resource pool(1 << 20);
  stream s;
  statistics_adaptor<cuda_async_pool_resource> stats{pool};
  for (int i = 0; i < 100; ++i) {
    void* p = stats.allocate_async(4096 + i, 256, s);
    KVCACHE_CUDA_TRY(cudaMemsetAsync(p, i, 4096 + i, static_cast<cudaStream_t>(s.view().handle())));
    stats.deallocate_async(p, 4096 + i, 256, s);
  }
  s.synchronize();
  CHECK(stats.statistics().current_bytes == 0);
  CHECK(stats.statistics().allocation_count == 100);
}

TEST_CASE("copy round-trips through every space, events time it", "[memory][copy][gpu]") {
  const std::size_t n = (std::size_t{1} << 22) + 13;  // not a multiple of anything nice
  std::mt19937 rng(kvtest::seed());
  buffer<std::uint32_t> src(n), dst(n);
  for (auto& x : src) x = rng();
  for (auto& x : dst) x = 0xFFFFFFFFu;
  buffer<std::uint32_t, pinned_host_space> pinned(n);
  buffer<std::uint32_t, cuda_space> dev_a(n), dev_b(n);
  cuda_async_pool_resource pool;
  buffer<std::uint32_t, cuda_space> dev_c(n, pool);
  stream s;
  event start, stop;
  start.record(s);
  copy(pinned, src, s);
  copy(dev_a, pinned, s);
  copy(dev_b, dev_a, s);
  copy(dev_c, dev_b, s);
  copy(dst, dev_c, s);
  stop.record(s);
  stop.synchronize();
  CHECK(event::elapsed_ms(start, stop) > 0.0f);
  bool equal = true;
  for (std::size_t i = 0; i < n; ++i) equal = equal && dst[i] == src[i];
  CHECK(equal);
  KVTEST_REQUIRE_ERROR(copy(dev_a.view().subview(0, 5), src.view()), errc::shape_mismatch,
                       "destination has 5 elements");
}

TEST_CASE("a failing CUDA call reports the CUDA error name", "[memory][gpu]") {
  try {
    KVCACHE_CUDA_TRY(cudaMemcpy(nullptr, reinterpret_cast<void*>(16), 64, cudaMemcpyDeviceToDevice));
    FAIL("no throw");
  } catch (const kvcache::error& e) {
    INFO(e.what());
    CHECK(e.code() == errc::cuda_error);
    CHECK(std::string(e.what()).find("cudaMemcpy") != std::string::npos);
    CHECK(std::string(e.what()).find("cudaError") != std::string::npos);
  }
  CHECK(cudaGetLastError() == cudaSuccess);  // the error was cleared
}
