// Host side of compact_kv_cuda: argument checks with kvcache::error (moves in host-readable
// memory are validated like compact_kv_host's), then the launches of cuda/select/compact_kernels.cu.
#include <cuda_runtime_api.h>

#include "kvcache/core/cuda_error.hpp"
#include "kvcache/core/error.hpp"
#include "kvcache/paging/detail/kernel_checks.hpp"
#include "kvcache/paging/kernels.hpp"
#include "select/compact_kernels.cuh"

namespace kvcache {

void compact_kv_cuda(const paged_kv_view& pool, const slot_move* moves, std::int64_t n,
                     std::byte* scratch, stream_view s) {
  constexpr const char* who = "compact_kv_cuda";
  detail::check_pool_view(pool, who);
  KVCACHE_EXPECTS(n >= 0 && (n == 0 || (moves != nullptr && scratch != nullptr)),
                  errc::invalid_argument, "{}: {} moves at {}, scratch at {}", who, n,
                  static_cast<const void*>(moves), static_cast<const void*>(scratch));
  if (n == 0) return;
  cudaPointerAttributes attr{};
  KVCACHE_CUDA_TRY(cudaPointerGetAttributes(&attr, moves));
  const std::int64_t slots = static_cast<std::int64_t>(pool.num_pages) * pool.page_size;
  if (attr.type == cudaMemoryTypeUnregistered) {  // pageable: only where the device can read it
    int dev = 0, pageable = 0;
    KVCACHE_CUDA_TRY(cudaGetDevice(&dev));
    KVCACHE_CUDA_TRY(cudaDeviceGetAttribute(&pageable, cudaDevAttrPageableMemoryAccess, dev));
    if (pageable == 0) detail::throw_not_device_accessible(who, "the moves", moves);
  }
  if (attr.type == cudaMemoryTypeHost || attr.type == cudaMemoryTypeUnregistered) {
    for (std::int64_t i = 0; i < n; ++i) {
      KVCACHE_EXPECTS(moves[i].src >= 0 && moves[i].src < slots && moves[i].dst >= 0 &&
                          moves[i].dst < slots,
                      errc::out_of_range,
                      "{}: move {} ({} -> {}) names a slot outside the {} slots", who, i,
                      moves[i].src, moves[i].dst, slots);
    }
  }
  detail::compact_params p = detail::compact_params_of(pool);
  p.moves = moves;
  p.n = n;
  p.scratch = scratch;
  KVCACHE_CUDA_TRY(detail::launch_compact_kv(p, static_cast<cudaStream_t>(s.handle())));
}

}  // namespace kvcache
