/**
 * @file cuda_resource.hpp
 * @brief `cuda_resource`: device memory through `cudaMalloc` / `cudaFree`.
 * @note Members are defined in kvcache::cuda; link it to use this type.
 */
#pragma once

#include <cstddef>

#include "kvcache/memory/memory_resource.hpp"
#include "kvcache/memory/resource_ref.hpp"

namespace kvcache {

/**
 * @brief Device memory of the current device through cudaMalloc (synchronous, 256-byte aligned).
 * @note Thread-safe. Alignments above 256 throw errc::not_supported; a failed cudaMalloc throws
 * errc::out_of_memory naming the byte count. `deallocate` synchronizes the device (cudaFree).
 */
class cuda_resource {
 public:
  using space_type = cuda_space;
  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t alignment = default_alignment);
  void deallocate(void* p, std::size_t bytes, std::size_t alignment = default_alignment) noexcept;
  friend bool operator==(const cuda_resource&, const cuda_resource&) noexcept { return true; }
};

static_assert(memory_resource<cuda_resource>);

}  // namespace kvcache
