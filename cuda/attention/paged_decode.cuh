// Launcher of the paged decode kernels (cuda/attention/paged_decode.cu), called by
// cuda/attention/paged_decode_launch.cpp, which validates everything and turns errors into
// kvcache::error (the .cu includes neither error.hpp nor fmt: nvcc cannot compile fmt).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kvcache/paging/paged_kv_view.hpp"
#include "paging/fast_divmod.cuh"

namespace kvcache::detail {

/// What the kernels read: the page format of a call.
enum class decode_format : int { f16 = 0, bf16 = 1, int8 = 2, fp8 = 3, kivi2 = 4, kivi4 = 5 };

/// Everything one call's kernels take (validated by the caller). Passed by value.
struct decode_params {
  const void* q;
  void* out;
  float* lse_out;     // optional, natural log
  float* final_lse;   // workspace [batch][qo], log2 domain
  float* part_o;      // workspace [chunks][batch][qo][D] (split)
  float* part_lse;    // workspace [chunks][batch][qo] (split)
  float* scores;      // workspace [batch][qo][score_stride] (mass) or null
  std::int64_t score_stride;
  const std::int32_t* indptr;
  const std::int32_t* indices;
  const std::int32_t* last_page_len;
  std::int32_t page_size;
  fast_divmod32 page_div;  // n / page_size (tokens < 2^31)
  std::int32_t table_head_stride;
  std::int32_t batch, qo_heads, kv_heads, group, sub, subgroups;
  std::int32_t chunk_tokens, max_chunks, split;
  float scale_log2;  // sm_scale * log2(e)
  std::int32_t q_bf16;
  std::int32_t layer;
  paged_kv_view kv;  // f16 / bf16 pages
  // quantized pages
  const std::byte* qdata;
  std::int64_t q_layer_stride, q_v_offset, q_page_bytes, q_head_page_bytes;
  std::int64_t q_key_meta_offset, q_value_meta_offset;
  std::int32_t q_num_pages, key_group_shift;  // KIVI key group = 2^key_group_shift tokens
  const std::int32_t* staging_page;
  const std::int32_t* quantized_tokens;
  paged_kv_view staging;
  // attention mass
  float* mass;
  std::int64_t mass_seq_stride, mass_head_stride;
};

/// Enqueues the decode kernel, the split merge (p.split) and the mass kernel (p.mass) on
/// `stream`. head_dim 64 or 128. Returns the first launch error.
cudaError_t launch_paged_decode(const decode_params& p, decode_format format, int head_dim,
                                cudaStream_t stream);

/// Blocks of the kernel that reads pages of `format` that fit one multiprocessor of the current
/// device (cudaOccupancyMaxActiveBlocksPerMultiprocessor; cached per format and head dim).
cudaError_t decode_blocks_per_sm(decode_format format, int head_dim, int* blocks);

}  // namespace kvcache::detail
