/**
 * @file fast_divmod.cuh
 * @brief `fast_divmod` (64-bit) and `fast_divmod32`: division by a run-time constant with a multiply-high, an add and a shift
 * (Granlund & Montgomery, "Division by invariant integers using multiplication", 1994, fig. 4.1).
 *
 * Plain C++ outside nvcc (the host test checks it against `/` and `%`).
 */
#pragma once

#include <cstdint>

#include "kvcache/core/config.hpp"

namespace kvcache::detail {

/**
 * @brief Divides 0 <= n < 2^63 by a divisor 1 <= d <= 2^63 fixed at construction.
 *
 * With l = ceil(log2 d) and m = floor(2^64 (2^l - d) / d) + 1, n / d = (mulhi(m, n) + n) >> l;
 * the sum cannot overflow since mulhi(m, n) < n < 2^63. Trivially copyable: pass in kernel
 * parameters.
 */
struct fast_divmod {
  std::uint64_t divisor = 1;
  std::uint64_t multiplier = 1;
  std::uint32_t shift = 0;

  fast_divmod() = default;
  /// @brief Host only: precomputes the multiplier (one 128-bit division).
  explicit fast_divmod(std::uint64_t d) : divisor(d) {
    shift = 0;
    while ((std::uint64_t{1} << shift) < d) ++shift;
    __extension__ typedef unsigned __int128 u128;
    const u128 num = static_cast<u128>((std::uint64_t{1} << shift) - d) << 64;
    multiplier = static_cast<std::uint64_t>(num / d) + 1;
  }

  [[nodiscard]] KVCACHE_HOST_DEVICE std::uint64_t div(std::uint64_t n) const {
#if defined(__CUDA_ARCH__)
    const std::uint64_t hi = __umul64hi(n, multiplier);
#else
    __extension__ typedef unsigned __int128 u128;
    const auto hi = static_cast<std::uint64_t>((static_cast<u128>(n) * multiplier) >> 64);
#endif
    return (hi + n) >> shift;
  }
  /// @brief q = n / d, r = n % d.
  KVCACHE_HOST_DEVICE void divmod(std::uint64_t n, std::uint64_t& q, std::uint64_t& r) const {
    q = div(n);
    r = n - q * divisor;
  }
};

/**
 * @brief The 32-bit form: 0 <= n < 2^31 divided by 1 <= d < 2^31, one 32-bit multiply-high, an
 * add and a shift (m = floor(2^32 (2^l - d) / d) + 1; mulhi(m, n) + n < 2^32). Only the quotient
 * (callers that need the remainder keep d). Two words: cheap in kernel parameters.
 */
struct fast_divmod32 {
  std::uint32_t multiplier = 1;
  std::uint32_t shift = 0;

  fast_divmod32() = default;
  /// @brief Host only: precomputes the multiplier.
  explicit fast_divmod32(std::uint32_t d) {
    while ((std::uint64_t{1} << shift) < d) ++shift;
    multiplier = static_cast<std::uint32_t>(
        ((std::uint64_t{1} << 32) * ((std::uint64_t{1} << shift) - d)) / d + 1);
  }

  [[nodiscard]] KVCACHE_HOST_DEVICE std::uint32_t div(std::uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const std::uint32_t hi = __umulhi(n, multiplier);
#else
    const auto hi = static_cast<std::uint32_t>((std::uint64_t{n} * multiplier) >> 32);
#endif
    return (hi + n) >> shift;
  }
};

}  // namespace kvcache::detail
