// Host side of paged_decode_cuda: argument checks with kvcache::error (shared with the host
// reference), table checks where the tables are host-readable, then the launch
// (cuda/attention/paged_decode.cu).
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>

#include "attention/paged_decode.cuh"
#include "kvcache/attention/detail/decode_checks.hpp"
#include "kvcache/attention/paged_decode.hpp"
#include "kvcache/core/cuda_error.hpp"
#include "kvcache/core/error.hpp"

namespace kvcache {
namespace {

/// Whether the host can read `p` (pinned or pageable memory); device and managed memory: no.
bool host_readable(const void* p, const char* who, const char* what) {
  if (p == nullptr) return false;
  cudaPointerAttributes a{};
  const cudaError_t e = cudaPointerGetAttributes(&a, p);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    KVCACHE_FAIL(errc::cuda_error, "{}: cudaPointerGetAttributes({}) failed: {}", who, what,
                 cudaGetErrorString(e));
  }
  if (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged) return false;
  if (a.type == cudaMemoryTypeHost) return true;
  int dev = 0, pageable = 0;
  KVCACHE_CUDA_TRY(cudaGetDevice(&dev));
  KVCACHE_CUDA_TRY(cudaDeviceGetAttribute(&pageable, cudaDevAttrPageableMemoryAccess, dev));
  KVCACHE_EXPECTS(pageable != 0, errc::invalid_argument,
                  "{}: {} ({}) is pageable host memory, which this device cannot read", who, what,
                  p);
  return true;
}

detail::decode_params base_params(const paged_decode_plan& plan, const paged_decode_args& a,
                                  std::byte* workspace, const char* who) {
  const paged_decode_shape& s = plan.shape;
  KVCACHE_EXPECTS(s.batch == 0 || plan.workspace_bytes == 0 ||
                      (workspace != nullptr && reinterpret_cast<std::uintptr_t>(workspace) % 256 == 0),
                  errc::invalid_argument,
                  "{}: the workspace ({}) must be {} bytes of device memory, 256-byte aligned", who,
                  static_cast<const void*>(workspace), plan.workspace_bytes);
  detail::decode_params p{};
  p.q = a.q;
  p.out = a.out;
  p.lse_out = a.lse;
  p.final_lse = reinterpret_cast<float*>(workspace + plan.final_lse_offset);
  p.part_o = plan.split() ? reinterpret_cast<float*>(workspace + plan.partial_o_offset) : nullptr;
  p.part_lse = plan.split() ? reinterpret_cast<float*>(workspace + plan.partial_lse_offset) : nullptr;
  p.scores = a.mass.data != nullptr ? reinterpret_cast<float*>(workspace + plan.scores_offset) : nullptr;
  p.score_stride = plan.score_stride;
  p.indptr = a.tables.indptr;
  p.indices = a.tables.indices;
  p.last_page_len = a.tables.last_page_len;
  p.page_size = s.page_size;
  p.page_div = detail::fast_divmod32(static_cast<std::uint32_t>(s.page_size));
  p.table_head_stride = s.table_head_stride;
  p.batch = s.batch;
  p.qo_heads = s.num_qo_heads;
  p.kv_heads = s.num_kv_heads;
  p.group = s.num_qo_heads / s.num_kv_heads;
  p.sub = detail::decode_heads_per_block(s);
  p.subgroups = p.group / p.sub;
  p.chunk_tokens = plan.chunk_tokens;
  p.max_chunks = plan.max_chunks;
  p.split = plan.split() ? 1 : 0;
  const float scale = a.sm_scale > 0.0f ? a.sm_scale : 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  p.scale_log2 = scale * 1.4426950408889634f;
  p.q_bf16 = s.q_type == dtype::bf16 ? 1 : 0;
  p.layer = a.layer;
  p.mass = a.mass.data;
  p.mass_seq_stride = a.mass.seq_stride;
  p.mass_head_stride = a.mass.head_stride;
  return p;
}

void check_plan_fits(const paged_decode_plan& plan, const char* who) {
  KVCACHE_EXPECTS(plan.chunk_tokens >= 32 && plan.chunk_tokens % 32 == 0 && plan.max_chunks >= 1,
                  errc::invalid_argument,
                  "{}: the plan's chunk of {} tokens x {} is not a plan_paged_decode result", who,
                  plan.chunk_tokens, plan.max_chunks);
}

void launch(const detail::decode_params& p, detail::decode_format f, int head_dim, stream_view s,
            const char* who) {
  const cudaError_t e =
      detail::launch_paged_decode(p, f, head_dim, static_cast<cudaStream_t>(s.handle()));
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    KVCACHE_FAIL(errc::cuda_error, "{}: launch failed: {} ({})", who, cudaGetErrorName(e),
                 cudaGetErrorString(e));
  }
}

bool tables_readable(const paged_decode_args& a, const char* who) {
  return host_readable(a.tables.indptr, who, "indptr") &&
         host_readable(a.tables.last_page_len, who, "last_page_len") &&
         (a.tables.indices == nullptr || host_readable(a.tables.indices, who, "indices"));
}

/// The kernel that reads `kv`'s format (check_decode_pool rejects the others).
detail::decode_format format_of(const quantized_kv_view& kv) {
  switch (kv.format.key.scheme) {
    case quant_scheme::int8_token: return detail::decode_format::int8;
    case quant_scheme::fp8_e4m3_token: return detail::decode_format::fp8;
    default:
      return kv.format.key.bits == 2 ? detail::decode_format::kivi2 : detail::decode_format::kivi4;
  }
}

}  // namespace

void paged_decode_cuda(const paged_decode_plan& plan, const paged_kv_view& kv,
                       const paged_decode_args& a, std::byte* workspace, stream_view s) {
  constexpr const char* who = "paged_decode_cuda";
  detail::check_decode_shape(plan.shape, true, who);
  check_plan_fits(plan, who);
  detail::check_decode_args(plan, a, who);
  detail::check_decode_pool(plan, kv, a.layer, who);
  if (plan.shape.batch == 0) return;
  if (tables_readable(a, who)) detail::check_decode_tables(plan, a, kv.num_pages, nullptr, who);
  detail::decode_params p = base_params(plan, a, workspace, who);
  p.kv = kv;
  launch(p, kv.type == dtype::bf16 ? detail::decode_format::bf16 : detail::decode_format::f16,
         plan.shape.head_dim, s, who);
}

void paged_decode_cuda(const paged_decode_plan& plan, const quantized_kv_view& kv,
                       const residual_view& r, const paged_decode_args& a, std::byte* workspace,
                       stream_view s) {
  constexpr const char* who = "paged_decode_cuda";
  detail::check_decode_shape(plan.shape, true, who);
  check_plan_fits(plan, who);
  detail::check_decode_args(plan, a, who);
  detail::check_decode_pool(plan, kv, r, a.layer, true, who);
  if (plan.shape.batch == 0) return;
  if (tables_readable(a, who) &&
      (r.quantized_tokens == nullptr ||
       (host_readable(r.quantized_tokens, who, "quantized_tokens") &&
        host_readable(r.staging_page, who, "staging_page")))) {
    detail::check_decode_tables(plan, a, kv.num_pages, &r, who);
  }
  detail::decode_params p = base_params(plan, a, workspace, who);
  p.qdata = kv.data;
  p.q_layer_stride = kv.layer_stride_bytes;
  p.q_v_offset = kv.v_offset_bytes;
  p.q_page_bytes = kv.page_bytes;
  p.q_head_page_bytes = kv.head_page_bytes;
  KVCACHE_EXPECTS(kv.head_page_bytes > 0 && kv.head_page_bytes < (std::int64_t{1} << 31),
                  errc::not_supported,
                  "{}: head pages of {} bytes (the kernels address inside a head page with 32 bits)",
                  who, kv.head_page_bytes);
  p.q_key_meta_offset =
      static_cast<std::int64_t>(kv.format.key.metadata_offset(kv.page_size, kv.head_dim));
  p.q_value_meta_offset =
      static_cast<std::int64_t>(kv.format.value.metadata_offset(kv.page_size, kv.head_dim));
  p.q_num_pages = kv.num_pages;
  p.key_group_shift = 0;  // KIVI key groups are powers of two (checked with the pool)
  while (p.key_group_shift < 30 && (1 << p.key_group_shift) < kv.format.key.group) ++p.key_group_shift;
  p.staging_page = r.staging_page;
  p.quantized_tokens = r.quantized_tokens;
  p.staging = r.staging;
  launch(p, format_of(kv), plan.shape.head_dim, s, who);
}

namespace {
paged_decode_options device_options(detail::decode_format format, std::int32_t head_dim,
                                    paged_decode_options options) {
  constexpr const char* who = "paged_decode_cuda_options";
  KVCACHE_EXPECTS(head_dim == 64 || head_dim == 128, errc::not_supported,
                  "{}: head_dim {} (the GPU kernels take 64 and 128)", who, head_dim);
  int dev = 0;
  int sms = 0;
  KVCACHE_CUDA_TRY(cudaGetDevice(&dev));
  KVCACHE_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  int blocks = 0;
  KVCACHE_CUDA_TRY(detail::decode_blocks_per_sm(format, head_dim, &blocks));
  KVCACHE_EXPECTS(blocks >= 1, errc::cuda_error, "{}: the decode kernel fits no block per SM",
                  who);
  options.sm_count = sms;
  options.ctas_per_sm = blocks;
  // f16 pages at D = 128 (the tensor-core ring kernel) are memory-bound: staggered blocks in
  // about 4 waves beat one wave (H100 at (16, 32k): 739-742 against 750-755 us); the
  // quantized kernels are compute-bound, one wave is their best (more chunks only add work)
  if (format == detail::decode_format::f16 && head_dim == 128) options.min_waves = 4;
  return options;
}
}  // namespace

paged_decode_options paged_decode_cuda_options(const quantized_kv_view& kv,
                                               paged_decode_options options) {
  return device_options(format_of(kv), kv.head_dim, options);
}

paged_decode_options paged_decode_cuda_options(const paged_kv_view& kv,
                                               paged_decode_options options) {
  return device_options(kv.type == dtype::bf16 ? detail::decode_format::bf16 : detail::decode_format::f16,
                        kv.head_dim, options);
}

}  // namespace kvcache
