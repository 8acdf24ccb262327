/**
 * @file limiting_adaptor.hpp
 * @brief `limiting_adaptor<Upstream>`: caps the bytes outstanding through it.
 */
#pragma once

#include <atomic>
#include <cstddef>

#include "kvcache/memory/memory_resource.hpp"

namespace kvcache {

/**
 * @brief Forwards to `Upstream` while the bytes outstanding stay within `limit`; an allocation
 * that would go over throws errc::out_of_memory naming the request, the bytes in use and the
 * limit. Sizes are counted as requested (not rounded to the alignment).
 * @tparam Upstream a `memory_resource`; held by reference, it must outlive the adaptor.
 * @note Thread-safe (a lock-free counter); O(1) on top of the upstream. Stream-ordered calls are
 * forwarded when the upstream has them.
 */
template <memory_resource Upstream>
class limiting_adaptor {
 public:
  using space_type = typename Upstream::space_type;

  limiting_adaptor(Upstream& upstream, std::size_t limit_bytes)
      : upstream_(&upstream), limit_(limit_bytes) {}
  limiting_adaptor(const limiting_adaptor&) = delete;
  limiting_adaptor& operator=(const limiting_adaptor&) = delete;

  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t alignment = default_alignment) {
    reserve(bytes, alignment);
    try {
      return upstream_->allocate(bytes, alignment);
    } catch (...) {
      used_.fetch_sub(bytes);
      throw;
    }
  }
  void deallocate(void* p, std::size_t bytes, std::size_t alignment = default_alignment) {
    upstream_->deallocate(p, bytes, alignment);
    used_.fetch_sub(bytes);
  }
  [[nodiscard]] void* allocate_async(std::size_t bytes, std::size_t alignment, stream_view s)
    requires stream_ordered_resource<Upstream>
  {
    reserve(bytes, alignment);
    try {
      return upstream_->allocate_async(bytes, alignment, s);
    } catch (...) {
      used_.fetch_sub(bytes);
      throw;
    }
  }
  void deallocate_async(void* p, std::size_t bytes, std::size_t alignment, stream_view s)
    requires stream_ordered_resource<Upstream>
  {
    upstream_->deallocate_async(p, bytes, alignment, s);
    used_.fetch_sub(bytes);
  }

  [[nodiscard]] std::size_t limit() const noexcept { return limit_; }
  [[nodiscard]] std::size_t used() const noexcept { return used_.load(); }
  [[nodiscard]] Upstream& upstream() const noexcept { return *upstream_; }

 private:
  void reserve(std::size_t bytes, std::size_t alignment) {
    detail::check_allocation(bytes, alignment, "limiting_adaptor");
    std::size_t used = used_.load();
    do {
      KVCACHE_EXPECTS(bytes <= limit_ - used, errc::out_of_memory,
                      "limiting_adaptor: allocating {} bytes with {} of {} bytes in use would "
                      "exceed the limit",
                      bytes, used, limit_);
    } while (!used_.compare_exchange_weak(used, used + bytes));
  }

  Upstream* upstream_;
  std::size_t limit_;
  std::atomic<std::size_t> used_{0};
};

}  // namespace kvcache
