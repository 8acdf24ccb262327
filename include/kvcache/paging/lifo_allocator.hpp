/**
 * @file lifo_allocator.hpp
 * @brief `lifo_allocator`: a LIFO free list of page ids with reference counts.
 */
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "kvcache/core/error.hpp"
#include "kvcache/paging/page_allocator.hpp"

namespace kvcache {

/**
 * @brief Free pages on a stack (the most recently freed page is reused first, which keeps the
 * working set warm in caches and TLBs), a reference count per page.
 * @note O(1) per page for every call; the two arrays are sized once at construction.
 * Not thread-safe: one scheduler thread owns it.
 */
class lifo_allocator {
 public:
  explicit lifo_allocator(std::int32_t num_pages) : refs_(checked(num_pages), 0) {
    free_.reserve(static_cast<std::size_t>(num_pages));
    for (std::int32_t p = num_pages - 1; p >= 0; --p) free_.push_back(p);  // page 0 on top
  }

  [[nodiscard]] std::optional<page_id> try_allocate() noexcept {
    if (free_.empty()) return std::nullopt;
    const page_id p = free_.back();
    free_.pop_back();
    refs_[static_cast<std::size_t>(p)] = 1;
    return p;
  }
  [[nodiscard]] bool try_allocate(std::span<page_id> out) noexcept {
    if (out.size() > free_.size()) return false;
    for (auto& p : out) {
      p = free_.back();
      free_.pop_back();
      refs_[static_cast<std::size_t>(p)] = 1;
    }
    return true;
  }
  void add_ref(page_id p) {
    check_live(p, "add_ref");
    ++refs_[static_cast<std::size_t>(p)];
  }
  /// @return true when the page became free.
  bool drop_ref(page_id p) {
    check_live(p, "drop_ref");
    if (--refs_[static_cast<std::size_t>(p)] == 0) {
      free_.push_back(p);
      return true;
    }
    return false;
  }
  [[nodiscard]] std::int32_t ref_count(page_id p) const {
    check_range(p, "ref_count");
    return refs_[static_cast<std::size_t>(p)];
  }
  /// @brief Hints that page p's reference count is about to be used (no effect on state; p must
  /// be in the pool).
  void prefetch(page_id p) const noexcept {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    // asm: GCC may drop a __builtin_prefetch in an inlined loop as dead code
    asm volatile("prefetcht0 %0" : : "m"(refs_[static_cast<std::size_t>(p)]));
#elif defined(__GNUC__)
    __builtin_prefetch(refs_.data() + static_cast<std::size_t>(p));
#else
    (void)p;
#endif
  }
  [[nodiscard]] std::int32_t free_count() const noexcept {
    return static_cast<std::int32_t>(free_.size());
  }
  [[nodiscard]] std::int32_t num_pages() const noexcept {
    return static_cast<std::int32_t>(refs_.size());
  }

 private:
  static std::size_t checked(std::int32_t n) {
    KVCACHE_EXPECTS(n >= 1, errc::invalid_argument, "lifo_allocator: num_pages must be >= 1, got {}",
                    n);
    return static_cast<std::size_t>(n);
  }
  void check_range(page_id p, const char* what) const {
    KVCACHE_EXPECTS(p >= 0 && static_cast<std::size_t>(p) < refs_.size(), errc::out_of_range,
                    "lifo_allocator::{}: page {} is not in the pool of {} pages", what, p,
                    refs_.size());
  }
  void check_live(page_id p, const char* what) const {
    check_range(p, what);
    KVCACHE_EXPECTS(refs_[static_cast<std::size_t>(p)] > 0, errc::bad_free,
                    "lifo_allocator::{}: page {} is free (double free, or never allocated)", what,
                    p);
  }

  std::vector<std::int32_t> refs_;
  std::vector<page_id> free_;
};

static_assert(page_allocator<lifo_allocator>);

}  // namespace kvcache
