/**
 * @file kernel_checks.hpp
 * @brief Internal: the argument checks that `append_kv`, `gather_kv` and `copy_pages` share
 * between their host and CUDA implementations, defined in the host library (src/paging/
 * kernels_host.cpp) so that the CUDA sources need neither fmt nor error.hpp.
 *
 * `check_*_shapes` look only at the views (O(1), never dereference); `check_*_contents` read the
 * index arrays (slots, page tables, copy pairs), so they need host-accessible pointers.
 * Every check throws `kvcache::error` naming the offending value; `who` starts the message.
 */
#pragma once

#include <cstddef>
#include <cstdint>

#include "kvcache/paging/kernels.hpp"

namespace kvcache::detail {

/// @brief The pool view itself: counts >= 1, element size 2 or 4 matching the dtype, consistent
/// page bytes and offsets, a non-null base aligned to the element size.
void check_pool_view(const paged_kv_view& pool, const char* who);

/// @brief `append_kv`: the pool, kv_heads and layers against the pool, token counts, strides,
/// non-null and aligned pointers. O(1).
void check_append_shapes(const paged_kv_view& pool, const kv_input_view& input,
                         const slot_mapping_view& slots, const char* who);
/// @brief `append_kv`: every slot below num_pages * page_size (negative = skipped), naming slot,
/// token, layer and head. Reads `slots` (host-accessible). O(layers x heads x tokens).
void check_append_contents(const paged_kv_view& pool, const kv_input_view& input,
                           const slot_mapping_view& slots, const char* who);

/// @brief `gather_kv`: the pool, `layer`, the tables' page size, non-null pointers. O(1).
void check_gather_shapes(const paged_kv_view& pool, std::int32_t layer,
                         const page_table_view& tables, const std::int64_t* out_offsets,
                         const std::byte* out_k, const std::byte* out_v, const char* who);
/// @brief `gather_kv`: indptr non-decreasing from >= 0, page ids in the pool, last_page_len in
/// 1..page_size and out_offsets >= 0 for every non-empty table. Reads the tables
/// (host-accessible). O(tables + pages).
void check_gather_contents(const paged_kv_view& pool, const page_table_view& tables,
                           const std::int64_t* out_offsets, const char* who);

/// @brief `copy_pages`: the pool, n >= 0, a non-null aligned `copies` when n > 0. O(1).
void check_copy_shapes(const paged_kv_view& pool, const page_copy* copies, std::int32_t n,
                       const char* who);
/// @brief `copy_pages`: page ids in the pool, distinct destinations, no destination a source.
/// Reads `copies` (host-accessible). O(n) (O(n^2) without allocation for n <= 64).
void check_copy_contents(const paged_kv_view& pool, const page_copy* copies, std::int32_t n,
                         const char* who);

/// @brief Throws errc::cuda_error: "<who>: <call> failed: <name> (<text>)".
[[noreturn]] void throw_cuda_failure(const char* who, const char* call, const char* name,
                                     const char* text, const char* file, int line);
/// @brief Throws errc::invalid_argument: `what` (at `p`) is not accessible from the device.
[[noreturn]] void throw_not_device_accessible(const char* who, const char* what, const void* p);

}  // namespace kvcache::detail
