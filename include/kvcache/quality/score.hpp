/**
 * @file score.hpp
 * @brief `score`: replays a trace's last queries as decode steps and measures how far a
 * compression configuration's attention output is from the full cache's.
 *
 * For each recorded layer, each kv head and each step t in [T - steps, T): the query of every
 * head of the group attends, with scale 1/sqrt(head_dim) and in double precision, to the full
 * cache [0, t] and to what the configuration keeps (`kept_cache`). Per (layer, query head),
 * averaged over the steps:
 * - `rel_l2`: ||o_c - o_f|| / ||o_f||, the relative L2 error of the attention output (and its
 *   maximum over steps, `rel_l2_max`);
 * - `cosine`: the cosine similarity of o_c and o_f;
 * - `recall`: the full cache's softmax mass on the kept positions;
 * - `kv_bytes`: bytes of keys and values the configuration holds for the head's kv head, and
 *   `full_kv_bytes`, the full cache's (fp16);
 * - `recorded_rel_l2`: the full-cache output against the model's recorded output, over the steps
 *   where the trace has it (NaN where it has none): a check of the trace and of the harness,
 *   which is at fp16 precision (about 1e-3) on a sound trace.
 *
 * Complexity: O(layers * q_heads * steps * T * head_dim). Single-threaded, deterministic.
 */
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kvcache/quality/compression.hpp"
#include "kvcache/quality/trace.hpp"

namespace kvcache::quality {

/// @brief What to replay.
struct score_options {
  std::int64_t steps = 64;    ///< the last `steps` queries of the trace; <= T - q_first
  std::vector<int> layers;    ///< model layer numbers to score; empty: every recorded layer
  std::vector<int> kv_heads;  ///< kv heads to score; empty: all
};

/// @brief Metrics of one (layer, query head), or a mean over several (then q_head = kv_head = -1).
struct score_row {
  int layer = -1;              ///< model layer number (-1: mean over layers)
  int q_head = -1;             ///< query head (-1: mean over heads)
  int kv_head = -1;            ///< its kv head (-1: mean over heads)
  double rel_l2 = 0;           ///< mean over steps of ||o_c - o_f|| / ||o_f||
  double rel_l2_max = 0;       ///< max over steps of the same
  double cosine = 0;           ///< mean over steps of cos(o_c, o_f)
  double recall = 0;           ///< mean over steps of the full softmax mass on kept positions
  double kv_bytes = 0;         ///< mean over steps of the K and V bytes held for the kv head
  double full_kv_bytes = 0;    ///< the same for the full fp16 cache
  double recorded_rel_l2 = 0;  ///< full-cache output vs the recorded one (NaN if not recorded)
  std::int64_t steps = 0;      ///< decode steps replayed

  /// @brief kv_bytes / full_kv_bytes.
  [[nodiscard]] double kv_ratio() const noexcept {
    return full_kv_bytes > 0 ? kv_bytes / full_kv_bytes : 0.0;
  }
};

/// @brief All rows of one configuration on one trace.
struct score_result {
  std::string config;            ///< the configuration's name()
  std::string trace;             ///< the trace's source
  std::string text;              ///< the trace's text name (metadata 'text')
  std::vector<score_row> heads;  ///< one row per (layer, query head), layer-major

  /// @brief One row per layer: the mean over its heads (rel_l2_max: the max).
  [[nodiscard]] std::vector<score_row> by_layer() const;
  /// @brief The mean over layers of `by_layer()` (rel_l2_max: the max).
  [[nodiscard]] score_row summary() const;
};

/**
 * @brief Scores `config` on `tr`.
 * @throws kvcache::error errc::out_of_range if `steps` is not in [1, T - q_first] or a layer or
 * kv head is not recorded; errc::logic_error if the configuration returns an invalid
 * `kept_cache` (empty, a position outside [0, t], a repeat, rows of the wrong size).
 */
[[nodiscard]] score_result score(const trace& tr, const compression& config,
                                 const score_options& options = {});

/**
 * @brief Scores several configurations in one replay: the full cache's attention is computed
 * once per step and shared. Returns one result per configuration, in order.
 * @throws kvcache::error as the single-configuration overload; errc::invalid_argument for a
 * null configuration.
 */
[[nodiscard]] std::vector<score_result> score(const trace& tr,
                                              std::span<const compression* const> configs,
                                              const score_options& options = {});

/// @brief The mean of rows (rel_l2_max: the max; layer/heads kept where all rows agree, else -1).
[[nodiscard]] score_row mean_of(const std::vector<score_row>& rows);

}  // namespace kvcache::quality
