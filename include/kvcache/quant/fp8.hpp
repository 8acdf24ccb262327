/**
 * @file fp8.hpp
 * @brief `fp8_e4m3_quantizer`: fp8 E4M3 with one f32 scale per token and head, saturating.
 */
#pragma once

#include <cstdint>
#include <string_view>

#include "kvcache/quant/detail/format_quantizer.hpp"
#include "kvcache/quant/format.hpp"
#include "kvcache/quant/quantizer.hpp"

namespace kvcache {

/**
 * @brief fp8 E4M3 (OCP: max 448, no infinities), per token and head, for keys and values alike
 * (scheme `fp8_e4m3_token`).
 *
 * For each token's row x: s = max|x| / 448 (f32, rounded to nearest), code =
 * e4m3(x * (1 / s)) (1 / s rounded to f32 once per row) rounded to nearest even and saturating
 * at +/-448 (core/numeric.hpp's
 * `to_float8_e4m3(v, fp8_saturation::finite)`), decoded value = f16(float(code) * s).
 * A per-token scale (rather than one per page) lets a token be quantized when it is appended,
 * without a calibrated static scale or a full-precision page of staging; its 4 bytes keep the
 * pages at 0.516 of f16 (head_dim 128).
 *
 * Error bound (per element, t = x / s, |t| <= 448): |x - x^| <= s * max(|t| / 16, 2^-10) +
 * ulp16(x^) / 2, up to f32 rounding (a relative 2^-15 of the first term and 2^-23 |x^|; E4M3
 * keeps 3 mantissa bits: half an ulp is at most 1/16 of the value in the normal range, 2^-10
 * below 2^-6).
 *
 * Byte layout of a head page: codes `[page_size][head_dim]` E4M3 bytes, then at offset
 * align16(page_size * head_dim) the scales `[page_size]` f32.
 *
 * Non-finite input: the host functions throw errc::invalid_argument naming token and channel;
 * in the kernels (and with a `non_finite` flag) the scale comes from the row's finite values,
 * NaN encodes to +0 and +/-Inf to +/-448 (times s), and the flag is set.
 */
struct fp8_e4m3_quantizer : detail::format_quantizer<fp8_e4m3_quantizer> {
  static constexpr std::string_view name = "fp8_e4m3";
  static constexpr int key_bits = 8;
  static constexpr int value_bits = 8;
  static constexpr std::int32_t group_size = 1;
  static constexpr std::int32_t residual = 0;
  static constexpr quant_format format{{quant_scheme::fp8_e4m3_token, 8, 1},
                                       {quant_scheme::fp8_e4m3_token, 8, 1}};
};

}  // namespace kvcache

static_assert(kvcache::quantizer<kvcache::fp8_e4m3_quantizer>);
