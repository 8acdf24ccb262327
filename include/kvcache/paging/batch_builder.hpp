/**
 * @file batch_builder.hpp
 * @brief `batch_builder`: the per-step bridge from the store to the kernels. It reserves slots
 * for a batch, then builds the vLLM-style slot mapping and FlashInfer-style CSR page tables in
 * pinned host memory and uploads them to the device in one copy.
 */
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

#include "kvcache/memory/buffer.hpp"
#include "kvcache/memory/copy.hpp"
#include "kvcache/paging/kernels.hpp"
#include "kvcache/paging/paged_kv_store.hpp"

namespace kvcache {

/**
 * @brief What one step's kernels take; pointers are device-accessible for a `cuda_space` store
 * and host pointers otherwise. Valid until the next `finalize` or `clear`.
 */
struct batch_view {
  /// Slots of the new tokens, `[table][num_tokens]`: table t of the geometry, then the batch's
  /// tokens in batch order (the tokens of sequence b start at `token_offsets[b]`).
  slot_mapping_view slots;
  /// Table-major CSR: table t of batch sequence b is CSR entry `t * batch_size + b`, so the
  /// tables of one layer (per_layer) or one (layer, head) (per_head) are contiguous.
  page_table_view tables;
  const std::int64_t* token_offsets = nullptr;  ///< [batch_size + 1] prefix sums of new tokens
  std::int32_t batch_size = 0;
  std::int64_t num_tokens = 0;
  std::int32_t copies_applied = 0;  ///< copy-on-write page copies that finalize enqueued

  /// @brief The slot mapping for an `append_kv` call whose input starts at `first_layer`
  /// (`kv_input_view::first_layer`): `slots` indexes layers relative to the call's first layer.
  [[nodiscard]] slot_mapping_view slots_from_layer(std::int32_t first_layer) const noexcept {
    slot_mapping_view v = slots;
    v.slots += first_layer * slots.layer_stride;
    return v;
  }
};

/**
 * @brief Builds a step's batch for a `paged_kv_store`.
 *
 * Use: `clear()`, then `try_add(seq, new_tokens)` for each scheduled sequence (false: the pool is
 * short and nothing changed, so preempt or wait), then `finalize(stream)`. `finalize` applies
 * pending copy-on-write copies (before any new K/V are written on that stream), and returns the
 * views for `append_kv` and attention.
 * @note One upload (`cudaMemcpyAsync` from pinned memory) per finalize; `finalize` waits for the
 * previous step's upload before reusing the pinned staging (normally long done). The staging
 * grows (rarely) only when a batch needs more than every earlier one. Not thread-safe.
 */
template <class Store>
class batch_builder {
 public:
  using space_type = typename Store::space_type;
  static constexpr bool on_device = !space_type::host_accessible;
  using staging_space = std::conditional_t<on_device, pinned_host_space, host_space>;

  explicit batch_builder(Store& store, std::int32_t max_batch = 256,
                         std::int64_t max_tokens = 8192)
      : store_(&store), in_batch_(static_cast<std::size_t>(store.max_sequences()), 0) {
    seqs_.reserve(static_cast<std::size_t>(max_batch));
    old_len_.reserve(static_cast<std::size_t>(max_batch));
    new_tokens_.reserve(static_cast<std::size_t>(max_batch));
    (void)max_tokens;
  }

  /// @brief Starts a new batch (no effect on the store).
  void clear() noexcept {
    if (++stamp_ == 0) {  // wrapped: forget every old mark
      std::fill(in_batch_.begin(), in_batch_.end(), 0u);
      stamp_ = 1;
    }
    seqs_.clear();
    old_len_.clear();
    new_tokens_.clear();
  }

  /// @brief Reserves `new_tokens` slots for `id` and adds it to the batch; false (nothing
  /// changed) when the pool is short. Each sequence at most once per batch.
  /// @throws kvcache::error unknown_id; invalid_argument when `id` is already in the batch.
  [[nodiscard]] bool try_add(seq_id id, std::int64_t new_tokens) {
    const std::int64_t old = store_->length(id);  // validates id (unknown_id)
    KVCACHE_EXPECTS(in_batch_[id.index] != stamp_, errc::invalid_argument,
                    "batch_builder: sequence {} is already in the batch", id.index);
    if (!store_->try_append(id, new_tokens)) return false;
    in_batch_[id.index] = stamp_;
    seqs_.push_back(id);
    old_len_.push_back(old);
    new_tokens_.push_back(new_tokens);
    return true;
  }

  [[nodiscard]] std::int32_t size() const noexcept { return static_cast<std::int32_t>(seqs_.size()); }
  [[nodiscard]] std::span<const seq_id> sequences() const noexcept { return seqs_; }

  /**
   * @brief Builds the slot mapping and page tables of the batch, applies pending copy-on-write
   * copies, uploads (device stores) and returns the views.
   * @note O(tables x pages of the batch + new tokens). Asynchronous on `s` for device stores.
   */
  const batch_view& finalize(stream_view s = {}) {
    const auto T = store_->tables_per_sequence();
    const auto B = static_cast<std::int32_t>(seqs_.size());
    std::int64_t N = 0;
    for (auto n : new_tokens_) N += n;
    std::int64_t total_pages = 0;
    for (std::int32_t b = 0; b < B; ++b)
      for (std::int32_t t = 0; t < T; ++t) total_pages += store_->table_pages(seqs_[b], t);
    const auto copies = store_->pending_copies();

    // Byte layout of the staging (8-byte aligned regions).
    auto align8 = [](std::size_t x) { return (x + 7) & ~std::size_t{7}; };
    const std::size_t n_tables = static_cast<std::size_t>(T) * static_cast<std::size_t>(B);
    const std::size_t off_indptr = 0;
    const std::size_t off_last = align8(off_indptr + 4 * (n_tables + 1));
    const std::size_t off_indices = align8(off_last + 4 * n_tables);
    const std::size_t off_tokoff = align8(off_indices + 4 * static_cast<std::size_t>(total_pages));
    const std::size_t off_slots = off_tokoff + 8 * (static_cast<std::size_t>(B) + 1);
    const std::size_t off_copies = off_slots + 8 * static_cast<std::size_t>(N) * static_cast<std::size_t>(T);
    const std::size_t bytes = off_copies + sizeof(page_copy) * copies.size();
    reserve(bytes);
    std::byte* h = staging_.data();
    auto* indptr = reinterpret_cast<std::int32_t*>(h + off_indptr);
    auto* last = reinterpret_cast<std::int32_t*>(h + off_last);
    auto* indices = reinterpret_cast<std::int32_t*>(h + off_indices);
    auto* tokoff = reinterpret_cast<std::int64_t*>(h + off_tokoff);
    auto* slots = reinterpret_cast<std::int64_t*>(h + off_slots);
    auto* cps = reinterpret_cast<page_copy*>(h + off_copies);

    const std::int32_t ps = store_->layout().page_size;
    tokoff[0] = 0;
    for (std::int32_t b = 0; b < B; ++b) tokoff[b + 1] = tokoff[b] + new_tokens_[static_cast<std::size_t>(b)];
    std::int32_t k = 0;
    indptr[0] = 0;
    for (std::int32_t t = 0; t < T; ++t) {
      for (std::int32_t b = 0; b < B; ++b) {
        const seq_id id = seqs_[static_cast<std::size_t>(b)];
        store_->for_each_page(id, t, [&](page_id p) { indices[k++] = p; });
        const std::size_t e = static_cast<std::size_t>(t) * B + b;
        indptr[e + 1] = k;
        const std::int64_t toks = store_->table_tokens(id, t);
        last[e] = toks == 0 ? 0 : static_cast<std::int32_t>((toks - 1) % ps + 1);
        const std::int64_t n = new_tokens_[static_cast<std::size_t>(b)];
        // From the table's own row count: a compacted table (try_compact) holds fewer rows.
        store_->slots(id, t, toks - n, n,
                      std::span<std::int64_t>(slots + t * N + tokoff[b], static_cast<std::size_t>(n)));
      }
    }
    std::copy(copies.begin(), copies.end(), cps);

    const std::byte* base = h;
    if constexpr (on_device) {
      copy(device_.view().subview(0, bytes), staging_.view().subview(0, bytes), s);
      upload_done_.record(s);
      upload_pending_ = true;
      base = device_.data();
    }
    view_.tables.indptr = reinterpret_cast<const std::int32_t*>(base + off_indptr);
    view_.tables.last_page_len = reinterpret_cast<const std::int32_t*>(base + off_last);
    view_.tables.indices = reinterpret_cast<const std::int32_t*>(base + off_indices);
    view_.tables.num_tables = static_cast<std::int32_t>(n_tables);
    view_.tables.page_size = ps;
    view_.token_offsets = reinterpret_cast<const std::int64_t*>(base + off_tokoff);
    view_.slots.slots = reinterpret_cast<const std::int64_t*>(base + off_slots);
    view_.slots.num_tokens = static_cast<std::int32_t>(N);
    using G = typename Store::geometry_type;
    if constexpr (std::is_same_v<G, span_layers>) {
      view_.slots.layer_stride = 0;
      view_.slots.head_stride = 0;
    } else if constexpr (std::is_same_v<G, per_layer>) {
      view_.slots.layer_stride = N;
      view_.slots.head_stride = 0;
    } else {
      view_.slots.layer_stride = N * store_->layout().kv_heads;
      view_.slots.head_stride = N;
    }
    view_.batch_size = B;
    view_.num_tokens = N;
    view_.copies_applied = static_cast<std::int32_t>(copies.size());
    if (!copies.empty()) {
      const auto* dcps = reinterpret_cast<const page_copy*>(base + off_copies);
      if constexpr (on_device) {
        copy_pages_cuda(store_->pool().copy_view(), dcps, static_cast<std::int32_t>(copies.size()), s);
      } else {
        copy_pages_host(store_->pool().copy_view(), dcps, static_cast<std::int32_t>(copies.size()));
      }
      store_->clear_pending_copies();
    }
    return view_;
  }

 private:
  void reserve(std::size_t bytes) {
    if constexpr (on_device) {
      if (upload_pending_) {  // the previous upload still reads the staging
        upload_done_.synchronize();
        upload_pending_ = false;
      }
    }
    if (staging_.size() >= bytes) return;
    const std::size_t cap = std::max<std::size_t>(bytes + bytes / 2, 64 * 1024);
    staging_ = buffer<std::byte, staging_space>(cap);
    if constexpr (on_device) device_ = buffer<std::byte, space_type>(cap);
  }

  struct no_event {};
  Store* store_;
  std::vector<std::uint32_t> in_batch_;  // per sequence slot: the stamp of the batch it is in
  std::uint32_t stamp_ = 1;
  std::vector<seq_id> seqs_;
  std::vector<std::int64_t> old_len_;
  std::vector<std::int64_t> new_tokens_;
  buffer<std::byte, staging_space> staging_;
  buffer<std::byte, space_type> device_;
  std::conditional_t<on_device, event, no_event> upload_done_;
  bool upload_pending_ = false;
  batch_view view_;
};

}  // namespace kvcache
