/**
 * @file numeric.hpp
 * @brief Storage types of the narrow floating-point dtypes (`float16`, `bfloat16`, `float8_e4m3`,
 * `float8_e5m2`) and exact conversions between them and `float`, usable on the host and in CUDA
 * device code.
 *
 * Formats (value = (-1)^s * 2^(e - bias) * 1.m, subnormals (e = 0) = (-1)^s * 2^(1 - bias) * 0.m):
 *
 * | type          | s.e.m  | bias | max finite        | min normal | min sub | inf | NaN         |
 * |---------------|--------|------|-------------------|------------|---------|-----|-------------|
 * | `float16`     | 1.5.10 | 15   | 65504 (0x7BFF)    | 2^-14      | 2^-24   | yes | e=31, m!=0  |
 * | `bfloat16`    | 1.8.7  | 127  | ~3.39e38 (0x7F7F) | 2^-126     | 2^-133  | yes | e=255, m!=0 |
 * | `float8_e4m3` | 1.4.3  | 7    | 448 (0x7E)        | 2^-6       | 2^-9    | no  | S.1111.111  |
 * | `float8_e5m2` | 1.5.2  | 15   | 57344 (0x7B)      | 2^-14      | 2^-16   | yes | e=31, m!=0  |
 *
 * E4M3 and E5M2 are the OCP 8-bit formats (as CUDA's `__nv_fp8_e4m3` / `__nv_fp8_e5m2`): E4M3
 * has no infinities and uses the exponent 1111 for normal numbers except S.1111.111 (NaN).
 *
 * **Decoding** (`to_float`) is exact: every value of every format is a float. Zeros keep their
 * sign. A NaN decodes to a quiet float NaN with the same sign whose payload is the format's
 * mantissa in the top bits: float bits = s | 0x7FC00000 | m << (23 - M) (so a signaling NaN
 * comes out quiet; f16/bf16 quiet NaNs survive a round trip bit for bit).
 *
 * **Encoding** (`to_float16`, `to_bfloat16`, `to_float8_e4m3`, `to_float8_e5m2`) rounds to
 * nearest, ties to even, in one step from the exact float value, subnormals included (nothing
 * is flushed to zero; float subnormals are inputs like any other). It is integer bit
 * manipulation only, so the result does not depend on the FPU's rounding mode or FTZ/DAZ
 * settings, and is the same on the host and on the device.
 * - f16, bf16: a value whose rounded magnitude is beyond max finite becomes +/-inf (IEEE);
 *   +/-inf stays +/-inf. A NaN becomes a quiet NaN with the input's sign and the top mantissa
 *   bits of its payload: s | 0x7E00 | mf >> 13 (f16), s | 0x7FC0 | mf >> 16 (bf16).
 *   (CUDA's own `__float2half_rn` / `__float2bfloat16_rn` return 0x7FFF for every NaN.)
 * - fp8 with `fp8_saturation::finite` (CUDA's `__NV_SATFINITE`, the default): out-of-range
 *   values and +/-inf become +/-max finite (0x7E / 0xFE for E4M3, 0x7B / 0xFB for E5M2).
 * - fp8 with `fp8_saturation::none` (CUDA's `__NV_NOSAT`): out of range and +/-inf become
 *   +/-inf for E5M2 (0x7C / 0xFC) and NaN with the input's sign for E4M3 (0x7F / 0xFF).
 * - fp8, either mode: a NaN input becomes 0x7F, whatever its sign and payload (as CUDA's
 *   `__nv_cvt_float_to_fp8` on the host).
 * "Out of range" means the correctly rounded magnitude exceeds max finite: for E4M3, values up
 * to and including 464 (the midpoint of 448 and the would-be 480, a tie that goes to the even
 * 448) give 448 in both modes; for E5M2, 61440 (midpoint of 57344 and 65536) is out of range.
 * For f16, 65520 (midpoint of 65504 and 65536) is out of range. Underflow rounds to a signed
 * zero: half the minimum subnormal is a tie that goes to the even zero.
 *
 * All conversions are `constexpr` and `KVCACHE_HOST_DEVICE`; `load_as_float` and
 * `store_from_float`, which dispatch on a runtime `dtype` and throw, are host-only and are not
 * declared in translation units compiled by nvcc (error.hpp's fmt does not compile there).
 */
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kvcache/core/config.hpp"
#include "kvcache/core/dtype.hpp"

#if !defined(__CUDACC__)
#include "kvcache/core/error.hpp"
#endif

namespace kvcache {

/// @brief What fp8 encoders do with values beyond max finite and with infinities.
enum class fp8_saturation : std::uint8_t {
  finite,  ///< clamp to +/-max finite (CUDA's __NV_SATFINITE); NaN stays NaN
  none,    ///< overflow to inf (E5M2) or NaN (E4M3) (CUDA's __NV_NOSAT)
};

/// @brief IEEE binary16 storage: raw bits, no arithmetic. Convert with `to_float`/`to_float16`.
struct float16 {
  std::uint16_t bits;  ///< sign (1), exponent (5), mantissa (10)
  /// @brief The value with these raw bits.
  [[nodiscard]] KVCACHE_HOST_DEVICE static constexpr float16 from_bits(std::uint16_t b) noexcept {
    return float16{b};
  }
};

/// @brief bfloat16 storage (the top half of a float): raw bits, no arithmetic.
struct bfloat16 {
  std::uint16_t bits;  ///< sign (1), exponent (8), mantissa (7)
  /// @brief The value with these raw bits.
  [[nodiscard]] KVCACHE_HOST_DEVICE static constexpr bfloat16 from_bits(std::uint16_t b) noexcept {
    return bfloat16{b};
  }
};

/// @brief OCP FP8 E4M3 storage (no infinities, NaN = S.1111.111, max 448): raw bits.
struct float8_e4m3 {
  std::uint8_t bits;  ///< sign (1), exponent (4), mantissa (3)
  /// @brief The value with these raw bits.
  [[nodiscard]] KVCACHE_HOST_DEVICE static constexpr float8_e4m3 from_bits(
      std::uint8_t b) noexcept {
    return float8_e4m3{b};
  }
};

/// @brief OCP FP8 E5M2 storage (IEEE-like: infinities, NaNs, max 57344): raw bits.
struct float8_e5m2 {
  std::uint8_t bits;  ///< sign (1), exponent (5), mantissa (2)
  /// @brief The value with these raw bits.
  [[nodiscard]] KVCACHE_HOST_DEVICE static constexpr float8_e5m2 from_bits(
      std::uint8_t b) noexcept {
    return float8_e5m2{b};
  }
};

static_assert(std::is_trivially_copyable_v<float16> && sizeof(float16) == 2);
static_assert(std::is_trivially_copyable_v<bfloat16> && sizeof(bfloat16) == 2);
static_assert(std::is_trivially_copyable_v<float8_e4m3> && sizeof(float8_e4m3) == 1);
static_assert(std::is_trivially_copyable_v<float8_e5m2> && sizeof(float8_e5m2) == 1);

/**
 * @brief Format parameters of a storage type, for generic code and tests.
 * @tparam T float16, bfloat16, float8_e4m3 or float8_e5m2.
 */
template <class T>
struct float_format;

template <>
struct float_format<float16> {
  using storage = std::uint16_t;
  static constexpr dtype type = dtype::f16;
  static constexpr int exponent_bits = 5;
  static constexpr int mantissa_bits = 10;
  static constexpr int bias = 15;
  static constexpr bool has_infinity = true;
  static constexpr storage max_finite_bits = 0x7BFF;  ///< 65504
  static constexpr storage infinity_bits = 0x7C00;
};

template <>
struct float_format<bfloat16> {
  using storage = std::uint16_t;
  static constexpr dtype type = dtype::bf16;
  static constexpr int exponent_bits = 8;
  static constexpr int mantissa_bits = 7;
  static constexpr int bias = 127;
  static constexpr bool has_infinity = true;
  static constexpr storage max_finite_bits = 0x7F7F;  ///< 0x1.FEp127
  static constexpr storage infinity_bits = 0x7F80;
};

template <>
struct float_format<float8_e4m3> {
  using storage = std::uint8_t;
  static constexpr dtype type = dtype::fp8_e4m3;
  static constexpr int exponent_bits = 4;
  static constexpr int mantissa_bits = 3;
  static constexpr int bias = 7;
  static constexpr bool has_infinity = false;
  static constexpr storage max_finite_bits = 0x7E;  ///< 448
  static constexpr storage nan_bits = 0x7F;         ///< what every NaN input encodes to
};

template <>
struct float_format<float8_e5m2> {
  using storage = std::uint8_t;
  static constexpr dtype type = dtype::fp8_e5m2;
  static constexpr int exponent_bits = 5;
  static constexpr int mantissa_bits = 2;
  static constexpr int bias = 15;
  static constexpr bool has_infinity = true;
  static constexpr storage max_finite_bits = 0x7B;  ///< 57344
  static constexpr storage infinity_bits = 0x7C;
  static constexpr storage nan_bits = 0x7F;  ///< what every NaN input encodes to
};

namespace detail {

/// @brief The bits of a float (std::bit_cast: constexpr, and compiles in nvcc device code).
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::uint32_t float_to_bits(float f) noexcept {
  return std::bit_cast<std::uint32_t>(f);
}

/// @brief The float with these bits.
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr float bits_to_float(std::uint32_t u) noexcept {
  return std::bit_cast<float>(u);
}

/**
 * @brief Rounds the magnitude of a finite float (its bits without the sign) to a format with
 * `ManBits` mantissa bits and exponent bias `Bias`, to nearest, ties to even.
 * @return The format's magnitude bits (exponent << ManBits | mantissa), unbounded: a result above
 * the format's max finite pattern means overflow (the caller decides what that becomes).
 */
template <int ManBits, int Bias>
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::uint32_t round_magnitude(
    std::uint32_t a) noexcept {
  static_assert(ManBits >= 1 && ManBits <= 22 && Bias >= 1 && Bias <= 127);
  const std::uint32_t float_exp = a >> 23;
  const std::uint32_t float_man = a & 0x7FFFFFu;
  // significand with its implicit bit; float subnormals have none and the exponent of 1
  const std::uint32_t sig = float_exp != 0 ? (float_man | 0x800000u) : float_man;
  const int target_exp = (float_exp != 0 ? static_cast<int>(float_exp) : 1) - 127 + Bias;
  int shift = 23 - ManBits;
  std::uint32_t base = 0;
  if (target_exp >= 1) {
    // normal in the target: the implicit bit of `q` below adds the last 1 to the exponent
    base = static_cast<std::uint32_t>(target_exp - 1) << ManBits;
  } else {
    shift += 1 - target_exp;     // subnormal in the target: shift the implicit bit in
    if (shift > 25) shift = 25;  // sig < 2^24 < half an ulp: rounds to zero
  }
  std::uint32_t q = sig >> shift;
  const std::uint32_t rem = sig & ((std::uint32_t{1} << shift) - 1u);
  const std::uint32_t half = std::uint32_t{1} << (shift - 1);
  if (rem > half || (rem == half && (q & 1u) != 0)) ++q;  // the carry may reach the exponent
  return base + q;
}

/**
 * @brief Float bits of a finite nonzero value with exponent field `e` and mantissa `m` in a
 * format with `ManBits` mantissa bits and bias `Bias`; exact (subnormals normalized).
 */
template <int ManBits, int Bias>
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::uint32_t finite_to_float_bits(
    std::uint32_t e, std::uint32_t m) noexcept {
  static_assert(127 - Bias - ManBits > 0, "subnormals must be normal floats");
  if (e != 0) {
    return ((e + 127u - Bias) << 23) | (m << (23 - ManBits));
  }
  if (m == 0) return 0;
  int p = ManBits - 1;  // the leading one of m: value = 2^(p + 1 - Bias - ManBits) * m / 2^p
  while (((m >> p) & 1u) == 0) --p;
  const auto exp = static_cast<std::uint32_t>(p + 1 - Bias - ManBits + 127);
  return (exp << 23) | ((m << (23 - p)) & 0x7FFFFFu);
}

/// @brief Float bits of a NaN of a format: sign kept, mantissa moved to the top, quiet bit set.
template <int ManBits>
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::uint32_t nan_to_float_bits(
    std::uint32_t sign, std::uint32_t m) noexcept {
  return sign | 0x7FC00000u | (m << (23 - ManBits));
}

/// @brief Encodes a float to fp8 with `ManBits`/`Bias` (E4M3 when `!HasInf`), as documented.
template <int ManBits, int Bias, bool HasInf>
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::uint8_t float_to_fp8(float f,
                                                                      fp8_saturation sat) noexcept {
  constexpr std::uint32_t max_finite = HasInf ? 0x7Bu : 0x7Eu;
  constexpr std::uint32_t overflow = HasInf ? 0x7Cu : 0x7Fu;  // inf, or NaN for E4M3
  const std::uint32_t x = float_to_bits(f);
  const std::uint32_t sign = (x >> 24) & 0x80u;
  const std::uint32_t a = x & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return 0x7F;  // NaN, any sign (as CUDA)
  const std::uint32_t r = a == 0x7F800000u ? 0xFFu : round_magnitude<ManBits, Bias>(a);
  if (r > max_finite) {
    return static_cast<std::uint8_t>(sign |
                                     (sat == fp8_saturation::finite ? max_finite : overflow));
  }
  return static_cast<std::uint8_t>(sign | r);
}

}  // namespace detail

// ---- decoding ---------------------------------------------------------------------------------

/// @brief The exact value of an f16 (NaN: quiet, sign and payload kept).
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr float to_float(float16 h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h.bits & 0x8000u) << 16;
  const std::uint32_t e = (h.bits >> 10) & 0x1Fu;
  const std::uint32_t m = h.bits & 0x3FFu;
  if (e == 0x1F) {
    return detail::bits_to_float(m == 0 ? (sign | 0x7F800000u)
                                        : detail::nan_to_float_bits<10>(sign, m));
  }
  return detail::bits_to_float(sign | detail::finite_to_float_bits<10, 15>(e, m));
}

/// @brief The exact value of a bf16: the top half of a float (NaN made quiet).
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr float to_float(bfloat16 b) noexcept {
  std::uint32_t u = static_cast<std::uint32_t>(b.bits) << 16;
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) u |= 0x00400000u;
  return detail::bits_to_float(u);
}

/// @brief The exact value of an fp8 E4M3 (S.1111.111 is NaN: quiet, sign kept).
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr float to_float(float8_e4m3 v) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(v.bits & 0x80u) << 24;
  const std::uint32_t e = (v.bits >> 3) & 0xFu;
  const std::uint32_t m = v.bits & 0x7u;
  if (e == 0xF && m == 0x7) return detail::bits_to_float(detail::nan_to_float_bits<3>(sign, m));
  return detail::bits_to_float(sign | detail::finite_to_float_bits<3, 7>(e, m));
}

/// @brief The exact value of an fp8 E5M2 (NaN: quiet, sign and payload kept).
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr float to_float(float8_e5m2 v) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(v.bits & 0x80u) << 24;
  const std::uint32_t e = (v.bits >> 2) & 0x1Fu;
  const std::uint32_t m = v.bits & 0x3u;
  if (e == 0x1F) {
    return detail::bits_to_float(m == 0 ? (sign | 0x7F800000u)
                                        : detail::nan_to_float_bits<2>(sign, m));
  }
  return detail::bits_to_float(sign | detail::finite_to_float_bits<2, 15>(e, m));
}

// ---- encoding ---------------------------------------------------------------------------------

/// @brief f32 -> f16, round to nearest even; overflow to +/-inf; NaN: quiet, sign kept.
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr float16 to_float16(float f) noexcept {
  const std::uint32_t x = detail::float_to_bits(f);
  const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t a = x & 0x7FFFFFFFu;
  if (a >= 0x7F800000u) {
    const std::uint32_t payload = a == 0x7F800000u ? 0u : (0x200u | ((a & 0x7FFFFFu) >> 13));
    return float16{static_cast<std::uint16_t>(sign | 0x7C00u | payload)};
  }
  const std::uint32_t r = detail::round_magnitude<10, 15>(a);
  return float16{static_cast<std::uint16_t>(sign | (r > 0x7BFFu ? 0x7C00u : r))};
}

/// @brief f32 -> bf16, round to nearest even; overflow to +/-inf; NaN: quiet, sign kept.
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr bfloat16 to_bfloat16(float f) noexcept {
  const std::uint32_t x = detail::float_to_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) {
    return bfloat16{static_cast<std::uint16_t>((x >> 16) | 0x0040u)};
  }
  // bf16 has float's exponent range: rounding the low 16 bits is the whole job, and the
  // carry turns the largest values into inf exactly when they round beyond max finite.
  const std::uint32_t rounded = x + 0x7FFFu + ((x >> 16) & 1u);
  return bfloat16{static_cast<std::uint16_t>(rounded >> 16)};
}

/// @brief f32 -> fp8 E4M3, round to nearest even; out of range and inf per `sat`; NaN -> 0x7F.
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr float8_e4m3 to_float8_e4m3(
    float f, fp8_saturation sat = fp8_saturation::finite) noexcept {
  return float8_e4m3{detail::float_to_fp8<3, 7, false>(f, sat)};
}

/// @brief f32 -> fp8 E5M2, round to nearest even; out of range and inf per `sat`; NaN -> 0x7F.
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr float8_e5m2 to_float8_e5m2(
    float f, fp8_saturation sat = fp8_saturation::finite) noexcept {
  return float8_e5m2{detail::float_to_fp8<2, 15, true>(f, sat)};
}

#if !defined(__CUDACC__)
// ---- runtime dispatch (host only) -----------------------------------------------------------

/**
 * @brief Element `i` of an array of `t` at `p`, as a float (exact).
 * @throws kvcache::error errc::not_supported naming `t` unless it is f32, f16, bf16 or fp8.
 * @note Host only; `p` need not be aligned.
 */
[[nodiscard]] inline float load_as_float(dtype t, const void* p, std::size_t i) {
  const auto* bytes = static_cast<const unsigned char*>(p);
  switch (t) {
    case dtype::f32: {
      float v;
      std::memcpy(&v, bytes + i * 4, 4);
      return v;
    }
    case dtype::f16: {
      std::uint16_t b;
      std::memcpy(&b, bytes + i * 2, 2);
      return to_float(float16{b});
    }
    case dtype::bf16: {
      std::uint16_t b;
      std::memcpy(&b, bytes + i * 2, 2);
      return to_float(bfloat16{b});
    }
    case dtype::fp8_e4m3:
      return to_float(float8_e4m3{bytes[i]});
    case dtype::fp8_e5m2:
      return to_float(float8_e5m2{bytes[i]});
    default:
      break;
  }
  KVCACHE_FAIL(errc::not_supported,
               "load_as_float: dtype {} is not a floating-point type (f32, f16, bf16, fp8_e4m3, "
               "fp8_e5m2)",
               name_of(t));
}

/**
 * @brief Stores `v`, rounded to `t` (nearest even; fp8 per `sat`), as element `i` of an array of
 * `t` at `p`.
 * @throws kvcache::error errc::not_supported naming `t` unless it is f32, f16, bf16 or fp8.
 * @note Host only; `p` need not be aligned.
 */
inline void store_from_float(dtype t, void* p, std::size_t i, float v,
                             fp8_saturation sat = fp8_saturation::finite) {
  auto* bytes = static_cast<unsigned char*>(p);
  switch (t) {
    case dtype::f32:
      std::memcpy(bytes + i * 4, &v, 4);
      return;
    case dtype::f16: {
      const std::uint16_t b = to_float16(v).bits;
      std::memcpy(bytes + i * 2, &b, 2);
      return;
    }
    case dtype::bf16: {
      const std::uint16_t b = to_bfloat16(v).bits;
      std::memcpy(bytes + i * 2, &b, 2);
      return;
    }
    case dtype::fp8_e4m3:
      bytes[i] = to_float8_e4m3(v, sat).bits;
      return;
    case dtype::fp8_e5m2:
      bytes[i] = to_float8_e5m2(v, sat).bits;
      return;
    default:
      break;
  }
  KVCACHE_FAIL(errc::not_supported,
               "store_from_float: dtype {} is not a floating-point type (f32, f16, bf16, "
               "fp8_e4m3, fp8_e5m2)",
               name_of(t));
}
#endif  // !defined(__CUDACC__)

}  // namespace kvcache
