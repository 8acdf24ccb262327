/**
 * @file pinned_host_resource.hpp
 * @brief `pinned_host_resource`: page-locked host memory through `cudaHostAlloc`.
 * @note Members are defined in kvcache::cuda; link it to use this type.
 */
#pragma once

#include <cstddef>

#include "kvcache/memory/memory_resource.hpp"
#include "kvcache/memory/resource_ref.hpp"

namespace kvcache {

/**
 * @brief Page-locked, portable, mapped host memory (cudaHostAlloc). Copies to and from it run
 * asynchronously at PCIe/NVLink speed; kernels may read it through its device mapping.
 * @note Thread-safe. Pinning is slow (an OS call per allocation): allocate once, reuse.
 */
class pinned_host_resource {
 public:
  using space_type = pinned_host_space;
  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t alignment = default_alignment);
  void deallocate(void* p, std::size_t bytes, std::size_t alignment = default_alignment) noexcept;
  friend bool operator==(const pinned_host_resource&, const pinned_host_resource&) noexcept {
    return true;
  }
};

static_assert(memory_resource<pinned_host_resource>);

}  // namespace kvcache
