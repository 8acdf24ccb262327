/**
 * @file h2o.hpp
 * @brief `h2o`: heavy hitters (largest accumulated attention mass) plus a recent window.
 *
 * Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language
 * Models" (NeurIPS 2023, arXiv:2306.14048): each token's attention, summed over every query
 * that saw it, finds the "heavy hitters"; the cache keeps them and the most recent tokens. The
 * paper's experiments split the budget evenly (e.g. 10% heavy + 10% recent for a 20% cache):
 * `recent_ratio` = 0.5 of the budget goes to the recent window by default.
 *
 * Observes: at prefill every prompt query it is given (`prefill_queries()` = all; the column
 * sums of the prompt's attention), at decode each step's attention; the mass is the sum over
 * queries of the mean over the group's heads. Scores: +inf for the last floor(recent_ratio x
 * budget) held tokens, else the mass. Cost per step: O(h n) to accumulate; 4 bytes per token.
 * Thread-safety: none per object.
 */
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "kvcache/select/detail/policy_base.hpp"
#include "kvcache/select/selection_policy.hpp"

namespace kvcache {

class h2o : public detail::policy_base<h2o> {
 public:
  /// @param recent_ratio share of the budget kept as the recent window (default 0.5: half heavy
  /// hitters, half recent, as in the paper's experiments).
  explicit h2o(double recent_ratio = 0.5) : recent_ratio_(recent_ratio) {
    KVCACHE_EXPECTS(recent_ratio >= 0.0 && recent_ratio <= 1.0, errc::invalid_argument,
                    "h2o: recent ratio {} is outside [0, 1]", recent_ratio);
  }
  [[nodiscard]] double recent_ratio() const noexcept { return recent_ratio_; }
  [[nodiscard]] std::int64_t prefill_queries() const noexcept { return all_queries; }
  /// @brief The accumulated attention mass of each held token.
  [[nodiscard]] std::span<const float> mass() const noexcept { return mass_; }
  void scores(std::int64_t budget, std::span<float> out) const {
    const std::int64_t n = size();
    const auto recent = static_cast<std::int64_t>(std::floor(recent_ratio_ * static_cast<double>(budget)));
    for (std::int64_t i = 0; i < n; ++i) {
      out[static_cast<std::size_t>(i)] =
          i >= n - recent ? detail::protected_score : mass_[static_cast<std::size_t>(i)];
    }
  }

 private:
  friend class detail::policy_base<h2o>;
  void on_reset(std::int64_t capacity) {
    mass_.clear();
    mass_.reserve(static_cast<std::size_t>(capacity));
  }
  void on_append(std::int64_t n, std::span<const float>) { mass_.resize(mass_.size() + static_cast<std::size_t>(n), 0.0f); }
  void on_prefill(std::span<const float> probs, std::int32_t queries, std::int32_t heads) {
    const std::int64_t n = size();
    for (std::int32_t q = 0; q < queries; ++q) {
      on_observe(probs.subspan(static_cast<std::size_t>(q) * static_cast<std::size_t>(heads * n),
                               static_cast<std::size_t>(heads * n)),
                 heads);
    }
  }
  void on_observe(std::span<const float> probs, std::int32_t heads) {
    const std::int64_t n = size();
    for (std::int64_t i = 0; i < n; ++i) mass_[static_cast<std::size_t>(i)] += head_mean(probs, heads, n, i);
  }
  void on_retain(std::span<const std::int64_t> keep) { detail::compact_in_place(mass_, keep); }

  double recent_ratio_;
  std::vector<float> mass_;
};

static_assert(selection_policy<h2o>);

}  // namespace kvcache
