/**
 * @file host_impl.hpp
 * @brief (internal) The host encoders and decoders of every `quant_scheme`: the reference the
 * CUDA kernels are tested against. No argument checks here (the quantizers do them).
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kvcache/quant/detail/codec.hpp"
#include "kvcache/quant/detail/common.hpp"
#include "kvcache/quant/format.hpp"

namespace kvcache::detail {

inline void store_f32(std::byte* p, float v) noexcept { std::memcpy(p, &v, 4); }
[[nodiscard]] inline float load_f32(const std::byte* p) noexcept {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}
inline void store_u16(std::byte* p, std::uint16_t v) noexcept { std::memcpy(p, &v, 2); }
[[nodiscard]] inline std::uint16_t load_u16(const std::byte* p) noexcept {
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

/// @brief Packs `n` codes of `bits` bits (n a multiple of 8 / bits), lowest bits first.
inline void pack_codes(const std::uint8_t* codes, std::int32_t n, int bits, std::byte* out) noexcept {
  const int per_byte = 8 / bits;
  for (std::int32_t i = 0; i < n; i += per_byte) {
    unsigned b = 0;
    for (int k = 0; k < per_byte; ++k) b |= static_cast<unsigned>(codes[i + k]) << (k * bits);
    out[i / per_byte] = static_cast<std::byte>(b);
  }
}

/// @brief Code of channel c in a packed row.
[[nodiscard]] inline std::uint32_t unpack_code(const std::byte* row, std::int32_t c,
                                               int bits) noexcept {
  const int per_byte = 8 / bits;
  const auto b = static_cast<unsigned>(row[c / per_byte]);
  return (b >> ((c % per_byte) * bits)) & ((1u << bits) - 1u);
}

/// @brief Min and max of the finite values of `count` f16 elements `stride` apart
/// (mn > mx when there is none).
inline void finite_min_max(const std::uint16_t* x, std::int32_t count, std::size_t stride,
                           float& mn, float& mx) noexcept {
  mn = std::numeric_limits<float>::infinity();
  mx = -std::numeric_limits<float>::infinity();
  for (std::int32_t i = 0; i < count; ++i) {
    const std::uint16_t h = x[static_cast<std::size_t>(i) * stride];
    if (!f16_bits_finite(h)) continue;
    const float v = f16_value(h);
    mn = min_f(mn, v);
    mx = max_f(mx, v);
  }
}

/// @brief max |x| over the finite values of `count` contiguous f16 elements (0 when none).
[[nodiscard]] inline float finite_abs_max(const std::uint16_t* x, std::int32_t count) noexcept {
  float m = 0.0f;
  for (std::int32_t i = 0; i < count; ++i) {
    const std::uint16_t h = x[i];
    if (f16_bits_finite(h)) m = max_f(m, f16_value(static_cast<std::uint16_t>(h & 0x7FFFu)));
  }
  return m;
}

/// @brief Encodes rows of page positions [first, first + n) into `page` (see format.hpp).
inline void quantize_side_host(const quant_side_format& f, const std::uint16_t* rows,
                               std::byte* page, std::int32_t page_size, std::int32_t head_dim,
                               std::int32_t first, std::int32_t n) {
  const auto d = static_cast<std::size_t>(head_dim);
  const std::size_t row_bytes = f.code_row_bytes(head_dim);
  std::byte* meta = page + f.metadata_offset(page_size, head_dim);
  switch (f.scheme) {
    case quant_scheme::f16:
      std::memcpy(page + static_cast<std::size_t>(first) * row_bytes, rows,
                  static_cast<std::size_t>(n) * row_bytes);
      return;
    case quant_scheme::int8_token:
    case quant_scheme::fp8_e4m3_token: {
      const bool is_int8 = f.scheme == quant_scheme::int8_token;
      for (std::int32_t t = 0; t < n; ++t) {
        const std::uint16_t* x = rows + static_cast<std::size_t>(t) * d;
        const std::size_t pos = static_cast<std::size_t>(first + t);
        const float amax = finite_abs_max(x, head_dim);
        const float s = is_int8 ? int8_scale(amax) : fp8_scale(amax);
        const float inv = inverse_scale(s);
        auto* codes = reinterpret_cast<std::uint8_t*>(page + pos * row_bytes);
        for (std::size_t c = 0; c < d; ++c) {
          const float v = f16_value(x[c]);
          codes[c] = is_int8 ? static_cast<std::uint8_t>(int8_code(v, inv)) : fp8_code(v, inv);
        }
        store_f32(meta + 4 * pos, s);
      }
      return;
    }
    case quant_scheme::kivi_token: {
      const std::uint32_t max_code = (1u << f.bits) - 1u;
      const std::int32_t groups = head_dim / f.group;
      std::uint8_t codes[quant_max_head_dim];
      for (std::int32_t t = 0; t < n; ++t) {
        const std::uint16_t* x = rows + static_cast<std::size_t>(t) * d;
        const std::size_t pos = static_cast<std::size_t>(first + t);
        for (std::int32_t j = 0; j < groups; ++j) {
          const std::uint16_t* xg = x + static_cast<std::size_t>(j) * f.group;
          float mn, mx;
          finite_min_max(xg, f.group, 1, mn, mx);
          const kivi_params p = kivi_make_params(mn, mx, f.bits);
          for (std::int32_t c = 0; c < f.group; ++c) {
            codes[j * f.group + c] = static_cast<std::uint8_t>(kivi_code(f16_value(xg[c]), p, max_code));
          }
          const auto tp = static_cast<std::int32_t>(pos);
          store_u16(meta + f.kivi_token_min_offset(tp, j, head_dim), p.min_bits);
          store_u16(meta + f.kivi_token_scale_offset(tp, j, head_dim), p.scale_bits);
        }
        if (f.paired_code_rows(head_dim)) {  // token-pair rows (format.hpp)
          std::byte packed[quant_max_head_dim];
          pack_codes(codes, head_dim, f.bits, packed);
          for (std::size_t b = 0; b < row_bytes; ++b) {
            page[f.code_byte_offset(static_cast<std::int32_t>(pos), static_cast<std::int32_t>(b), head_dim)] =
                packed[b];
          }
        } else {
          pack_codes(codes, head_dim, f.bits, page + pos * row_bytes);
        }
      }
      return;
    }
    case quant_scheme::kivi_channel: {
      const std::uint32_t max_code = (1u << f.bits) - 1u;
      kivi_params p[quant_max_head_dim];
      std::uint8_t codes[quant_max_head_dim];
      for (std::int32_t g0 = 0; g0 < n; g0 += f.group) {
        const std::size_t group_index = static_cast<std::size_t>((first + g0) / f.group);
        const std::uint16_t* xg = rows + static_cast<std::size_t>(g0) * d;
        for (std::size_t c = 0; c < d; ++c) {
          float mn, mx;
          finite_min_max(xg + c, f.group, d, mn, mx);
          p[c] = kivi_make_params(mn, mx, f.bits);
          const auto gi = static_cast<std::int32_t>(group_index);
          const auto ci = static_cast<std::int32_t>(c);
          store_u16(meta + f.kivi_channel_min_offset(gi, ci, head_dim), p[c].min_bits);
          store_u16(meta + f.kivi_channel_scale_offset(gi, ci, head_dim), p[c].scale_bits);
        }
        for (std::int32_t t = 0; t < f.group; ++t) {
          const std::uint16_t* x = xg + static_cast<std::size_t>(t) * d;
          for (std::size_t c = 0; c < d; ++c) {
            codes[c] = static_cast<std::uint8_t>(kivi_code(f16_value(x[c]), p[c], max_code));
          }
          pack_codes(codes, head_dim, f.bits,
                     page + static_cast<std::size_t>(first + g0 + t) * row_bytes);
        }
      }
      return;
    }
  }
}

/**
 * @brief Decodes page positions [first, first + n) of a per-token 8-bit side (int8 / fp8 E4M3)
 * into f32 rows: code x scale as the quantizer defines it (`int8_decode_value`,
 * `fp8_decode_value`), without the f16 rounding of `dequantize_side_host`. The reference of
 * kernels that apply the scale after the dot product (paged decode attention's keys).
 */
inline void dequantize_side_f32_host(const quant_side_format& f, const std::byte* page, float* rows,
                                     std::int32_t page_size, std::int32_t head_dim,
                                     std::int32_t first, std::int32_t n) {
  KVCACHE_EXPECTS(f.scheme == quant_scheme::int8_token || f.scheme == quant_scheme::fp8_e4m3_token,
                  errc::not_supported, "dequantize_side_f32_host: scheme {} is not int8 / fp8",
                  name_of(f.scheme));
  const auto d = static_cast<std::size_t>(head_dim);
  const std::size_t row_bytes = f.code_row_bytes(head_dim);
  const std::byte* meta = page + f.metadata_offset(page_size, head_dim);
  const bool is_int8 = f.scheme == quant_scheme::int8_token;
  for (std::int32_t t = 0; t < n; ++t) {
    const std::size_t pos = static_cast<std::size_t>(first + t);
    const float s = load_f32(meta + 4 * pos);
    const auto* codes = reinterpret_cast<const std::uint8_t*>(page + pos * row_bytes);
    float* y = rows + static_cast<std::size_t>(t) * d;
    for (std::size_t c = 0; c < d; ++c) {
      y[c] = is_int8 ? int8_decode_value(static_cast<std::int8_t>(codes[c]), s)
                     : fp8_decode_value(codes[c], s);
    }
  }
}

/// @brief Decodes page positions [first, first + n) of `page` into f16 rows.
inline void dequantize_side_host(const quant_side_format& f, const std::byte* page,
                                 std::uint16_t* rows, std::int32_t page_size,
                                 std::int32_t head_dim, std::int32_t first, std::int32_t n) {
  const auto d = static_cast<std::size_t>(head_dim);
  const std::size_t row_bytes = f.code_row_bytes(head_dim);
  const std::byte* meta = page + f.metadata_offset(page_size, head_dim);
  switch (f.scheme) {
    case quant_scheme::f16:
      std::memcpy(rows, page + static_cast<std::size_t>(first) * row_bytes,
                  static_cast<std::size_t>(n) * row_bytes);
      return;
    case quant_scheme::int8_token:
    case quant_scheme::fp8_e4m3_token: {
      const bool is_int8 = f.scheme == quant_scheme::int8_token;
      for (std::int32_t t = 0; t < n; ++t) {
        const std::size_t pos = static_cast<std::size_t>(first + t);
        const float s = load_f32(meta + 4 * pos);
        const auto* codes = reinterpret_cast<const std::uint8_t*>(page + pos * row_bytes);
        std::uint16_t* y = rows + static_cast<std::size_t>(t) * d;
        for (std::size_t c = 0; c < d; ++c) {
          y[c] = is_int8 ? int8_decode(static_cast<std::int8_t>(codes[c]), s) : fp8_decode(codes[c], s);
        }
      }
      return;
    }
    case quant_scheme::kivi_token:
    case quant_scheme::kivi_channel: {
      const bool per_token = f.scheme == quant_scheme::kivi_token;
      const auto group = static_cast<std::size_t>(f.group);
      const std::size_t pairs = per_token ? d / group : d;  // {min, scale} pairs per row / group
      float mn[quant_max_head_dim];
      float sc[quant_max_head_dim];
      std::size_t loaded = ~std::size_t{0};  // metadata row held in mn / sc
      for (std::int32_t t = 0; t < n; ++t) {
        const std::size_t pos = static_cast<std::size_t>(first + t);
        const std::size_t meta_row = per_token ? pos : pos / group;
        if (meta_row != loaded) {
          const auto tp = static_cast<std::int32_t>(pos);
          const auto gi = static_cast<std::int32_t>(meta_row);
          for (std::size_t k = 0; k < pairs; ++k) {
            const auto j = static_cast<std::int32_t>(k);
            mn[k] = f16_value(load_u16(meta + (per_token ? f.kivi_token_min_offset(tp, j, head_dim)
                                                         : f.kivi_channel_min_offset(gi, j, head_dim))));
            sc[k] = f16_value(load_u16(meta + (per_token ? f.kivi_token_scale_offset(tp, j, head_dim)
                                                         : f.kivi_channel_scale_offset(gi, j, head_dim))));
          }
          loaded = meta_row;
        }
        std::byte paired[quant_max_head_dim];
        const std::byte* code_row = page + pos * row_bytes;
        if (f.paired_code_rows(head_dim)) {  // token-pair rows (format.hpp)
          for (std::size_t b = 0; b < row_bytes; ++b) {
            paired[b] = page[f.code_byte_offset(static_cast<std::int32_t>(pos), static_cast<std::int32_t>(b), head_dim)];
          }
          code_row = paired;
        }
        std::uint16_t* y = rows + static_cast<std::size_t>(t) * d;
        for (std::size_t c = 0; c < d; ++c) {
          const std::size_t k = per_token ? c / group : c;
          y[c] = kivi_decode(unpack_code(code_row, static_cast<std::int32_t>(c), f.bits), mn[k], sc[k]);
        }
      }
      return;
    }
  }
}

}  // namespace kvcache::detail
