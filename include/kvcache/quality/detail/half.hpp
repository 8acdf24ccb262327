/**
 * @file half.hpp
 * @brief Decoding of IEEE binary16 and bfloat16 bit patterns to float (internal).
 *
 * Private to quality/ until core/numeric.hpp provides the shared conversions; exact for every
 * input (subnormals, infinities, NaN payloads are kept as quiet NaN).
 */
#pragma once

#include <bit>
#include <cstdint>

namespace kvcache::quality::detail {

/// @brief The float value of an IEEE binary16 bit pattern (exact).
[[nodiscard]] constexpr float f16_bits_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1Fu;
  std::uint32_t mant = h & 0x3FFu;
  std::uint32_t bits = 0;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13) | (mant != 0 ? 0x00400000u : 0u);
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalize
    std::uint32_t e = 113;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mant & 0x3FFu) << 13);
  }
  return std::bit_cast<float>(bits);
}

/// @brief The float value of a bfloat16 bit pattern (exact: the upper half of a float).
[[nodiscard]] constexpr float bf16_bits_to_float(std::uint16_t b) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

}  // namespace kvcache::quality::detail
