/**
 * @file types.hpp
 * @brief Small value types shared by the prefix indexes: salts, 128-bit page keys, match results,
 * statistics and options.
 */
#pragma once

#include <cstdint>
#include <functional>

namespace kvcache {

/// @brief Tenant (or user) key that partitions a prefix index; 0 is the shared partition.
using cache_salt = std::uint64_t;

/**
 * @brief 128-bit key of a cached page: a hash of (parent page's key, the page's tokens, the extra
 * key), chained from a root key of (salt, extra). Both indexes compute the same keys, so an
 * external router sees one scheme (see `xxh3_hasher` for the exact bytes hashed).
 */
struct page_key {
  std::uint64_t lo = 0;  ///< low 64 bits
  std::uint64_t hi = 0;  ///< high 64 bits
  friend constexpr bool operator==(const page_key&, const page_key&) = default;
};

/// @brief What partitions a lookup: the salt, and an extra key mixed into every page's key.
struct prefix_key {
  cache_salt salt = 0;      ///< tenant partition (0: shared); never shares pages with another salt
  std::uint64_t extra = 0;  ///< per-request model variant: LoRA adapter id, model revision (0: none)
  friend constexpr bool operator==(const prefix_key&, const prefix_key&) = default;
};

/// @brief Result of `match`: how much of the prompt is cached, in whole pages.
struct match_result {
  std::int32_t pages = 0;   ///< pages written to `out`, each referenced once for the caller
  std::int64_t tokens = 0;  ///< tokens they hold (pages x page size)
};

/// @brief Counters of an index since construction (cached_pages: now).
struct prefix_stats {
  std::int64_t cached_pages = 0;    ///< pages the index holds a reference on now
  std::int64_t lookups = 0;         ///< match calls
  std::int64_t hits = 0;            ///< match calls that returned at least one page
  std::int64_t misses = 0;          ///< match calls that returned none
  std::int64_t lookup_tokens = 0;   ///< whole-page tokens offered to match
  std::int64_t hit_tokens = 0;      ///< tokens returned by match
  std::int64_t inserted_pages = 0;  ///< pages newly cached by insert
  std::int64_t evicted_pages = 0;   ///< pages dropped by evict (clear not counted)
  std::int64_t collisions = 0;      ///< distinct contents found under one hash (verified apart)
};

/// @brief Construction options of an index.
struct prefix_index_options {
  /// When true, every salt (0 included) must be registered with `register_salt` before use;
  /// others throw errc::unknown_id. When false, any salt is accepted.
  bool require_registered_salts = false;
};

}  // namespace kvcache

template <>
struct std::hash<kvcache::page_key> {
  std::size_t operator()(const kvcache::page_key& k) const noexcept {
    return static_cast<std::size_t>(k.lo ^ (k.hi * 0x9E3779B97F4A7C15ull));
  }
};
