/**
 * @file page_pool.hpp
 * @brief `page_pool<Space, Geometry>`: the physical storage of K and V pages.
 */
#pragma once

#include <cstddef>
#include <cstdint>

#include "kvcache/core/error.hpp"
#include "kvcache/core/kv_layout.hpp"
#include "kvcache/memory/buffer.hpp"
#include "kvcache/paging/geometry.hpp"
#include "kvcache/paging/paged_kv_view.hpp"

namespace kvcache {

/**
 * @brief One allocation holding `num_pages` pages of K and V in `Space`.
 *
 * Memory order (see `paged_kv_view`): for each layer array (one per layer under `span_layers`,
 * one in all under `per_layer` and `per_head`): K pages, then V pages, each
 * `[num_pages][page]`. A page is `[page_size][heads_per_page][head_dim]` (NHD) or
 * `[heads_per_page][page_size][head_dim]` (HND). Alignment: the base is 256-byte aligned and
 * pages are packed, so page p starts at p * page_bytes; with f16 and head_dim a multiple of 8,
 * every row is 16-byte aligned. Which page belongs to whom is not the pool's business (see
 * `paged_kv_store`).
 * @tparam Space where the bytes live (`cuda_space`, `host_space`, `pinned_host_space`).
 * @tparam Geometry `span_layers`, `per_layer` or `per_head`.
 * @note Move-only. Element types of 2 or 4 bytes (f16, bf16, f32): quantized pages come with the
 * quantization layer.
 */
template <memory_space Space, page_geometry Geometry = span_layers>
class page_pool {
 public:
  using space_type = Space;
  using geometry_type = Geometry;

  /// @throws kvcache::error invalid_argument for an invalid layout, num_pages < 1 or an element
  /// type that is not 2 or 4 bytes; out_of_memory from the resource.
  page_pool(const kv_layout& layout, std::int32_t num_pages,
            resource_ref<Space> resource = default_resource<Space>())
      : layout_(validated(layout, num_pages)),
        num_pages_(num_pages),
        page_bytes_(static_cast<std::int64_t>(layout.page_size) * Geometry::heads_per_page(layout) *
                    static_cast<std::int64_t>(layout.bytes_per_head_row())),
        storage_(static_cast<std::size_t>(2 * page_bytes_ * num_pages *
                                          Geometry::layer_arrays(layout)),
                 resource) {}

  [[nodiscard]] const kv_layout& layout() const noexcept { return layout_; }
  [[nodiscard]] std::int32_t num_pages() const noexcept { return num_pages_; }
  /// @brief Bytes of one page of K (or V) in one layer array.
  [[nodiscard]] std::int64_t page_bytes() const noexcept { return page_bytes_; }
  /// @brief Bytes of one page id: K and V in every layer array it covers.
  [[nodiscard]] std::int64_t bytes_per_page_id() const noexcept {
    return 2 * page_bytes_ * Geometry::layer_arrays(layout_);
  }
  [[nodiscard]] std::size_t size_bytes() const noexcept { return storage_.size_bytes(); }

  /// @brief The kernel-facing description of the storage.
  [[nodiscard]] paged_kv_view view() noexcept {
    paged_kv_view v;
    v.data = storage_.data();
    v.page_bytes = page_bytes_;
    v.v_offset_bytes = page_bytes_ * num_pages_;
    v.layer_stride_bytes = Geometry::layer_arrays(layout_) > 1 ? 2 * page_bytes_ * num_pages_ : 0;
    v.num_pages = num_pages_;
    v.layers = layout_.layers;
    v.page_size = layout_.page_size;
    v.heads_per_page = Geometry::heads_per_page(layout_);
    v.head_dim = layout_.head_dim;
    v.elem_bytes = bits_of(layout_.type) / 8;
    v.order = layout_.order;
    v.type = layout_.type;
    return v;
  }
  /// @brief The view `copy_pages` takes (the same as `view()`).
  [[nodiscard]] paged_kv_view copy_view() noexcept { return view(); }
  /// @brief The raw bytes.
  [[nodiscard]] buffer_view<std::byte, Space> bytes() noexcept { return storage_.view(); }

 private:
  static kv_layout validated(const kv_layout& layout, std::int32_t num_pages) {
    layout.validate();
    KVCACHE_EXPECTS(num_pages >= 1, errc::invalid_argument,
                    "page_pool: num_pages must be >= 1, got {}", num_pages);
    const int bits = bits_of(layout.type);
    KVCACHE_EXPECTS(bits == 16 || bits == 32, errc::not_supported,
                    "page_pool: dtype {} is not stored unquantized (f32, f16 or bf16)",
                    name_of(layout.type));
    return layout;
  }

  kv_layout layout_;
  std::int32_t num_pages_;
  std::int64_t page_bytes_;
  buffer<std::byte, Space> storage_;
};

}  // namespace kvcache
