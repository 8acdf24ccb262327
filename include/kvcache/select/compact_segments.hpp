/**
 * @file compact_segments.hpp
 * @brief `compact_kv_segments_cuda`: `compact_kv_host`'s result at the traffic of a plain copy
 * (each moved row read once and written once), for move lists made of independent segments.
 *
 * A **segment** is the moves that one `paged_kv_store::try_compact` call appended (one table):
 * `moves[seg_off[i] .. seg_off[i + 1])`. Within a segment the moves ascend in destination and
 * each destination row precedes its source row, so the only hazard inside a segment is a move
 * overwriting a row that an earlier move of the segment reads (write after read); no move reads
 * a row that an earlier one wrote. One thread block applies a segment in order, a tile of 16-byte
 * words at a time: every load of the tile, a barrier, every store; a row is thus read before any
 * later tile overwrites it, and no scratch is needed (`compact_kv_cuda` gathers every source to
 * scratch first: twice the traffic).
 *
 * **Precondition: the segments are independent**: no slot that one segment writes is read or
 * written by another segment, and no segment reads a slot an earlier move of it wrote. The moves
 * of one `try_compact` call per table hold this when the compacted tables share no page (no fork
 * or prefix-cache sharing among them, so no copy-on-write page was allocated): each segment then
 * moves rows inside its own table's pages. With shared pages a fresh page of one table can be a
 * page another table just freed, so use `compact_kv_cuda` (scratch) there.
 * `compact_segments_independent` checks the precondition on the host (tests, debugging).
 *
 * Segments run concurrently (one block each, a grid-stride loop); cost O(rows moved x row bytes)
 * plus one barrier per 32 KiB tile of a segment.
 */
#pragma once

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

#include "kvcache/memory/stream.hpp"
#include "kvcache/paging/kernels.hpp"

namespace kvcache {

/**
 * @brief Applies `moves` (n of them, in `segments` independent segments given by `seg_off`,
 * `segments + 1` non-decreasing offsets from 0 to n) on the GPU, asynchronously on `s`: the
 * result equals `compact_kv_host(pool, moves, n)` under the file comment's precondition.
 * `moves` and `seg_off` device-accessible; host-readable ones are checked (slots inside the pool,
 * offsets non-decreasing from 0 to n); device-resident ones are not (bad segments and slots are
 * skipped, nothing outside the pool is written).
 * @throws kvcache::error invalid_argument / out_of_range for bad host-readable arguments;
 * cuda_error when a launch fails.
 */
void compact_kv_segments_cuda(const paged_kv_view& pool, const slot_move* moves, std::int64_t n,
                              const std::int64_t* seg_off, std::int32_t segments, stream_view s);

/**
 * @brief Whether the segments are independent (the precondition of `compact_kv_segments_cuda`):
 * no slot written by one segment is read or written by another, and within a segment no move
 * reads a slot that an earlier move wrote. Host pointers. O(n log n), allocates.
 */
inline bool compact_segments_independent(const slot_move* moves, const std::int64_t* seg_off,
                                         std::int32_t segments) {
  // (slot, segment, move index, is write)
  std::vector<std::tuple<std::int64_t, std::int32_t, std::int64_t, bool>> acc;
  for (std::int32_t g = 0; g < segments; ++g) {
    for (std::int64_t i = seg_off[g]; i < seg_off[g + 1]; ++i) {
      acc.emplace_back(moves[i].src, g, i, false);
      acc.emplace_back(moves[i].dst, g, i, true);
    }
  }
  std::sort(acc.begin(), acc.end());
  for (std::size_t a = 0; a < acc.size();) {
    std::size_t b = a;
    int writes = 0;
    while (b < acc.size() && std::get<0>(acc[b]) == std::get<0>(acc[a])) writes += std::get<3>(acc[b++]);
    if (writes > 1) return false;  // a slot written twice
    if (writes == 1) {
      for (std::size_t i = a; i < b; ++i) {
        if (std::get<1>(acc[i]) != std::get<1>(acc[a])) return false;  // two segments
        // a read after a write of this slot (sorted by move index within the segment)
        if (!std::get<3>(acc[i])) {
          for (std::size_t j = a; j < i; ++j) {
            if (std::get<3>(acc[j]) && std::get<2>(acc[j]) < std::get<2>(acc[i])) return false;
          }
        }
      }
    }
    a = b;
  }
  return true;
}

}  // namespace kvcache
