/**
 * @file huge_allocator.hpp
 * @brief `detail::huge_allocator`: a std::allocator for large page- or node-indexed arrays that
 * asks Linux for transparent huge pages (2 MiB, `madvise(MADV_HUGEPAGE)`), so random accesses
 * over hundreds of MiB of index state do not each miss the TLB. Small arrays, other systems, and
 * a kernel that declines (THP "never") get ordinary memory: only speed differs.
 */
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace kvcache::detail {

template <class T>
struct huge_allocator {
  using value_type = T;
  static constexpr std::size_t huge_page = std::size_t{2} << 20;

  huge_allocator() noexcept = default;
  template <class U>
  huge_allocator(const huge_allocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor)

  [[nodiscard]] T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
#if defined(__linux__)
    if (bytes >= huge_page) {
      void* p = std::aligned_alloc(huge_page, round_up(bytes));
      if (p == nullptr) throw std::bad_alloc();
      (void)madvise(p, round_up(bytes), MADV_HUGEPAGE);  // advice only: failure is harmless
      return static_cast<T*>(p);
    }
#endif
    return std::allocator<T>{}.allocate(n);
  }
  void deallocate(T* p, std::size_t n) noexcept {
#if defined(__linux__)
    if (n * sizeof(T) >= huge_page) {
      std::free(p);
      return;
    }
#endif
    std::allocator<T>{}.deallocate(p, n);
  }
  template <class U>
  friend bool operator==(const huge_allocator&, const huge_allocator<U>&) noexcept {
    return true;
  }

 private:
  static std::size_t round_up(std::size_t bytes) noexcept {
    return (bytes + huge_page - 1) / huge_page * huge_page;
  }
};

/// A vector whose large buffers sit on huge pages where the system allows.
template <class T>
using huge_vector = std::vector<T, huge_allocator<T>>;

}  // namespace kvcache::detail
