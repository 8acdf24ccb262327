/**
 * @file paged_kv_store.hpp
 * @brief `paged_kv_store`: the sequences of a page pool: block tables, reservation of slots for
 * new tokens, fork with copy-on-write, truncate, release.
 *
 * The model (PagedAttention): a sequence's tokens live in fixed-size pages anywhere in the pool;
 * its block table lists them in order. Row i of a table is in page i / page_size at position
 * i % page_size; row i holds token i until the table is compacted (`try_compact`), after which
 * the rows are the kept tokens in order, then the tokens appended since. Only the last page of a
 * table may be partial, so no more than page_size - 1
 * slots per table are ever reserved but unused.
 *
 * Copy-on-write: `fork` shares every page by reference. A table whose partial last page is
 * shared gets a private copy the next time it appends: the store allocates the copy, records a
 * `page_copy` in `pending_copies()`, and the data must be copied (`apply_pending_copies`, or
 * `batch_builder::finalize`, which does it) before new K/V are written.
 *
 * Complexity: `try_append` is O(tables x (pages allocated + 1)), `release` and `truncate`
 * O(pages dropped + pages / 32), `fork` O(pages). Nothing allocates memory on these paths, except
 * the chunk array of `block_table_set` when forks push page references past every earlier peak.
 * Thread-safety: none; one scheduler thread owns the store (as in vLLM and SGLang).
 */
#pragma once

#include <algorithm>
#include <bit>
#include <concepts>
#include <cstdint>
#include <functional>
#include <optional>
#include <type_traits>
#include <span>
#include <vector>

#include "kvcache/core/error.hpp"
#include "kvcache/paging/block_table.hpp"
#include "kvcache/paging/kernels.hpp"
#include "kvcache/paging/lifo_allocator.hpp"
#include "kvcache/paging/page_pool.hpp"

namespace kvcache {

/// @brief Handle of a sequence in a store: a slot and the generation that detects stale handles.
struct seq_id {
  std::uint32_t index = 0;
  std::uint32_t generation = 0;
  friend constexpr bool operator==(seq_id, seq_id) = default;
};

/// @brief Sizes of a store.
struct store_config {
  kv_layout layout;                   ///< model shape and page size
  std::int32_t num_pages = 0;         ///< pages in the pool
  std::int32_t max_sequences = 1024;  ///< live sequences at once
};

/// @brief A snapshot of a store's occupancy.
struct store_stats {
  std::int32_t live_sequences = 0;
  std::int32_t pages_total = 0;
  std::int32_t pages_free = 0;
  std::int32_t pages_used = 0;
  std::int32_t pages_shared = 0;     ///< used pages referenced by more than one table
  std::int64_t logical_tokens = 0;   ///< tokens summed over every table of every sequence
  std::int64_t cow_copies = 0;       ///< copy-on-write page copies made so far
};

/**
 * @brief What a store keeps its pages in: `page_pool` (f16/bf16/f32 rows), or a pool of
 * quantized pages (`quantized_page_pool`, quant layer). Constructible from (layout, num_pages,
 * resource); `copy_view()` describes it as plain bytes per page for `copy_pages`.
 */
template <class P>
concept page_storage = requires(P& p, const kv_layout& l, std::int32_t n) {
  typename P::space_type;
  { p.num_pages() } -> std::same_as<std::int32_t>;
  { p.copy_view() } -> std::same_as<paged_kv_view>;
  { p.bytes_per_page_id() } -> std::same_as<std::int64_t>;
};
static_assert(page_storage<page_pool<host_space, span_layers>>);

/**
 * @tparam Space where the pages live.
 * @tparam Geometry what one page id covers (geometry.hpp).
 * @tparam Allocator the free list and reference counts.
 * @tparam Pool the page storage: `page_pool` (default) or a quantized pool.
 */
template <memory_space Space, page_geometry Geometry = span_layers,
          page_allocator Allocator = lifo_allocator,
          page_storage Pool = page_pool<Space, Geometry>>
class paged_kv_store {
 public:
  using space_type = Space;
  using geometry_type = Geometry;
  using allocator_type = Allocator;
  using pool_type = Pool;

  /// @throws kvcache::error invalid_argument for a bad layout or sizes; out_of_memory from the pool.
  explicit paged_kv_store(const store_config& config,
                          resource_ref<Space> resource = default_resource<Space>())
      : layout_(config.layout),
        tables_per_seq_(Geometry::tables_per_sequence(config.layout)),
        pool_(config.layout, config.num_pages, resource),
        alloc_(config.num_pages),
        tables_(checked_tables(config), config.num_pages / block_table_set::chunk_capacity +
                                            checked_tables(config) + 64),
        seqs_(static_cast<std::size_t>(config.max_sequences)),
        compacted_at_(static_cast<std::size_t>(tables_.num_tables()), 0),
        positional_rows_(static_cast<std::size_t>(tables_.num_tables()), kAllRows) {
    free_slots_.reserve(seqs_.size());
    for (auto i = static_cast<std::int32_t>(seqs_.size()) - 1; i >= 0; --i) free_slots_.push_back(i);
    pending_.reserve(static_cast<std::size_t>(tables_.num_tables()));
  }

  paged_kv_store(const paged_kv_store&) = delete;
  paged_kv_store& operator=(const paged_kv_store&) = delete;
  paged_kv_store(paged_kv_store&&) noexcept = default;
  paged_kv_store& operator=(paged_kv_store&&) noexcept = default;

  // ---- sequences ---------------------------------------------------------------------------
  /// @brief A new empty sequence, or empty when `max_sequences` are live.
  [[nodiscard]] std::optional<seq_id> try_create() noexcept {
    if (free_slots_.empty()) return std::nullopt;
    const std::int32_t i = free_slots_.back();
    free_slots_.pop_back();
    auto& s = seqs_[static_cast<std::size_t>(i)];
    s.live = true;
    s.length = 0;
    ++live_;
    return seq_id{static_cast<std::uint32_t>(i), s.generation};
  }
  /// @throws kvcache::error out_of_range when `max_sequences` are live.
  [[nodiscard]] seq_id create() {
    auto s = try_create();
    KVCACHE_EXPECTS(s.has_value(), errc::out_of_range,
                    "paged_kv_store: all {} sequence slots are live", seqs_.size());
    return *s;
  }

  /// @brief Drops the sequence's references; pages no other table holds become free.
  /// @throws kvcache::error unknown_id for an unknown or released id.
  void release(seq_id id) {
    auto& s = seq(id);
    for (std::int32_t t = 0; t < tables_per_seq_; ++t) {
      const std::int32_t g = global_table(id, t);
      tables_.shrink(g, 0, [&](page_id p) { drop(p); });
      tables_.set_tokens(g, 0);
      compacted_at_[static_cast<std::size_t>(g)] = 0;
      positional_rows_[static_cast<std::size_t>(g)] = kAllRows;
    }
    s.live = false;
    s.length = 0;
    ++s.generation;
    --live_;
    free_slots_.push_back(static_cast<std::int32_t>(id.index));
  }

  /// @brief A new sequence sharing every page of `parent` (references, no copy, no page
  /// allocated); empty when `max_sequences` are live.
  [[nodiscard]] std::optional<seq_id> try_fork(seq_id parent) {
    const auto& p = seq(parent);
    auto child = try_create();
    if (!child) return std::nullopt;
    for (std::int32_t t = 0; t < tables_per_seq_; ++t) {
      const std::int32_t src = global_table(parent, t);
      const std::int32_t dst = global_table(*child, t);
      tables_.copy_table(dst, src);
      compacted_at_[static_cast<std::size_t>(dst)] = compacted_at_[static_cast<std::size_t>(src)];
      positional_rows_[static_cast<std::size_t>(dst)] = positional_rows_[static_cast<std::size_t>(src)];
      tables_.for_each_page(dst, [&](page_id pg) { alloc_.add_ref(pg); });
    }
    seqs_[child->index].length = p.length;
    return child;
  }
  /// @throws kvcache::error out_of_range when `max_sequences` are live; unknown_id.
  [[nodiscard]] seq_id fork(seq_id parent) {
    auto c = try_fork(parent);
    KVCACHE_EXPECTS(c.has_value(), errc::out_of_range,
                    "paged_kv_store: cannot fork sequence {}: all {} sequence slots are live",
                    parent.index, seqs_.size());
    return *c;
  }

  /// @brief Shortens the sequence to `length` tokens (speculative-decoding rollback, beam
  /// pruning); pages past it are dropped. A compacted table (`try_compact`) holds the positions
  /// appended since its last compaction as its last rows, one per position: it drops the rows of
  /// positions >= length. Rolling a table back to before its last compaction cannot be done (its
  /// kept rows are no longer in position order): that throws, and nothing changes.
  /// @throws kvcache::error out_of_range when `length` is negative or beyond the sequence;
  /// invalid_argument when `length` is below the length at which one of the sequence's tables
  /// was last compacted (naming the table).
  void truncate(seq_id id, std::int64_t length) {
    auto& s = seq(id);
    KVCACHE_EXPECTS(length >= 0 && length <= s.length, errc::out_of_range,
                    "paged_kv_store: cannot truncate sequence {} of {} tokens to {}", id.index,
                    s.length, length);
    for (std::int32_t t = 0; t < tables_per_seq_; ++t) {
      const std::int32_t g = global_table(id, t);
      KVCACHE_EXPECTS(length >= compacted_at_[static_cast<std::size_t>(g)], errc::invalid_argument,
                      "paged_kv_store: cannot truncate sequence {} to {} tokens: its table {} was "
                      "compacted at length {}, and the rows it kept before that are not in "
                      "position order",
                      id.index, length, t, compacted_at_[static_cast<std::size_t>(g)]);
    }
    for (std::int32_t t = 0; t < tables_per_seq_; ++t) {
      const std::int32_t g = global_table(id, t);
      // the positions [length, s.length) are the table's last rows
      const std::int64_t rows = tables_.tokens(g) - (s.length - length);
      tables_.shrink(g, pages_for(rows), [&](page_id p) { drop(p); });
      tables_.set_tokens(g, rows);
    }
    s.length = length;
  }

  /// @brief Pages that `try_append(id, n)` would allocate now (copy-on-write pages included).
  [[nodiscard]] std::int64_t pages_needed(seq_id id, std::int64_t n) const {
    const auto& s = seq(id);
    KVCACHE_EXPECTS(n >= 0, errc::invalid_argument, "paged_kv_store: cannot append {} tokens", n);
    std::int64_t need = 0;
    for (std::int32_t t = 0; t < tables_per_seq_; ++t) {
      const std::int32_t g = global_table(id, t);
      const std::int64_t len = tables_.tokens(g);
      need += pages_for(len + n) - tables_.pages(g);
      if (n > 0 && len % layout_.page_size != 0 && alloc_.ref_count(tables_.last_page(g)) > 1) {
        ++need;  // copy-on-write of the shared partial last page
      }
    }
    (void)s;
    return need;
  }
  /// @brief Whether `try_append(id, n)` would succeed now.
  [[nodiscard]] bool can_append(seq_id id, std::int64_t n) const {
    return pages_needed(id, n) <= alloc_.free_count();
  }

  /**
   * @brief Reserves slots for `n` new tokens of every table of the sequence, allocating pages
   * (and private copies of shared partial pages) as needed. All or nothing: when the pool is
   * short, returns empty and changes nothing.
   * @param slots_out if not empty, receives the slots, `[table][n]` (tables_per_sequence() x n).
   * @return the new length.
   * @throws kvcache::error unknown_id; shape_mismatch when slots_out has another size.
   */
  std::optional<std::int64_t> try_append(seq_id id, std::int64_t n,
                                         std::span<std::int64_t> slots_out = {}) {
    auto& s = seq(id);
    KVCACHE_EXPECTS(n >= 0, errc::invalid_argument, "paged_kv_store: cannot append {} tokens", n);
    KVCACHE_EXPECTS(slots_out.empty() ||
                        slots_out.size() == static_cast<std::size_t>(n * tables_per_seq_),
                    errc::shape_mismatch,
                    "paged_kv_store: slots_out holds {} slots, {} tables x {} tokens need {}",
                    slots_out.size(), tables_per_seq_, n, n * tables_per_seq_);
    const std::int64_t mask = layout_.page_size - 1;
    const std::int32_t base = global_table(id, 0);
    if (n == 1 && tables_per_seq_ == 1) {  // decode fast path: room in an unshared last page
      const std::int64_t len = tables_.tokens(base);
      if ((len & mask) != 0) {
        const page_id last = tables_.last_page(base);
        if (alloc_.ref_count(last) == 1) {
          tables_.set_tokens(base, len + 1);
          if (!slots_out.empty()) slots_out[0] = static_cast<std::int64_t>(last) * layout_.page_size + (len & mask);
          return ++s.length;
        }
      }
    }
    // Pass 1: pages needed (new pages, and private copies of shared partial last pages).
    std::int64_t need = 0;
    for (std::int32_t g = base; g < base + tables_per_seq_; ++g) {
      const std::int64_t len = tables_.tokens(g);
      need += pages_for(len + n) - tables_.pages(g);
      if (n > 0 && (len & mask) != 0 && alloc_.ref_count(tables_.last_page(g)) > 1) ++need;
    }
    if (need > alloc_.free_count() && reclaimer_) {
      reclaimer_(static_cast<std::int32_t>(need - alloc_.free_count()));
    }
    if (need > alloc_.free_count()) return std::nullopt;
    // Pass 2: commit.
    for (std::int32_t g = base; g < base + tables_per_seq_; ++g) {
      const std::int64_t len = tables_.tokens(g);
      if (n > 0 && (len & mask) != 0) {
        const page_id last = tables_.last_page(g);
        if (alloc_.ref_count(last) > 1) {  // copy-on-write
          const page_id copy = *alloc_.try_allocate();
          pending_.push_back(page_copy{last, copy});
          ++cow_copies_;
          tables_.set_last_page(g, copy);
          drop(last);
        }
      }
      const std::int32_t target = pages_for(len + n);
      while (tables_.pages(g) < target) tables_.push_page(g, *alloc_.try_allocate());
      tables_.set_tokens(g, len + n);
      if (!slots_out.empty()) {
        const auto t = static_cast<std::size_t>(g - base);
        if (n == 1) {  // decode: the new token is in the last page
          slots_out[t] = static_cast<std::int64_t>(tables_.last_page(g)) * layout_.page_size +
                         (len & mask);
        } else {
          write_slots(g, len, n,
                      slots_out.subspan(t * static_cast<std::size_t>(n), static_cast<std::size_t>(n)));
        }
      }
    }
    s.length += n;
    return s.length;
  }

  /**
   * @brief Makes page `i` of table `t` of the sequence private before the caller writes into
   * it (a quantized store packing a completed group into a page a fork still shares): when the
   * page is shared, a free page replaces it in this table and, if `copy`, a `page_copy` is
   * recorded in `pending_copies()` (apply it before writing). Unshared pages are left alone.
   * @return the page id now at index i, or empty when the page is shared and the pool has no
   * free page (nothing changed).
   * @throws kvcache::error unknown_id; out_of_range for a bad table or page index.
   * @note O(i / 32).
   */
  std::optional<page_id> try_unshare(seq_id id, std::int32_t t, std::int32_t i, bool copy = true) {
    (void)seq(id);
    KVCACHE_EXPECTS(t >= 0 && t < tables_per_seq_, errc::out_of_range,
                    "paged_kv_store: table {} of {}", t, tables_per_seq_);
    const std::int32_t g = global_table(id, t);
    KVCACHE_EXPECTS(i >= 0 && i < tables_.pages(g), errc::out_of_range,
                    "paged_kv_store: page {} of a table of {} pages", i, tables_.pages(g));
    const page_id p = tables_.page(g, i);
    if (alloc_.ref_count(p) == 1) return p;
    const auto fresh = alloc_.try_allocate();
    if (!fresh) return std::nullopt;
    if (copy) {
      pending_.push_back(page_copy{p, *fresh});
      ++cow_copies_;
    }
    tables_.set_page(g, i, *fresh);
    drop(p);
    return *fresh;
  }
  /// @brief Page i of table t of the sequence. O(i / 32).
  [[nodiscard]] page_id page_at(seq_id id, std::int32_t t, std::int32_t i) const {
    (void)seq(id);
    const std::int32_t g = global_table(id, t);
    KVCACHE_EXPECTS(t >= 0 && t < tables_per_seq_ && i >= 0 && i < tables_.pages(g),
                    errc::out_of_range, "paged_kv_store: page {} of table {}", i, t);
    return tables_.page(g, i);
  }

  /// @brief Writes the slots of tokens [from, from + n) of table `t` of the sequence.
  void slots(seq_id id, std::int32_t t, std::int64_t from, std::int64_t n,
             std::span<std::int64_t> out) const {
    (void)seq(id);
    KVCACHE_EXPECTS(t >= 0 && t < tables_per_seq_, errc::out_of_range,
                    "paged_kv_store: table {} of {}", t, tables_per_seq_);
    const std::int32_t g = global_table(id, t);
    KVCACHE_EXPECTS(from >= 0 && n >= 0 && from + n <= tables_.tokens(g) &&
                        out.size() == static_cast<std::size_t>(n),
                    errc::out_of_range,
                    "paged_kv_store: slots [{}, {}) of a table of {} tokens into {} outputs", from,
                    from + n, tables_.tokens(g), out.size());
    write_slots(g, from, n, out);
  }

  /**
   * @brief Gives an empty sequence the pages of a cached prefix (a prefix-index hit): the caller's
   * references become the sequence's. `span_layers` only (one table per sequence).
   * @throws kvcache::error unknown_id; invalid_argument when the sequence is not empty.
   */
  void adopt_prefix(seq_id id, std::span<const page_id> pages)
    requires std::is_same_v<Geometry, span_layers>
  {
    auto& s = seq(id);
    KVCACHE_EXPECTS(s.length == 0, errc::invalid_argument,
                    "paged_kv_store: adopt_prefix into sequence {} which holds {} tokens", id.index,
                    s.length);
    const std::int32_t g = global_table(id, 0);
    for (page_id p : pages) {
      KVCACHE_EXPECTS(alloc_.ref_count(p) > 0, errc::bad_free,
                      "paged_kv_store: adopt_prefix of page {} which nobody references", p);
      tables_.push_page(g, p);
    }
    s.length = static_cast<std::int64_t>(pages.size()) * layout_.page_size;
    tables_.set_tokens(g, s.length);
  }

  /**
   * @brief Installs a function called when an append finds the pool short, with the number of
   * pages missing; it may free pages (a prefix index evicting unreferenced cached pages) before
   * `try_append` gives up. Empty function: none.
   */
  void set_reclaimer(std::function<void(std::int32_t)> reclaim) { reclaimer_ = std::move(reclaim); }

  // ---- compaction (token selection) ----------------------------------------------------------
  /**
   * @brief Keeps only the rows `keep` (strictly ascending row indices of table `t`) of the
   * sequence, densely packed from row 0 in the same order, and frees the pages no longer needed:
   * afterwards the table holds keep.size() tokens in ceil(keep.size() / page_size) pages (at most
   * one partial page). The sequence's length (its next position) does not change; other tables
   * are untouched, so under `per_layer` / `per_head` each layer or head keeps its own count.
   *
   * The data does not move here: the row moves to apply are **appended** to `moves_out`, in
   * order (ascending destination; each destination row precedes its source row in the table),
   * for `compact_kv_host` / `compact_kv_cuda`, which must run before anything else writes to the
   * pool (pages freed here can be handed out again). A page shared with another table or a
   * prefix index is never written: a page of the new layout that would change is replaced by a
   * fresh private page, and every row of it comes from a move (from the shared page or
   * elsewhere); unchanged leading pages stay shared.
   *
   * @return false, with nothing changed, when the copy-on-write pages needed exceed the free
   * pages (the reclaimer is asked first).
   * @throws kvcache::error unknown_id; out_of_range for a bad table; invalid_argument for rows
   * not strictly ascending or beyond the table, or while copy-on-write copies are pending
   * (apply them first: a move may read a page they fill).
   * @note O(table pages + keep.size()); no allocation once the scratch has held the largest
   * table and `moves_out` has capacity.
   */
  [[nodiscard]] bool try_compact(seq_id id, std::int32_t t, std::span<const std::int64_t> keep,
                                 std::vector<slot_move>& moves_out) {
    (void)seq(id);
    KVCACHE_EXPECTS(t >= 0 && t < tables_per_seq_, errc::out_of_range,
                    "paged_kv_store: table {} of {}", t, tables_per_seq_);
    KVCACHE_EXPECTS(pending_.empty(), errc::invalid_argument,
                    "paged_kv_store: compaction with {} copy-on-write copies pending",
                    pending_.size());
    const std::int32_t g = global_table(id, t);
    const std::int64_t n = tables_.tokens(g);
    for (std::size_t j = 0; j < keep.size(); ++j) {
      KVCACHE_EXPECTS(keep[j] >= 0 && keep[j] < n && (j == 0 || keep[j] > keep[j - 1]),
                      errc::invalid_argument,
                      "paged_kv_store: compaction keep[{}] = {} is outside the table's {} rows "
                      "or not ascending",
                      j, keep[j], n);
    }
    const std::int64_t ps = layout_.page_size;
    const auto m = static_cast<std::int64_t>(keep.size());
    const std::int32_t new_pages = pages_for(m);
    compact_pages_.clear();
    tables_.for_each_page(g, [&](page_id p) { compact_pages_.push_back(p); });
    const auto changed = [&](std::int32_t i) {  // page i of the new layout gets a different row
      for (std::int64_t j = i * ps; j < std::min(m, (i + 1) * ps); ++j) {
        if (keep[static_cast<std::size_t>(j)] != j) return true;
      }
      return false;
    };
    std::int32_t fresh = 0;
    for (std::int32_t i = 0; i < new_pages; ++i) {
      fresh += changed(i) && alloc_.ref_count(compact_pages_[static_cast<std::size_t>(i)]) > 1;
    }
    if (fresh > alloc_.free_count() && reclaimer_) reclaimer_(fresh - alloc_.free_count());
    if (fresh > alloc_.free_count()) return false;
    // every move is reserved before anything changes: pushing cannot throw after the table does
    moves_out.reserve(moves_out.size() + static_cast<std::size_t>(m));
    const auto old_slot = [&](std::int64_t row) {
      return static_cast<std::int64_t>(compact_pages_[static_cast<std::size_t>(row / ps)]) * ps +
             row % ps;
    };
    for (std::int32_t i = 0; i < new_pages; ++i) {
      if (!changed(i)) continue;
      const page_id old = compact_pages_[static_cast<std::size_t>(i)];
      const bool shared = alloc_.ref_count(old) > 1;
      const page_id dst = shared ? *alloc_.try_allocate() : old;
      for (std::int64_t j = i * ps; j < std::min(m, (i + 1) * ps); ++j) {
        const std::int64_t src = keep[static_cast<std::size_t>(j)];
        if (src != j || shared) moves_out.push_back(slot_move{old_slot(src), static_cast<std::int64_t>(dst) * ps + j % ps});
      }
      if (shared) {
        tables_.set_page(g, i, dst);
        drop(old);
      }
    }
    tables_.shrink(g, new_pages, [&](page_id p) { drop(p); });
    tables_.set_tokens(g, m);
    compacted_at_[static_cast<std::size_t>(g)] = seqs_[id.index].length;
    {  // rows still holding their own position: the leading rows every compaction kept in place
      std::int64_t same = 0;
      while (same < m && keep[static_cast<std::size_t>(same)] == same) ++same;
      auto& pr = positional_rows_[static_cast<std::size_t>(g)];
      pr = std::min(pr, same);
    }
    return true;
  }

  // ---- queries -----------------------------------------------------------------------------
  [[nodiscard]] bool contains(seq_id id) const noexcept {
    return id.index < seqs_.size() && seqs_[id.index].live &&
           seqs_[id.index].generation == id.generation;
  }
  [[nodiscard]] std::int64_t length(seq_id id) const { return seq(id).length; }
  [[nodiscard]] std::int32_t tables_per_sequence() const noexcept { return tables_per_seq_; }
  [[nodiscard]] std::int32_t table_pages(seq_id id, std::int32_t t) const {
    (void)seq(id);
    return tables_.pages(global_table(id, t));
  }
  [[nodiscard]] std::int64_t table_tokens(seq_id id, std::int32_t t) const {
    (void)seq(id);
    return tables_.tokens(global_table(id, t));
  }
  /// @brief Leading rows of table t that still hold their own position (row i = token i): all
  /// of them for a table never compacted, else the rows every compaction kept in place. Only
  /// pages entirely inside them hold tokens in position order, so only those may be given to a
  /// prefix index (`positional_pages`). O(1).
  [[nodiscard]] std::int64_t positional_rows(seq_id id, std::int32_t t) const {
    (void)seq(id);
    const std::int32_t g = global_table(id, t);
    return std::min(positional_rows_[static_cast<std::size_t>(g)], tables_.tokens(g));
  }
  /// @brief Leading full pages of table t in position order (see `positional_rows`).
  [[nodiscard]] std::int32_t positional_pages(seq_id id, std::int32_t t) const {
    return static_cast<std::int32_t>(positional_rows(id, t) / layout_.page_size);
  }
  /// @brief Calls f(page_id) for each page of table t of the sequence, in order.
  template <class F>
  void for_each_page(seq_id id, std::int32_t t, F&& f) const {
    (void)seq(id);
    tables_.for_each_page(global_table(id, t), f);
  }
  /// @brief The table of `layer` and kv `head` (under the geometry).
  [[nodiscard]] std::int32_t table_of(std::int32_t layer, std::int32_t head) const noexcept {
    return Geometry::table_of(layout_, layer, head);
  }

  // ---- copy-on-write -----------------------------------------------------------------------
  /// @brief Page copies the store decided on and that have not been applied yet.
  [[nodiscard]] std::span<const page_copy> pending_copies() const noexcept { return pending_; }
  /// @brief Forgets the pending copies (after the caller applied them itself).
  void clear_pending_copies() noexcept { pending_.clear(); }
  /// @brief Applies the pending copies with `copy_pages` (host) and clears them. For a
  /// `cuda_space` store use `batch_builder::finalize`, which uploads them with the step.
  void apply_pending_copies()
    requires(Space::host_accessible)
  {
    if (!pending_.empty()) {
      copy_pages_host(pool_.copy_view(), pending_.data(), static_cast<std::int32_t>(pending_.size()));
    }
    pending_.clear();
  }

  // ---- storage and bookkeeping ---------------------------------------------------------------
  [[nodiscard]] pool_type& pool() noexcept { return pool_; }
  [[nodiscard]] const kv_layout& layout() const noexcept { return layout_; }
  [[nodiscard]] const Allocator& allocator() const noexcept { return alloc_; }
  /// @brief The allocator, for a prefix index that holds its own page references.
  [[nodiscard]] Allocator& allocator() noexcept { return alloc_; }
  [[nodiscard]] std::int32_t max_sequences() const noexcept {
    return static_cast<std::int32_t>(seqs_.size());
  }

  /// @brief Occupancy. O(pages + tables).
  [[nodiscard]] store_stats stats() const {
    store_stats st;
    st.live_sequences = live_;
    st.pages_total = alloc_.num_pages();
    st.pages_free = alloc_.free_count();
    st.pages_used = st.pages_total - st.pages_free;
    for (page_id p = 0; p < st.pages_total; ++p) st.pages_shared += alloc_.ref_count(p) > 1;
    for (std::int32_t g = 0; g < tables_.num_tables(); ++g) st.logical_tokens += tables_.tokens(g);
    st.cow_copies = cow_copies_;
    return st;
  }

  /**
   * @brief Checks every invariant (for tests): each page's reference count equals the number of
   * tables holding it, free pages are unreferenced, counts add up, each table holds exactly
   * ceil(tokens / page_size) pages and the tokens of its sequence.
   * @throws kvcache::error logic_error naming the first broken invariant. O(pages + tables).
   */
  void check_invariants() const {
    check_invariants([](page_id) { return std::int32_t{0}; });
  }
  /// @brief `check_invariants` where `extra_refs(p)` references on page p are held outside the
  /// block tables (by a prefix index, say).
  template <class ExtraRefs>
  void check_invariants(ExtraRefs&& extra_refs) const {
    std::vector<std::int32_t> refs(static_cast<std::size_t>(alloc_.num_pages()), 0);
    for (std::uint32_t i = 0; i < seqs_.size(); ++i) {
      const auto& s = seqs_[i];
      for (std::int32_t t = 0; t < tables_per_seq_; ++t) {
        const std::int32_t g = static_cast<std::int32_t>(i) * tables_per_seq_ + t;
        if (!s.live) {
          KVCACHE_EXPECTS(tables_.pages(g) == 0, errc::logic_error,
                          "released slot {} table {} holds {} pages", i, t, tables_.pages(g));
          continue;
        }
        // a table never compacted holds every position; a compacted one at most all of them and
        // at least those appended since its compaction
        const std::int64_t since = compacted_at_[static_cast<std::size_t>(g)];
        KVCACHE_EXPECTS(since == 0 ? tables_.tokens(g) == s.length
                                   : (tables_.tokens(g) <= s.length &&
                                      tables_.tokens(g) >= s.length - since),
                        errc::logic_error,
                        "sequence {} table {} holds {} tokens, the sequence {} (compacted at {})",
                        i, t, tables_.tokens(g), s.length, since);
        KVCACHE_EXPECTS(tables_.pages(g) == pages_for(tables_.tokens(g)), errc::logic_error,
                        "sequence {} table {}: {} pages for {} tokens", i, t, tables_.pages(g),
                        tables_.tokens(g));
        tables_.for_each_page(g, [&](page_id p) { ++refs[static_cast<std::size_t>(p)]; });
      }
    }
    std::int32_t used = 0;
    for (page_id p = 0; p < alloc_.num_pages(); ++p) {
      refs[static_cast<std::size_t>(p)] += static_cast<std::int32_t>(extra_refs(p));
      KVCACHE_EXPECTS(alloc_.ref_count(p) == refs[static_cast<std::size_t>(p)], errc::logic_error,
                      "page {} has reference count {} but {} tables and holders hold it", p,
                      alloc_.ref_count(p), refs[static_cast<std::size_t>(p)]);
      used += refs[static_cast<std::size_t>(p)] > 0;
    }
    KVCACHE_EXPECTS(used + alloc_.free_count() == alloc_.num_pages(), errc::logic_error,
                    "{} used + {} free pages != {} pages", used, alloc_.free_count(),
                    alloc_.num_pages());
  }

 private:
  struct seq_record {
    std::uint32_t generation = 0;
    bool live = false;
    std::int64_t length = 0;
  };

  static std::int32_t checked_tables(const store_config& c) {
    c.layout.validate();
    KVCACHE_EXPECTS(c.max_sequences >= 1, errc::invalid_argument,
                    "paged_kv_store: max_sequences must be >= 1, got {}", c.max_sequences);
    const std::int64_t n =
        static_cast<std::int64_t>(c.max_sequences) * Geometry::tables_per_sequence(c.layout);
    KVCACHE_EXPECTS(n < (std::int64_t{1} << 31), errc::invalid_argument,
                    "paged_kv_store: {} sequences x {} tables is too many tables", c.max_sequences,
                    Geometry::tables_per_sequence(c.layout));
    return static_cast<std::int32_t>(n);
  }

  seq_record& seq(seq_id id) {
    KVCACHE_EXPECTS(contains(id), errc::unknown_id,
                    "paged_kv_store: sequence {} (generation {}) is unknown or released", id.index,
                    id.generation);
    return seqs_[id.index];
  }
  const seq_record& seq(seq_id id) const {
    KVCACHE_EXPECTS(contains(id), errc::unknown_id,
                    "paged_kv_store: sequence {} (generation {}) is unknown or released", id.index,
                    id.generation);
    return seqs_[id.index];
  }
  [[nodiscard]] std::int32_t global_table(seq_id id, std::int32_t t) const noexcept {
    return static_cast<std::int32_t>(id.index) * tables_per_seq_ + t;
  }
  [[nodiscard]] std::int32_t pages_for(std::int64_t tokens) const noexcept {
    return static_cast<std::int32_t>((tokens + layout_.page_size - 1) >> page_shift_);
  }
  void drop(page_id p) {
    if (alloc_.drop_ref(p) && !pending_.empty()) {
      // A pending copy into a page that is now free must not land on its next owner's data.
      std::erase_if(pending_, [p](const page_copy& c) { return c.dst == p; });
    }
  }
  void write_slots(std::int32_t g, std::int64_t from, std::int64_t n,
                   std::span<std::int64_t> out) const {
    if (n == 0) return;
    const std::int32_t ps = layout_.page_size;
    std::int64_t pos = from;
    std::size_t k = 0;
    tables_.for_each_page_from(g, static_cast<std::int32_t>(from / ps), [&](std::int32_t i, page_id p) {
      const std::int64_t page_end = static_cast<std::int64_t>(i + 1) * ps;
      for (; pos < page_end && k < out.size(); ++pos, ++k) {
        out[k] = static_cast<std::int64_t>(p) * ps + pos % ps;
      }
      return k < out.size();
    });
  }

  kv_layout layout_;
  std::int32_t page_shift_ = std::countr_zero(static_cast<std::uint32_t>(layout_.page_size));
  std::int32_t tables_per_seq_;
  pool_type pool_;
  Allocator alloc_;
  block_table_set tables_;
  std::vector<seq_record> seqs_;
  std::vector<std::int32_t> free_slots_;
  std::vector<page_copy> pending_;
  std::int32_t live_ = 0;
  std::int64_t cow_copies_ = 0;
  std::function<void(std::int32_t)> reclaimer_;
  std::vector<std::int64_t> compacted_at_;  ///< per table: the sequence length at its last compaction (0: never)
  static constexpr std::int64_t kAllRows = INT64_MAX;
  std::vector<std::int64_t> positional_rows_;  ///< per table: leading rows that hold their own position
  std::vector<page_id> compact_pages_;  // scratch of try_compact: the table's pages before it
};

}  // namespace kvcache
