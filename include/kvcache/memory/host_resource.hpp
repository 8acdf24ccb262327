/**
 * @file host_resource.hpp
 * @brief `host_resource`: aligned pageable host memory (aligned operator new).
 */
#pragma once

#include <cstddef>

#include "kvcache/memory/memory_resource.hpp"
#include "kvcache/memory/resource_ref.hpp"

namespace kvcache {

/**
 * @brief Aligned host allocations through `::operator new(bytes, std::align_val_t)`.
 * @note Stateless and thread-safe. allocate/deallocate cost what the system allocator costs.
 */
class host_resource {
 public:
  using space_type = host_space;
  /// @throws kvcache::error invalid_argument (0 bytes, oversized, bad alignment), out_of_memory.
  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t alignment = default_alignment);
  void deallocate(void* p, std::size_t bytes, std::size_t alignment = default_alignment) noexcept;
  friend bool operator==(const host_resource&, const host_resource&) noexcept { return true; }
};

static_assert(memory_resource<host_resource>);
static_assert(memory_resource<resource_ref<host_space>>);

}  // namespace kvcache
