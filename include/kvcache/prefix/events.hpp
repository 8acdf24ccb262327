/**
 * @file events.hpp
 * @brief KV events for external routers (as vLLM's KV events): pages stored, pages removed, all
 * cleared; delivered through a callback or a bounded queue.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "kvcache/paging/page_allocator.hpp"
#include "kvcache/prefix/types.hpp"

namespace kvcache {

/// @brief What happened to the cache.
enum class prefix_event_type : std::uint8_t {
  block_stored,   ///< pages became cached (one event per insert that cached new pages)
  block_removed,  ///< pages were evicted (one event per run of one salt's pages in an evict call)
  all_cleared,    ///< `clear()` dropped every cached page
};

/**
 * @brief One event. For `block_stored`, the pages continue a chain: `parent` is the key of the
 * page before `keys[0]` (the root key of (salt, extra) for a prompt's first page) and `tokens`
 * holds the pages' tokens, `page_size` each, starting at token `first_token` of the prompt.
 */
struct prefix_event {
  prefix_event_type type = prefix_event_type::block_stored;
  cache_salt salt = 0;             ///< partition of the pages (stored, removed)
  std::uint64_t extra = 0;         ///< extra key of the pages (stored)
  page_key parent{};               ///< stored: key the first page chains from
  std::int64_t first_token = 0;    ///< stored: position of the first page's first token
  std::int32_t page_size = 0;      ///< tokens per page
  std::vector<page_key> keys;      ///< stored, removed: the pages' keys, in prefix order (stored)
  std::vector<page_id> pages;      ///< stored, removed: the local page ids
  std::vector<std::int32_t> tokens;  ///< stored: keys.size() x page_size tokens
};

/**
 * @brief Where an index sends its events: nowhere (the default), a callback, or a bounded queue
 * (a ring buffer that drops the oldest event when full, counting drops).
 * @note The queue reuses its events' vectors, so a steady state allocates nothing. A callback
 * runs inside the index's call, after its state is consistent; it must not call into the index.
 */
class prefix_event_sink {
 public:
  /// @brief Delivers each event to `f` as it happens (an empty function disables events).
  void set_callback(std::function<void(const prefix_event&)> f);
  /// @brief Queues events, keeping the newest `capacity` (>= 1).
  /// @throws kvcache::error invalid_argument for capacity 0.
  void use_queue(std::size_t capacity);
  /// @brief No delivery (the default): the index skips building events.
  void disable() noexcept;
  [[nodiscard]] bool enabled() const noexcept { return mode_ != mode::off; }

  /// @brief Queue mode: calls f(const prefix_event&) for each queued event, oldest first, and
  /// empties the queue. @return the number delivered.
  template <class F>
  std::size_t drain(F&& f) {
    std::size_t n = 0;
    while (size_ != 0) {
      const prefix_event& e = ring_[head_];
      head_ = (head_ + 1) % ring_.size();
      --size_;
      ++n;
      f(e);
    }
    return n;
  }
  /// @brief Events waiting in the queue.
  [[nodiscard]] std::size_t queued() const noexcept { return size_; }
  /// @brief Events dropped because the queue was full.
  [[nodiscard]] std::uint64_t dropped() const noexcept { return dropped_; }

  // ---- for indexes --------------------------------------------------------------------------
  /// @brief An event to fill, with empty vectors; `publish()` delivers it. Only when enabled().
  prefix_event& start(prefix_event_type type, std::int32_t page_size);
  /// @brief Delivers the event returned by the last `start`.
  void publish();

 private:
  enum class mode : std::uint8_t { off, callback, queue };
  mode mode_ = mode::off;
  std::function<void(const prefix_event&)> callback_;
  prefix_event scratch_;
  std::vector<prefix_event> ring_;
  std::size_t head_ = 0;
  std::size_t size_ = 0;
  std::uint64_t dropped_ = 0;
};

}  // namespace kvcache
