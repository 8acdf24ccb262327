/**
 * @file policy_base.hpp
 * @brief The part every selection policy shares: held positions, argument checks, top-k
 * selection with the recency tie-break, compaction of per-token arrays (`retain`).
 */
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <vector>

#include "kvcache/core/error.hpp"

namespace kvcache::detail {

/// @brief +inf: the score of a protected token (sink, recent window, observation window).
inline constexpr float protected_score = std::numeric_limits<float>::infinity();

/**
 * @brief Writes the indices of the min(budget, scores.size()) highest scores to `out`,
 * ascending; ties go to the higher index (the more recent token). `order` is scratch.
 * @return the number written. O(n) average + O(k log k).
 */
inline std::int64_t select_top(std::span<const float> scores, std::int64_t budget,
                               std::vector<std::int64_t>& order, std::span<std::int64_t> out) {
  const auto n = static_cast<std::int64_t>(scores.size());
  const std::int64_t k = std::clamp<std::int64_t>(budget, 0, n);
  KVCACHE_EXPECTS(out.size() >= static_cast<std::size_t>(k), errc::shape_mismatch,
                  "select: {} outputs for {} kept tokens", out.size(), k);
  if (k == n) {
    std::iota(out.begin(), out.begin() + n, std::int64_t{0});
    return n;
  }
  order.resize(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  const auto better = [&](std::int64_t a, std::int64_t b) {
    const float sa = scores[static_cast<std::size_t>(a)];
    const float sb = scores[static_cast<std::size_t>(b)];
    return sa > sb || (sa == sb && a > b);
  };
  if (k > 0) std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), better);
  std::sort(order.begin(), order.begin() + k);
  std::copy(order.begin(), order.begin() + k, out.begin());
  return k;
}

/// @brief Keeps v[keep[j]] at j for each j (keep ascending), drops the rest. O(n).
template <class T>
void compact_in_place(std::vector<T>& v, std::span<const std::int64_t> keep) {
  for (std::size_t j = 0; j < keep.size(); ++j) v[j] = v[static_cast<std::size_t>(keep[j])];
  v.resize(keep.size());
}

/**
 * @brief CRTP base of the policies: holds the positions and the scratch, checks arguments and
 * calls the derived class's hooks `on_reset(capacity)`, `on_append(n, key_norms)`,
 * `on_prefill(probs, queries, heads)`, `on_observe(probs, heads)`, `on_retain(keep)` (each has
 * a no-op default here) and its `scores(budget, out)`.
 */
template <class Derived>
class policy_base {
 public:
  /// @brief Empties the state and reserves room for `capacity` tokens.
  void reset(std::int64_t capacity) {
    KVCACHE_EXPECTS(capacity >= 0, errc::invalid_argument, "reset: capacity {} is negative",
                    capacity);
    const auto c = static_cast<std::size_t>(capacity);
    pos_.clear();
    pos_.reserve(c);
    order_.reserve(c);
    score_.reserve(c);
    next_ = 0;
    self().on_reset(capacity);
  }
  /// @brief n new tokens at the next positions; `key_norms` empty or n values.
  void append(std::int64_t n, std::span<const float> key_norms = {}) {
    KVCACHE_EXPECTS(n >= 0 && (key_norms.empty() || key_norms.size() == static_cast<std::size_t>(n)),
                    errc::shape_mismatch, "append: {} tokens with {} key norms", n,
                    key_norms.size());
    if constexpr (requires { Derived::requires_key_norms; }) {  // checked before any change
      KVCACHE_EXPECTS(n == 0 || !key_norms.empty(), errc::invalid_argument,
                      "key_norm: append of {} tokens without their key norms", n);
    }
    for (std::int64_t i = 0; i < n; ++i) pos_.push_back(next_++);
    self().on_append(n, key_norms);
  }
  /// @brief Prompt window attention, `[queries][heads][size()]`.
  void observe_prefill(std::span<const float> probs, std::int32_t queries, std::int32_t heads) {
    KVCACHE_EXPECTS(queries >= 0 && heads >= 1 && queries <= size() &&
                        probs.size() == static_cast<std::size_t>(queries) *
                                            static_cast<std::size_t>(heads) *
                                            static_cast<std::size_t>(size()),
                    errc::shape_mismatch,
                    "observe_prefill: {} probabilities for {} queries x {} heads x {} tokens",
                    probs.size(), queries, heads, size());
    check_finite(probs, "observe_prefill");
    if (queries > 0) self().on_prefill(probs, queries, heads);
  }
  /// @brief One decode step's attention, `[heads][size()]`.
  void observe(std::span<const float> probs, std::int32_t heads) {
    KVCACHE_EXPECTS(heads >= 1 && probs.size() == static_cast<std::size_t>(heads) *
                                                      static_cast<std::size_t>(size()),
                    errc::shape_mismatch, "observe: {} probabilities for {} heads x {} tokens",
                    probs.size(), heads, size());
    check_finite(probs, "observe");
    self().on_observe(probs, heads);
  }
  [[nodiscard]] std::int64_t size() const noexcept { return static_cast<std::int64_t>(pos_.size()); }
  /// @brief Positions of the held tokens, ascending (held index -> position).
  [[nodiscard]] std::span<const std::int64_t> positions() const noexcept { return pos_; }
  /// @brief The held indices to keep under `budget`, ascending; returns how many (min(budget,
  /// size())). Changes no state.
  std::int64_t select(std::int64_t budget, std::span<std::int64_t> out) {
    KVCACHE_EXPECTS(budget >= 0, errc::invalid_argument, "select: budget {} is negative", budget);
    score_.resize(pos_.size());
    self().scores(budget, score_);
    return select_top(score_, budget, order_, out);
  }
  /// @brief Keeps the held indices `keep` (strictly ascending, < size()).
  void retain(std::span<const std::int64_t> keep) {
    for (std::size_t j = 0; j < keep.size(); ++j) {
      KVCACHE_EXPECTS(keep[j] >= 0 && keep[j] < size() && (j == 0 || keep[j] > keep[j - 1]),
                      errc::invalid_argument,
                      "retain: keep[{}] = {} is out of [0, {}) or not ascending", j, keep[j],
                      size());
    }
    compact_in_place(pos_, keep);
    self().on_retain(keep);
  }

 protected:
  void on_reset(std::int64_t) {}
  void on_append(std::int64_t, std::span<const float>) {}
  void on_prefill(std::span<const float>, std::int32_t, std::int32_t) {}
  void on_observe(std::span<const float>, std::int32_t) {}
  void on_retain(std::span<const std::int64_t>) {}

  /// @brief Mean over the heads of row block `probs` ([heads][n]) at token i.
  static float head_mean(std::span<const float> probs, std::int32_t heads, std::int64_t n,
                         std::int64_t i) noexcept {
    float s = 0;
    for (std::int32_t h = 0; h < heads; ++h) s += probs[static_cast<std::size_t>(h * n + i)];
    return s / static_cast<float>(heads);
  }

 private:
  /// Attention probabilities must be finite (a NaN would make the ranking arbitrary, and the
  /// host and GPU top-k order NaN differently). O(n), checked before any change.
  static void check_finite(std::span<const float> probs, const char* who) {
    for (std::size_t i = 0; i < probs.size(); ++i) {
      KVCACHE_EXPECTS(std::isfinite(probs[i]), errc::invalid_argument,
                      "{}: probability {} is {}; attention must be finite", who, i, probs[i]);
    }
  }

  Derived& self() noexcept { return static_cast<Derived&>(*this); }
  std::vector<std::int64_t> pos_;
  std::vector<std::int64_t> order_;
  std::vector<float> score_;
  std::int64_t next_ = 0;
};

}  // namespace kvcache::detail
