/**
 * @file arith.hpp
 * @brief (internal) f32 arithmetic with one explicit rounding per operation, identical in host
 * and device code, so that the host quantizers and the CUDA kernels agree bit for bit.
 *
 * nvcc contracts `a * b + c` into a fused multiply-add unless told not to; the quantizers never
 * write such an expression, and these helpers make each rounding explicit on the device
 * (`__fmul_rn`, `__fadd_rn`, `__fdiv_rn` are never contracted and round to nearest even),
 * while the host (x86-64 SSE, no contraction under -std=c++20) rounds each operation the same
 * way. `rint_f` rounds half to even on both sides.
 */
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kvcache/core/config.hpp"

namespace kvcache::detail {

[[nodiscard]] KVCACHE_HOST_DEVICE inline float add_rn(float a, float b) noexcept {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

[[nodiscard]] KVCACHE_HOST_DEVICE inline float sub_rn(float a, float b) noexcept {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

[[nodiscard]] KVCACHE_HOST_DEVICE inline float mul_rn(float a, float b) noexcept {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

[[nodiscard]] KVCACHE_HOST_DEVICE inline float div_rn(float a, float b) noexcept {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

/// @brief Round to the nearest integer, ties to even (the default rounding mode on the host).
[[nodiscard]] KVCACHE_HOST_DEVICE inline float rint_f(float x) noexcept {
#ifdef __CUDA_ARCH__
  return rintf(x);
#else
  return std::rint(x);
#endif
}

/// @brief min / max that never see NaN here; written out so that -0 / +0 order is explicit.
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr float min_f(float a, float b) noexcept {
  return b < a ? b : a;
}
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr float max_f(float a, float b) noexcept {
  return b > a ? b : a;
}

/// @brief +0 for either zero: min / max over a group are order-independent only up to the sign
/// of zero, and the host and the kernels reduce in different orders.
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr float canonical_zero(float x) noexcept {
  return x == 0.0f ? 0.0f : x;
}

/// @brief True when an f16 bit pattern is finite (not Inf, not NaN).
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr bool f16_bits_finite(std::uint16_t h) noexcept {
  return (h & 0x7C00u) != 0x7C00u;
}

/// @brief `n` rounded up to a multiple of 16.
[[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::size_t align16(std::size_t n) noexcept {
  return (n + 15) / 16 * 16;
}

}  // namespace kvcache::detail
