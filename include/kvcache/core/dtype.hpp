/**
 * @file dtype.hpp
 * @brief Element types of KV data and their traits (bits, bytes for n elements, names).
 *
 * Packed types (int4, int2) store several elements per byte, lowest bits first; a run of n
 * elements takes ceil(n * bits / 8) bytes. Conversions to and from f32 live in numeric.hpp.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kvcache/core/config.hpp"

namespace kvcache {

/// @brief Element type of a tensor or a page.
enum class dtype : std::uint8_t {
  f32,       ///< IEEE binary32
  f16,       ///< IEEE binary16
  bf16,      ///< bfloat16 (8 exponent bits, 7 mantissa bits)
  fp8_e4m3,  ///< OCP FP8 E4M3 (no infinities, max 448, NaN = S.1111.111)
  fp8_e5m2,  ///< OCP FP8 E5M2 (IEEE-like, infinities, max 57344)
  int8,      ///< signed 8-bit integer
  uint8,     ///< unsigned 8-bit integer
  int4,      ///< packed 4-bit codes, two per byte, low nibble first
  int2,      ///< packed 2-bit codes, four per byte, lowest bits first
};

/// @brief Number of dtypes, for iteration in tests.
inline constexpr int dtype_count = 9;

/// @brief Bits per element.
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr int bits_of(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return 32;
    case dtype::f16:
    case dtype::bf16: return 16;
    case dtype::fp8_e4m3:
    case dtype::fp8_e5m2:
    case dtype::int8:
    case dtype::uint8: return 8;
    case dtype::int4: return 4;
    case dtype::int2: return 2;
  }
  return 0;
}

/// @brief Bytes that n consecutive elements occupy (packed types round up to a whole byte).
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::size_t bytes_for(dtype t, std::size_t n) noexcept {
  return (n * static_cast<std::size_t>(bits_of(t)) + 7) / 8;
}

/// @brief True for int4 and int2, which pack several elements per byte.
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr bool is_packed(dtype t) noexcept {
  return bits_of(t) < 8;
}

/// @brief True for the floating-point types (f32, f16, bf16, both fp8).
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr bool is_floating(dtype t) noexcept {
  return t == dtype::f32 || t == dtype::f16 || t == dtype::bf16 || t == dtype::fp8_e4m3 ||
         t == dtype::fp8_e5m2;
}

/// @brief Short lowercase name, e.g. "bf16", "fp8_e4m3".
[[nodiscard]] constexpr std::string_view name_of(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return "f32";
    case dtype::f16: return "f16";
    case dtype::bf16: return "bf16";
    case dtype::fp8_e4m3: return "fp8_e4m3";
    case dtype::fp8_e5m2: return "fp8_e5m2";
    case dtype::int8: return "int8";
    case dtype::uint8: return "uint8";
    case dtype::int4: return "int4";
    case dtype::int2: return "int2";
  }
  return "unknown";
}

/// @brief Parses a name produced by `name_of`; throws errc::invalid_argument naming the text.
[[nodiscard]] dtype parse_dtype(std::string_view name);

/// @brief Compile-time traits of a dtype.
template <dtype T>
struct dtype_traits {
  static constexpr int bits = bits_of(T);
  static constexpr bool packed = is_packed(T);
  static constexpr bool floating = is_floating(T);
  static constexpr std::string_view name = name_of(T);
};

}  // namespace kvcache
