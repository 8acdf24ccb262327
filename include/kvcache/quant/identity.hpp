/**
 * @file identity.hpp
 * @brief `identity_quantizer`: head pages hold the 16-bit rows as they come (f16 or bf16).
 */
#pragma once

#include <cstdint>
#include <string_view>

#include "kvcache/quant/detail/format_quantizer.hpp"
#include "kvcache/quant/format.hpp"
#include "kvcache/quant/quantizer.hpp"

namespace kvcache {

/**
 * @brief The pass-through model: 16 bits per element, no metadata, no residual window.
 *
 * Byte layout of a key or value head page: `[page_size][head_dim]` 16-bit words (scheme `f16`),
 * 2 * page_size * head_dim bytes (rounded up to 16). The words are copied, never interpreted, so
 * bf16 rows pass through as well, and NaN / Inf are kept as they are (they stay in their own
 * element; nothing is rejected or flagged). Dequantization is bit-exact.
 */
struct identity_quantizer : detail::format_quantizer<identity_quantizer> {
  static constexpr std::string_view name = "identity";
  static constexpr int key_bits = 16;
  static constexpr int value_bits = 16;
  static constexpr std::int32_t group_size = 1;
  static constexpr std::int32_t residual = 0;
  static constexpr quant_format format{{quant_scheme::f16, 16, 1}, {quant_scheme::f16, 16, 1}};
};

}  // namespace kvcache

static_assert(kvcache::quantizer<kvcache::identity_quantizer>);
