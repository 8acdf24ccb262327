/**
 * @file paged_kv_view.hpp
 * @brief `paged_kv_view`: the non-owning description of a page pool's K/V bytes that launchers
 * and kernels take (cf. FlashInfer's paged_kv_t), and `page_table_view`, a batch of block tables
 * in CSR form.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kvcache/core/config.hpp"
#include "kvcache/core/kv_layout.hpp"

namespace kvcache {

/**
 * @brief Where every K and V row of a page pool lives. Trivially copyable; pass by value.
 *
 * Memory order: for each layer array a (a = layer under `span_layers`, a single array
 * otherwise): K array of a, then V array of a; each array is `[num_pages][page]`, a page being
 * `[page_size][heads_per_page][head_dim]` (NHD) or `[heads_per_page][page_size][head_dim]` (HND)
 * elements of `elem_bytes` bytes. So layer l's K array is FlashInfer's `k_data` of shape
 * [num_pages, page_size, kv_heads, head_dim] (NHD) or [num_pages, kv_heads, page_size, head_dim]
 * (HND). The base is 256-byte aligned; every page starts at a multiple of `page_bytes`.
 */
struct paged_kv_view {
  std::byte* data = nullptr;            ///< base of the pool (K array of layer array 0)
  std::int64_t layer_stride_bytes = 0;  ///< bytes from layer l's K array to layer l+1's (0: shared)
  std::int64_t v_offset_bytes = 0;      ///< bytes from a layer's K array to its V array
  std::int64_t page_bytes = 0;          ///< bytes of one page of K (or V) in one layer array
  std::int32_t num_pages = 0;           ///< pages in the pool
  std::int32_t layers = 0;              ///< model layers
  std::int32_t page_size = 0;           ///< tokens per page
  std::int32_t heads_per_page = 0;      ///< kv heads a page holds (1 under per_head)
  std::int32_t head_dim = 0;            ///< elements per head row
  std::int32_t elem_bytes = 0;          ///< bytes per element (4: f32, 2: f16/bf16)
  kv_order order = kv_order::nhd;       ///< order inside a page
  dtype type = dtype::f16;              ///< element type

  /// @brief Bytes of one head row (head_dim elements).
  [[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::int64_t row_bytes() const noexcept {
    return static_cast<std::int64_t>(head_dim) * elem_bytes;
  }
  /// @brief Byte offset of K's row (page, token in page, head in page) of `layer` from `data`.
  /// Add `v_offset_bytes` for V. No bounds checks.
  [[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::int64_t k_row_offset(
      std::int32_t layer, std::int32_t page, std::int32_t token, std::int32_t head) const noexcept {
    const std::int64_t in_page =
        order == kv_order::nhd
            ? (static_cast<std::int64_t>(token) * heads_per_page + head)
            : (static_cast<std::int64_t>(head) * page_size + token);
    return layer * layer_stride_bytes + page * page_bytes + in_page * row_bytes();
  }
};
static_assert(std::is_trivially_copyable_v<paged_kv_view>);

/**
 * @brief A batch of block tables in FlashInfer's CSR form. Trivially copyable; host or device
 * pointers (as the producer documents).
 *
 * Table t owns pages `indices[indptr[t] .. indptr[t+1])`; its last page holds
 * `last_page_len[t]` tokens (1..page_size; 0 only for a table with no page). Table t therefore
 * holds (indptr[t+1] - indptr[t] - 1) * page_size + last_page_len[t] tokens.
 */
struct page_table_view {
  const std::int32_t* indptr = nullptr;         ///< [num_tables + 1]
  const std::int32_t* indices = nullptr;        ///< [indptr[num_tables]] page ids
  const std::int32_t* last_page_len = nullptr;  ///< [num_tables]
  std::int32_t num_tables = 0;
  std::int32_t page_size = 0;

  [[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::int64_t tokens(std::int32_t t) const noexcept {
    const std::int32_t pages = indptr[t + 1] - indptr[t];
    return pages == 0 ? 0
                      : static_cast<std::int64_t>(pages - 1) * page_size + last_page_len[t];
  }
};
static_assert(std::is_trivially_copyable_v<page_table_view>);

}  // namespace kvcache
