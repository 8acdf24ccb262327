/**
 * @file block_table.hpp
 * @brief `block_table_set`: every block table of a store in flat arrays (chunked page lists),
 
 *
 * A table is a list of page ids stored in chunks of `chunk_capacity` ids taken from one shared
 * chunk array; tables never own a container of their own. Appending a page is O(1); reading
 * page i is O(i / chunk_capacity); shrinking to n pages is O(n / chunk_capacity + chunks freed).
 */
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kvcache/core/error.hpp"
#include "kvcache/paging/page_allocator.hpp"

namespace kvcache {

/**
 * @brief The block tables of a store, in flat arrays.
 * @note Not thread-safe. The chunk array is sized at construction for `chunk_hint` chunks and
 * grows (amortized, rare) only when forks push the number of page references past it.
 */
class block_table_set {
 public:
  static constexpr std::int32_t chunk_capacity = 32;

  block_table_set() = default;
  block_table_set(std::int32_t num_tables, std::int32_t chunk_hint)
      : tables_(static_cast<std::size_t>(num_tables)) {
    grow_chunks(chunk_hint);
  }

  [[nodiscard]] std::int32_t num_tables() const noexcept {
    return static_cast<std::int32_t>(tables_.size());
  }
  [[nodiscard]] std::int32_t pages(std::int32_t t) const noexcept { return rec(t).pages; }
  [[nodiscard]] std::int64_t tokens(std::int32_t t) const noexcept { return rec(t).tokens; }
  void set_tokens(std::int32_t t, std::int64_t n) noexcept { rec(t).tokens = n; }

  /// @brief Page i of table t (i < pages(t)).
  [[nodiscard]] page_id page(std::int32_t t, std::int32_t i) const noexcept {
    std::int32_t c = rec(t).head;
    for (std::int32_t k = i / chunk_capacity; k > 0; --k) c = next_[static_cast<std::size_t>(c)];
    return ids_[static_cast<std::size_t>(c) * chunk_capacity + i % chunk_capacity];
  }
  /// @brief Replaces page i of table t (i < pages(t)). O(i / chunk_capacity).
  void set_page(std::int32_t t, std::int32_t i, page_id p) noexcept {
    std::int32_t c = rec(t).head;
    for (std::int32_t k = i / chunk_capacity; k > 0; --k) c = next_[static_cast<std::size_t>(c)];
    ids_[static_cast<std::size_t>(c) * chunk_capacity + i % chunk_capacity] = p;
  }
  /// @brief The last page of table t (pages(t) > 0). O(1).
  [[nodiscard]] page_id last_page(std::int32_t t) const noexcept {
    const auto& r = rec(t);
    return ids_[static_cast<std::size_t>(r.tail) * chunk_capacity + (r.pages - 1) % chunk_capacity];
  }
  /// @brief Replaces the last page of table t (copy-on-write). O(1).
  void set_last_page(std::int32_t t, page_id p) noexcept {
    const auto& r = rec(t);
    ids_[static_cast<std::size_t>(r.tail) * chunk_capacity + (r.pages - 1) % chunk_capacity] = p;
  }
  /// @brief Appends a page to table t. O(1) (amortized when the chunk array must grow).
  void push_page(std::int32_t t, page_id p) {
    auto& r = rec(t);
    if (r.pages % chunk_capacity == 0) {
      const std::int32_t c = take_chunk();
      if (r.head < 0) {
        r.head = c;
      } else {
        next_[static_cast<std::size_t>(r.tail)] = c;
      }
      r.tail = c;
    }
    ids_[static_cast<std::size_t>(r.tail) * chunk_capacity + r.pages % chunk_capacity] = p;
    ++r.pages;
  }
  /// @brief Calls f(page) for each page of t in order. O(pages).
  template <class F>
  void for_each_page(std::int32_t t, F&& f) const {
    const auto& r = rec(t);
    std::int32_t c = r.head;
    for (std::int32_t i = 0; i < r.pages; ++i) {
      if (i > 0 && i % chunk_capacity == 0) c = next_[static_cast<std::size_t>(c)];
      f(ids_[static_cast<std::size_t>(c) * chunk_capacity + i % chunk_capacity]);
    }
  }
  /// @brief Calls f(index, page) for pages first.. of t in order; stops when f returns false.
  /// O((pages - first) + first / chunk_capacity).
  template <class F>
  void for_each_page_from(std::int32_t t, std::int32_t first, F&& f) const {
    const auto& r = rec(t);
    if (first >= r.pages) return;
    std::int32_t c = r.head;
    for (std::int32_t k = first / chunk_capacity; k > 0; --k) c = next_[static_cast<std::size_t>(c)];
    for (std::int32_t i = first; i < r.pages; ++i) {
      if (i > first && i % chunk_capacity == 0) c = next_[static_cast<std::size_t>(c)];
      if (!f(i, ids_[static_cast<std::size_t>(c) * chunk_capacity + i % chunk_capacity])) return;
    }
  }
  /// @brief Shrinks table t to n pages, calling f(page) for each removed page, in table order.
  /// O(pages(t) / chunk_capacity + removed).
  template <class F>
  void shrink(std::int32_t t, std::int32_t n, F&& on_removed) {
    auto& r = rec(t);
    if (n >= r.pages) return;
    const std::int32_t keep_chunks = (n + chunk_capacity - 1) / chunk_capacity;
    std::int32_t c = r.head;
    std::int32_t last_kept = -1;
    for (std::int32_t k = 0; c >= 0; ++k) {
      const std::int32_t next = next_[static_cast<std::size_t>(c)];
      const std::int32_t begin = std::max(n, k * chunk_capacity);
      const std::int32_t end = std::min(r.pages, (k + 1) * chunk_capacity);
      for (std::int32_t i = begin; i < end; ++i) {
        on_removed(ids_[static_cast<std::size_t>(c) * chunk_capacity + i % chunk_capacity]);
      }
      if (k < keep_chunks) {
        last_kept = c;
      } else {
        next_[static_cast<std::size_t>(c)] = -1;
        free_chunks_.push_back(c);
      }
      c = next;
    }
    if (last_kept >= 0) {
      next_[static_cast<std::size_t>(last_kept)] = -1;
      r.tail = last_kept;
    } else {
      r.head = r.tail = -1;
    }
    r.pages = n;
  }
  /// @brief Makes the empty table `dst` a copy of table `src`'s page list and token count.
  /// O(pages).
  void copy_table(std::int32_t dst, std::int32_t src) {
    KVCACHE_EXPECTS(rec(dst).pages == 0, errc::logic_error,
                    "block_table_set: copy into table {} which holds {} pages", dst,
                    rec(dst).pages);
    // Collect first: push_page may grow the chunk arrays that for_each_page walks.
    const std::int32_t n = rec(src).pages;
    scratch_.resize(static_cast<std::size_t>(n));
    std::int32_t i = 0;
    for_each_page(src, [&](page_id p) { scratch_[static_cast<std::size_t>(i++)] = p; });
    for (page_id p : scratch_) push_page(dst, p);
    rec(dst).tokens = rec(src).tokens;
  }
  /// @brief Chunks in use / in the array (diagnostics).
  [[nodiscard]] std::int32_t chunks_total() const noexcept {
    return static_cast<std::int32_t>(next_.size());
  }
  [[nodiscard]] std::int32_t chunks_free() const noexcept {
    return static_cast<std::int32_t>(free_chunks_.size());
  }

 private:
  struct record {
    std::int32_t head = -1;
    std::int32_t tail = -1;
    std::int32_t pages = 0;
    std::int64_t tokens = 0;
  };
  record& rec(std::int32_t t) noexcept { return tables_[static_cast<std::size_t>(t)]; }
  const record& rec(std::int32_t t) const noexcept { return tables_[static_cast<std::size_t>(t)]; }

  std::int32_t take_chunk() {
    if (free_chunks_.empty()) grow_chunks(std::max<std::int32_t>(64, chunks_total()));
    const std::int32_t c = free_chunks_.back();
    free_chunks_.pop_back();
    next_[static_cast<std::size_t>(c)] = -1;
    return c;
  }
  void grow_chunks(std::int32_t extra) {
    const auto old = static_cast<std::int32_t>(next_.size());
    next_.resize(static_cast<std::size_t>(old + extra), -1);
    ids_.resize(static_cast<std::size_t>(old + extra) * chunk_capacity, -1);
    free_chunks_.reserve(static_cast<std::size_t>(old + extra));
    for (std::int32_t c = old + extra - 1; c >= old; --c) free_chunks_.push_back(c);
  }

  std::vector<record> tables_;
  std::vector<page_id> ids_;          // [chunks][chunk_capacity]
  std::vector<std::int32_t> next_;    // [chunks] next chunk of the same table, -1 at the tail
  std::vector<std::int32_t> free_chunks_;
  std::vector<page_id> scratch_;
};

}  // namespace kvcache
