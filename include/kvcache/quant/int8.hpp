/**
 * @file int8.hpp
 * @brief `int8_quantizer`: symmetric int8 per token per head, one f32 scale per token.
 */
#pragma once

#include <cstdint>
#include <string_view>

#include "kvcache/quant/detail/format_quantizer.hpp"
#include "kvcache/quant/format.hpp"
#include "kvcache/quant/quantizer.hpp"

namespace kvcache {

/**
 * @brief Symmetric int8, per token and head, for keys and values alike (scheme `int8_token`).
 *
 * For each token's row x of head_dim channels: s = max|x| / 127 (f32, rounded to nearest; the
 * scale is kept in f32: 4 bytes per row instead of 2, but no rounding of the scale and no
 * underflow for tiny rows), code = clamp(round_half_even(x * (1 / s)), -127, 127) (1 / s rounded
 * to f32 once per row: a multiplication per element, not a division), decoded value =
 * f16(code * s). An all-zero row has s = 0 and decodes to zeros.
 *
 * Error bound (per element): |x - x^| <= s / 2 + ulp16(x^) / 2, up to f32 rounding (2^-15 s and
 * 2^-23 |x^|), where ulp16(v) is the f16 spacing at |v|.
 *
 * Byte layout of a head page: codes `[page_size][head_dim]` int8 (two's complement), then at
 * offset align16(page_size * head_dim) the scales `[page_size]` f32. Bytes per token and head:
 * head_dim + 4 for K and the same for V (0.516 of f16 at head_dim 128).
 *
 * Non-finite input: the host functions throw errc::invalid_argument naming token and channel;
 * in the kernels (and with a `non_finite` flag) the scale comes from the row's finite values,
 * NaN encodes to 0 and +/-Inf to +/-127, and the flag is set.
 */
struct int8_quantizer : detail::format_quantizer<int8_quantizer> {
  static constexpr std::string_view name = "int8";
  static constexpr int key_bits = 8;
  static constexpr int value_bits = 8;
  static constexpr std::int32_t group_size = 1;
  static constexpr std::int32_t residual = 0;
  static constexpr quant_format format{{quant_scheme::int8_token, 8, 1},
                                       {quant_scheme::int8_token, 8, 1}};
};

}  // namespace kvcache

static_assert(kvcache::quantizer<kvcache::int8_quantizer>);
