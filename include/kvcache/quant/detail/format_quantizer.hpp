/**
 * @file format_quantizer.hpp
 * @brief (internal) `format_quantizer<Self>`: the `quantizer` functions of a model described by
 * a `quant_format` (`Self::format`), shared by identity, int8, fp8 and KIVI. A model derives from
 * it and declares `name`, `key_bits`, `value_bits`, `group_size`, `residual` and `format`.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kvcache/core/error.hpp"
#include "kvcache/core/kv_layout.hpp"
#include "kvcache/quant/detail/common.hpp"
#include "kvcache/quant/detail/host_impl.hpp"
#include "kvcache/quant/format.hpp"

namespace kvcache::detail {

/// @brief The shape rules of one side's scheme (group geometry); throws invalid_argument.
inline void check_side_shape(std::string_view name, kv_side side, const quant_side_format& f,
                             std::int32_t page_size, std::int32_t head_dim) {
  if (f.scheme == quant_scheme::kivi_channel) {
    KVCACHE_EXPECTS(page_size % f.group == 0, errc::invalid_argument,
                    "{}: page_size {} must be a multiple of the {} group size {} (tokens per "
                    "group), so that a {} group never straddles two pages",
                    name, page_size, name_of(side), f.group, name_of(side));
  } else if (f.scheme == quant_scheme::kivi_token) {
    KVCACHE_EXPECTS(head_dim % f.group == 0, errc::invalid_argument,
                    "{}: head_dim {} must be a multiple of the {} group size {} (channels per "
                    "group)",
                    name, head_dim, name_of(side), f.group);
  }
}

template <class Self>
struct format_quantizer {
  /// @brief Bytes of a key head page (format.hpp documents the layout).
  [[nodiscard]] static std::size_t key_page_bytes(std::int32_t page_size,
                                                  std::int32_t head_dim) noexcept {
    return Self::format.key.page_bytes(page_size, head_dim);
  }
  /// @brief Bytes of a value head page.
  [[nodiscard]] static std::size_t value_page_bytes(std::int32_t page_size,
                                                    std::int32_t head_dim) noexcept {
    return Self::format.value.page_bytes(page_size, head_dim);
  }
  /// @brief Throws errc::invalid_argument naming the value when pages of this shape cannot be
  /// stored: page_size outside [1, 65536], head_dim not a multiple of 8 in [8, 256], and the
  /// model's group rules.
  static void validate(std::int32_t page_size, std::int32_t head_dim) {
    check_head_page_shape(Self::name, page_size, head_dim);
    check_side_shape(Self::name, kv_side::key, Self::format.key, page_size, head_dim);
    check_side_shape(Self::name, kv_side::value, Self::format.value, page_size, head_dim);
  }

  /// @brief Quantizes key rows of page positions [first, first + tokens); see quantizer.hpp.
  static void quantize_keys(const std::uint16_t* rows, std::byte* page, std::int32_t page_size,
                            std::int32_t head_dim, std::int32_t first, std::int32_t tokens,
                            bool* non_finite = nullptr) {
    quantize(kv_side::key, rows, page, page_size, head_dim, first, tokens, non_finite);
  }
  /// @brief Quantizes value rows of page positions [first, first + tokens).
  static void quantize_values(const std::uint16_t* rows, std::byte* page, std::int32_t page_size,
                              std::int32_t head_dim, std::int32_t first, std::int32_t tokens,
                              bool* non_finite = nullptr) {
    quantize(kv_side::value, rows, page, page_size, head_dim, first, tokens, non_finite);
  }
  /// @brief f16 key rows of page positions [first, first + tokens).
  static void dequantize_keys(const std::byte* page, std::uint16_t* rows, std::int32_t page_size,
                              std::int32_t head_dim, std::int32_t first, std::int32_t tokens) {
    dequantize(kv_side::key, page, rows, page_size, head_dim, first, tokens);
  }
  /// @brief f16 value rows of page positions [first, first + tokens).
  static void dequantize_values(const std::byte* page, std::uint16_t* rows,
                                std::int32_t page_size, std::int32_t head_dim, std::int32_t first,
                                std::int32_t tokens) {
    dequantize(kv_side::value, page, rows, page_size, head_dim, first, tokens);
  }

  /// @brief Tokens of a `context`-token sequence in the full-precision window: context mod
  /// residual (0 without a residual).
  [[nodiscard]] static std::int64_t residual_tokens(std::int64_t context) noexcept {
    return Self::residual == 0 || context <= 0 ? 0 : context % Self::residual;
  }
  /// @brief Average K + V bytes per token over every layer and head (see quantizer.hpp).
  /// @throws kvcache::error invalid_argument for an invalid layout, a page shape the model
  /// cannot store, or context < 1.
  [[nodiscard]] static double kv_bytes_per_token(const kv_layout& layout, std::int64_t context) {
    return detail::kv_bytes_per_token<Self>(layout, context);
  }

 private:
  static void quantize(kv_side side, const std::uint16_t* rows, std::byte* page,
                       std::int32_t page_size, std::int32_t head_dim, std::int32_t first,
                       std::int32_t tokens, bool* non_finite) {
    const char* op = side == kv_side::key ? "quantize_keys" : "quantize_values";
    validate(page_size, head_dim);
    const quant_side_format& f = Self::format.side(side);
    check_token_range(Self::name, op, page_size, first, tokens, f.token_group());
    if (tokens == 0) return;
    KVCACHE_EXPECTS(rows != nullptr && page != nullptr, errc::invalid_argument,
                    "{}: {}: null rows or page with {} tokens", Self::name, op, tokens);
    if (f.scheme != quant_scheme::f16) {  // f16 pages hold the 16-bit words as they come
      if (non_finite == nullptr) {
        check_finite_rows(Self::name, op, rows, first, tokens, head_dim);
      } else if (any_non_finite(rows, static_cast<std::size_t>(tokens) *
                                          static_cast<std::size_t>(head_dim))) {
        *non_finite = true;
      }
    }
    quantize_side_host(f, rows, page, page_size, head_dim, first, tokens);
  }

  static void dequantize(kv_side side, const std::byte* page, std::uint16_t* rows,
                         std::int32_t page_size, std::int32_t head_dim, std::int32_t first,
                         std::int32_t tokens) {
    const char* op = side == kv_side::key ? "dequantize_keys" : "dequantize_values";
    validate(page_size, head_dim);
    check_token_range(Self::name, op, page_size, first, tokens, 1);
    if (tokens == 0) return;
    KVCACHE_EXPECTS(rows != nullptr && page != nullptr, errc::invalid_argument,
                    "{}: {}: null page or rows with {} tokens", Self::name, op, tokens);
    dequantize_side_host(Self::format.side(side), page, rows, page_size, head_dim, first, tokens);
  }
};

}  // namespace kvcache::detail
