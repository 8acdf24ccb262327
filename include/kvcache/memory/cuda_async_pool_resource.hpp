/**
 * @file cuda_async_pool_resource.hpp
 * @brief `cuda_async_pool_resource`: a stream-ordered pool over `cudaMallocAsync` with its own
 * `cudaMemPool_t`.
 * @note Members are defined in kvcache::cuda; link it to use this type.
 */
#pragma once

#include <cstddef>
#include <cstdint>

#include "kvcache/memory/memory_resource.hpp"
#include "kvcache/memory/resource_ref.hpp"

namespace kvcache {

/**
 * @brief Stream-ordered device allocations from a private memory pool (cf. RMM's
 * cuda_async_memory_resource). Freed memory returns to the pool and is reused in stream order
 * without an OS round trip; the pool keeps up to `release_threshold` bytes cached.
 * @note Move-only; the pool is destroyed with the resource (all memory must be returned first).
 * Thread-safe. `allocate`/`deallocate` are the async calls on the default stream; `allocate`
 * synchronizes that stream so the memory is usable from any stream on return.
 */
class cuda_async_pool_resource {
 public:
  using space_type = cuda_space;

  /// @param initial_pool_bytes bytes reserved up front (0: grow on demand)
  /// @param release_threshold bytes the pool keeps cached after frees (default: all)
  explicit cuda_async_pool_resource(std::size_t initial_pool_bytes = 0,
                                    std::size_t release_threshold = SIZE_MAX);
  ~cuda_async_pool_resource();
  cuda_async_pool_resource(cuda_async_pool_resource&& other) noexcept : pool_(other.pool_) {
    other.pool_ = nullptr;
  }
  cuda_async_pool_resource& operator=(cuda_async_pool_resource&&) = delete;
  cuda_async_pool_resource(const cuda_async_pool_resource&) = delete;
  cuda_async_pool_resource& operator=(const cuda_async_pool_resource&) = delete;

  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t alignment = default_alignment);
  void deallocate(void* p, std::size_t bytes, std::size_t alignment = default_alignment) noexcept;
  /// @brief Memory usable on `s` once the work enqueued before it completes.
  [[nodiscard]] void* allocate_async(std::size_t bytes, std::size_t alignment, stream_view s);
  /// @brief Returns `p` to the pool after the work enqueued on `s` before this call.
  void deallocate_async(void* p, std::size_t bytes, std::size_t alignment, stream_view s) noexcept;
  /// @brief The `cudaMemPool_t`, as `void*`.
  [[nodiscard]] void* pool_handle() const noexcept { return pool_; }

 private:
  void* pool_ = nullptr;
};

static_assert(stream_ordered_resource<cuda_async_pool_resource>);

}  // namespace kvcache
