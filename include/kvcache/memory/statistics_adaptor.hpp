/**
 * @file statistics_adaptor.hpp
 * @brief `statistics_adaptor<Upstream>`: counts bytes and calls, and catches bad frees.
 */
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "kvcache/memory/memory_resource.hpp"

namespace kvcache {

/// @brief A snapshot of a `statistics_adaptor`'s counters.
struct memory_statistics {
  std::size_t current_bytes = 0;       ///< bytes outstanding now
  std::size_t peak_bytes = 0;          ///< the most bytes ever outstanding at once
  std::size_t total_bytes = 0;         ///< bytes ever allocated
  std::size_t current_allocations = 0; ///< allocations outstanding now
  std::size_t peak_allocations = 0;    ///< the most allocations ever outstanding at once
  std::size_t allocation_count = 0;    ///< allocate calls that succeeded
  std::size_t deallocation_count = 0;  ///< deallocate calls that succeeded
};

/**
 * @brief Forwards to `Upstream` and keeps `memory_statistics`. It remembers each live
 * allocation, so a deallocate of a pointer it did not hand out, of one already freed, or with a
 * size other than the allocated one throws errc::bad_free naming the pointer and the sizes, and
 * is not forwarded (the upstream never sees a bad free).
 * @tparam Upstream a `memory_resource`; held by reference, it must outlive the adaptor.
 * @note Thread-safe (one mutex). O(1) expected per call, plus a hash-map node per live
 * allocation: use it for diagnostics and tests, not on a per-token path.
 */
template <memory_resource Upstream>
class statistics_adaptor {
 public:
  using space_type = typename Upstream::space_type;

  explicit statistics_adaptor(Upstream& upstream) : upstream_(&upstream) {}
  statistics_adaptor(const statistics_adaptor&) = delete;
  statistics_adaptor& operator=(const statistics_adaptor&) = delete;

  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t alignment = default_alignment) {
    void* p = upstream_->allocate(bytes, alignment);
    record_allocation(p, bytes);
    return p;
  }
  void deallocate(void* p, std::size_t bytes, std::size_t alignment = default_alignment) {
    record_deallocation(p, bytes);
    upstream_->deallocate(p, bytes, alignment);
  }
  [[nodiscard]] void* allocate_async(std::size_t bytes, std::size_t alignment, stream_view s)
    requires stream_ordered_resource<Upstream>
  {
    void* p = upstream_->allocate_async(bytes, alignment, s);
    record_allocation(p, bytes);
    return p;
  }
  void deallocate_async(void* p, std::size_t bytes, std::size_t alignment, stream_view s)
    requires stream_ordered_resource<Upstream>
  {
    record_deallocation(p, bytes);
    upstream_->deallocate_async(p, bytes, alignment, s);
  }

  /// @brief A consistent snapshot of the counters.
  [[nodiscard]] memory_statistics statistics() const {
    std::lock_guard lock(mutex_);
    return stats_;
  }
  [[nodiscard]] Upstream& upstream() const noexcept { return *upstream_; }

 private:
  void record_allocation(void* p, std::size_t bytes) {
    std::lock_guard lock(mutex_);
    live_.emplace(p, bytes);
    stats_.current_bytes += bytes;
    stats_.total_bytes += bytes;
    stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.current_bytes);
    ++stats_.current_allocations;
    stats_.peak_allocations = std::max(stats_.peak_allocations, stats_.current_allocations);
    ++stats_.allocation_count;
  }
  void record_deallocation(void* p, std::size_t bytes) {
    std::lock_guard lock(mutex_);
    auto it = live_.find(p);
    KVCACHE_EXPECTS(it != live_.end(), errc::bad_free,
                    "statistics_adaptor: deallocate of {} ({} bytes): not allocated here, or "
                    "freed already (double free)",
                    p, bytes);
    KVCACHE_EXPECTS(it->second == bytes, errc::bad_free,
                    "statistics_adaptor: deallocate of {} with {} bytes, but it was allocated "
                    "with {} bytes",
                    p, bytes, it->second);
    live_.erase(it);
    stats_.current_bytes -= bytes;
    --stats_.current_allocations;
    ++stats_.deallocation_count;
  }

  Upstream* upstream_;
  mutable std::mutex mutex_;
  memory_statistics stats_{};
  std::unordered_map<void*, std::size_t> live_;
};

}  // namespace kvcache
