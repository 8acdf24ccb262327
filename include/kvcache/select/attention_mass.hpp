/**
 * @file attention_mass.hpp
 * @brief Scores from the engine: the device buffer through which an attention kernel hands the
 * per-token attention mass to the selection policies, and the calls that move it into them.
 *
 * **Layout** (one buffer per layer, f32, device memory; the same one `paged_decode`'s
 * `attention_mass_view` writes):
 *
 *     mass[b * seq_stride + h * head_stride + r]      b: sequence of the batch, h: kv head,
 *                                                     r: row of table (layer, h) of sequence b
 *
 * with `head_stride >= ` the longest table's rows and `seq_stride >= kv_heads * head_stride`
 * (`[batch][kv_heads][head_stride]`). At each decode step the attention kernel **adds** (`+=`),
 * for every row r, the softmax probability of the row summed over the kv head's query-head group
 * (GQA: `group = q_heads / kv_heads` heads). The row is the table row, i.e. the policy's held
 * index (the cache rows after any compaction), not the token position. Zero the rows before the
 * first step and after each drain; rows past a table's size are not read.
 *
 * **Moving it into the policies**:
 * - host policies (any `selection_policy`): copy the buffer back and call
 *   `observe_attention_mass(policy, row, group, scratch)` per (sequence, kv head): it feeds
 *   `observe(row / group, 1)`, the mean over the group's heads that `observe(probs, group)`
 *   computes (the same up to float rounding order). Drain every step for TOVA and Scissorhands
 *   (they need each step's attention); H2O is linear, so its buffer may accumulate several steps
 *   before one drain.
 * - H2O on the device, no copy back: the buffer **is** H2O's score (its mass, times group). Pass
 *   it straight to `select_top_k_cuda` (top_k.hpp) with `attention_mass_segment(...)` (scores at
 *   b * seq_stride + h * head_stride, `protect_recent` = H2O's recent window); after
 *   `try_compact`, `retain_attention_mass_cuda` moves each table's rows as the cache rows moved
 *   and zeroes the freed rows, so the kernel keeps adding into the right rows. Scaling by
 *   1/group does not change the order, so the choices are `h2o::select`'s (for a power-of-two
 *   group exactly; otherwise up to rounding ties).
 *
 * Costs: observe O(group-mean of one row: n) per table on the host; device select as in
 * top_k.hpp; retain O(rows) per table, one block per table.
 */
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "kvcache/core/error.hpp"
#include "kvcache/memory/stream.hpp"
#include "kvcache/select/detail/policy_base.hpp"
#include "kvcache/select/selection_policy.hpp"
#include "kvcache/select/top_k_segment.hpp"

namespace kvcache {

/**
 * @brief Feeds one (sequence, kv head) row of a host copy of the mass buffer to its policy:
 * `policy.observe(row[0 .. size()) / group, 1)`. `row` = &mass[b * seq_stride + h * head_stride],
 * at least policy.size() values. `scratch` grows to the largest table.
 * @throws kvcache::error shape_mismatch when row is shorter than the policy; invalid_argument for
 * group < 1.
 */
template <selection_policy P>
void observe_attention_mass(P& policy, std::span<const float> row, std::int32_t group,
                            std::vector<float>& scratch) {
  const std::int64_t n = policy.size();
  KVCACHE_EXPECTS(group >= 1, errc::invalid_argument, "observe_attention_mass: group {} < 1", group);
  KVCACHE_EXPECTS(row.size() >= static_cast<std::size_t>(n), errc::shape_mismatch,
                  "observe_attention_mass: a row of {} values for {} held tokens", row.size(), n);
  scratch.resize(static_cast<std::size_t>(n));
  const float g = static_cast<float>(group);
  for (std::size_t i = 0; i < scratch.size(); ++i) scratch[i] = row[i] / g;
  policy.observe(std::span<const float>(scratch), 1);
}

/**
 * @brief The top-k segment of table (b, h) over the mass buffer: scores at b * seq_stride +
 * h * head_stride, `rows` held rows, `budget`, kept indices written at `keep_offset`, and H2O's
 * recent window floor(recent_ratio x budget) protected (0 for a plain top mass).
 */
[[nodiscard]] inline top_k_segment attention_mass_segment(std::int64_t b, std::int64_t h,
                                                          std::int64_t seq_stride,
                                                          std::int64_t head_stride,
                                                          std::int64_t rows, std::int64_t budget,
                                                          std::int64_t keep_offset,
                                                          double recent_ratio = 0.0) {
  top_k_segment s;
  s.scores = b * seq_stride + h * head_stride;
  s.rows = rows;
  s.budget = budget;
  s.keep = keep_offset;
  s.protect_recent = static_cast<std::int64_t>(std::floor(recent_ratio * static_cast<double>(budget)));
  return s;
}

/**
 * @brief After a compaction: in each segment's rows (mass[seg.scores ..]), row j takes row
 * keep[seg.keep + j] for j < kept_rows(seg) (keep ascending, as select_top_k wrote it), and rows
 * [kept_rows(seg), seg.rows) become 0. Host memory. O(rows) per segment.
 * @throws kvcache::error invalid_argument for negative fields or keep not strictly ascending
 * within [0, rows), before any write.
 */
inline void retain_attention_mass_host(float* mass, const top_k_segment* segments,
                                       std::int32_t tables, const std::int64_t* keep) {
  for (std::int32_t t = 0; t < tables; ++t) {
    const top_k_segment& s = segments[t];
    KVCACHE_EXPECTS(s.scores >= 0 && s.rows >= 0 && s.keep >= 0, errc::invalid_argument,
                    "retain_attention_mass_host: segment {} has scores at {}, {} rows, keep at {}",
                    t, s.scores, s.rows, s.keep);
    const std::int64_t k = kept_rows(s);
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t r = keep[s.keep + j];
      KVCACHE_EXPECTS(r >= j && r < s.rows && (j == 0 || r > keep[s.keep + j - 1]),
                      errc::invalid_argument,
                      "retain_attention_mass_host: segment {} keep[{}] = {} is outside [0, {}) or "
                      "not ascending",
                      t, j, r, s.rows);
    }
  }
  for (std::int32_t t = 0; t < tables; ++t) {
    const top_k_segment& s = segments[t];
    float* m = mass + s.scores;
    const std::int64_t k = kept_rows(s);
    for (std::int64_t j = 0; j < k; ++j) m[j] = m[keep[s.keep + j]];
    for (std::int64_t j = k; j < s.rows; ++j) m[j] = 0.0f;
  }
}

/**
 * @brief `retain_attention_mass_host`'s contract on the GPU, asynchronous on `s` (device-
 * accessible pointers; host-readable segments and keep are checked as on the host).
 */
void retain_attention_mass_cuda(float* mass, const top_k_segment* segments, std::int32_t tables,
                                const std::int64_t* keep, stream_view s);

}  // namespace kvcache
