/**
 * @file codec.hpp
 * @brief (internal) The scalar arithmetic of every quantization scheme, one
 * `KVCACHE_HOST_DEVICE` definition used by the host quantizers and by the CUDA kernels, so
 * that both produce the same bits. f32 math, one rounding per operation (arith.hpp), round half
 * to even, one division per group or row (codes multiply by the f32 reciprocal of the scale);
 * f16 / fp8 conversions with core/numeric.hpp's results on both sides (see below).
 *
 * Reductions (min, max, max |x|) are exact and so independent of their order, except for the
 * sign of zero, which `canonical_zero` removes. Non-finite inputs never enter a reduction: a
 * group's statistics are those of its finite elements (a group with none is treated as all
 * zeros), and the non-finite element itself is encoded as documented per scheme below.
 */
#pragma once

#include <cstdint>

#include "kvcache/core/config.hpp"
#include "kvcache/core/numeric.hpp"
#include "kvcache/quant/detail/arith.hpp"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#endif

namespace kvcache::detail {

// The conversions. On the device, the hardware conversions are used where they give exactly
// numeric.hpp's result (every input but NaN, which takes numeric.hpp's path): f16 -> f32 is
// exact, f32 -> f16 and f32 -> e4m3 (satfinite) round to nearest even, e4m3 -> f16 is exact.

#ifdef __CUDA_ARCH__
// numeric.hpp's NaN paths, kept out of line so that the unrolled kernels stay small.
__device__ __noinline__ inline float f16_nan_value(std::uint16_t bits) noexcept {
  return to_float(float16{bits});
}
__device__ __noinline__ inline std::uint16_t f16_nan_bits(float y) noexcept {
  return to_float16(y).bits;
}
#endif

/// @brief The float value of f16 bits (exact).
[[nodiscard]] KVCACHE_HOST_DEVICE inline float f16_value(std::uint16_t bits) noexcept {
#ifdef __CUDA_ARCH__
  if ((bits & 0x7C00u) == 0x7C00u && (bits & 0x03FFu) != 0) [[unlikely]] {
    return f16_nan_value(bits);
  }
  return __half2float(__ushort_as_half(bits));
#else
  return to_float(float16{bits});
#endif
}

/// @brief f16 bits of y, rounded to nearest even (numeric.hpp's `to_float16`).
[[nodiscard]] KVCACHE_HOST_DEVICE inline std::uint16_t f16_bits(float y) noexcept {
#ifdef __CUDA_ARCH__
  if (y != y) [[unlikely]] return f16_nan_bits(y);
  return __half_as_ushort(__float2half_rn(y));
#else
  return to_float16(y).bits;
#endif
}

/// @brief E4M3 bits of a non-NaN t, nearest even, saturating to +/-448 (numeric.hpp's
/// `to_float8_e4m3(t, fp8_saturation::finite)`).
[[nodiscard]] KVCACHE_HOST_DEVICE inline std::uint8_t e4m3_bits(float t) noexcept {
#ifdef __CUDA_ARCH__
  return static_cast<std::uint8_t>(__nv_cvt_float_to_fp8(t, __NV_SATFINITE, __NV_E4M3));
#else
  return to_float8_e4m3(t, fp8_saturation::finite).bits;
#endif
}

/// @brief The float value of E4M3 bits other than NaN (exact).
[[nodiscard]] KVCACHE_HOST_DEVICE inline float e4m3_value(std::uint8_t code) noexcept {
#ifdef __CUDA_ARCH__
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(code, __NV_E4M3)));
#else
  return to_float(float8_e4m3{code});
#endif
}

/// @brief The f16 bits of the smallest f16 >= s, for finite s >= 0 (s <= 65504).
[[nodiscard]] KVCACHE_HOST_DEVICE inline std::uint16_t f16_round_up(float s) noexcept {
  std::uint16_t h = f16_bits(s);
  if (f16_value(h) < s) ++h;  // positive: the next pattern is the next larger value
  return h;
}

// ---- KIVI: asymmetric uniform, min and scale in f16 --------------------------------------------

/// @brief The stored parameters of one KIVI group.
struct kivi_params {
  float min;                ///< the group's minimum (an f16 value)
  float scale;              ///< the stored scale (an f16 value, >= 0)
  float inv_scale;          ///< 1 / scale rounded to f32 (0 for a constant group)
  std::uint16_t min_bits;   ///< f16 bits of min
  std::uint16_t scale_bits; ///< f16 bits of scale
};

/**
 * @brief Parameters from the minimum and maximum of a group's finite elements (f16 values;
 * mn > mx, e.g. +inf / -inf, when it has none: the group then counts as all zeros).
 * scale = (mx - mn) / (2^bits - 1) in f32, rounded *up* to f16, so that it never underflows to 0
 * for a group that is not constant and the codes always reach mx; a constant group has scale 0.
 */
[[nodiscard]] KVCACHE_HOST_DEVICE inline kivi_params kivi_make_params(float mn, float mx,
                                                                      int bits) noexcept {
  if (!(mn <= mx)) {
    mn = 0.0f;
    mx = 0.0f;
  }
  mn = canonical_zero(mn);
  mx = canonical_zero(mx);
  const float range = sub_rn(mx, mn);
  const float s = div_rn(range, static_cast<float>((1 << bits) - 1));
  const std::uint16_t sb = f16_round_up(s);
  const std::uint16_t mb = f16_bits(mn);  // exact: mn is an f16 value
  const float scale = f16_value(sb);
  return kivi_params{mn, scale, scale > 0.0f ? div_rn(1.0f, scale) : 0.0f, mb, sb};
}

/**
 * @brief The code of x: round((x - min) / scale) clamped to [0, 2^bits - 1], the division done as
 * a multiplication by the group's 1 / scale (one division per group, not per element); 0 for a
 * constant group (scale 0). Non-finite x: NaN and -Inf give 0 (the group's min), +Inf the top
 * code.
 */
[[nodiscard]] KVCACHE_HOST_DEVICE inline std::uint32_t kivi_code(float x, const kivi_params& p,
                                                                 std::uint32_t max_code) noexcept {
  if (!(p.inv_scale > 0.0f)) return 0;
  const float t = mul_rn(sub_rn(x, p.min), p.inv_scale);
  if (!(t > 0.0f)) return 0;  // negative, zero, NaN
  if (t >= static_cast<float>(max_code)) return max_code;
  return static_cast<std::uint32_t>(rint_f(t));
}

/**
 * @brief f16 bits of min + code * scale (the product is exact: code < 2^8, scale an f16), at most
 * 65504: at the edge of the f16 range the top code can land a little above max (the scale was
 * rounded up), and every element is <= 65504, so the clamp only shrinks the error.
 */
[[nodiscard]] KVCACHE_HOST_DEVICE inline float kivi_decode_value(std::uint32_t code, float mn,
                                                                float scale) noexcept {
  return min_f(add_rn(mn, mul_rn(static_cast<float>(code), scale)), 65504.0f);
}
[[nodiscard]] KVCACHE_HOST_DEVICE inline std::uint16_t kivi_decode(std::uint32_t code, float mn,
                                                                   float scale) noexcept {
  return f16_bits(kivi_decode_value(code, mn, scale));
}

// ---- int8 per token: symmetric, f32 scale ------------------------------------------------------

/// @brief scale = max|x| / 127 (f32, rounded to nearest); 0 for an all-zero row.
[[nodiscard]] KVCACHE_HOST_DEVICE inline float int8_scale(float amax) noexcept {
  return div_rn(canonical_zero(amax), 127.0f);
}

/// @brief 1 / scale rounded to f32 (0 for scale 0): the multiplier of int8_code and fp8_code.
[[nodiscard]] KVCACHE_HOST_DEVICE inline float inverse_scale(float scale) noexcept {
  return scale > 0.0f ? div_rn(1.0f, scale) : 0.0f;
}

/**
 * @brief The code of x: round(x * inv) clamped to [-127, 127] (-128 is never used), inv = 1 /
 * scale from `inverse_scale`; 0 when scale is 0. Non-finite x: NaN gives 0, +/-Inf give +/-127.
 */
[[nodiscard]] KVCACHE_HOST_DEVICE inline std::int8_t int8_code(float x, float inv) noexcept {
  if (!(inv > 0.0f)) return 0;
  float t = mul_rn(x, inv);
  if (t != t) return 0;
  t = t > 127.0f ? 127.0f : (t < -127.0f ? -127.0f : t);
  return static_cast<std::int8_t>(rint_f(t));
}

/// @brief f16 bits of code * scale.
[[nodiscard]] KVCACHE_HOST_DEVICE inline float int8_decode_value(std::int8_t code,
                                                                float scale) noexcept {
  return mul_rn(static_cast<float>(code), scale);
}
[[nodiscard]] KVCACHE_HOST_DEVICE inline std::uint16_t int8_decode(std::int8_t code,
                                                                   float scale) noexcept {
  return f16_bits(int8_decode_value(code, scale));
}

// ---- fp8 E4M3 per token: f32 scale, saturating -------------------------------------------------

/// @brief scale = max|x| / 448 (f32, rounded to nearest), so the row's largest magnitude maps
/// to E4M3's max finite; 0 for an all-zero row.
[[nodiscard]] KVCACHE_HOST_DEVICE inline float fp8_scale(float amax) noexcept {
  return div_rn(canonical_zero(amax), 448.0f);
}

/**
 * @brief The E4M3 bits of x * inv (inv = 1 / scale from `inverse_scale`), rounded to nearest
 * even, saturating to +/-448; 0 when scale is 0. Non-finite x: NaN gives 0 (+0.0), +/-Inf give
 * +/-448.
 */
[[nodiscard]] KVCACHE_HOST_DEVICE inline std::uint8_t fp8_code(float x, float inv) noexcept {
  if (!(inv > 0.0f)) return 0;
  const float t = mul_rn(x, inv);
  if (t != t) return 0;
  return e4m3_bits(t);
}

/// @brief f16 bits of e4m3(code) * scale.
[[nodiscard]] KVCACHE_HOST_DEVICE inline float fp8_decode_value(std::uint8_t code,
                                                               float scale) noexcept {
  return mul_rn(e4m3_value(code), scale);
}
[[nodiscard]] KVCACHE_HOST_DEVICE inline std::uint16_t fp8_decode(std::uint8_t code,
                                                                  float scale) noexcept {
  return f16_bits(fp8_decode_value(code, scale));
}

}  // namespace kvcache::detail
