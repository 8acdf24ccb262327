// kvcache-sim's view of a prefix cache: a small virtual interface so the simulator can run with
// no cache, kvcache::radix_index or kvcache::hash_chain_index, chosen at run time.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kvcache/core/error.hpp"
#include "kvcache/paging/paged_kv_store.hpp"

namespace kvsim {

class prefix_cache {
 public:
  virtual ~prefix_cache() = default;
  /// Longest cached prefix in whole pages: appends the pages (referenced for the caller) to
  /// `pages` and returns the tokens they cover.
  virtual std::int64_t match(std::span<const std::int32_t> tokens,
                             std::vector<kvcache::page_id>& pages) = 0;
  /// Returns a match's references that the caller did not adopt.
  virtual void release_match(std::span<const kvcache::page_id> pages) = 0;
  /// Caches the full pages of `tokens` (tokens.size() == pages.size() * page_size).
  virtual void insert(std::span<const std::int32_t> tokens,
                      std::span<const kvcache::page_id> pages) = 0;
  /// Evicts up to n pages no sequence references; returns how many.
  virtual std::int32_t evict(std::int32_t n) = 0;
  virtual std::int64_t cached_pages() const = 0;
  /// Cached pages that no sequence uses (memory the cache holds only for future hits). O(pages).
  virtual std::int64_t idle_pages() const = 0;
};

using sim_store = kvcache::paged_kv_store<kvcache::host_space, kvcache::span_layers>;

/// nullptr for "none"; throws kvcache::error for a kind this build does not have.
std::unique_ptr<prefix_cache> make_prefix_cache(const std::string& kind, sim_store& store);

}  // namespace kvsim
