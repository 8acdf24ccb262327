/**
 * @file quantized_kv_store.hpp
 * @brief `quantized_kv_store<Space, Geometry, Q>`: a paged KV store whose pages hold quantizer
 * `Q`'s packed head pages, with KIVI's full-precision residual window in per-table staging
 * pages, and quantize-on-append.
 *
 * **Where a table's tokens live.** Of a table's L tokens, the first `q` are quantized in the
 * table's pages (`quantized_page_pool`, page i holds positions [i P, (i + 1) P)), the last
 * `r = L - q` are f16 rows in the table's *staging page* (a `page_pool` f16 page of
 * `Q::residual` tokens, order HND: `[heads_per_page][residual][head_dim]`, K array then V array;
 * staging row j is position q + j). Invariants: q is a multiple of `Q::group_size`; 0 <= r <
 * `Q::residual` (r = 0 and q = L for schemes without a window: int8, fp8, identity); a table
 * holds a staging page exactly when r > 0. Block tables cover all L positions (pages for the
 * staged positions are reserved; their codes are written when the window is flushed).
 *
 * **Quantize-on-append.** `try_append(id, n, k, v)` takes f16 rows
 * `[layers][kv_heads][n][head_dim]` (head-major: each (layer, head)'s rows contiguous) and, per
 * table: fills the staging page; when it holds `residual` tokens, quantizes all of them into
 * their pages (`quantize_pages_host`, whole key groups since residual % group == 0) and empties
 * it; whole windows of a long prefill that start on an empty staging page are quantized straight
 * from the input. So after any sequence of appends r = L mod residual, which is what
 * `Q::residual_tokens` and `Q::kv_bytes_per_token` assume.
 *
 * **Sharing.** `fork` shares pages and staging pages by reference; a shared staging page is
 * copied before it is written. A flush writes the codes of positions [q, q + window) only, and
 * a page another table shares at that point is either the partial last page of the append (the
 * paged store gives the table a private copy first) or a full page whose positions are all in
 * the common prefix (forked at or after them, with q equal in both tables and groups never
 * straddling pages): its bytes are then the same in both tables, so the write changes nothing
 * the other table reads, and the common prefix stays shared after both flush. A prefix index
 * must hold only pages entirely below q (fully quantized).
 *
 * **Truncate** to L' < q (rolling back into the quantized part): q' = L' rounded down to the key
 * group, and the tokens [q', L') are dequantized into the staging page (their group's metadata
 * included removed tokens). They were already quantized once: when the window is flushed again
 * they are quantized from the dequantized values, so their error against the original input is
 * at most the two steps' bounds added. Truncating within the staging window is lossless.
 *
 * **Data paths.** Each data-moving call (`try_append` with rows, `truncate`, `read`) plans its
 * work as batches of jobs (staging copies, staging fills as identity-format jobs, quantize jobs,
 * tail fills, dequantize jobs) and runs them in that order: with the host kernels for a
 * host-accessible `Space` (host, pinned), with the CUDA kernels for `cuda_space` (one launch per
 * batch on the default stream, job arrays in pinned memory, then a sync: synchronous for now;
 * the asynchronous per-step batch across sequences comes with the `kv_cache` facade).
 * `try_reserve` does the bookkeeping without data (simulators).
 *
 * Complexity: `try_append` O(tables x table pages) bookkeeping plus O(n x layers x kv_heads x
 * head_dim) data; `read` and `truncate` O(tables x table pages) plus their data; `fork`,
 * `release` as `paged_kv_store` plus the staging pages. Staging pages come from a fixed pool; the
 * job vectors (and a device store's pinned job arrays) grow to the largest call seen and are
 * reused, so after warm-up the per-step path allocates nothing.
 * Thread-safety: none; one scheduler thread owns the store.
 */
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <type_traits>
#include <variant>
#include <vector>

#include "kvcache/core/error.hpp"
#include "kvcache/paging/kernels.hpp"
#include "kvcache/paging/lifo_allocator.hpp"
#include "kvcache/paging/page_pool.hpp"
#include "kvcache/paging/paged_kv_store.hpp"
#include "kvcache/memory/stream.hpp"
#include "kvcache/quant/identity.hpp"
#include "kvcache/quant/kernels.hpp"
#include "kvcache/quant/quantized_pool.hpp"

namespace kvcache {

/// @brief Sizes of a quantized store.
struct quantized_store_config {
  kv_layout layout;                   ///< model shape and page size; dtype f16
  std::int32_t num_pages = 0;         ///< quantized pages in the pool
  std::int32_t max_sequences = 1024;  ///< live sequences at once
  /// Staging pages (f16, `Q::residual` tokens each) for the residual windows; -1: one per table
  /// of every sequence slot (never short, but costly: `residual` f16 tokens per sequence slot,
  /// 16 MiB per slot at Llama-3-8B shapes for KIVI; size it for the sequences expected to be
  /// live, as kvcache-sim does). Ignored when Q has no window.
  std::int32_t staging_pages = -1;
};

/// @brief Occupancy of a quantized store.
struct quantized_store_stats {
  store_stats pages;                ///< the quantized pages (as `paged_kv_store::stats`)
  std::int32_t staging_total = 0;   ///< staging pages in the pool
  std::int32_t staging_used = 0;    ///< staging pages held by tables
  std::int64_t quantized_tokens = 0;  ///< tokens in quantized pages, over every table
  std::int64_t staged_tokens = 0;     ///< tokens in staging pages, over every table
  std::int64_t bytes_used = 0;  ///< bytes of used pages and used staging pages
};

template <memory_space Space, page_geometry Geometry, formatted_quantizer Q,
          page_allocator Allocator = lifo_allocator>
class quantized_kv_store {
 public:
  using space_type = Space;
  using geometry_type = Geometry;
  using quantizer_type = Q;
  using pool_type = quantized_page_pool<Space, Geometry, Q>;
  using base_type = paged_kv_store<Space, Geometry, Allocator, pool_type>;
  using staging_pool_type = page_pool<Space, Geometry>;
  static constexpr std::int32_t residual = Q::residual;
  static constexpr std::int32_t group = Q::group_size;

  /// @throws kvcache::error invalid_argument (layout, sizes, a page shape Q rejects: KIVI needs
  /// page_size % 32 == 0), not_supported (dtype other than f16); out_of_memory.
  explicit quantized_kv_store(const quantized_store_config& c,
                              resource_ref<Space> resource = default_resource<Space>())
      : layout_(c.layout),
        tables_per_seq_(Geometry::tables_per_sequence(c.layout)),
        base_(store_config{c.layout, c.num_pages, c.max_sequences}, resource),
        staging_alloc_(staging_count(c)),
        q_(static_cast<std::size_t>(c.max_sequences) * static_cast<std::size_t>(tables_per_seq_), 0),
        stg_(q_.size(), -1) {
    if constexpr (!Space::host_accessible) {
      // the CUDA kernels implement this format (else not_supported, naming it, now rather than at
      // the first flush)
      quantize_pages_cuda<Q>(nullptr, 0, c.layout.page_size, c.layout.head_dim, nullptr, stream_view{});
    }
    if constexpr (residual > 0) {
      KVCACHE_EXPECTS(std::has_single_bit(static_cast<unsigned>(residual)), errc::invalid_argument,
                      "quantized_kv_store: {}'s residual window of {} tokens is not a power of two "
                      "(staging pages are pages of `residual` tokens)",
                      Q::name, residual);
      kv_layout s = c.layout;
      s.page_size = residual;
      s.order = kv_order::hnd;
      staging_.emplace(s, staging_count(c), resource);
    }
  }

  quantized_kv_store(const quantized_kv_store&) = delete;
  quantized_kv_store& operator=(const quantized_kv_store&) = delete;
  quantized_kv_store(quantized_kv_store&&) noexcept = default;
  quantized_kv_store& operator=(quantized_kv_store&&) noexcept = default;

  // ---- sequences ---------------------------------------------------------------------------
  [[nodiscard]] std::optional<seq_id> try_create() noexcept { return base_.try_create(); }
  [[nodiscard]] seq_id create() { return base_.create(); }

  /// @brief Drops the sequence's pages and staging pages. @throws unknown_id.
  void release(seq_id id) {
    (void)base_.length(id);
    for (std::int32_t t = 0; t < tables_per_seq_; ++t) {
      drop_staging(g_of(id, t));
      q_[g_of(id, t)] = 0;
    }
    base_.release(id);
  }

  /// @brief A new sequence sharing the parent's pages and staging pages (no copy).
  [[nodiscard]] std::optional<seq_id> try_fork(seq_id parent) {
    auto child = base_.try_fork(parent);
    if (!child) return child;
    for (std::int32_t t = 0; t < tables_per_seq_; ++t) {
      const std::size_t p = g_of(parent, t), c = g_of(*child, t);
      q_[c] = q_[p];
      stg_[c] = stg_[p];
      if (stg_[c] >= 0) staging_alloc_.add_ref(stg_[c]);
    }
    return child;
  }
  /// @throws kvcache::error out_of_range when max_sequences are live; unknown_id.
  [[nodiscard]] seq_id fork(seq_id parent) {
    auto c = try_fork(parent);
    KVCACHE_EXPECTS(c.has_value(), errc::out_of_range,
                    "quantized_kv_store: cannot fork sequence {}: all {} sequence slots are live",
                    parent.index, base_.max_sequences());
    return *c;
  }

  /**
   * @brief Appends n tokens: reserves pages, writes the rows (staging / quantized pages) and
   * flushes completed windows. All or nothing: when pages or staging pages are short, returns
   * empty and changes nothing.
   * @param k, v f16 bits `[layers][kv_heads][n][head_dim]`, 16-byte aligned: host memory for a
   * host-accessible store, device (or pinned) memory for a `cuda_space` store.
   * @return the new length.
   * @throws kvcache::error unknown_id; invalid_argument for null or misaligned rows, or (host
   * stores) a NaN / Inf input, naming the sequence, layer, head, position and channel: checked
   * before anything changes. A device store cannot scan its input without a sync: its kernels
   * quantize non-finite input as the quantizer documents (never spreading it) and the call
   * throws invalid_argument after the append is committed (the sequence holds the new tokens).
   * The identity quantizer stores NaN / Inf as they are.
   */
  std::optional<std::int64_t> try_append(seq_id id, std::int64_t n, const std::uint16_t* k,
                                         const std::uint16_t* v) {
    KVCACHE_EXPECTS(n == 0 || (k != nullptr && v != nullptr), errc::invalid_argument,
                    "quantized_kv_store: try_append of {} tokens with null rows", n);
    KVCACHE_EXPECTS(n == 0 || (reinterpret_cast<std::uintptr_t>(k) % 16 == 0 &&
                               reinterpret_cast<std::uintptr_t>(v) % 16 == 0),
                    errc::invalid_argument,
                    "quantized_kv_store: try_append rows k {} and v {} must be 16-byte aligned",
                    static_cast<const void*>(k), static_cast<const void*>(v));
    if constexpr (Space::host_accessible && !std::is_same_v<Q, identity_quantizer>) {
      if (n > 0) check_finite(id, n, k, v);
    }
    return append_impl(id, n, k, v, true);
  }
  /// @brief `try_append`'s bookkeeping without data (see the file comment).
  std::optional<std::int64_t> try_reserve(seq_id id, std::int64_t n) {
    auto r = append_impl(id, n, nullptr, nullptr, false);
    base_.clear_pending_copies();  // no data: the copies have nothing to copy
    return r;
  }
  /// @brief Whether `try_append(id, n, ...)` would succeed now.
  [[nodiscard]] bool can_append(seq_id id, std::int64_t n) const {
    const auto need = needs(id, n);
    return need.pages <= base_.allocator().free_count() &&
           need.staging <= staging_alloc_.free_count();
  }

  /**
   * @brief Shortens the sequence to `length` tokens (see the file comment for rolling back into
   * the quantized part).
   * @throws kvcache::error out_of_range (bad length), out_of_memory (rolling back into the
   * quantized part needs a staging page and none is free: nothing changed).
   */
  void truncate(seq_id id, std::int64_t length) {
    KVCACHE_EXPECTS(try_truncate(id, length), errc::out_of_memory,
                    "quantized_kv_store: truncating sequence {} to {} tokens needs staging pages "
                    "and {} are free",
                    id.index, length, staging_alloc_.free_count());
  }
  /// @brief `truncate`, returning false (nothing changed) instead of throwing when the rollback
  /// needs staging pages and none are free (a scheduler can free memory and retry).
  /// @throws kvcache::error out_of_range (bad length), unknown_id.
  [[nodiscard]] bool try_truncate(seq_id id, std::int64_t length) {
    const std::int64_t len = base_.length(id);
    KVCACHE_EXPECTS(length >= 0 && length <= len, errc::out_of_range,
                    "quantized_kv_store: cannot truncate sequence {} of {} tokens to {}", id.index,
                    len, length);
    std::int32_t need = 0;
    for (std::int32_t t = 0; t < tables_per_seq_; ++t) {
      const std::size_t g = g_of(id, t);
      if (length < q_[g] && length % group != 0 &&
          (stg_[g] < 0 || staging_alloc_.ref_count(stg_[g]) > 1)) {
        ++need;
      }
    }
    if (need > staging_alloc_.free_count()) return false;
    plan_.clear();
    table_pages_of_ = -1;
    for (std::int32_t t = 0; t < tables_per_seq_; ++t) {
      const std::size_t g = g_of(id, t);
      if (length >= q_[g]) continue;
      const std::int64_t q2 = length / group * group;
      const auto d = static_cast<std::int32_t>(length - q2);
      drop_staging(g);  // the plan writes staging rows and reads only pages: reuse is safe
      if (d > 0) {
        stg_[g] = *staging_alloc_.try_allocate();
        for_each_head(t, [&](std::int32_t layer, std::int32_t, std::int32_t slot) {
          for (kv_side side : {kv_side::key, kv_side::value}) {
            plan_dequantize(id, t, side, layer, slot, q2, d, staging_row(g, side, layer, slot, 0));
          }
        });
      }
      q_[g] = q2;
    }
    execute();
    base_.truncate(id, length);
    for (std::int32_t t = 0; t < tables_per_seq_; ++t) {
      const std::size_t g = g_of(id, t);
      if (length == q_[g]) drop_staging(g);
    }
    return true;
  }

  /**
   * @brief Reads the sequence back as f16 rows `[layers][kv_heads][L][head_dim]` (the append
   * layout): quantized tokens dequantized, staged ones copied. Every table must hold L tokens.
   * `k_out`, `v_out`: 16-byte aligned, host memory for a host-accessible store, device (or
   * pinned) memory for a `cuda_space` store.
   * @note O(L x layers x kv_heads x head_dim); device stores: two kernels and a sync.
   */
  void read(seq_id id, std::uint16_t* k_out, std::uint16_t* v_out) {
    const std::int64_t len = base_.length(id);
    const auto d = static_cast<std::int64_t>(layout_.head_dim);
    plan_.clear();
    table_pages_of_ = -1;
    for (std::int32_t t = 0; t < tables_per_seq_; ++t) {
      const std::size_t g = g_of(id, t);
      KVCACHE_EXPECTS(base_.table_tokens(id, t) == len, errc::logic_error,
                      "quantized_kv_store::read: table {} holds {} tokens, the sequence {}", t,
                      base_.table_tokens(id, t), len);
      for_each_head(t, [&](std::int32_t layer, std::int32_t head, std::int32_t slot) {
        const std::int64_t row0 = (static_cast<std::int64_t>(layer) * layout_.kv_heads + head) * len;
        for (kv_side side : {kv_side::key, kv_side::value}) {
          std::uint16_t* out = (side == kv_side::key ? k_out : v_out) + row0 * d;
          plan_dequantize(id, t, side, layer, slot, 0, q_[g], out);
          const std::int64_t r = len - q_[g];
          if (r > 0) {
            plan_.deq_staging.push_back(dequantize_job{staging_head_page(g, side, layer, slot),
                                                       out + q_[g] * d, 0,
                                                       static_cast<std::int32_t>(r), side});
          }
        }
      });
    }
    execute();
  }

  // ---- queries -----------------------------------------------------------------------------
  [[nodiscard]] bool contains(seq_id id) const noexcept { return base_.contains(id); }
  [[nodiscard]] std::int64_t length(seq_id id) const { return base_.length(id); }
  [[nodiscard]] std::int32_t tables_per_sequence() const noexcept { return tables_per_seq_; }
  /// @brief Tokens of table t in quantized pages (q).
  [[nodiscard]] std::int64_t quantized_tokens(seq_id id, std::int32_t t) const {
    (void)base_.length(id);
    return q_[g_of(id, t)];
  }
  /// @brief Staging page of table t, or -1 when it holds no staged token.
  [[nodiscard]] std::int32_t staging_page(seq_id id, std::int32_t t) const {
    (void)base_.length(id);
    return stg_[g_of(id, t)];
  }
  /// @brief The underlying paged store, read-only (block tables, allocator, stats). Its mutators
  /// would bypass the window bookkeeping; token eviction (`try_compact`) over quantized pages is
  /// not supported yet.
  [[nodiscard]] const base_type& pages() const noexcept { return base_; }
  /// @brief See `paged_kv_store::set_reclaimer`; called before an append is refused for lack of
  /// pages.
  void set_reclaimer(std::function<void(std::int32_t)> reclaim) {
    reclaimer_ = reclaim;
    base_.set_reclaimer(std::move(reclaim));
  }
  [[nodiscard]] pool_type& pool() noexcept { return base_.pool(); }
  /// @brief The staging pool (f16, page_size = residual, HND); empty without a window.
  [[nodiscard]] staging_pool_type* staging_pool() noexcept {
    return staging_ ? &*staging_ : nullptr;
  }
  [[nodiscard]] const kv_layout& layout() const noexcept { return layout_; }
  /// @brief Bytes of one staging page (K and V of every layer array it covers); 0 without a window.
  [[nodiscard]] std::int64_t staging_page_bytes() const noexcept {
    return staging_ ? staging_->bytes_per_page_id() : 0;
  }

  /// @brief Occupancy. O(pages + tables).
  [[nodiscard]] quantized_store_stats stats() const {
    quantized_store_stats s;
    s.pages = base_.stats();
    s.staging_total = staging_ ? staging_alloc_.num_pages() : 0;
    s.staging_used = staging_ ? staging_alloc_.num_pages() - staging_alloc_.free_count() : 0;
    for (std::size_t g = 0; g < q_.size(); ++g) s.quantized_tokens += q_[g];
    s.staged_tokens = s.pages.logical_tokens - s.quantized_tokens;
    s.bytes_used = static_cast<std::int64_t>(s.pages.pages_used) * bytes_per_page_id() +
                   static_cast<std::int64_t>(s.staging_used) * staging_page_bytes();
    return s;
  }
  /// @brief Bytes of one quantized page id (K and V, every layer array it covers).
  [[nodiscard]] std::int64_t bytes_per_page_id() const noexcept {
    return const_cast<base_type&>(base_).pool().bytes_per_page_id();
  }

  /**
   * @brief Checks the store-wide invariants (tests): the paged store's, and staging reference
   * counts equal to their holders. `check_sequence` checks one sequence's tables.
   * @throws kvcache::error logic_error naming the first broken one.
   */
  void check_invariants() const {
    base_.check_invariants();
    std::vector<std::int32_t> refs(static_cast<std::size_t>(staging_alloc_.num_pages()), 0);
    for (std::size_t g = 0; g < q_.size(); ++g) {
      if (stg_[g] >= 0) ++refs[static_cast<std::size_t>(stg_[g])];
    }
    for (std::int32_t p = 0; p < staging_alloc_.num_pages(); ++p) {
      KVCACHE_EXPECTS(staging_alloc_.ref_count(p) == refs[static_cast<std::size_t>(p)],
                      errc::logic_error, "staging page {} has reference count {} but {} holders",
                      p, staging_alloc_.ref_count(p), refs[static_cast<std::size_t>(p)]);
    }
  }
  /// @brief Per-table invariants of a live sequence (tests). @throws logic_error.
  void check_sequence(seq_id id) const {
    for (std::int32_t t = 0; t < tables_per_seq_; ++t) {
      const std::size_t g = g_of(id, t);
      const std::int64_t len = base_.table_tokens(id, t), q = q_[g], r = len - q;
      KVCACHE_EXPECTS(q >= 0 && r >= 0 && q % group == 0 &&
                          (residual == 0 ? r == 0 : r < residual) && ((r > 0) == (stg_[g] >= 0)),
                      errc::logic_error,
                      "sequence {} table {}: length {}, quantized {}, staged {}, staging page {}",
                      id.index, t, len, q, r, stg_[g]);
    }
  }

 private:
  struct need_t {
    std::int64_t pages = 0;
    std::int32_t staging = 0;
  };

  static std::int32_t staging_count(const quantized_store_config& c) {
    if constexpr (residual == 0) {
      return 1;
    } else {
      KVCACHE_EXPECTS(c.max_sequences >= 1, errc::invalid_argument,
                      "quantized_kv_store: max_sequences must be >= 1, got {}", c.max_sequences);
      if (c.staging_pages < 0) return c.max_sequences * Geometry::tables_per_sequence(c.layout);
      KVCACHE_EXPECTS(c.staging_pages >= 1, errc::invalid_argument,
                      "quantized_kv_store: staging_pages must be >= 1 (or -1), got {}",
                      c.staging_pages);
      return c.staging_pages;
    }
  }
  [[nodiscard]] std::size_t g_of(seq_id id, std::int32_t t) const noexcept {
    return static_cast<std::size_t>(id.index) * static_cast<std::size_t>(tables_per_seq_) +
           static_cast<std::size_t>(t);
  }
  void drop_staging(std::size_t g) {
    if (stg_[g] >= 0) {
      staging_alloc_.drop_ref(stg_[g]);
      stg_[g] = -1;
    }
  }
  /// Calls f(layer, head, slot in page) for each (layer, kv head) table t covers.
  template <class F>
  void for_each_head(std::int32_t t, F&& f) const {
    if constexpr (std::is_same_v<Geometry, per_head>) {
      f(t / layout_.kv_heads, t % layout_.kv_heads, 0);
    } else {
      const std::int32_t l0 = std::is_same_v<Geometry, per_layer> ? t : 0;
      const std::int32_t l1 = std::is_same_v<Geometry, per_layer> ? t + 1 : layout_.layers;
      for (std::int32_t l = l0; l < l1; ++l) {
        for (std::int32_t h = 0; h < layout_.kv_heads; ++h) f(l, h, h);
      }
    }
  }
  std::uint16_t* staging_row_of(page_id page, kv_side side, std::int32_t layer, std::int32_t slot,
                                std::int32_t row) {
    const paged_kv_view sv = staging_->view();
    return reinterpret_cast<std::uint16_t*>(sv.data + sv.k_row_offset(layer, page, row, slot) +
                                            (side == kv_side::value ? sv.v_offset_bytes : 0));
  }
  std::uint16_t* staging_row(std::size_t g, kv_side side, std::int32_t layer, std::int32_t slot,
                             std::int32_t row) {
    return staging_row_of(stg_[g], side, layer, slot, row);
  }

  /// Pages and staging pages `append(id, n)` needs (pre-check of all or nothing).
  [[nodiscard]] need_t needs(seq_id id, std::int64_t n) const {
    need_t need;
    need.pages = base_.pages_needed(id, n);
    if (n == 0) return need;
    for (std::int32_t t = 0; t < tables_per_seq_; ++t) {
      const std::size_t g = g_of(id, t);
      const std::int64_t r = base_.table_tokens(id, t) - q_[g];
      (void)r;
      if constexpr (residual > 0) {
        const bool writes_staging = r > 0 || n % residual != 0;
        if (writes_staging && (stg_[g] < 0 || staging_alloc_.ref_count(stg_[g]) > 1)) {
          ++need.staging;
        }
      }
    }
    return need;
  }
  std::optional<std::int64_t> append_impl(seq_id id, std::int64_t n, const std::uint16_t* k,
                                          const std::uint16_t* v, bool data) {
    KVCACHE_EXPECTS(n >= 0, errc::invalid_argument, "quantized_kv_store: cannot append {} tokens",
                    n);
    const need_t need = needs(id, n);
    if (need.staging > staging_alloc_.free_count()) return std::nullopt;
    if (need.pages > base_.allocator().free_count() && reclaimer_) {
      reclaimer_(static_cast<std::int32_t>(need.pages - base_.allocator().free_count()));
    }
    if (need.pages > base_.allocator().free_count()) return std::nullopt;
    const auto done = base_.try_append(id, n);
    if (!done) return std::nullopt;
    if (n == 0) return done;
    // Plan the data work per table (staging fills, window flushes, tail fills), then run it.
    plan_.clear();
    table_pages_of_ = -1;
    for (std::int32_t t = 0; t < tables_per_seq_; ++t) {
      const std::size_t g = g_of(id, t);
      const std::int64_t len = base_.table_tokens(id, t) - n;
      std::int64_t q = q_[g], r = len - q, pos = 0;
      if constexpr (residual == 0) {
        if (data) plan_quantize(id, t, q, n, [&](std::int32_t l, std::int32_t h, std::int32_t, kv_side s) {
          return input_row(s == kv_side::key ? k : v, l, h, n, 0);
        });
        q += n;
      } else {
        bool flushed = false;  // rows staged after a flush of this call overwrite what it read
        auto own_staging = [&] {
          if (stg_[g] >= 0 && staging_alloc_.ref_count(stg_[g]) == 1) return;
          const page_id fresh = *staging_alloc_.try_allocate();  // counted in needs()
          const page_id old = stg_[g];
          stg_[g] = fresh;
          if (old < 0) return;
          // copy-on-write of the staged rows [0, r) only, as identity jobs of the fill batch (the
          // old page stays alive: another sequence's table holds it)
          if (data && r > 0) {
            for_each_head(t, [&](std::int32_t l, std::int32_t, std::int32_t slot) {
              for (kv_side sd : {kv_side::key, kv_side::value}) {
                plan_.fill.push_back(quantize_job{staging_row_of(old, sd, l, slot, 0),
                                                  staging_head_page(g, sd, l, slot), 0,
                                                  static_cast<std::int32_t>(r), sd});
              }
            });
          }
          staging_alloc_.drop_ref(old);
        };
        while (pos < n) {
          if (r == 0 && n - pos >= residual) {  // a whole window straight from the input
            if (data) plan_quantize(id, t, q, residual, [&](std::int32_t l, std::int32_t h, std::int32_t, kv_side s) {
              return input_row(s == kv_side::key ? k : v, l, h, n, pos);
            });
            flushed = true;
            q += residual;
            pos += residual;
            continue;
          }
          own_staging();
          const std::int64_t c = std::min<std::int64_t>(residual - r, n - pos);
          if (data) {
            for_each_head(t, [&](std::int32_t l, std::int32_t h, std::int32_t slot) {
              for (kv_side s : {kv_side::key, kv_side::value}) {
                // an f16 copy into the staging head page: the identity format's quantize job
                (flushed ? plan_.tail : plan_.fill)
                    .push_back(quantize_job{input_row(s == kv_side::key ? k : v, l, h, n, pos),
                                            staging_head_page(g, s, l, slot),
                                            static_cast<std::int32_t>(r), static_cast<std::int32_t>(c), s});
              }
            });
          }
          r += c;
          pos += c;
          if (r == residual) {  // the window is full: quantize it into its pages
            if (data) plan_quantize(id, t, q, residual, [&](std::int32_t l, std::int32_t, std::int32_t slot, kv_side s) {
              return static_cast<const std::uint16_t*>(staging_row(g, s, l, slot, 0));
            });
            flushed = true;
            q += residual;
            r = 0;
          }
        }
        // released before the plan runs, but after planning (see below)
        if (r == 0 && stg_[g] >= 0) {
          plan_.staging_drops.push_back(stg_[g]);
          stg_[g] = -1;
        }
      }
      q_[g] = q;
    }
    // Drop the emptied windows' staging pages before running the plan: nothing allocates a
    // staging page until it has run (host kernels, or a device sync), so its reads of them are
    // safe, and an exception from it leaks nothing.
    for (const page_id p : plan_.staging_drops) staging_alloc_.drop_ref(p);
    plan_.staging_drops.clear();
    if (data) execute();
    return done;
  }

  /// Throws invalid_argument naming the first NaN / Inf of the input (before anything changes).
  void check_finite(seq_id id, std::int64_t n, const std::uint16_t* k, const std::uint16_t* v) const {
    const std::int64_t len = base_.length(id);
    const std::int32_t d = layout_.head_dim;
    for (const std::uint16_t* rows : {k, v}) {
      for (std::int32_t l = 0; l < layout_.layers; ++l) {
        for (std::int32_t h = 0; h < layout_.kv_heads; ++h) {
          const std::uint16_t* r = input_row(rows, l, h, n, 0);
          for (std::int64_t i = 0; i < n * d; ++i) {
            if ((r[i] & 0x7c00u) != 0x7c00u) continue;
            KVCACHE_FAIL(errc::invalid_argument,
                         "quantized_kv_store ({}): sequence {} {} input, layer {}, kv head {}, "
                         "position {} (row {} of this append), channel {} is {} (f16 bits {:#06x}); "
                         "NaN and Inf cannot be quantized",
                         Q::name, id.index, rows == k ? "key" : "value", l, h, len + i / d, i / d,
                         i % d, (r[i] & 0x3ffu) != 0 ? "NaN" : "Inf", r[i]);
          }
        }
      }
    }
  }

  [[nodiscard]] const std::uint16_t* input_row(const std::uint16_t* base, std::int32_t layer,
                                               std::int32_t head, std::int64_t n,
                                               std::int64_t token) const noexcept {
    return base + ((static_cast<std::int64_t>(layer) * layout_.kv_heads + head) * n + token) *
                      layout_.head_dim;
  }

  /// Calls f(page id, first position in the page, tokens, offset from `from`) for each page
  /// piece of positions [from, from + count) of table t. O(pieces x page index / 32).
  template <class F>
  void for_each_piece(seq_id id, std::int32_t t, std::int64_t from, std::int64_t count, F&& f) {
    const std::int32_t ps = layout_.page_size;
    const auto g = static_cast<std::int32_t>(g_of(id, t));
    if (table_pages_of_ != g) {  // the table's page ids, once per table and call
      table_pages_.clear();
      base_.for_each_page(id, t, [&](page_id p) { table_pages_.push_back(p); });
      table_pages_of_ = g;
    }
    for (std::int64_t pos = from; pos < from + count;) {
      const auto first = static_cast<std::int32_t>(pos % ps);
      const auto c = static_cast<std::int32_t>(std::min<std::int64_t>(ps - first, from + count - pos));
      f(table_pages_[static_cast<std::size_t>(pos / ps)], first, c, pos - from);
      pos += c;
    }
  }
  /// Plans the quantization of positions [q, q + count) of table t from rows(layer, head,
  /// slot, side) (count rows each).
  template <class Rows>
  void plan_quantize(seq_id id, std::int32_t t, std::int64_t q, std::int64_t count, Rows&& rows) {
    const quantized_kv_view pv = base_.pool().view();
    for_each_head(t, [&](std::int32_t layer, std::int32_t head, std::int32_t slot) {
      for (kv_side side : {kv_side::key, kv_side::value}) {
        const std::uint16_t* src = rows(layer, head, slot, side);
        for_each_piece(id, t, q, count, [&](page_id p, std::int32_t first, std::int32_t c, std::int64_t off) {
          plan_.quant.push_back(quantize_job{src + off * layout_.head_dim,
                                             pv.head_page(side, layer, p, slot), first, c, side});
        });
      }
    });
  }
  /// Plans the dequantization of positions [from, from + count) of table t, one (layer, slot),
  /// into rows.
  void plan_dequantize(seq_id id, std::int32_t t, kv_side side, std::int32_t layer,
                       std::int32_t slot, std::int64_t from, std::int64_t count, std::uint16_t* out) {
    const quantized_kv_view pv = base_.pool().view();
    for_each_piece(id, t, from, count, [&](page_id p, std::int32_t first, std::int32_t c, std::int64_t off) {
      plan_.deq.push_back(dequantize_job{pv.head_page(side, layer, p, slot),
                                         out + off * layout_.head_dim, first, c, side});
    });
  }
  /// The staging page of table g, one (layer, slot), as an identity-format head page of
  /// `residual` tokens (its rows are contiguous: the staging pool is HND).
  std::byte* staging_head_page(std::size_t g, kv_side side, std::int32_t layer, std::int32_t slot) {
    return reinterpret_cast<std::byte*>(staging_row(g, side, layer, slot, 0));
  }

  /**
   * Runs the plan, in this order: the paged store's copy-on-write copies and the staging copies,
   * staging fills, quantization (flushes and whole windows), tail fills, dequantization (pages,
   * then staging rows). Host spaces: the host kernels. Device spaces: the CUDA kernels on the
   * default stream (job arrays in pinned memory, grown to the largest plan seen), then a sync and
   * `throw_if_failed` on each call's status.
   */
  void execute() {
    const std::int32_t ps = layout_.page_size, d = layout_.head_dim;
    if constexpr (Space::host_accessible) {
      base_.apply_pending_copies();
      auto quantize = [&]<class F>(const std::vector<quantize_job>& jobs, std::int32_t pages) {
        if (!jobs.empty()) quantize_pages_host<F>(jobs.data(), static_cast<std::int32_t>(jobs.size()), pages, d);
      };
      quantize.template operator()<identity_quantizer>(plan_.fill, residual);
      quantize.template operator()<Q>(plan_.quant, ps);
      quantize.template operator()<identity_quantizer>(plan_.tail, residual);
      if (!plan_.deq.empty()) {
        dequantize_pages_host<Q>(plan_.deq.data(), static_cast<std::int32_t>(plan_.deq.size()), ps, d);
      }
      if (!plan_.deq_staging.empty()) {
        dequantize_pages_host<identity_quantizer>(plan_.deq_staging.data(),
                                                  static_cast<std::int32_t>(plan_.deq_staging.size()),
                                                  residual, d);
      }
    } else {
      execute_device();
    }
  }

  void execute_device()
    requires(!Space::host_accessible)
  {
    const std::int32_t ps = layout_.page_size, d = layout_.head_dim;
    const auto pending = base_.pending_copies();
    // one pinned block: statuses, copies, jobs (each array 16-byte aligned)
    auto align = [](std::size_t b) { return (b + 15) / 16 * 16; };
    const std::size_t n_status = 5;
    std::size_t bytes = align(n_status * sizeof(quant_status));
    bytes += align(pending.size() * sizeof(page_copy));
    for (const auto* j : {&plan_.fill, &plan_.quant, &plan_.tail}) bytes += align(j->size() * sizeof(quantize_job));
    for (const auto* j : {&plan_.deq, &plan_.deq_staging}) bytes += align(j->size() * sizeof(dequantize_job));
    if (pinned_.size() < bytes) pinned_ = buffer<std::byte, pinned_host_space>(bytes * 2);
    std::byte* at = pinned_.data();
    auto carve = [&](const void* src, std::size_t b) {
      std::byte* p = at;
      if (b > 0) std::memcpy(p, src, b);
      at += align(b);
      return p;
    };
    auto* status = reinterpret_cast<quant_status*>(at);
    at += align(n_status * sizeof(quant_status));
    const auto* pc = reinterpret_cast<const page_copy*>(carve(pending.data(), pending.size() * sizeof(page_copy)));
    auto jobs = [&](const auto& v) { return reinterpret_cast<const std::remove_cvref_t<decltype(v[0])>*>(
                                         carve(v.data(), v.size() * sizeof(v[0]))); };
    const auto* fill = jobs(plan_.fill);
    const auto* quant = jobs(plan_.quant);
    const auto* tail = jobs(plan_.tail);
    const auto* deq = jobs(plan_.deq);
    const auto* deqs = jobs(plan_.deq_staging);
    const stream_view s{};
    auto n = [](const auto& v) { return static_cast<std::int32_t>(v.size()); };
    try {
      if (!pending.empty()) copy_pages_cuda(base_.pool().copy_view(), pc, n(pending), s);
      base_.clear_pending_copies();
      if (!plan_.fill.empty()) quantize_pages_cuda<identity_quantizer>(fill, n(plan_.fill), residual, d, status + 0, s);
      if (!plan_.quant.empty()) quantize_pages_cuda<Q>(quant, n(plan_.quant), ps, d, status + 1, s);
      if (!plan_.tail.empty()) quantize_pages_cuda<identity_quantizer>(tail, n(plan_.tail), residual, d, status + 2, s);
      if (!plan_.deq.empty()) dequantize_pages_cuda<Q>(deq, n(plan_.deq), ps, d, status + 3, s);
      if (!plan_.deq_staging.empty()) {
        dequantize_pages_cuda<identity_quantizer>(deqs, n(plan_.deq_staging), residual, d, status + 4, s);
      }
    } catch (...) {
      synchronize(s);  // what was enqueued reads the pinned job arrays: let it finish first
      throw;
    }
    synchronize(s);
    const bool ran[n_status] = {!plan_.fill.empty(), !plan_.quant.empty(), !plan_.tail.empty(),
                                !plan_.deq.empty(), !plan_.deq_staging.empty()};
    const char* what[n_status] = {"quantized_kv_store: staging fill", "quantized_kv_store: quantize",
                                  "quantized_kv_store: staging fill", "quantized_kv_store: dequantize",
                                  "quantized_kv_store: staging read"};
    for (std::size_t i = 0; i < n_status; ++i) {
      if (ran[i]) throw_if_failed(status[i], what[i]);
    }
  }

  struct plan_t {
    std::vector<quantize_job> fill, quant, tail;        // fill / tail: identity, page size residual
    std::vector<dequantize_job> deq, deq_staging;       // deq_staging: identity, page size residual
    std::vector<page_id> staging_drops;
    void clear() {
      fill.clear();
      quant.clear();
      tail.clear();
      deq.clear();
      deq_staging.clear();
      staging_drops.clear();
    }
  };

  kv_layout layout_;
  std::int32_t tables_per_seq_;
  base_type base_;
  std::optional<staging_pool_type> staging_;
  lifo_allocator staging_alloc_;
  std::vector<std::int64_t> q_;     ///< quantized tokens per table
  std::vector<std::int32_t> stg_;   ///< staging page per table, -1 none
  plan_t plan_;                     ///< the data work of the current call (capacity reused)
  std::function<void(std::int32_t)> reclaimer_;
  std::vector<page_id> table_pages_;  ///< scratch: the pages of the table being planned
  std::int32_t table_pages_of_ = -1;  ///< global table whose pages table_pages_ holds
  /// device stores: the job arrays of a call, in pinned memory
  [[no_unique_address]] std::conditional_t<Space::host_accessible, std::monostate,
                                           buffer<std::byte, pinned_host_space>> pinned_;
};

}  // namespace kvcache
