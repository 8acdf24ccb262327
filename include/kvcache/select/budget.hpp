/**
 * @file budget.hpp
 * @brief The `budget_policy` concept: how a total token budget is split over layers and over the
 * kv heads of a layer. Models: `uniform_budget`, `pyramid_budget` (PyramidKV), `adaptive_heads`
 * (AdaKV).
 *
 * Budgets are token counts per (layer, kv head) table. They **sum exactly** to the total given
 * (or to the capacity, when the total exceeds it): real-valued targets are turned into integers
 * by the largest-remainder method (Hamilton): each share is floored, then the units left go one
 * each to the largest fractional parts (ties: the lower index), never above a share's cap; a
 * target above its cap is clamped and the excess is spread over the others in proportion to
 * their weights first.
 *
 * **A new budget policy provides** `layer_budgets(total, capacity, out)` (out.size() layers,
 * each <= capacity, sum == min(total, layers x capacity)), `head_budgets(total, sizes, scores,
 * out)` (out.size() heads, out[h] <= sizes[h], sum == min(total, sum of sizes); `scores` is the
 * concatenation over heads of each head policy's `scores(...)`, read only when
 * `uses_scores` is true), `static constexpr bool uses_scores`, and a `static_assert` below.
 * Complexity: O(layers) and O(heads) (uniform, pyramid), O(S log S) for S tokens in the layer
 * (adaptive: a sort per head, then nth_element).
 * No allocation after `reserve(max tokens of a layer)` (adaptive). Thread-safety: none per
 * object (adaptive holds scratch).
 */
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include "kvcache/core/error.hpp"
#include "kvcache/select/selection_policy.hpp"

namespace kvcache {

/// @brief A budget allocation policy: see the file comment.
template <class B>
concept budget_policy = requires(B& b, std::int64_t total, std::int64_t cap,
                                 std::span<const std::int64_t> sizes, std::span<const float> scores,
                                 std::span<std::int64_t> out) {
  { B::uses_scores } -> std::convertible_to<bool>;
  b.layer_budgets(total, cap, out);
  b.head_budgets(total, sizes, scores, out);
};

namespace detail {

/**
 * @brief Splits `total` into integers out[i] <= caps[i] in proportion to `weights` (>= 0), summing
 * to min(total, sum caps): capped water-filling, then largest remainders. O(n^2) worst case for
 * the clamping rounds (n = layers or heads), O(n log n) otherwise; `frac` and `order` are scratch.
 */
inline void apportion(std::int64_t total, std::span<const double> weights,
                      std::span<const std::int64_t> caps, std::span<std::int64_t> out,
                      std::vector<double>& target, std::vector<std::size_t>& order) {
  const std::size_t n = weights.size();
  KVCACHE_EXPECTS(caps.size() == n && out.size() == n && n > 0, errc::shape_mismatch,
                  "apportion: {} weights, {} caps, {} outputs", n, caps.size(), out.size());
  KVCACHE_EXPECTS(total >= 0, errc::invalid_argument, "budget: total {} is negative", total);
  std::int64_t cap_sum = 0;
  for (const auto c : caps) cap_sum += c;
  const std::int64_t goal = std::min(total, cap_sum);
  // Water-filling: clamp shares above their cap, spread the rest over the unclamped ones.
  target.assign(n, 0.0);
  double remaining = static_cast<double>(goal);
  order.clear();
  for (std::size_t i = 0; i < n; ++i) order.push_back(i);  // unclamped set
  for (;;) {
    double wsum = 0;
    for (const auto i : order) wsum += weights[i];
    bool clamped = false;
    for (std::size_t k = 0; k < order.size();) {
      const auto i = order[k];
      const double share = wsum > 0 ? remaining * weights[i] / wsum
                                    : remaining / static_cast<double>(order.size());
      if (share > static_cast<double>(caps[i])) {
        target[i] = static_cast<double>(caps[i]);
        remaining -= target[i];
        order[k] = order.back();
        order.pop_back();
        clamped = true;
        break;
      }
      ++k;
    }
    if (clamped) continue;
    for (const auto i : order) {
      target[i] = wsum > 0 ? remaining * weights[i] / wsum
                           : remaining / static_cast<double>(order.size());
    }
    break;
  }
  std::int64_t sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    out[i] = std::min<std::int64_t>(caps[i], static_cast<std::int64_t>(std::floor(target[i] + 1e-9)));
    sum += out[i];
  }
  order.resize(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return target[a] - std::floor(target[a] + 1e-9) > target[b] - std::floor(target[b] + 1e-9);
  });
  while (sum < goal) {  // one unit each to the largest remainders with room, round after round
    bool gave = false;
    for (const auto i : order) {
      if (sum == goal) break;
      if (out[i] < caps[i]) {
        ++out[i];
        ++sum;
        gave = true;
      }
    }
    if (!gave) break;
  }
}

}  // namespace detail

/**
 * @brief The same budget for every layer and every head (differences of one token at most,
 * the extra tokens going to the lower indices).
 */
class uniform_budget {
 public:
  static constexpr bool uses_scores = false;
  void layer_budgets(std::int64_t total, std::int64_t capacity, std::span<std::int64_t> out) {
    even(total, out.size(), capacity, out);
  }
  void head_budgets(std::int64_t total, std::span<const std::int64_t> sizes,
                    std::span<const float> /*scores*/, std::span<std::int64_t> out) {
    weights_.assign(sizes.size(), 1.0);
    detail::apportion(total, weights_, sizes, out, target_, order_);
  }

 private:
  void even(std::int64_t total, std::size_t n, std::int64_t capacity, std::span<std::int64_t> out) {
    weights_.assign(n, 1.0);
    caps_.assign(n, capacity);
    detail::apportion(total, weights_, caps_, out, target_, order_);
  }
  std::vector<double> weights_, target_;
  std::vector<std::int64_t> caps_;
  std::vector<std::size_t> order_;
};

/**
 * @brief PyramidKV's layer schedule: more tokens in the lower layers, where attention is spread,
 * fewer in the upper ones, where it is concentrated; heads of a layer share it evenly.
 *
 * Cai et al., "PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information
 * Funneling" (arXiv:2406.02069): with m the mean budget per layer, the top layer gets m / beta,
 * the bottom layer 2m - m / beta, and the layers between follow the straight line (an
 * arithmetic sequence, so the mean stays m); beta = 20 is the paper's (and its code's)
 * default. Layer budgets above the capacity are clamped and their excess spread over the
 * others, as the reference code lowers its maximum when the prompt is short.
 */
class pyramid_budget {
 public:
  static constexpr bool uses_scores = false;
  /// @param beta ratio of the mean budget to the top layer's (default 20), >= 1.
  explicit pyramid_budget(double beta = 20.0) : beta_(beta) {
    KVCACHE_EXPECTS(beta >= 1.0, errc::invalid_argument, "pyramid_budget: beta {} < 1", beta);
  }
  [[nodiscard]] double beta() const noexcept { return beta_; }
  /// @brief The schedule's weight of layer l of L (mean 1).
  [[nodiscard]] double weight(std::size_t l, std::size_t L) const noexcept {
    if (L <= 1) return 1.0;
    const double lo = 1.0 / beta_;
    const double hi = 2.0 - lo;
    return hi - static_cast<double>(l) * (hi - lo) / static_cast<double>(L - 1);
  }
  void layer_budgets(std::int64_t total, std::int64_t capacity, std::span<std::int64_t> out) {
    weights_.resize(out.size());
    for (std::size_t l = 0; l < out.size(); ++l) weights_[l] = weight(l, out.size());
    caps_.assign(out.size(), capacity);
    detail::apportion(total, weights_, caps_, out, target_, order_);
  }
  void head_budgets(std::int64_t total, std::span<const std::int64_t> sizes,
                    std::span<const float> scores, std::span<std::int64_t> out) {
    uniform_.head_budgets(total, sizes, scores, out);
  }

 private:
  double beta_;
  uniform_budget uniform_;
  std::vector<double> weights_, target_;
  std::vector<std::int64_t> caps_;
  std::vector<std::size_t> order_;
};

/**
 * @brief AdaKV's head-wise allocation: a layer's budget is shared by its kv heads and goes to
 * the tokens with the highest scores over **all** heads of the layer (top-k over the
 * concatenated head scores), so heads whose attention is spread (many moderately important
 * tokens) get more than heads that concentrate on a few.
 *
 * Feng et al., "Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation for
 * Efficient LLM Inference" (arXiv:2407.11550), as kvpress's `AdaKVPress`: a safeguard first
 * gives every head floor(alpha x total / heads) of its own best tokens (alpha = 0.2, kvpress's
 * default), then the rest of the budget goes by the global top-k. Layers share the total
 * evenly (combine with a layer schedule by hand for Ada-Pyramid). Scores of different heads
 * must be comparable (the same policy; attention-based scores are).
 */
class adaptive_heads {
 public:
  static constexpr bool uses_scores = true;
  /// @param alpha safeguard share in [0, 1] (default 0.2).
  explicit adaptive_heads(double alpha = 0.2) : alpha_(alpha) {
    KVCACHE_EXPECTS(alpha >= 0.0 && alpha <= 1.0, errc::invalid_argument,
                    "adaptive_heads: alpha {} is outside [0, 1]", alpha);
  }
  [[nodiscard]] double alpha() const noexcept { return alpha_; }
  /// @brief Reserves scratch for layers of up to `tokens` held tokens (all heads together).
  void reserve(std::int64_t tokens) {
    pool_.reserve(static_cast<std::size_t>(tokens));
    sorted_.reserve(static_cast<std::size_t>(tokens));
  }
  void layer_budgets(std::int64_t total, std::int64_t capacity, std::span<std::int64_t> out) {
    uniform_.layer_budgets(total, capacity, out);
  }
  void head_budgets(std::int64_t total, std::span<const std::int64_t> sizes,
                    std::span<const float> scores, std::span<std::int64_t> out) {
    const std::size_t H = sizes.size();
    std::int64_t sum = 0;
    for (const auto s : sizes) sum += s;
    KVCACHE_EXPECTS(out.size() == H && H > 0 && scores.size() == static_cast<std::size_t>(sum),
                    errc::shape_mismatch,
                    "adaptive_heads: {} outputs for {} heads, {} scores for {} tokens", out.size(),
                    H, scores.size(), sum);
    KVCACHE_EXPECTS(total >= 0, errc::invalid_argument, "budget: total {} is negative", total);
    const std::int64_t goal = std::min(total, sum);
    const auto safe = static_cast<std::int64_t>(std::floor(alpha_ * static_cast<double>(goal) /
                                                           static_cast<double>(H)));
    // Each head's scores, best first: its `safe` best are guaranteed; the others compete.
    pool_.clear();
    std::int64_t given = 0;
    std::size_t off = 0;
    for (std::size_t h = 0; h < H; ++h) {
      const auto n = static_cast<std::size_t>(sizes[h]);
      sorted_.assign(scores.begin() + static_cast<std::ptrdiff_t>(off),
                     scores.begin() + static_cast<std::ptrdiff_t>(off + n));
      const auto g = static_cast<std::size_t>(std::min<std::int64_t>(safe, sizes[h]));
      std::sort(sorted_.begin(), sorted_.end(), std::greater<>());
      out[h] = static_cast<std::int64_t>(g);
      given += out[h];
      for (std::size_t i = g; i < n; ++i) {
        pool_.push_back({sorted_[i], static_cast<std::int32_t>(h), static_cast<std::int64_t>(i)});
      }
      off += n;
    }
    const std::int64_t rest = goal - given;
    if (rest > 0) {
      const auto better = [](const entry& a, const entry& b) {
        // ties (protected tokens, integer scores) go round robin over the heads: first the
        // better-ranked token within its head, then the lower head
        return a.score > b.score ||
               (a.score == b.score && (a.rank < b.rank || (a.rank == b.rank && a.head < b.head)));
      };
      std::nth_element(pool_.begin(), pool_.begin() + (rest - 1), pool_.end(), better);
      for (std::int64_t i = 0; i < rest; ++i) ++out[static_cast<std::size_t>(pool_[static_cast<std::size_t>(i)].head)];
    }
  }

 private:
  struct entry {
    float score;
    std::int32_t head;
    std::int64_t rank;  ///< position in its head's descending order
  };
  double alpha_;
  uniform_budget uniform_;
  std::vector<entry> pool_;
  std::vector<float> sorted_;
};

static_assert(budget_policy<uniform_budget>);
static_assert(budget_policy<pyramid_budget>);
static_assert(budget_policy<adaptive_heads>);

/**
 * @brief The budget of each head of one layer: `b.head_budgets` over the heads' current sizes
 * and (when the policy uses them) their concatenated scores at the mean budget per head.
 * `scores` is scratch (no allocation once it holds the layer's tokens).
 */
template <budget_policy B, selection_policy P>
void head_budgets_of(B& b, std::span<P> heads, std::int64_t layer_total,
                     std::span<std::int64_t> out, std::vector<std::int64_t>& sizes,
                     std::vector<float>& scores) {
  KVCACHE_EXPECTS(!heads.empty() && out.size() == heads.size(), errc::shape_mismatch,
                  "head_budgets_of: {} heads, {} outputs", heads.size(), out.size());
  sizes.resize(heads.size());
  std::int64_t sum = 0;
  for (std::size_t h = 0; h < heads.size(); ++h) {
    sizes[h] = heads[h].size();
    sum += sizes[h];
  }
  scores.resize(B::uses_scores ? static_cast<std::size_t>(sum) : 0);
  if constexpr (B::uses_scores) {
    const std::int64_t mean = layer_total / static_cast<std::int64_t>(heads.size());
    std::size_t off = 0;
    for (std::size_t h = 0; h < heads.size(); ++h) {
      heads[h].scores(mean, std::span<float>(scores).subspan(off, static_cast<std::size_t>(sizes[h])));
      off += static_cast<std::size_t>(sizes[h]);
    }
  }
  b.head_budgets(layer_total, sizes, scores, out);
}

}  // namespace kvcache
