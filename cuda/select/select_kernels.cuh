// GPU kernels of the select layer: batched top-k (radix select), retain of attention-mass rows,
// and compaction by independent segments. No fmt here (nvcc 13 cannot compile it): argument
// checks live in select_launch.cpp.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kvcache/select/top_k_segment.hpp"
#include "select/compact_kernels.cuh"

namespace kvcache::detail {

/// One block per segment (grid-stride): kept rows of each segment ascending, at keep[seg.keep].
cudaError_t launch_select_top_k(const float* scores, const top_k_segment* segments,
                                std::int32_t tables, std::int64_t* keep, cudaStream_t s);

/// mass[seg.scores + j] = mass[seg.scores + keep[seg.keep + j]] for j < kept_rows(seg), then
/// zeros rows [kept, rows). In place, one block per segment.
cudaError_t launch_retain_rows(float* mass, const top_k_segment* segments, std::int32_t tables,
                               const std::int64_t* keep, cudaStream_t s);

/// compact_kv with moves in independent segments [seg_off[i], seg_off[i + 1]): one block per
/// segment moves its rows in order, a tile at a time (all loads of a tile, a barrier, all stores),
/// so a row is read before any later move of the segment overwrites it. p.scratch is unused.
cudaError_t launch_compact_kv_segments(const compact_params& p, const std::int64_t* seg_off,
                                       std::int32_t segments, cudaStream_t s);

}  // namespace kvcache::detail
