// Shared helpers of the quantization tests: the quantizers under test, random f16 rows, and the
// per-element error bound each format states, computed from the page's own metadata (which
// checks the documented byte layout at the same time).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include "kvcache/core/numeric.hpp"
#include "kvcache/quant/fp8.hpp"
#include "kvcache/quant/identity.hpp"
#include "kvcache/quant/int8.hpp"
#include "kvcache/quant/kivi.hpp"

namespace kvtest {

/// Every quantizer the contract suite runs over (the CUDA kernels implement all of them).
using all_quantizers =
    std::tuple<kvcache::identity_quantizer, kvcache::int8_quantizer, kvcache::fp8_e4m3_quantizer,
               kvcache::kivi2, kvcache::kivi4, kvcache::kivi2_token_keys, kvcache::kivi4_token_keys,
               kvcache::kivi<2, 64, 128>, kvcache::kivi<4, 128, 128>>;

/// A page size every model takes: a multiple of its key group, at least 64.
template <class Q>
constexpr std::int32_t page_size_for() {
  return Q::group_size >= 64 ? 2 * Q::group_size : 64;
}

inline float f16_to_float(std::uint16_t b) { return kvcache::to_float(kvcache::float16{b}); }
inline std::uint16_t float_to_f16(float f) { return kvcache::to_float16(f).bits; }

/// Spacing of f16 values at |v| (2^-24 below the normal range).
inline double ulp16(double v) {
  v = std::fabs(v);
  if (v < 0x1p-14) return 0x1p-24;
  int e = 0;
  (void)std::frexp(v, &e);  // v = m * 2^e, m in [0.5, 1)
  return std::ldexp(1.0, e - 1 - 10);
}

/**
 * Random f16 rows that look like keys: N(0, 1) times a per-channel magnitude (a few outlier
 * channels up to 30x), times a per-token magnitude in [0.25, 4], times `scale`.
 */
inline std::vector<std::uint16_t> random_rows(std::mt19937_64& rng, std::int32_t tokens,
                                              std::int32_t head_dim, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::vector<float> channel(static_cast<std::size_t>(head_dim));
  for (auto& m : channel) m = unit(rng) < 0.06f ? 5.0f + 25.0f * unit(rng) : 0.5f + unit(rng);
  std::vector<std::uint16_t> rows(static_cast<std::size_t>(tokens) * head_dim);
  for (std::int32_t t = 0; t < tokens; ++t) {
    const float tok = 0.25f * std::exp2(4.0f * unit(rng));
    for (std::int32_t c = 0; c < head_dim; ++c) {
      const float v = normal(rng) * channel[static_cast<std::size_t>(c)] * tok * scale;
      rows[static_cast<std::size_t>(t) * head_dim + c] =
          float_to_f16(std::clamp(v, -65504.0f, 65504.0f));
    }
  }
  return rows;
}

/// Rows of special values: zeros of both signs, f16 subnormals, values near +/-65504, tiny and
/// huge groups side by side.
inline std::vector<std::uint16_t> special_rows(std::mt19937_64& rng, std::int32_t tokens,
                                               std::int32_t head_dim) {
  std::uniform_int_distribution<int> pick(0, 7);
  std::uniform_int_distribution<int> bits(0, 0x3FF);
  std::vector<std::uint16_t> rows(static_cast<std::size_t>(tokens) * head_dim);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto sign = static_cast<std::uint16_t>((i * 7919u) % 2 == 0 ? 0 : 0x8000);
    switch (pick(rng)) {
      case 0: rows[i] = sign; break;                                                // +/-0
      case 1: rows[i] = static_cast<std::uint16_t>(sign | bits(rng)); break;        // subnormal
      case 2: rows[i] = static_cast<std::uint16_t>(sign | 0x7BFF); break;           // +/-65504
      case 3: rows[i] = static_cast<std::uint16_t>(sign | 0x7800 | bits(rng)); break;  // >= 32768
      case 4: rows[i] = static_cast<std::uint16_t>(sign | 0x0400 | bits(rng)); break;  // ~2^-14
      case 5: rows[i] = 0x3C00; break;                                              // 1.0
      default: rows[i] = static_cast<std::uint16_t>(sign | (bits(rng) << 4)); break;
    }
  }
  return rows;
}

inline float load_f32(const std::byte* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}
inline std::uint16_t load_u16(const std::byte* p) {
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

/**
 * The stated bound on |x - x^| for element (page position t, channel c) of a head page in
 * `format`, read from the page's metadata as format.hpp documents it:
 * - f16: 0 (bit-exact);
 * - int8, KIVI: scale * (1/2 + 2^-15) + ulp16(x^) / 2 + 2^-23 |x^| (the last two: the f16
 *   rounding of the result and f32 rounding; 2^-15 covers the f32 rounding of x * (1 / scale));
 * - fp8: scale * max(|x / scale| / 16, 2^-10) * (1 + 2^-15) + ulp16(x^) / 2 + 2^-23 |x^|.
 */
inline double error_bound(const kvcache::quant_side_format& f, const std::byte* page,
                          std::int32_t page_size, std::int32_t head_dim, std::int32_t t,
                          std::int32_t c, double x, double xhat) {
  using kvcache::quant_scheme;
  const std::size_t meta = f.metadata_offset(page_size, head_dim);
  const double rounding = 0.5 * ulp16(xhat) + 0x1p-23 * std::fabs(xhat);
  switch (f.scheme) {
    case quant_scheme::f16: return 0.0;
    case quant_scheme::int8_token: {
      const double s = load_f32(page + meta + 4 * static_cast<std::size_t>(t));
      return s * (0.5 + 0x1p-15) + rounding;
    }
    case quant_scheme::fp8_e4m3_token: {
      const double s = load_f32(page + meta + 4 * static_cast<std::size_t>(t));
      if (s == 0.0) return rounding;
      return s * std::max(std::fabs(x / s) / 16.0, 0x1p-10) * (1.0 + 0x1p-15) + rounding;
    }
    case quant_scheme::kivi_channel:
    case quant_scheme::kivi_token: {
      const std::size_t at = f.scheme == quant_scheme::kivi_channel
                                 ? f.kivi_channel_scale_offset(t / f.group, c, head_dim)
                                 : f.kivi_token_scale_offset(t, c / f.group, head_dim);
      const double s = f16_to_float(load_u16(page + meta + at));
      return s * (0.5 + 0x1p-15) + rounding;
    }
  }
  return 0.0;
}

/// The {min, scale} f16 pair of a KIVI element, as stored.
inline std::pair<float, float> kivi_min_scale(const kvcache::quant_side_format& f,
                                              const std::byte* page, std::int32_t page_size,
                                              std::int32_t head_dim, std::int32_t t,
                                              std::int32_t c) {
  const std::size_t meta = f.metadata_offset(page_size, head_dim);
  if (f.scheme == kvcache::quant_scheme::kivi_token) {  // token-pair records (format.hpp)
    return {f16_to_float(load_u16(page + meta + f.kivi_token_min_offset(t, c / f.group, head_dim))),
            f16_to_float(load_u16(page + meta + f.kivi_token_scale_offset(t, c / f.group, head_dim)))};
  }
  return {f16_to_float(load_u16(page + meta + f.kivi_channel_min_offset(t / f.group, c, head_dim))),
          f16_to_float(load_u16(page + meta + f.kivi_channel_scale_offset(t / f.group, c, head_dim)))};
}

/// The code of channel c in a packed row of `bits`-bit codes.
inline unsigned packed_code(const std::byte* row, std::int32_t c, int bits) {
  const int per_byte = 8 / bits;
  return (static_cast<unsigned>(row[c / per_byte]) >> ((c % per_byte) * bits)) & ((1u << bits) - 1u);
}

/// The code of channel c of token t in a head page of format f (code_byte_offset: token-pair rows
/// of 2-bit kivi_token included).
inline unsigned page_code(const kvcache::quant_side_format& f, const std::byte* page, std::int32_t t,
                          std::int32_t c, std::int32_t head_dim) {
  const int per_byte = 8 / f.bits;
  const auto b = static_cast<unsigned>(page[f.code_byte_offset(t, c / per_byte, head_dim)]);
  return (b >> ((c % per_byte) * f.bits)) & ((1u << f.bits) - 1u);
}

}  // namespace kvtest
