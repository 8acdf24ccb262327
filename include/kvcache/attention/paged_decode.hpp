/**
 * @file paged_decode.hpp
 * @brief `paged_decode`: the library's decode attention (one new query token per sequence) over
 * paged K/V, full precision (f16, bf16) or quantized (int8, fp8 E4M3, KIVI-2/4 with its f16
 * residual window), with GQA, split-KV (flash-decoding) and an optional attention-mass output.
 *
 * Plan, then run (as FlashInfer's decode wrapper): `plan_paged_decode` looks at the batch's
 * host-readable page tables once per step (all layers share it), picks the split-KV chunk so that
 * one long sequence still fills the GPU, and sizes the workspace; `paged_decode_cuda` only
 * launches (no allocation, no host sync). `paged_decode_host` is the reference (fp32
 * accumulation, exact softmax) with the same contract.
 *
 * Shapes. `batch` sequences; query and output `[batch][num_qo_heads][head_dim]` (f16 or bf16);
 * `num_qo_heads` a multiple of `num_kv_heads` (GQA: query head `qh` reads kv head
 * `qh / (num_qo_heads / num_kv_heads)`). The K/V of sequence b and kv head h are the tokens of
 * CSR table `h * table_head_stride + b` of `args.tables` (paged_kv_view.hpp): with one table per
 * sequence for all heads (`span_layers`, or one layer's tables under `per_layer`: pass
 * `tables` starting at that layer's first table) `table_head_stride` is 0 and head h is head h of
 * each page; under `per_head` (one table per (layer, kv head), pages of one head) it is the
 * number of tables per head in the view (the batch size for the batch builder's table-major CSR,
 * starting at the layer's first table) and every page holds its table's head only.
 *
 * Quantized pages (`quantized_kv_view`, quant/quantized_pool.hpp): a table of L tokens has its
 * first q tokens in the quantized pages and, for KIVI, the last L - q (< the staging page size)
 * as f16 rows in its staging page (`residual_view`); positions >= q of the quantized pages are
 * never read. Decoded values are the quantizer's (quant/detail/codec.hpp): int8 / fp8 E4M3
 * elements are code x scale in f32 (the host reference uses them as they are; the CUDA kernel
 * multiplies the exact key dot products by the key scale and uses the values rounded to f16);
 * KIVI elements are the f16 values `dequantize_pages_host` writes (the CUDA kernel decodes the
 * same f16 bits, up to rare one-ulp double-rounding cases), then used as f16 pages are.
 *
 * Attention mass (optional): for every token of every table, the softmax probability summed over
 * the query heads of its kv-head group, added (`+=`) to `mass.data[b * mass.seq_stride +
 * h * mass.head_stride + pos]` (b: sequence, h: kv head, pos: token position in the table): one
 * `[batch][kv_heads][>= max tokens]` f32 buffer per layer is the natural layout (seq_stride =
 * kv_heads * head_stride). Summed over positions it is the group size for every (b, h) with at
 * least one token (what H2O-style eviction policies accumulate).
 *
 * Errors: bad input (head counts that do not divide, a head dim or dtype the call does not take,
 * a pool or format that does not match, out-of-range page ids, lengths or staging pages in
 * host-readable tables, a plan made for another shape) throws `kvcache::error` naming the value,
 * before any kernel launch. Device-resident tables cannot be checked without a sync: the kernels
 * then skip pages outside the pool (their rows read as zeros) and never read outside it.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kvcache/core/dtype.hpp"
#include "kvcache/memory/stream.hpp"
#include "kvcache/paging/paged_kv_view.hpp"
#include "kvcache/quant/quantized_pool.hpp"

namespace kvcache {

/// @brief The shape a plan is made for and a run must have.
struct paged_decode_shape {
  std::int32_t batch = 0;             ///< sequences (one query token each)
  std::int32_t num_qo_heads = 0;      ///< query (and output) heads
  std::int32_t num_kv_heads = 0;      ///< kv heads; divides num_qo_heads
  std::int32_t head_dim = 0;          ///< 64 or 128 on the GPU; a multiple of 8 up to 256 on the host
  std::int32_t page_size = 0;         ///< tokens per page of the tables
  std::int32_t table_head_stride = 0; ///< 0: one table per sequence; else table of (b, h) = h * stride + b
  dtype q_type = dtype::f16;          ///< query and output element type: f16 or bf16
  friend constexpr bool operator==(const paged_decode_shape&, const paged_decode_shape&) = default;
};
static_assert(std::is_trivially_copyable_v<paged_decode_shape>);

/// @brief Plan options.
struct paged_decode_options {
  bool attention_mass = false;      ///< reserve the workspace for the attention-mass output
  std::int32_t sm_count = 132;      ///< multiprocessors of the device (H100 SXM: 132)
  std::int32_t ctas_per_sm = 4;     ///< resident blocks per multiprocessor the split aims at
  std::int32_t min_chunk_tokens = 256;  ///< smallest split chunk (a multiple of 32)
  /// a batch under one wave is split into chunks that fill about this many waves (>= 1), but
  /// none shorter than wave_chunk_tokens (nor than the one-wave chunk): a memory-bound kernel
  /// gains from blocks that start and end staggered (f16 pages on the H100: (16, 32k) 737-742
  /// us in 4 waves of 4096-token chunks, 750-756 in one wave), not from short chunks ((1, 128k)
  /// in 4 waves of 1024 tokens: 241 us, one wave of 4000: 209)
  std::int32_t min_waves = 1;
  std::int32_t wave_chunk_tokens = 4096;  ///< shortest chunk of a min_waves split (a multiple of 32)
  std::int32_t force_chunk_tokens = 0;  ///< tests: this chunk (a multiple of 32) instead of the heuristic
};

/**
 * @brief What `plan_paged_decode` decided. Plain data; reuse it for every layer of the step
 * (and for later steps while the shape and the chunking still fit: see `max_tokens`).
 */
struct paged_decode_plan {
  paged_decode_shape shape;
  std::int32_t num_tables = 0;       ///< tables the run's view must hold at least
  std::int32_t chunk_tokens = 0;     ///< tokens per split chunk (a multiple of 32)
  std::int32_t max_chunks = 1;       ///< chunks of the longest table (1: no split, no merge)
  std::int64_t max_tokens = 0;       ///< longest table at plan time (the mass score rows' length)
  bool attention_mass = false;       ///< the workspace holds the attention-mass scores
  std::size_t partial_o_offset = 0;  ///< workspace: split partial outputs, f32
  std::size_t partial_lse_offset = 0;///< workspace: split partial log2-sum-exp, f32
  std::size_t final_lse_offset = 0;  ///< workspace: final log2-sum-exp per (b, qo head), f32
  std::size_t scores_offset = 0;     ///< workspace: mass scores [batch][qo heads][score_stride]
  std::int64_t score_stride = 0;     ///< f32 per (b, qo head) score row
  std::size_t workspace_bytes = 0;   ///< device workspace `paged_decode_cuda` needs (256-aligned)
  [[nodiscard]] bool split() const noexcept { return max_chunks > 1; }
};

/**
 * @brief The KIVI residual window: per table (same index as the CSR tables), the tokens held in
 * the quantized pages (`quantized_tokens[t]`, a multiple of 32) and the staging page
 * (`staging_page[t]`) of `staging`, an f16 `page_pool` (HND or NHD, page_size >= the window),
 * holding the table's tokens [q, L) as rows 0..L-q-1 of head `h` (0 under per_head). Null arrays:
 * every token is in the quantized pages.
 */
struct residual_view {
  const std::int32_t* staging_page = nullptr;      ///< [tables] staging page id
  const std::int32_t* quantized_tokens = nullptr;  ///< [tables] q
  paged_kv_view staging;                           ///< the staging pool (f16)
};
static_assert(std::is_trivially_copyable_v<residual_view>);

/// @brief Where the attention mass is added; `data == nullptr`: no mass output.
struct attention_mass_view {
  float* data = nullptr;
  std::int64_t seq_stride = 0;   ///< f32 from sequence b to b + 1
  std::int64_t head_stride = 0;  ///< f32 from kv head h to h + 1
};
static_assert(std::is_trivially_copyable_v<attention_mass_view>);

/// @brief One call's inputs and outputs (one layer).
struct paged_decode_args {
  const void* q = nullptr;   ///< [batch][num_qo_heads][head_dim], shape.q_type
  void* out = nullptr;       ///< [batch][num_qo_heads][head_dim], shape.q_type
  float* lse = nullptr;      ///< optional [batch][num_qo_heads]: natural log-sum-exp of the scaled scores (-inf for an empty table)
  page_table_view tables;    ///< CSR tables (see the file comment)
  std::int32_t layer = 0;    ///< the layer of the pool(s) to read
  float sm_scale = 0.0f;     ///< score scale; 0: 1 / sqrt(head_dim)
  attention_mass_view mass;  ///< optional (needs a plan with attention_mass)
};
static_assert(std::is_trivially_copyable_v<paged_decode_args>);

/**
 * @brief Plans a batch: reads the table lengths of `host_tables` (host-readable `indptr` and
 * `last_page_len`), chooses the split-KV chunk and sizes the workspace.
 * @throws kvcache::error invalid_argument / not_supported / out_of_range naming the value.
 * @note O(tables). Host only; no allocation beyond the return value.
 */
[[nodiscard]] paged_decode_plan plan_paged_decode(const paged_decode_shape& shape,
                                                  const page_table_view& host_tables,
                                                  const paged_decode_options& options = {});

/**
 * @brief Host reference over f16 / bf16 pages: exact softmax in fp32 (scores and accumulation in
 * f32, exp in f32). Same contract as `paged_decode_cuda`; all pointers host-readable.
 * Empty tables give zero output and lse -inf. Synchronous.
 */
void paged_decode_host(const paged_decode_plan& plan, const paged_kv_view& kv,
                       const paged_decode_args& args);
/// @brief Host reference over quantized pages (int8 / fp8: code x scale in f32; KIVI: the f16
/// values of `dequantize_pages_host`).
void paged_decode_host(const paged_decode_plan& plan, const quantized_kv_view& kv,
                       const residual_view& residual, const paged_decode_args& args);

/**
 * @brief Decode attention on the GPU over f16 / bf16 pages, asynchronous on `s`.
 * @param workspace device memory of `plan.workspace_bytes` (256-byte aligned); not used by
 * anything else until the call's kernels have run.
 * @throws kvcache::error (see the file comment); cuda_error.
 * @note Needs kvcache::cuda. Head dims 64 and 128, f16 or bf16 queries; f16
 * or bf16 pages (either with either query type). No allocation, no host sync.
 */
void paged_decode_cuda(const paged_decode_plan& plan, const paged_kv_view& kv,
                       const paged_decode_args& args, std::byte* workspace, stream_view s);
/**
 * @brief Decode attention on the GPU over quantized pages with fused dequantization: int8, fp8
 * E4M3 (per token), KIVI-2 / KIVI-4 (keys per channel with groups of 32, 64 or 128 tokens,
 * values per token with groups of 32 channels; page_size a multiple of 32) plus its residual.
 * Queries f16 or bf16 (bf16 queries are multiplied with the f16-decoded values in f32).
 */
void paged_decode_cuda(const paged_decode_plan& plan, const quantized_kv_view& kv,
                       const residual_view& residual, const paged_decode_args& args,
                       std::byte* workspace, stream_view s);

/**
 * @brief Plan options for `paged_decode_cuda` over pages like `kv` on the current device:
 * `options` with `sm_count` set to the device's multiprocessors and `ctas_per_sm` to the number
 * of blocks of the kernel that reads `kv`'s format that fit one multiprocessor (its real
 * occupancy, cudaOccupancyMaxActiveBlocksPerMultiprocessor, cached per format and head dim), so
 * that the split-KV chunk of `plan_paged_decode` fills whole waves, and `min_waves` to 4 for f16
 * pages of head dim 128 (the memory-bound tensor-core kernel; others keep `options.min_waves`).
 * (The default options assume 132 x 4 and one wave; the plan is correct with any options, only
 * the split's fit changes.)
 * @throws kvcache::error not_supported (head dim other than 64 / 128); cuda_error.
 * @note Needs kvcache::cuda. Host only; no allocation, no sync.
 */
[[nodiscard]] paged_decode_options paged_decode_cuda_options(const quantized_kv_view& kv,
                                                             paged_decode_options options = {});
/// @brief The same for f16 / bf16 pages like `kv`.
[[nodiscard]] paged_decode_options paged_decode_cuda_options(const paged_kv_view& kv,
                                                             paged_decode_options options = {});

}  // namespace kvcache
