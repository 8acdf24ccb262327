/**
 * @file copy.hpp
 * @brief `copy`: moves elements between any two memory spaces, ordered on a stream.
 */
#pragma once

#include <cstddef>
#include <cstring>
#include <type_traits>

#include "kvcache/memory/buffer.hpp"

namespace kvcache {

namespace detail {
/// @brief cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream); defined in kvcache::cuda.
void cuda_copy_async(void* dst, const void* src, std::size_t bytes, stream_view s);
}  // namespace detail

/**
 * @brief Copies `src` into `dst`, which must have the same number of elements.
 *
 * Between two `host_space` views this is a `std::memcpy`, done on return. Any copy that touches
 * device or pinned memory is a `cudaMemcpyAsync` enqueued on `s` (needs kvcache::cuda): it does
 * not synchronize, so synchronize `s` before reading host memory it writes.
 * @throws kvcache::error errc::shape_mismatch naming both sizes; errc::cuda_error.
 * @note Overlapping views of the same memory are not allowed.
 */
template <class T, memory_space DstSpace, class U, memory_space SrcSpace>
  requires std::is_same_v<std::remove_const_t<U>, T> && (!std::is_const_v<T>)
void copy(buffer_view<T, DstSpace> dst, buffer_view<U, SrcSpace> src, stream_view s = {}) {
  KVCACHE_EXPECTS(dst.size() == src.size(), errc::shape_mismatch,
                  "copy: destination has {} elements, source has {}", dst.size(), src.size());
  if (src.empty()) return;
  if constexpr (std::is_same_v<DstSpace, host_space> && std::is_same_v<SrcSpace, host_space>) {
    (void)s;
    std::memcpy(dst.data(), src.data(), src.size_bytes());
  } else {
    detail::cuda_copy_async(dst.data(), src.data(), src.size_bytes(), s);
  }
}

/// @brief `copy` from buffer to buffer.
template <class T, memory_space DstSpace, memory_space SrcSpace>
void copy(buffer<T, DstSpace>& dst, const buffer<T, SrcSpace>& src, stream_view s = {}) {
  copy(dst.view(), src.view(), s);
}

}  // namespace kvcache
