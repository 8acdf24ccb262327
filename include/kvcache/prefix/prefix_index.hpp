/**
 * @file prefix_index.hpp
 * @brief The `prefix_index` concept: find the longest cached prefix of a prompt in whole pages,
 * cache a sequence's full pages, evict unreferenced cached pages. Models: `radix_index` (a radix
 * tree at page granularity, as SGLang) and `hash_chain_index` (chained page hashes, as vLLM).
 *
 * Page ownership: an index is built over the store's page allocator and holds one reference of
 * its own on every cached page, so a cached page is referenced by no live sequence exactly when
 * `allocator.ref_count(p) == 1`. A model provides (I an index, tokens a span of token ids, key a
 * `prefix_key`, out a span of page ids):
 *  - `I(Allocator& alloc, std::int32_t page_size)` (further constructor arguments defaulted);
 *  - `match_result i.match(tokens, key, out)`: the longest cached prefix under `key` in whole
 *    pages (at most out.size()); the pages go to `out`, each with one reference for the caller,
 *    who adopts them into a sequence or returns them with `i.release_match(pages)` (any subset);
 *  - `std::int32_t i.insert(tokens, pages, key[, retention_config])`: caches the full pages of a
 *    prompt (tokens.size() >= pages.size() x page_size); a page already cached under the same key
 *    is not duplicated (the caller's is not adopted); returns the pages newly cached;
 *  - `std::int32_t i.evict(std::int32_t n)`: frees up to n cached pages that only the index
 *    references, in the eviction policy's order, never leaving a hole in a cached prefix;
 *  - `prefix_stats i.stats()`, `i.clear()`, `prefix_event_sink& i.events()`,
 *    `std::int32_t i.page_size()`, `i.register_salt(s)`, `bool i.is_cached(page_id)`.
 * Costs: match and insert O(prefix length in pages), evict O(n log cached) amortized; nothing is
 * allocated per call after construction except events, the first use of a new salt, and (radix)
 * an edge's arrays growing past their earlier capacity.
 * A new model (a disk-backed index, a learned one) adds `static_assert(kvcache::prefix_index<...>)`.
 */
#pragma once

#include <concepts>
#include <cstdint>
#include <span>

#include "kvcache/paging/page_allocator.hpp"
#include "kvcache/prefix/events.hpp"
#include "kvcache/prefix/eviction.hpp"
#include "kvcache/prefix/hasher.hpp"
#include "kvcache/prefix/types.hpp"

namespace kvcache {

template <class I>
concept prefix_index =
    page_allocator<typename I::allocator_type> &&
    std::constructible_from<I, typename I::allocator_type&, std::int32_t> &&
    requires(I& i, const I& ci, std::span<const std::int32_t> tokens, std::span<page_id> out,
             std::span<const page_id> pages, const prefix_key& key,
             const retention_config& retention, std::int32_t n, page_id p, cache_salt salt) {
      { i.match(tokens, key, out) } -> std::same_as<match_result>;
      i.release_match(pages);
      { i.insert(tokens, pages, key) } -> std::same_as<std::int32_t>;
      { i.insert(tokens, pages, key, retention) } -> std::same_as<std::int32_t>;
      { i.evict(n) } -> std::same_as<std::int32_t>;
      { ci.stats() } -> std::same_as<prefix_stats>;
      i.clear();
      { i.events() } -> std::same_as<prefix_event_sink&>;
      { ci.page_size() } -> std::same_as<std::int32_t>;
      i.register_salt(salt);
      { ci.is_cached(p) } -> std::same_as<bool>;
    };

}  // namespace kvcache
