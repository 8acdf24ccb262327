/**
 * @file streaming_llm.hpp
 * @brief `streaming_llm`: the first `sinks` tokens (attention sinks) and the most recent ones.
 *
 * Xiao et al., "Efficient Streaming Language Models with Attention Sinks" (ICLR 2024,
 * arXiv:2309.17453): keeping the KV of the first 4 tokens ("4 initial tokens are enough") plus
 * a rolling window of recent tokens lets a model run past its training length; the default of
 * 4 sinks is the paper's. Observes nothing but positions.
 * Scores: +inf for a sink, else the position (more recent: higher). Cost per step: O(1) state;
 * `scores` O(n). Thread-safety: none per object.
 */
#pragma once

#include <cstdint>
#include <span>

#include "kvcache/select/detail/policy_base.hpp"
#include "kvcache/select/selection_policy.hpp"

namespace kvcache {

class streaming_llm : public detail::policy_base<streaming_llm> {
 public:
  /// @param sinks initial tokens always kept (default 4, as in the paper).
  explicit streaming_llm(std::int64_t sinks = 4) : sinks_(sinks) {
    KVCACHE_EXPECTS(sinks >= 0, errc::invalid_argument, "streaming_llm: {} sinks", sinks);
  }
  [[nodiscard]] std::int64_t sinks() const noexcept { return sinks_; }
  [[nodiscard]] std::int64_t prefill_queries() const noexcept { return 0; }
  void scores(std::int64_t /*budget*/, std::span<float> out) const {
    const auto pos = positions();
    for (std::size_t i = 0; i < pos.size(); ++i) {
      out[i] = pos[i] < sinks_ ? detail::protected_score : static_cast<float>(pos[i]);
    }
  }

 private:
  std::int64_t sinks_;
};

static_assert(selection_policy<streaming_llm>);

}  // namespace kvcache
