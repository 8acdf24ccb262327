/**
 * @file kv_layout.hpp
 * @brief `kv_layout`: the shape of a model's KV cache and the size of its pages.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kvcache/core/dtype.hpp"

namespace kvcache {

/// @brief Order of the axes inside one layer's page (FlashInfer's names).
enum class kv_order : std::uint8_t {
  nhd,  ///< [page_size][kv_heads][head_dim]: token-major, what vLLM writes
  hnd,  ///< [kv_heads][page_size][head_dim]: head-major, contiguous per head
};

/// @brief Short name, "NHD" or "HND".
[[nodiscard]] constexpr const char* name_of(kv_order o) noexcept {
  return o == kv_order::nhd ? "NHD" : "HND";
}

/**
 * @brief Shape of a model's KV cache: what a page holds and how big it is.
 *
 * A page holds `page_size` tokens. For one layer it holds K and V, each
 * `page_size * kv_heads * head_dim` elements of `type`, ordered as `order` says.
 * Valid when: every count >= 1, `page_size` a power of two (<= 65536), `q_heads` a multiple of
 * `kv_heads` (GQA), and one head's row a whole number of bytes (head_dim * bits % 8 == 0).
 * @note Plain aggregate, trivially copyable; `validate()` is O(1).
 */
struct kv_layout {
  std::int32_t layers = 1;      ///< transformer layers
  std::int32_t kv_heads = 1;    ///< key/value heads per layer
  std::int32_t q_heads = 1;     ///< query heads per layer (a multiple of kv_heads)
  std::int32_t head_dim = 128;  ///< elements per head
  std::int32_t page_size = 16;  ///< tokens per page (power of two)
  kv_order order = kv_order::nhd;
  dtype type = dtype::f16;

  /// @brief Throws errc::invalid_argument naming the first bad field and its value.
  void validate() const;

  /// @brief Query heads that share one kv head.
  [[nodiscard]] constexpr std::int32_t group_size() const noexcept { return q_heads / kv_heads; }
  /// @brief Bytes of one head's row (one token, one head, K or V).
  [[nodiscard]] constexpr std::size_t bytes_per_head_row() const noexcept {
    return bytes_for(type, static_cast<std::size_t>(head_dim));
  }
  /// @brief Bytes of K (or of V) for one token in one layer.
  [[nodiscard]] constexpr std::size_t bytes_per_token_layer_k() const noexcept {
    return static_cast<std::size_t>(kv_heads) * bytes_per_head_row();
  }
  /// @brief Bytes of K and V for one token across all layers.
  [[nodiscard]] constexpr std::size_t bytes_per_token() const noexcept {
    return 2 * static_cast<std::size_t>(layers) * bytes_per_token_layer_k();
  }
  /// @brief Bytes of K (or of V) of one page in one layer.
  [[nodiscard]] constexpr std::size_t bytes_per_page_layer_k() const noexcept {
    return static_cast<std::size_t>(page_size) * bytes_per_token_layer_k();
  }
  /// @brief Bytes of K and V of one page in every layer (a page that spans the layers).
  [[nodiscard]] constexpr std::size_t bytes_per_page() const noexcept {
    return static_cast<std::size_t>(page_size) * bytes_per_token();
  }
  /// @brief Elements of one page of K (or V) in one layer.
  [[nodiscard]] constexpr std::size_t elements_per_page_layer_k() const noexcept {
    return static_cast<std::size_t>(page_size) * static_cast<std::size_t>(kv_heads) *
           static_cast<std::size_t>(head_dim);
  }

  /// @brief One-line description, e.g. "layers=32 kv_heads=8 q_heads=32 head_dim=128 ...".
  [[nodiscard]] std::string to_string() const;

  friend constexpr bool operator==(const kv_layout&, const kv_layout&) = default;
};

}  // namespace kvcache
