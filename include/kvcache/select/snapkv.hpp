/**
 * @file snapkv.hpp
 * @brief `snapkv`: the prompt's last queries vote for the earlier tokens; votes are pooled.
 *
 * Li et al., "SnapKV: LLM Knows What You are Looking for Before Generation" (NeurIPS 2024,
 * arXiv:2404.14469): the attention of an observation window (the prompt's last `window`
 * queries) over the earlier prompt tokens, summed over the window, is smoothed by a 1-D
 * max-pool of width `kernel` (keeps the neighbours of a hit, so a selected token keeps its
 * context); the top tokens by pooled vote are kept with the whole window. Defaults: window 32,
 * kernel 7, max pooling (the paper's LongBench setting; kvpress uses 64 and 5 with average
 * pooling).
 *
 * Observes: at prefill the last min(window, queries) rows given (`prefill_queries()` =
 * window), mean over the group's heads. Tokens appended later (generated) are protected, as in
 * the paper, which compresses the prompt only; under a budget smaller than what is protected,
 * the most recent protected tokens stay.
 * Scores: pooled votes for prompt tokens before the window, +inf for the window and later
 * tokens. Cost: O(window h n + n kernel) once at prefill, O(1) per decode step; 4 bytes per
 * token. Thread-safety: none per object.
 */
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "kvcache/select/detail/policy_base.hpp"
#include "kvcache/select/selection_policy.hpp"

namespace kvcache {

class snapkv : public detail::policy_base<snapkv> {
 public:
  /// @param window observation window (prompt queries that vote), default 32.
  /// @param kernel max-pool width (odd), default 7.
  explicit snapkv(std::int64_t window = 32, std::int64_t kernel = 7)
      : window_(window), kernel_(kernel) {
    KVCACHE_EXPECTS(window >= 1 && kernel >= 1 && kernel % 2 == 1, errc::invalid_argument,
                    "snapkv: window {} must be >= 1 and kernel {} odd and >= 1", window, kernel);
  }
  [[nodiscard]] std::int64_t window() const noexcept { return window_; }
  [[nodiscard]] std::int64_t kernel() const noexcept { return kernel_; }
  [[nodiscard]] std::int64_t prefill_queries() const noexcept { return window_; }
  void scores(std::int64_t /*budget*/, std::span<float> out) const {
    std::copy(score_.begin(), score_.end(), out.begin());
  }

 private:
  friend class detail::policy_base<snapkv>;
  void on_reset(std::int64_t capacity) {
    score_.clear();
    score_.reserve(static_cast<std::size_t>(capacity));
    votes_.clear();
    votes_.reserve(static_cast<std::size_t>(capacity));
  }
  void on_append(std::int64_t n, std::span<const float>) {
    score_.resize(score_.size() + static_cast<std::size_t>(n), detail::protected_score);
  }
  void on_prefill(std::span<const float> probs, std::int32_t queries, std::int32_t heads) {
    const std::int64_t n = size();
    const std::int64_t prefix = std::max<std::int64_t>(0, n - window_);
    const std::int64_t used = std::min<std::int64_t>(queries, window_);
    votes_.assign(static_cast<std::size_t>(prefix), 0.0f);
    for (std::int64_t q = queries - used; q < queries; ++q) {
      const auto rows = probs.subspan(static_cast<std::size_t>(q * heads * n),
                                      static_cast<std::size_t>(heads * n));
      for (std::int64_t i = 0; i < prefix; ++i) votes_[static_cast<std::size_t>(i)] += head_mean(rows, heads, n, i);
    }
    const std::int64_t r = kernel_ / 2;
    for (std::int64_t i = 0; i < prefix; ++i) {
      float m = votes_[static_cast<std::size_t>(i)];
      for (std::int64_t j = std::max<std::int64_t>(0, i - r); j <= std::min(prefix - 1, i + r); ++j) {
        m = std::max(m, votes_[static_cast<std::size_t>(j)]);
      }
      score_[static_cast<std::size_t>(i)] = m;
    }
    for (std::int64_t i = prefix; i < n; ++i) score_[static_cast<std::size_t>(i)] = detail::protected_score;
  }
  void on_retain(std::span<const std::int64_t> keep) { detail::compact_in_place(score_, keep); }

  std::int64_t window_;
  std::int64_t kernel_;
  std::vector<float> score_;
  std::vector<float> votes_;  // scratch of on_prefill
};

static_assert(selection_policy<snapkv>);

}  // namespace kvcache
