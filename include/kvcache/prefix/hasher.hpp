/**
 * @file hasher.hpp
 * @brief The `page_hasher` concept and `xxh3_hasher` (XXH3-128 and XXH3-64 from xxHash).
 *
 * A model provides, all pure functions of their arguments and the hasher's own state (a seed):
 *  - `page_key h.root(cache_salt salt, std::uint64_t extra)`: the key a prompt's first page
 *    chains from;
 *  - `page_key h.page(const page_key& parent, std::span<const std::int32_t> tokens,
 *    std::uint64_t extra)`: the key of a page, from its parent's key, its tokens and the extra key;
 *  - `std::uint64_t h.content(std::span<const std::int32_t> tokens)`: a 64-bit hash of tokens
 *    alone (the radix index keys a node's children by it).
 * Indexes never trust a hash alone: they compare the tokens, so a hasher that collides (even one
 * returning a constant, as the tests inject) costs speed, never correctness.
 */
#pragma once

#include <concepts>
#include <cstdint>
#include <span>

#include "kvcache/prefix/types.hpp"

namespace kvcache {

template <class H>
concept page_hasher =
    std::copy_constructible<H> &&
    requires(const H& h, const page_key& k, std::span<const std::int32_t> t, cache_salt s,
             std::uint64_t e) {
      { h.root(s, e) } -> std::same_as<page_key>;
      { h.page(k, t, e) } -> std::same_as<page_key>;
      { h.content(t) } -> std::same_as<std::uint64_t>;
    };

/**
 * @brief XXH3 (xxHash 0.8): 128-bit page keys, 64-bit content hashes.
 *
 * Bytes hashed (little-endian), with `seed` as XXH3's seed:
 *  - root: salt (8 bytes), extra (8 bytes), XXH3-128;
 *  - page: parent.lo, parent.hi, extra (8 bytes each), then the tokens (4 bytes each), XXH3-128;
 *  - content: the tokens (4 bytes each), XXH3-64.
 * A router that recomputes keys from token ids uses the same recipe. Pick a secret random seed
 * where clients must not be able to craft collisions (a collision is verified away, but costs
 * a cache miss).
 * @note Implemented in the host library (src/prefix/hasher.cpp) with xxHash used header-only
 * (`XXH_INLINE_ALL`): the system's <xxhash.h> (Debian's libxxhash-dev) when kvcache is built;
 * engines that link kvcache need neither the header nor a library.
 */
struct xxh3_hasher {
  std::uint64_t seed = 0;  ///< XXH3 seed

  [[nodiscard]] page_key root(cache_salt salt, std::uint64_t extra) const noexcept;
  [[nodiscard]] page_key page(const page_key& parent, std::span<const std::int32_t> tokens,
                              std::uint64_t extra) const noexcept;
  [[nodiscard]] std::uint64_t content(std::span<const std::int32_t> tokens) const noexcept;
};

static_assert(page_hasher<xxh3_hasher>);

}  // namespace kvcache
