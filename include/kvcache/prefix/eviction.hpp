/**
 * @file eviction.hpp
 * @brief Eviction order of cached pages: the `eviction_policy` concept, `lru_eviction` (the
 * default) and `priority_eviction` (retention priorities as in TensorRT-LLM), and the retention
 * settings an engine passes per request or per token range.
 *
 * An index keeps one `state` per evictable unit (a radix edge, a hash-chain page, a chunk) and
 * evicts, among the units that no other unit depends on (radix leaves, chain tails), the one
 * that `before` puts first. A model provides:
 *  - `typename P::state`, default-constructible, small (it is stored per cached unit);
 *  - `p.touch(state&, std::uint64_t tick)`: the unit was used (matched or inserted) at logical
 *    time `tick`, which only grows;
 *  - `bool p.before(const state& a, const state& b)`: a strict weak order, a evicted first;
 *  - `p.inherit(state& parent, const state& child)`: a child is evicted and its parent may become
 *    evictable; a use of the child was a use of the parent (indexes may touch only the deepest
 *    unit of a path and let the time climb this way), so the parent keeps the later use;
 *  - `static constexpr bool P::uses_retention`: whether it reads retention settings; if so,
 *    (`retention_eviction_policy`) also `std::int64_t p.now()` (nanoseconds),
 *    `bool p.retain(state&, std::int32_t priority, std::chrono::nanoseconds duration,
 *    std::int64_t now, bool fresh)` (fresh: the unit was just cached), `p.expire(state&)` and `std::int64_t P::expires_at(const state&)`
 *    (`P::never` when it does not expire).
 * A new model (LFU, a cost-aware order) adds `static_assert(kvcache::eviction_policy<my_policy>)`.
 */
#pragma once

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <utility>

#include "kvcache/core/error.hpp"

namespace kvcache {

/// @brief Priority of pages without retention settings (TensorRT-LLM's default, on 0..100).
inline constexpr std::int32_t default_retention_priority = 35;

/// @brief Retention of the pages holding tokens [begin, end) of a prompt.
struct token_range_retention {
  std::int64_t begin = 0;                                      ///< first token
  std::int64_t end = std::numeric_limits<std::int64_t>::max();  ///< one past the last token
  std::int32_t priority = default_retention_priority;          ///< 0..100, higher kept longer
  std::chrono::nanoseconds duration{0};  ///< after this, back to default priority; 0: no limit
};

/**
 * @brief Retention settings of a request (as TensorRT-LLM's KvCacheRetentionConfig): a priority
 * for the whole prompt and optional per-token-range priorities. A page takes the highest priority
 * among the ranges it overlaps, else `priority`.
 */
struct retention_config {
  std::int32_t priority = default_retention_priority;  ///< 0..100 for pages outside every range
  std::chrono::nanoseconds duration{0};  ///< after this, back to default priority; 0: no limit
  std::span<const token_range_retention> ranges{};  ///< may overlap; the highest priority wins

  /// @throws kvcache::error invalid_argument naming a priority outside 0..100, a negative
  /// duration or a range with end < begin.
  void validate() const {
    auto check = [](std::int32_t p, std::chrono::nanoseconds d) {
      KVCACHE_EXPECTS(p >= 0 && p <= 100, errc::invalid_argument,
                      "retention priority {} is outside 0..100", p);
      KVCACHE_EXPECTS(d.count() >= 0, errc::invalid_argument,
                      "retention duration {} ns is negative", d.count());
    };
    check(priority, duration);
    for (const auto& r : ranges) {
      check(r.priority, r.duration);
      KVCACHE_EXPECTS(r.begin >= 0 && r.end >= r.begin, errc::invalid_argument,
                      "retention token range [{}, {}) is not a range", r.begin, r.end);
    }
  }

  /// @brief Priority and duration of the page holding tokens [first, first + page_size).
  [[nodiscard]] std::pair<std::int32_t, std::chrono::nanoseconds> for_page(
      std::int64_t first, std::int32_t page_size) const noexcept {
    std::pair<std::int32_t, std::chrono::nanoseconds> best{-1, {}};
    for (const auto& r : ranges) {
      if (r.begin < first + page_size && r.end > first && r.priority > best.first) {
        best = {r.priority, r.duration};
      }
    }
    if (best.first < 0) best = {priority, duration};
    return best;
  }
  /// @brief Whether every page gets the default priority forever (nothing to apply).
  [[nodiscard]] bool is_default() const noexcept {
    return ranges.empty() && priority == default_retention_priority && duration.count() == 0;
  }
};

template <class P>
concept eviction_policy =
    std::movable<P> && std::default_initializable<typename P::state> &&
    requires(P& p, const P& cp, typename P::state& s, const typename P::state& cs,
             std::uint64_t tick) {
      p.touch(s, tick);
      p.inherit(s, cs);
      { cp.before(cs, cs) } -> std::convertible_to<bool>;
      { P::uses_retention } -> std::convertible_to<bool>;
    };

template <class P>
concept retention_eviction_policy =
    eviction_policy<P> && P::uses_retention &&
    requires(P& p, const P& cp, typename P::state& s, const typename P::state& cs,
             std::int32_t priority, std::chrono::nanoseconds d, std::int64_t now) {
      { cp.now() } -> std::same_as<std::int64_t>;
      { cp.retain(s, priority, d, now, true) } -> std::same_as<bool>;
      cp.expire(s);
      { P::expires_at(cs) } -> std::same_as<std::int64_t>;
      { P::never } -> std::convertible_to<std::int64_t>;
    };

/// @brief Least recently used first (the default). Ignores retention settings.
struct lru_eviction {
  struct state {
    std::uint64_t last_access = 0;  ///< logical time of the last match or insert
  };
  static constexpr bool uses_retention = false;
  void touch(state& s, std::uint64_t tick) const noexcept { s.last_access = tick; }
  void inherit(state& parent, const state& child) const noexcept {
    parent.last_access = std::max(parent.last_access, child.last_access);
  }
  [[nodiscard]] bool before(const state& a, const state& b) const noexcept {
    return a.last_access < b.last_access;
  }
};

/**
 * @brief Lowest retention priority first, least recently used among equals (TensorRT-LLM's
 * priority-based eviction). Retention is raise-only: a page shared by several requests keeps the
 * highest priority any of them asked for, until that setting's duration ends, when it drops to
 * `default_retention_priority`.
 * @note Durations are measured on `clock` (steady_clock by default; tests inject a fake one).
 */
class priority_eviction {
 public:
  static constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();
  struct state {
    std::uint64_t last_access = 0;                       ///< logical time of the last use
    std::int32_t priority = default_retention_priority;  ///< 0..100
    std::int64_t expires_at = never;  ///< clock time (ns) when priority drops to the default
  };
  static constexpr bool uses_retention = true;
  using clock_function = std::function<std::chrono::nanoseconds()>;

  priority_eviction() = default;
  /// @param clock returns the current time; only differences matter.
  explicit priority_eviction(clock_function clock) : clock_(std::move(clock)) {}

  void touch(state& s, std::uint64_t tick) const noexcept { s.last_access = tick; }
  void inherit(state& parent, const state& child) const noexcept {
    parent.last_access = std::max(parent.last_access, child.last_access);
  }
  [[nodiscard]] bool before(const state& a, const state& b) const noexcept {
    return a.priority != b.priority ? a.priority < b.priority : a.last_access < b.last_access;
  }
  [[nodiscard]] std::int64_t now() const {
    return clock_ ? clock_().count()
                  : std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now().time_since_epoch())
                        .count();
  }
  /// @brief Raises the unit's priority to `priority` (for `duration`, 0: no limit) unless its
  /// current, unexpired priority is higher; a `fresh` unit (just cached) takes it as is.
  /// @return whether the state changed.
  bool retain(state& s, std::int32_t priority, std::chrono::nanoseconds duration, std::int64_t now,
              bool fresh) const noexcept {
    if (fresh) {
      s.priority = priority;
      s.expires_at = duration.count() > 0 ? now + duration.count() : never;
      return true;
    }
    const bool live = s.expires_at > now;
    const std::int32_t current = live ? s.priority : default_retention_priority;
    if (priority < current) return false;
    const std::int64_t until = duration.count() > 0 ? now + duration.count() : never;
    if (priority == current && live && until <= s.expires_at) return false;  // nothing later
    s.priority = priority;
    s.expires_at = until;
    return true;
  }
  void expire(state& s) const noexcept {
    s.priority = default_retention_priority;
    s.expires_at = never;
  }
  [[nodiscard]] static std::int64_t expires_at(const state& s) noexcept { return s.expires_at; }

 private:
  clock_function clock_;
};

static_assert(eviction_policy<lru_eviction>);
static_assert(!retention_eviction_policy<lru_eviction>);
static_assert(retention_eviction_policy<priority_eviction>);

}  // namespace kvcache
