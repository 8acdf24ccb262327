/**
 * @file memory_resource.hpp
 * @brief The `memory_resource` and `stream_ordered_resource` concepts, and the argument checks
 * every resource applies.
 *
 * A model of `memory_resource` provides (cf. cuda::mr::synchronous_resource):
 *  - `typename R::space_type`, a `memory_space` the returned memory lives in;
 *  - `void* r.allocate(std::size_t bytes, std::size_t alignment)`: memory of at least `bytes`
 *    bytes aligned to `alignment`. Throws `kvcache::error`: errc::invalid_argument for
 *    bytes == 0, bytes > `max_allocation_bytes` or an alignment that is not a power of two;
 *    errc::out_of_memory when the memory is not there (naming the byte count);
 *  - `r.deallocate(void* p, std::size_t bytes, std::size_t alignment)`: returns memory obtained
 *    from `allocate` with the same bytes and alignment.
 * A model of `stream_ordered_resource` also provides `allocate_async(bytes, alignment, stream)`
 * and `deallocate_async(p, bytes, alignment, stream)`, ordered on `stream` (cf. cuda::mr::resource).
 */
#pragma once

#include <bit>
#include <concepts>
#include <cstddef>

#include "kvcache/core/error.hpp"
#include "kvcache/memory/space.hpp"
#include "kvcache/memory/stream.hpp"

namespace kvcache {

/// @brief Largest single allocation any resource accepts (256 TiB): above it is a bug, not a need.
inline constexpr std::size_t max_allocation_bytes = std::size_t{1} << 48;
/// @brief Alignment used when the caller names none: CUDA's allocation granularity.
inline constexpr std::size_t default_alignment = 256;

/// @brief Synchronous allocate/deallocate in a memory space.
template <class R>
concept memory_resource =
    memory_space<typename R::space_type> &&
    requires(R& r, void* p, std::size_t bytes, std::size_t alignment) {
      { r.allocate(bytes, alignment) } -> std::same_as<void*>;
      r.deallocate(p, bytes, alignment);
    };

/// @brief A `memory_resource` that can also allocate and free in stream order.
template <class R>
concept stream_ordered_resource =
    memory_resource<R> &&
    requires(R& r, void* p, std::size_t bytes, std::size_t alignment, stream_view s) {
      { r.allocate_async(bytes, alignment, s) } -> std::same_as<void*>;
      r.deallocate_async(p, bytes, alignment, s);
    };

/// @brief True when a resource serves memory in `Space`.
template <class R, class Space>
concept resource_for = memory_resource<R> && std::same_as<typename R::space_type, Space>;

namespace detail {
/// @brief The checks of the concept's contract; `who` names the resource in the message.
inline void check_allocation(std::size_t bytes, std::size_t alignment, const char* who) {
  KVCACHE_EXPECTS(bytes != 0, errc::invalid_argument, "{}: cannot allocate 0 bytes", who);
  KVCACHE_EXPECTS(bytes <= max_allocation_bytes, errc::invalid_argument,
                  "{}: allocation of {} bytes is over the {} byte maximum", who, bytes,
                  max_allocation_bytes);
  KVCACHE_EXPECTS(alignment != 0 && std::has_single_bit(alignment), errc::invalid_argument,
                  "{}: alignment {} is not a power of two", who, alignment);
}
}  // namespace detail

}  // namespace kvcache
