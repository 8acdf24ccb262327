/**
 * @file kernels.hpp
 * @brief The data movement of the paging layer: `append_kv` (scatter new tokens' K and V into
 * their slots), `gather_kv` (paged to contiguous), `copy_pages` (copy-on-write, defragmentation).
 *
 * Each operation has a host implementation (`*_host`, in kvcache::kvcache, synchronous) and a
 * CUDA one (`*_cuda`, in kvcache::cuda, asynchronous on the given stream) with the same contract;
 * the tests check one against the other. Pointers given to a `*_cuda` call must be device
 * accessible (device or pinned memory; pageable host memory only where the device can read it,
 * else errc::invalid_argument); to a `*_host` call, host accessible. Data pointers must be
 * aligned to the element size, index arrays to theirs.
 * Element types: any whose size is 2 or 4 bytes (f32, f16, bf16); the data is moved, not
 * converted, so results are bit-exact.
 *
 * Index arrays (slots, page tables, copy pairs) that the host can read (pinned memory) are
 * validated on the host before a `*_cuda` launch, with the `*_host` errors; in device memory they
 * cannot be read without a sync, so the kernels skip what is out of range (a slot beyond the pool,
 * a page id outside it, a negative output offset), so they never go outside the pool. A
 * `*_host` call validates everything before it writes: when it throws, nothing changed.
 * Performance (CUDA): 16-byte vectors where rows, pages and pointers allow, one wave of blocks,
 * index math by multiply-high division; figures in docs/performance.md.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kvcache/memory/stream.hpp"
#include "kvcache/paging/paged_kv_view.hpp"

namespace kvcache {

/**
 * @brief Where new tokens go: token i of layer (first_layer + l), kv head h is written to slot
 * `slots[l * layer_stride + h * head_stride + i]`; slot s means page s / page_size, token
 * s % page_size. A negative slot is skipped (padding, as in vLLM).
 *
 * `span_layers`: one mapping for every layer and head (layer_stride = head_stride = 0).
 * `per_layer`: a mapping per layer (head_stride = 0). `per_head`: one per (layer, head); the head
 * lands in its page's only head position.
 */
struct slot_mapping_view {
  const std::int64_t* slots = nullptr;
  std::int64_t layer_stride = 0;
  std::int64_t head_stride = 0;
  std::int32_t num_tokens = 0;
};
static_assert(std::is_trivially_copyable_v<slot_mapping_view>);

/**
 * @brief New keys and values for `num_tokens` tokens in `n_layers` consecutive layers:
 * `[n_layers][num_tokens][kv_heads][head_dim]` contiguous, elements of the pool's dtype.
 */
struct kv_input_view {
  const std::byte* k = nullptr;
  const std::byte* v = nullptr;
  std::int32_t first_layer = 0;
  std::int32_t n_layers = 1;
  std::int32_t num_tokens = 0;
  std::int32_t kv_heads = 0;
};
static_assert(std::is_trivially_copyable_v<kv_input_view>);

/// @brief One page copy: every layer array's K and V of page `src` into page `dst`.
struct page_copy {
  std::int32_t src = 0;
  std::int32_t dst = 0;
};
static_assert(std::is_trivially_copyable_v<page_copy>);

// ---- append_kv ------------------------------------------------------------------------------
/**
 * @brief Scatters K and V of new tokens into their slots.
 * @throws kvcache::error: shape_mismatch (kv_heads or layers disagree with the pool),
 * out_of_range (a slot beyond the pool, naming the slot, token, layer and head), invalid_argument.
 * @note O(tokens x layers x heads x head_dim); synchronous.
 */
void append_kv_host(const paged_kv_view& pool, const kv_input_view& input,
                    const slot_mapping_view& slots);
/**
 * @brief `append_kv_host`'s contract on the GPU, asynchronous on `s`. Shapes are validated before
 * the launch; slots are validated on the host when they are host accessible (pinned), and the
 * kernel never writes outside the pool (an out-of-range slot in device memory is skipped).
 */
void append_kv_cuda(const paged_kv_view& pool, const kv_input_view& input,
                    const slot_mapping_view& slots, stream_view s);

// ---- gather_kv ------------------------------------------------------------------------------
/**
 * @brief Copies the tokens of each table of `tables` (pages of layer `layer`) to contiguous
 * output: table t's token j goes to row `out_offsets[t] + j` of `out_k` / `out_v`, a row being
 * `[heads_per_page][head_dim]` elements (NHD, whatever the pool's order).
 * @throws kvcache::error out_of_range for a page id beyond the pool, a bad last_page_len, a
 * negative out_offsets entry or a `layer` outside the pool; invalid_argument for a decreasing
 * indptr or null pointers; shape_mismatch for the tables' page_size.
 * @note O(tokens gathered); synchronous.
 */
void gather_kv_host(const paged_kv_view& pool, std::int32_t layer, const page_table_view& tables,
                    const std::int64_t* out_offsets, std::byte* out_k, std::byte* out_v);
/**
 * @brief `gather_kv_host`'s contract on the GPU, asynchronous on `s`. The tables may be in device
 * memory: the number of pages is read on the device (no host sync); rows of a page id outside the
 * pool (device-resident tables) are left untouched.
 */
void gather_kv_cuda(const paged_kv_view& pool, std::int32_t layer, const page_table_view& tables,
                    const std::int64_t* out_offsets, std::byte* out_k, std::byte* out_v,
                    stream_view s);

// ---- copy_pages -----------------------------------------------------------------------------
/**
 * @brief Copies whole pages (K and V, every layer array): `pool[copies[i].dst] = pool[copies[i].src]`.
 * Destinations must be distinct and no destination may be a source.
 * @throws kvcache::error out_of_range naming a page id beyond the pool; invalid_argument for a
 * destination written twice or also a source.
 * @note O(pages x page bytes); synchronous.
 */
void copy_pages_host(const paged_kv_view& pool, const page_copy* copies, std::int32_t n);
/**
 * @brief `copy_pages_host`'s contract on the GPU, asynchronous on `s`. Device-resident pairs are
 * not checked for distinct destinations (a violation races); pairs naming a page outside the pool
 * are skipped.
 */
void copy_pages_cuda(const paged_kv_view& pool, const page_copy* copies, std::int32_t n,
                     stream_view s);

// ---- compact_kv -----------------------------------------------------------------------------
/// @brief One row move of a compaction (`paged_kv_store::try_compact`): the K and V rows of slot
/// `src` go to slot `dst` (slot = page * page_size + token in page), in every layer array and
/// every head the page holds.
struct slot_move {
  std::int64_t src = 0;
  std::int64_t dst = 0;
};
static_assert(std::is_trivially_copyable_v<slot_move>);

/**
 * @brief Applies row moves **in order**: `pool[moves[i].dst] = pool[moves[i].src]` (K and V, every
 * layer array, every head of the page). Order matters: a move may read a slot that a later move
 * overwrites (compaction in place: within one table the moves ascend in destination and each
 * destination row precedes its source row, so applying them in order never reads an
 * overwritten row), and the moves of a later table may write into a page an earlier table just
 * freed. Apply pending copy-on-write copies first.
 * @throws kvcache::error out_of_range naming a slot outside the pool (nothing is moved then);
 * invalid_argument for null moves with n > 0 or n < 0.
 * @note O(n x layer arrays x heads per page x row bytes); synchronous.
 */
void compact_kv_host(const paged_kv_view& pool, const slot_move* moves, std::int64_t n);
/**
 * @brief `compact_kv_host`'s contract on the GPU, asynchronous on `s`: the sources are gathered
 * into `scratch` (device memory of at least `compact_kv_scratch_bytes(pool, n)` bytes), then
 * scattered to the destinations. The result equals the in-order host one when no move reads a
 * slot that an earlier move of the same call writes, which holds for the moves of one
 * `try_compact` per table (destinations ascend and every source is at or after its
 * destination); moves of two compactions of one table applied in one call may not hold it (apply
 * each compaction's moves before the next). Moves in device memory are not checked; out-of-range
 * slots are skipped.
 */
void compact_kv_cuda(const paged_kv_view& pool, const slot_move* moves, std::int64_t n,
                     std::byte* scratch, stream_view s);
/// @brief Bytes of scratch `compact_kv_cuda` needs for n moves (K and V rows of every array).
[[nodiscard]] inline std::int64_t compact_kv_scratch_bytes(const paged_kv_view& pool,
                                                           std::int64_t n) noexcept {
  const std::int64_t arrays = pool.layer_stride_bytes != 0 ? pool.layers : 1;
  return 2 * n * arrays * pool.heads_per_page * pool.row_bytes();
}

}  // namespace kvcache
