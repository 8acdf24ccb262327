// kvcache-sim's token eviction: per-layer or per-(layer, head) block tables compacted to their
// budgets with the store's try_compact, so evicted tokens come back as free pages.
//
// The simulator moves no data and runs no attention, so what it measures is memory: how many
// tokens each table keeps (the budget policy: uniform, PyramidKV's per-layer pyramid, AdaKV's
// per-head split) and the pages that frees. Which tokens a policy keeps does not change that
// (every policy keeps exactly its budget); the kept rows here are StreamingLLM's (4 sinks + the
// most recent), and kvcache-quality scores which tokens each policy keeps on real attention.
// AdaKV's head split needs each head's attention: the simulator draws a per-head concentration
// at admission and gives adaptive_heads synthetic scores with it (one split per sequence, kept
// for its life, as AdaKV computes its budgets after prefill).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kvcache/paging/paged_kv_store.hpp"
#include "kvcache/select/budget.hpp"

namespace kvsim {

struct evict_options {
  std::string policy = "none";     // streaming | h2o | snapkv | scissorhands | tova | key_norm
  double budget = 0.2;             // < 1: keep ratio of the sequence; >= 1: tokens per table
  std::string budgets = "uniform";  // uniform | pyramid | adaptive
  [[nodiscard]] bool enabled() const { return policy != "none"; }
};

struct evict_stats {
  std::int64_t compactions = 0;  // table compactions
  std::int64_t rows_evicted = 0;
  std::int64_t refused = 0;      // compactions refused for lack of copy-on-write pages
};

template <class Store>
class evictor {
 public:
  static constexpr std::int64_t sinks = 4;

  evictor(const evict_options& e, std::int32_t layers, std::int32_t heads, std::int32_t page_size,
          std::int32_t max_sequences, std::uint64_t seed)
      : o_(e), layers_(layers), heads_(heads), page_size_(page_size), rng_(seed),
        pyramid_(20.0), head_share_(static_cast<std::size_t>(max_sequences) * static_cast<std::size_t>(heads), 1.0),
        layer_out_(static_cast<std::size_t>(layers)), head_out_(static_cast<std::size_t>(heads)),
        sizes_(static_cast<std::size_t>(heads)) {}

  /// A sequence was admitted: draw its heads' attention concentration (adaptive only).
  void admitted(kvcache::seq_id id, std::int64_t length) {
    if (o_.budgets != "adaptive") return;
    // synthetic attention of each head over `n` tokens: Zipf-like with a per-head exponent;
    // adaptive_heads splits a layer's budget by the concatenated scores, and the shares it gives
    // are kept for the sequence's life
    const std::int64_t n = std::max<std::int64_t>(64, std::min<std::int64_t>(length, 4096));
    std::uniform_real_distribution<double> expo(0.3, 1.5);
    scores_.resize(static_cast<std::size_t>(n * heads_));
    std::vector<std::int64_t> sizes(static_cast<std::size_t>(heads_), n);
    for (std::int32_t h = 0; h < heads_; ++h) {
      const double a = expo(rng_);
      for (std::int64_t i = 0; i < n; ++i) {
        scores_[static_cast<std::size_t>(h * n + i)] =
            static_cast<float>(std::pow(static_cast<double>(1 + (i * 7919) % n), -a));
      }
    }
    const std::int64_t total = static_cast<std::int64_t>(std::ceil(0.2 * static_cast<double>(n * heads_)));
    adaptive_.reserve(n * heads_);
    adaptive_.head_budgets(total, sizes, scores_, head_out_);
    for (std::int32_t h = 0; h < heads_; ++h) {
      head_share_[share_index(id, h)] = static_cast<double>(head_out_[static_cast<std::size_t>(h)]) /
                                        static_cast<double>(total);
    }
  }

  /// After a step: compacts every table of `id` holding a page or more beyond its budget (any
  /// excess right after prefill).
  void step(Store& store, kvcache::seq_id id, bool prefilled, evict_stats& st) {
    const std::int64_t len = store.length(id);
    const std::int64_t per_table =
        o_.budget < 1.0 ? static_cast<std::int64_t>(std::ceil(o_.budget * static_cast<double>(len)))
                        : std::min<std::int64_t>(static_cast<std::int64_t>(o_.budget), len);
    const std::int64_t slack = prefilled ? 0 : page_size_;
    // quick exit: the longest table is within budget + slack of the largest share
    std::int64_t longest = 0;
    for (std::int32_t t = 0; t < store.tables_per_sequence(); ++t) longest = std::max(longest, store.table_tokens(id, t));
    if (longest <= per_table + slack && o_.budgets == "uniform") return;
    // layer budgets, then each layer's heads
    const std::int64_t total = per_table * layers_ * heads_;
    if (o_.budgets == "pyramid") {
      pyramid_.layer_budgets(total, len * heads_, layer_out_);
    } else {
      uniform_.layer_budgets(total, len * heads_, layer_out_);
    }
    for (std::int32_t l = 0; l < layers_; ++l) {
      const std::int64_t layer_total = layer_out_[static_cast<std::size_t>(l)];
      if (heads_ == 1) {
        head_out_[0] = layer_total;
      } else {
        for (std::int32_t h = 0; h < heads_; ++h) sizes_[static_cast<std::size_t>(h)] = len;
        if (o_.budgets == "adaptive") {
          // the sequence's shares, apportioned to this layer's total
          std::int64_t given = 0;
          for (std::int32_t h = 0; h < heads_; ++h) {
            const auto b = static_cast<std::int64_t>(std::floor(head_share_[share_index(id, h)] * static_cast<double>(layer_total)));
            head_out_[static_cast<std::size_t>(h)] = std::min(b, len);
            given += head_out_[static_cast<std::size_t>(h)];
          }
          // the units floor() left: one each, round robin, to heads below their cap (the caps sum
          // to at least layer_total, so this ends within layer_total - given rounds)
          for (std::int64_t round = 0; given < layer_total && round <= layer_total; ++round) {
            const auto h = static_cast<std::size_t>(round % heads_);
            if (head_out_[h] < len) ++head_out_[h], ++given;
          }
        } else {
          uniform_.head_budgets(layer_total, sizes_, {}, head_out_);
        }
      }
      for (std::int32_t h = 0; h < heads_; ++h) {
        const std::int32_t t = l * heads_ + h;
        const std::int64_t held = store.table_tokens(id, t);
        const std::int64_t keep_n = std::max<std::int64_t>(1, head_out_[static_cast<std::size_t>(h)]);
        if (held <= keep_n + slack) continue;
        // StreamingLLM's rows: the sinks and the most recent
        keep_.clear();
        const std::int64_t s = std::min(sinks, keep_n);
        for (std::int64_t i = 0; i < s; ++i) keep_.push_back(i);
        for (std::int64_t i = held - (keep_n - s); i < held; ++i) keep_.push_back(i);
        moves_.clear();
        if (store.try_compact(id, t, keep_, moves_)) {
          ++st.compactions;
          st.rows_evicted += held - keep_n;
        } else {
          ++st.refused;
        }
      }
    }
  }

 private:
  [[nodiscard]] std::size_t share_index(kvcache::seq_id id, std::int32_t h) const {
    return static_cast<std::size_t>(id.index) * static_cast<std::size_t>(heads_) + static_cast<std::size_t>(h);
  }

  evict_options o_;
  std::int32_t layers_, heads_, page_size_;
  std::mt19937_64 rng_;
  kvcache::uniform_budget uniform_;
  kvcache::pyramid_budget pyramid_;
  kvcache::adaptive_heads adaptive_;
  std::vector<double> head_share_;
  std::vector<std::int64_t> layer_out_, head_out_, sizes_, keep_;
  std::vector<float> scores_;
  std::vector<kvcache::slot_move> moves_;
};

}  // namespace kvsim
