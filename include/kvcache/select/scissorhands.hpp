/**
 * @file scissorhands.hpp
 * @brief `scissorhands`: persistence of importance: drop the tokens that were unimportant most
 * often over a history window of recent queries.
 *
 * Liu et al., "Scissorhands: Exploiting the Persistence of Importance Hypothesis for LLM KV
 * Cache Compression at Test Time" (NeurIPS 2023, arXiv:2305.17118): a token that mattered at
 * one step keeps mattering. Over the last `history` observed queries it counts, per token, the
 * steps where its attention was below the uniform share 1/(tokens visible to that query)
 * ("unimportant"); tokens with the highest counts go, the `recent` window stays. The paper
 * leaves w (history) and r (recent) as parameters; the defaults here are ours: history 32
 * queries (at most 64: one bit per step in a 64-bit mask per token, so the window slides
 * exactly), recent window 10% of the budget.
 *
 * Observes: the last `history` prompt queries at prefill (`prefill_queries()`), each decode
 * step; mean over the group's heads. Scores: -(unimportant count), +inf for the recent window.
 * Cost per step: O(h n); 8 bytes per token. Thread-safety: none per object.
 */
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "kvcache/select/detail/policy_base.hpp"
#include "kvcache/select/selection_policy.hpp"

namespace kvcache {

class scissorhands : public detail::policy_base<scissorhands> {
 public:
  /// @param history queries over which unimportance is counted, 1..64 (default 32).
  /// @param recent_ratio share of the budget kept as the recent window (default 0.1).
  explicit scissorhands(std::int32_t history = 32, double recent_ratio = 0.1)
      : history_(history), recent_ratio_(recent_ratio) {
    KVCACHE_EXPECTS(history >= 1 && history <= 64 && recent_ratio >= 0.0 && recent_ratio <= 1.0,
                    errc::invalid_argument,
                    "scissorhands: history {} must be in [1, 64], recent ratio {} in [0, 1]",
                    history, recent_ratio);
    mask_bits_ = history == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << history) - 1;
  }
  [[nodiscard]] std::int32_t history() const noexcept { return history_; }
  [[nodiscard]] std::int64_t prefill_queries() const noexcept { return history_; }
  /// @brief The unimportant count of held token i over the history window.
  [[nodiscard]] std::int32_t unimportant(std::int64_t i) const noexcept {
    return std::popcount(mask_[static_cast<std::size_t>(i)]);
  }
  void scores(std::int64_t budget, std::span<float> out) const {
    const std::int64_t n = size();
    const auto recent = static_cast<std::int64_t>(std::floor(recent_ratio_ * static_cast<double>(budget)));
    for (std::int64_t i = 0; i < n; ++i) {
      out[static_cast<std::size_t>(i)] =
          i >= n - recent ? detail::protected_score : -static_cast<float>(unimportant(i));
    }
  }

 private:
  friend class detail::policy_base<scissorhands>;
  void on_reset(std::int64_t capacity) {
    mask_.clear();
    mask_.reserve(static_cast<std::size_t>(capacity));
  }
  void on_append(std::int64_t n, std::span<const float>) { mask_.resize(mask_.size() + static_cast<std::size_t>(n), 0); }
  /// One query's attention over its `visible` first held tokens.
  void count(std::span<const float> probs, std::int32_t heads, std::int64_t visible) {
    const std::int64_t n = size();
    const float threshold = 1.0f / static_cast<float>(visible);
    for (std::int64_t i = 0; i < visible; ++i) {
      auto& m = mask_[static_cast<std::size_t>(i)];
      const bool low = head_mean(probs, heads, n, i) < threshold;
      m = ((m << 1) | (low ? 1u : 0u)) & mask_bits_;
    }
  }
  void on_prefill(std::span<const float> probs, std::int32_t queries, std::int32_t heads) {
    const std::int64_t n = size();
    const std::int64_t used = std::min<std::int64_t>(queries, history_);
    for (std::int64_t q = queries - used; q < queries; ++q) {
      count(probs.subspan(static_cast<std::size_t>(q * heads * n), static_cast<std::size_t>(heads * n)),
            heads, n - queries + q + 1);
    }
  }
  void on_observe(std::span<const float> probs, std::int32_t heads) {
    if (size() > 0) count(probs, heads, size());
  }
  void on_retain(std::span<const std::int64_t> keep) { detail::compact_in_place(mask_, keep); }

  std::int32_t history_;
  double recent_ratio_;
  std::uint64_t mask_bits_ = 0;
  std::vector<std::uint64_t> mask_;
};

static_assert(selection_policy<scissorhands>);

}  // namespace kvcache
