/**
 * @file key_norm.hpp
 * @brief `key_norm`: keep the tokens whose keys have the lowest L2 norm.
 *
 * Devoto et al., "A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression"
 * (EMNLP 2024, arXiv:2406.11430), as kvpress's `KnormPress`: a low key norm goes with high
 * attention, so the score is -||k||. No parameters, no attention needed: it observes only the
 * key norms handed to `append` (required). Nothing is protected (kvpress compresses the prompt
 * only; a decode-time caller that wants the newest token kept keeps it itself).
 * Cost per step: O(1) state; `scores` O(n); 4 bytes per token. Thread-safety: none per object.
 */
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kvcache/select/detail/policy_base.hpp"
#include "kvcache/select/selection_policy.hpp"

namespace kvcache {

class key_norm : public detail::policy_base<key_norm> {
 public:
  /// `append` must be given each token's key norm (checked before anything changes).
  static constexpr bool requires_key_norms = true;
  key_norm() = default;
  [[nodiscard]] std::int64_t prefill_queries() const noexcept { return 0; }
  void scores(std::int64_t /*budget*/, std::span<float> out) const {
    for (std::size_t i = 0; i < norm_.size(); ++i) out[i] = -norm_[i];
  }

 private:
  friend class detail::policy_base<key_norm>;
  void on_reset(std::int64_t capacity) {
    norm_.clear();
    norm_.reserve(static_cast<std::size_t>(capacity));
  }
  void on_append(std::int64_t, std::span<const float> key_norms) {
    norm_.insert(norm_.end(), key_norms.begin(), key_norms.end());
  }
  void on_retain(std::span<const std::int64_t> keep) { detail::compact_in_place(norm_, keep); }

  std::vector<float> norm_;
};

static_assert(selection_policy<key_norm>);

}  // namespace kvcache
