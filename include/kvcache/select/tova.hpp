/**
 * @file tova.hpp
 * @brief `tova`: drop the tokens the current query attends to least.
 *
 * Oren et al., "Transformers are Multi-State RNNs" (TOVA, Token Omission Via Attention,
 * EMNLP 2024, arXiv:2401.06104): when the cache is over budget, drop the token with the lowest
 * attention from the current query, averaged over heads (here: over the group's query heads of
 * this kv head). No parameters; one token is dropped per step in steady state. At prefill it
 * observes the last prompt query (`prefill_queries()` = 1).
 * Scores: the last observed attention (mean over heads); +inf for tokens appended since (not yet
 * observed). Cost per step: O(h n); 4 bytes per token. Thread-safety: none per object.
 */
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kvcache/select/detail/policy_base.hpp"
#include "kvcache/select/selection_policy.hpp"

namespace kvcache {

class tova : public detail::policy_base<tova> {
 public:
  tova() = default;
  [[nodiscard]] std::int64_t prefill_queries() const noexcept { return 1; }
  void scores(std::int64_t /*budget*/, std::span<float> out) const {
    std::copy(last_.begin(), last_.end(), out.begin());
  }

 private:
  friend class detail::policy_base<tova>;
  void on_reset(std::int64_t capacity) {
    last_.clear();
    last_.reserve(static_cast<std::size_t>(capacity));
  }
  void on_append(std::int64_t n, std::span<const float>) {
    last_.resize(last_.size() + static_cast<std::size_t>(n), detail::protected_score);
  }
  void on_prefill(std::span<const float> probs, std::int32_t queries, std::int32_t heads) {
    const std::int64_t n = size();
    on_observe(probs.subspan(static_cast<std::size_t>(queries - 1) * static_cast<std::size_t>(heads * n),
                             static_cast<std::size_t>(heads * n)),
               heads);
  }
  void on_observe(std::span<const float> probs, std::int32_t heads) {
    const std::int64_t n = size();
    for (std::int64_t i = 0; i < n; ++i) last_[static_cast<std::size_t>(i)] = head_mean(probs, heads, n, i);
  }
  void on_retain(std::span<const std::int64_t> keep) { detail::compact_in_place(last_, keep); }

  std::vector<float> last_;
};

static_assert(selection_policy<tova>);

}  // namespace kvcache
