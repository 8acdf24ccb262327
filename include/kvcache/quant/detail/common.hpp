/**
 * @file common.hpp
 * @brief (internal) Argument checks and the bytes-per-token computation shared by the
 * quantizers' host functions.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kvcache/core/error.hpp"
#include "kvcache/core/kv_layout.hpp"
#include "kvcache/quant/detail/arith.hpp"

namespace kvcache::detail {

/// @brief Largest head_dim the quantizers (and their kernels) take.
inline constexpr std::int32_t quant_max_head_dim = 256;

/// @brief The shape rules every quantizer shares: 1 <= page_size <= 65536; head_dim a multiple
/// of 8 in [8, 256] (rows of whole 16-byte vectors, which the kernels move).
inline void check_head_page_shape(std::string_view name, std::int32_t page_size,
                                  std::int32_t head_dim) {
  KVCACHE_EXPECTS(page_size >= 1 && page_size <= 65536, errc::invalid_argument,
                  "{}: page_size must be in [1, 65536], got {}", name, page_size);
  KVCACHE_EXPECTS(head_dim >= 8 && head_dim <= quant_max_head_dim && head_dim % 8 == 0,
                  errc::invalid_argument,
                  "{}: head_dim must be a multiple of 8 in [8, {}], got {}", name,
                  quant_max_head_dim, head_dim);
}

/// @brief Checks that page positions [first, first + tokens) lie in a page of page_size tokens
/// and, when `group` > 1, that first and tokens are multiples of it (quantize only).
inline void check_token_range(std::string_view name, const char* op, std::int32_t page_size,
                              std::int32_t first, std::int32_t tokens, std::int32_t group) {
  KVCACHE_EXPECTS(first >= 0 && tokens >= 0 && first <= page_size && tokens <= page_size - first,
                  errc::out_of_range,
                  "{}: {}: tokens [{}, {}) are not inside a page of {} tokens", name, op, first,
                  static_cast<std::int64_t>(first) + tokens, page_size);
  KVCACHE_EXPECTS(first % group == 0 && tokens % group == 0, errc::invalid_argument,
                  "{}: {}: first token {} and token count {} must be multiples of the group size {}",
                  name, op, first, tokens, group);
}

/// @brief Throws errc::invalid_argument naming the first NaN or Inf of `tokens` f16 rows
/// (token = page position first + row, and channel) before anything is written.
inline void check_finite_rows(std::string_view name, const char* op, const std::uint16_t* rows,
                              std::int32_t first, std::int32_t tokens, std::int32_t head_dim) {
  const std::size_t count = static_cast<std::size_t>(tokens) * static_cast<std::size_t>(head_dim);
  for (std::size_t i = 0; i < count; ++i) {
    if (!f16_bits_finite(rows[i])) [[unlikely]] {
      const auto row = static_cast<std::int64_t>(i / static_cast<std::size_t>(head_dim));
      const auto channel = static_cast<std::int64_t>(i % static_cast<std::size_t>(head_dim));
      KVCACHE_FAIL(errc::invalid_argument,
                   "{}: {}: input token {} (row {}) channel {} is {} (f16 bits {:#06x}); NaN and "
                   "Inf cannot be quantized",
                   name, op, first + row, row, channel,
                   (rows[i] & 0x03FFu) != 0 ? "NaN" : ((rows[i] & 0x8000u) != 0 ? "-Inf" : "+Inf"),
                   rows[i]);
    }
  }
}

/// @brief True when any of `count` f16 values is NaN or Inf.
[[nodiscard]] inline bool any_non_finite(const std::uint16_t* rows, std::size_t count) noexcept {
  bool bad = false;
  for (std::size_t i = 0; i < count; ++i) bad |= !f16_bits_finite(rows[i]);
  return bad;
}

/**
 * @brief The average K + V bytes per token of a `context`-token sequence under quantizer `Q`:
 * residual_tokens(context) tokens in f16, the others at the head page's bytes per token
 * (codes + metadata + alignment padding), summed over every layer and kv head.
 */
template <class Q>
[[nodiscard]] double kv_bytes_per_token(const kv_layout& layout, std::int64_t context) {
  layout.validate();
  KVCACHE_EXPECTS(context >= 1, errc::invalid_argument,
                  "{}: kv_bytes_per_token: context must be >= 1 token, got {}", Q::name, context);
  Q::validate(layout.page_size, layout.head_dim);
  const std::int64_t residual = Q::residual_tokens(context);
  const std::int64_t quantized = context - residual;
  const double page_bytes = static_cast<double>(Q::key_page_bytes(layout.page_size, layout.head_dim) +
                                                Q::value_page_bytes(layout.page_size, layout.head_dim));
  const double per_head = static_cast<double>(quantized) * page_bytes / layout.page_size +
                          static_cast<double>(residual) * 2.0 * 2.0 * layout.head_dim;
  return per_head * layout.layers * layout.kv_heads / static_cast<double>(context);
}

/// @brief f16 bytes per token of `layout` (2 * layers * kv_heads * head_dim * 2): the baseline.
[[nodiscard]] inline double f16_kv_bytes_per_token(const kv_layout& layout) noexcept {
  return 4.0 * layout.layers * layout.kv_heads * layout.head_dim;
}

}  // namespace kvcache::detail
