/**
 * @file top_k.hpp
 * @brief Batched top-k token selection: for many (layer, kv head) tables at once, the rows to
 * keep under each table's budget, on the host (`select_top_k_host`) or the GPU
 * (`select_top_k_cuda`), with the same choices as a policy's `select`.
 *
 * Input: one float buffer of scores and an array of `top_k_segment`, one per table: its `rows`
 * scores start at `scores[seg.scores]` (any layout: contiguous, or strided rows of a
 * `[kv_heads][row_stride]` buffer such as the attention mass of attention_mass.hpp), `+inf` marks
 * a protected token, and the last `protect_recent` rows count as `+inf` whatever their score
 * (H2O's recent window applied to a raw attention-mass buffer, no score copy needed).
 * Output: the k = min(max(budget, 0), rows) kept row indices, **ascending**, at
 * `keep[seg.keep .. seg.keep + k)`: the k highest scores, **ties to the higher row (the more
 * recent token)**, exactly `detail::select_top` (what `policy.select(budget, out)` returns for the
 * same scores). Feed `std::span(keep + seg.keep, k)` to `paged_kv_store::try_compact`.
 * Scores must not be NaN; -0.0 and +0.0 are equal (a tie), as with `==` on the host.
 *
 * Complexity. Host: per table O(n) average (nth_element) + O(k log k); no allocation beyond the
 * scratch vector's growth. GPU: one thread block per table (a grid-stride loop over the tables):
 * a radix select on the 32-bit order-preserving image of the scores, 8 bits per pass, finds the
 * k-th largest score in 4 passes over the table's scores (each a shared-memory histogram with
 * warp-aggregated atomics, the first pass from device memory, later ones mostly from L2), then
 * one ordered pass (a CUB block scan per tile) writes the kept indices ascending and breaks the
 * tie at the threshold by recency. So O(5 n / threads) steps per table, 4 bytes read per score
 * per pass, 8 bytes written per kept row, no global scratch, no host synchronization, no sort.
 * Tables run concurrently up to the GPU's resident blocks; one huge table uses one block only.
 *
 * Errors: a null pointer with tables > 0, a negative count, a negative offset or `rows`/`budget`
 * beyond int64 range is `kvcache::error` (invalid_argument) when the segments are host-readable
 * (the host twin always checks; the CUDA launcher checks segments in pinned or host memory and
 * launches with device-resident segments unchecked, skipping tables with negative fields).
 */
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "kvcache/core/error.hpp"
#include "kvcache/memory/stream.hpp"
#include "kvcache/select/detail/policy_base.hpp"
#include "kvcache/select/top_k_segment.hpp"

namespace kvcache {

namespace detail {
inline void check_top_k_segment(const top_k_segment& s, std::int32_t t, const char* who) {
  KVCACHE_EXPECTS(s.scores >= 0 && s.rows >= 0 && s.rows < (std::int64_t{1} << 31) &&
                      s.keep >= 0 && s.protect_recent >= 0,
                  errc::invalid_argument,
                  "{}: segment {} has scores at {}, {} rows, keep at {}, protect_recent {} "
                  "(all must be >= 0, rows < 2^31)",
                  who, t, s.scores, s.rows, s.keep, s.protect_recent);
}
}  // namespace detail

/**
 * @brief The host twin of `select_top_k_cuda`: for each segment, the kept rows ascending (see
 * the file comment). Host-readable pointers; `order` is scratch (grows to the longest table).
 * @throws kvcache::error invalid_argument (null pointers, negative fields), before any write.
 */
inline void select_top_k_host(const float* scores, const top_k_segment* segments,
                              std::int32_t tables, std::int64_t* keep,
                              std::vector<std::int64_t>& order, std::vector<float>& scratch) {
  constexpr const char* who = "select_top_k_host";
  KVCACHE_EXPECTS(tables >= 0 && (tables == 0 || (segments != nullptr && scores != nullptr &&
                                                   keep != nullptr)),
                  errc::invalid_argument, "{}: {} tables, scores {}, segments {}, keep {}", who,
                  tables, static_cast<const void*>(scores), static_cast<const void*>(segments),
                  static_cast<const void*>(keep));
  for (std::int32_t t = 0; t < tables; ++t) detail::check_top_k_segment(segments[t], t, who);
  for (std::int32_t t = 0; t < tables; ++t) {
    const top_k_segment& s = segments[t];
    const auto n = static_cast<std::size_t>(s.rows);
    scratch.assign(scores + s.scores, scores + s.scores + s.rows);
    const std::size_t protect = static_cast<std::size_t>(std::min(s.protect_recent, s.rows));
    for (std::size_t i = n - protect; i < n; ++i) scratch[i] = detail::protected_score;
    detail::select_top(scratch, kept_rows(s), order,
                       std::span<std::int64_t>(keep + s.keep, static_cast<std::size_t>(kept_rows(s))));
  }
}

/// @brief `select_top_k_host` with its own scratch (allocates).
inline void select_top_k_host(const float* scores, const top_k_segment* segments,
                              std::int32_t tables, std::int64_t* keep) {
  std::vector<std::int64_t> order;
  std::vector<float> scratch;
  select_top_k_host(scores, segments, tables, keep, order, scratch);
}

/**
 * @brief `select_top_k_host`'s contract on the GPU, asynchronous on `s`: `scores`, `segments`
 * and `keep` device-accessible (device or pinned memory). Writes only keep[seg.keep ..
 * seg.keep + k) of each segment. No allocation, no host synchronization.
 * @throws kvcache::error invalid_argument (null pointers; negative fields of host-readable
 * segments); cuda_error when a launch fails.
 */
void select_top_k_cuda(const float* scores, const top_k_segment* segments, std::int32_t tables,
                       std::int64_t* keep, stream_view s);

}  // namespace kvcache
