/**
 * @file top_k_segment.hpp
 * @brief `top_k_segment`: one table of a batched top-k (`select_top_k_*`, top_k.hpp) or of a
 * row retain (`retain_attention_mass_*`, attention_mass.hpp). Free of fmt, so CUDA sources can
 * include it.
 */
#pragma once

#include <cstdint>
#include <type_traits>

namespace kvcache {

/// @brief One table of a batched top-k (offsets in elements of the score and keep buffers).
struct top_k_segment {
  std::int64_t scores = 0;          ///< first score: scores[this]
  std::int64_t rows = 0;            ///< held rows of the table (< 2^31)
  std::int64_t budget = 0;          ///< rows to keep (clamped to [0, rows])
  std::int64_t keep = 0;            ///< first kept index written at keep[this]
  std::int64_t protect_recent = 0;  ///< the last min(this, rows) rows count as +inf
};
static_assert(std::is_trivially_copyable_v<top_k_segment>);

/// @brief Rows kept for a segment: min(max(budget, 0), max(rows, 0)).
[[nodiscard]] constexpr std::int64_t kept_rows(const top_k_segment& s) noexcept {
  const std::int64_t n = s.rows < 0 ? 0 : s.rows;
  return s.budget < 0 ? 0 : (s.budget > n ? n : s.budget);
}

}  // namespace kvcache
