/**
 * @file quantized_pool.hpp
 * @brief `quantized_page_pool<Space, Geometry, Q>`: page storage whose pages hold a quantizer's
 * packed head pages, and `quantized_kv_view`, its kernel-facing description (what an attention
 * kernel reads).
 *
 * Memory order (the same frame as `page_pool`, with head pages in place of rows): for each layer
 * array (one per layer under `span_layers`, one in all under `per_layer` and `per_head`): the K
 * array, then the V array, each `[num_pages][heads_per_page][head_page_bytes]` bytes. A head page
 * (format.hpp) is `page_size` tokens x `head_dim` channels of one (layer, kv head), codes then
 * metadata; `head_page_bytes` = max(Q::key_page_bytes, Q::value_page_bytes) (equal for every
 * kvcache model), a multiple of 16, so every head page is 16-byte aligned (the base is 256-byte
 * aligned).
 */
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kvcache/core/error.hpp"
#include "kvcache/core/kv_layout.hpp"
#include "kvcache/memory/buffer.hpp"
#include "kvcache/paging/geometry.hpp"
#include "kvcache/paging/paged_kv_view.hpp"
#include "kvcache/quant/format.hpp"
#include "kvcache/quant/kernels.hpp"

namespace kvcache {

/**
 * @brief Where every head page of a quantized pool lives. Trivially copyable; pass by value.
 * Head page (side, layer, page, head) starts at `data + head_page_offset(...)`.
 */
struct quantized_kv_view {
  std::byte* data = nullptr;            ///< base (K array of layer array 0)
  std::int64_t layer_stride_bytes = 0;  ///< bytes from layer l's K array to layer l+1's (0: shared)
  std::int64_t v_offset_bytes = 0;      ///< bytes from a layer's K array to its V array
  std::int64_t page_bytes = 0;          ///< bytes of one page of K (or V) in one layer array
  std::int64_t head_page_bytes = 0;     ///< bytes from one head page of a page to the next
  std::int32_t num_pages = 0;
  std::int32_t layers = 0;
  std::int32_t page_size = 0;       ///< tokens per page
  std::int32_t heads_per_page = 0;  ///< kv heads a page holds (1 under per_head)
  std::int32_t head_dim = 0;
  quant_format format;  ///< how key and value head pages are encoded

  /// @brief Byte offset of a head page from `data`. No bounds checks.
  [[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::int64_t head_page_offset(
      kv_side side, std::int32_t layer, std::int32_t page, std::int32_t head) const noexcept {
    return layer * layer_stride_bytes + (side == kv_side::value ? v_offset_bytes : 0) +
           page * page_bytes + head * head_page_bytes;
  }
  [[nodiscard]] KVCACHE_HOST_DEVICE std::byte* head_page(kv_side side, std::int32_t layer,
                                                         std::int32_t page,
                                                         std::int32_t head) const noexcept {
    return data + head_page_offset(side, layer, page, head);
  }
};
static_assert(std::is_trivially_copyable_v<quantized_kv_view>);

/**
 * @brief One allocation holding `num_pages` quantized pages (K and V, every layer array).
 * @tparam Q the quantizer whose head pages the pool stores.
 * @note Move-only. The layout's dtype must be f16 (what the quantizers read and write).
 */
template <memory_space Space, page_geometry Geometry, formatted_quantizer Q>
class quantized_page_pool {
 public:
  using space_type = Space;
  using geometry_type = Geometry;
  using quantizer_type = Q;

  /// @throws kvcache::error invalid_argument (layout, num_pages, a page shape the quantizer
  /// rejects, naming it), not_supported (dtype other than f16); out_of_memory.
  quantized_page_pool(const kv_layout& layout, std::int32_t num_pages,
                      resource_ref<Space> resource = default_resource<Space>())
      : layout_(validated(layout, num_pages)),
        num_pages_(num_pages),
        head_page_bytes_(static_cast<std::int64_t>(
            std::max(Q::key_page_bytes(layout.page_size, layout.head_dim),
                     Q::value_page_bytes(layout.page_size, layout.head_dim)))),
        page_bytes_(head_page_bytes_ * Geometry::heads_per_page(layout)),
        storage_(static_cast<std::size_t>(2 * page_bytes_ * num_pages *
                                          Geometry::layer_arrays(layout)),
                 resource) {}

  [[nodiscard]] const kv_layout& layout() const noexcept { return layout_; }
  [[nodiscard]] std::int32_t num_pages() const noexcept { return num_pages_; }
  /// @brief Bytes of one head page slot (codes + metadata, 16-byte multiple).
  [[nodiscard]] std::int64_t head_page_bytes() const noexcept { return head_page_bytes_; }
  /// @brief Bytes of one page of K (or V) in one layer array.
  [[nodiscard]] std::int64_t page_bytes() const noexcept { return page_bytes_; }
  /// @brief Bytes of one page id: K and V in every layer array it covers.
  [[nodiscard]] std::int64_t bytes_per_page_id() const noexcept {
    return 2 * page_bytes_ * Geometry::layer_arrays(layout_);
  }
  [[nodiscard]] std::size_t size_bytes() const noexcept { return storage_.size_bytes(); }

  /// @brief The kernel-facing description of the storage.
  [[nodiscard]] quantized_kv_view view() noexcept {
    const paged_kv_view c = copy_view();
    quantized_kv_view v;
    v.data = c.data;
    v.page_bytes = c.page_bytes;
    v.head_page_bytes = head_page_bytes_;
    v.v_offset_bytes = c.v_offset_bytes;
    v.layer_stride_bytes = c.layer_stride_bytes;
    v.num_pages = num_pages_;
    v.layers = layout_.layers;
    v.page_size = layout_.page_size;
    v.heads_per_page = Geometry::heads_per_page(layout_);
    v.head_dim = layout_.head_dim;
    v.format = Q::format;
    return v;
  }
  /**
   * @brief The pool as `copy_pages` sees it: each page a run of `page_bytes` bytes (described as
   * one row of page_bytes / 2 16-bit elements), K and V in every layer array.
   */
  [[nodiscard]] paged_kv_view copy_view() noexcept {
    paged_kv_view v;
    v.data = storage_.data();
    v.page_bytes = page_bytes_;
    v.v_offset_bytes = page_bytes_ * num_pages_;
    v.layer_stride_bytes =
        Geometry::layer_arrays(layout_) > 1 ? 2 * page_bytes_ * num_pages_ : 0;
    v.num_pages = num_pages_;
    v.layers = layout_.layers;
    v.page_size = 1;
    v.heads_per_page = 1;
    v.head_dim = static_cast<std::int32_t>(page_bytes_ / 2);
    v.elem_bytes = 2;
    v.order = kv_order::nhd;
    v.type = dtype::f16;
    return v;
  }
  /// @brief The raw bytes.
  [[nodiscard]] buffer_view<std::byte, Space> bytes() noexcept { return storage_.view(); }

 private:
  static kv_layout validated(const kv_layout& layout, std::int32_t num_pages) {
    layout.validate();
    KVCACHE_EXPECTS(num_pages >= 1, errc::invalid_argument,
                    "quantized_page_pool: num_pages must be >= 1, got {}", num_pages);
    KVCACHE_EXPECTS(layout.type == dtype::f16, errc::not_supported,
                    "quantized_page_pool: {} quantizes f16 rows; the layout's dtype is {}",
                    Q::name, name_of(layout.type));
    Q::validate(layout.page_size, layout.head_dim);
    return layout;
  }

  kv_layout layout_;
  std::int32_t num_pages_;
  std::int64_t head_page_bytes_;
  std::int64_t page_bytes_;
  buffer<std::byte, Space> storage_;
};

}  // namespace kvcache
