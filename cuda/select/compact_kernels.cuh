// compact_kv on the GPU: kernel parameters and the launcher (no fmt here: nvcc 13 cannot compile
// it; argument checks live in compact_launch.cpp).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kvcache/paging/kernels.hpp"

namespace kvcache::detail {

struct compact_params {
  std::byte* pool = nullptr;
  std::int64_t layer_stride = 0;  // bytes between layer arrays (0: one array)
  std::int64_t v_off = 0;
  std::int64_t page_bytes = 0;
  std::int64_t row_bytes = 0;
  std::int64_t slots = 0;  // num_pages * page_size
  std::int32_t page_size = 0;
  std::int32_t heads = 0;  // heads per page
  std::int32_t arrays = 0;
  bool nhd = true;
  const slot_move* moves = nullptr;
  std::int64_t n = 0;
  std::byte* scratch = nullptr;  // [n][arrays][heads][2][row_bytes]
};

/// The pool part of the parameters (moves, n and scratch left to the caller).
inline compact_params compact_params_of(const paged_kv_view& pool) {
  compact_params p;
  p.pool = pool.data;
  p.layer_stride = pool.layer_stride_bytes;
  p.v_off = pool.v_offset_bytes;
  p.page_bytes = pool.page_bytes;
  p.row_bytes = pool.row_bytes();
  p.slots = static_cast<std::int64_t>(pool.num_pages) * pool.page_size;
  p.page_size = pool.page_size;
  p.heads = pool.heads_per_page;
  p.arrays = pool.layer_stride_bytes != 0 ? pool.layers : 1;
  p.nhd = pool.order == kv_order::nhd;
  return p;
}

/// Gathers every source row into scratch, then scatters to the destinations (two launches).
cudaError_t launch_compact_kv(const compact_params& p, cudaStream_t s);

}  // namespace kvcache::detail
