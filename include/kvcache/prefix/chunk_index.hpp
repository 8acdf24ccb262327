/**
 * @file chunk_index.hpp
 * @brief `chunk_index`: position-independent reuse of cached chunks (as Cache-Craft and
 * CacheBlend, for RAG): caches a chunk's pages by the content of its tokens, independent of what
 * preceded it, and finds cached chunks anywhere in a new prompt, returning their pages and the
 * position their KV was computed at.
 *
 * What the engine must still do with a hit (see docs/prefix.md): the pages hold keys rotated for
 * positions [cached_position, ...) and attention computed without the new prompt's preceding
 * context. Before use it copies them (they are shared) and re-rotates the keys by
 * offset - cached_position (or recomputes them), and recomputes a few tokens (CacheBlend: the
 * ~15% with the largest KV deviation; Cache-Craft: per-chunk recomputation budgets) so the chunk
 * attends to what precedes it. Values need no rotation.
 *
 * Lookup: a chunk is found through a 64-bit polynomial rolling hash of its first page's tokens
 * (window = page size), so a chunk is found at any token offset of the prompt, not only at page
 * boundaries: the scan rolls the hash one token at a time (O(prompt tokens)), a counting filter
 * (64 Ki counters) rejects most offsets without touching the table, and candidates are verified
 * token by token. Hits are taken greedily left to right (the longest candidate at an offset; the
 * scan resumes after it); a hit may cover a prefix of a cached chunk.
 * Eviction: chunks in the policy's order, pages from a chunk's end (a chunk's beginning stays
 * findable), never a page another holder references.
 * Complexity: `insert` O(pages), `find` O(prompt tokens + tokens compared), `evict(n)`
 * O(n + (c + p) log chunks). Thread-safety: none.
 */
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "kvcache/core/error.hpp"
#include "kvcache/paging/lifo_allocator.hpp"
#include "kvcache/paging/page_allocator.hpp"
#include "kvcache/prefix/detail/flat_table.hpp"
#include "kvcache/prefix/detail/index_base.hpp"
#include "kvcache/prefix/eviction.hpp"
#include "kvcache/prefix/hasher.hpp"

namespace kvcache {

/// @brief A cached chunk found in a prompt.
struct chunk_hit {
  std::int64_t offset = 0;           ///< where the reused tokens start in the prompt
  std::int64_t tokens = 0;           ///< tokens reused (pages x page size)
  std::int64_t cached_position = 0;  ///< position the first of them had when its KV was computed
  std::int32_t first_page = 0;       ///< index of the hit's first page in the pages output
  std::int32_t pages = 0;            ///< pages of the hit
};

/// @brief Result of `chunk_index::find`.
struct chunk_find_result {
  std::int32_t hits = 0;   ///< entries written to the hits output
  std::int32_t pages = 0;  ///< pages written to the pages output (each referenced for the caller)
};

/**
 * @brief Cache of chunks (runs of whole pages) found by content anywhere in a prompt.
 * @tparam Allocator the store's page allocator; the index holds one reference per cached page.
 * @tparam Eviction `lru_eviction` (default) or `priority_eviction` (a chunk takes the highest
 * priority of its pages' retention settings).
 * @note The allocator must outlive the index. A page may be cached both here and in a prefix
 * index (each holds its own reference).
 */
template <page_allocator Allocator, eviction_policy Eviction = lru_eviction,
          page_hasher Hasher = xxh3_hasher>
class chunk_index : public detail::index_base<Allocator, Eviction, Hasher> {
  using base = detail::index_base<Allocator, Eviction, Hasher>;

 public:
  /// @throws kvcache::error invalid_argument for page_size < 1.
  explicit chunk_index(Allocator& alloc, std::int32_t page_size,
                       const prefix_index_options& options = {}, Eviction policy = {},
                       Hasher hasher = {})
      : base(alloc, page_size, options, std::move(policy), std::move(hasher)),
        next_(static_cast<std::size_t>(this->num_pages_), -1),
        prev_(static_cast<std::size_t>(this->num_pages_), -1),
        table_(static_cast<std::size_t>(this->num_pages_)),
        filter_(std::size_t{1} << filter_bits, 0) {
    pow_ = 1;
    for (std::int32_t i = 1; i < page_size; ++i) pow_ *= base_mult;
    chunks_.reserve(64);
  }
  ~chunk_index() { release_all(); }
  chunk_index(chunk_index&&) noexcept = default;
  chunk_index& operator=(chunk_index&& o) noexcept {
    if (this != &o) {
      release_all();
      base::operator=(std::move(o));
      chunks_ = std::move(o.chunks_);
      free_chunks_ = std::move(o.free_chunks_);
      next_ = std::move(o.next_);
      prev_ = std::move(o.prev_);
      table_ = std::move(o.table_);
      filter_ = std::move(o.filter_);
      pow_ = o.pow_;
    }
    return *this;
  }

  /**
   * @brief Caches a chunk: `pages[i]` holds tokens [i x page_size, (i + 1) x page_size) of
   * `tokens` (at least pages.size() x page_size tokens; more are ignored), computed with the
   * chunk's first token at position `position`. A chunk whose tokens are already cached (at least
   * as long) is not duplicated: nothing is adopted, and it counts as a use.
   * @return pages newly cached.
   * @throws kvcache::error shape_mismatch, out_of_range, bad_free as `prefix_index::insert`;
   * invalid_argument for a negative position, a page cached already or listed twice, or a bad
   * retention setting; unknown_id for an unregistered salt in "salts required" mode.
   */
  std::int32_t insert(std::span<const std::int32_t> tokens, std::span<const page_id> pages,
                      std::int64_t position, const prefix_key& key = {},
                      const retention_config& retention = {}) {
    this->check_salt(key.salt);
    this->check_insert(tokens, pages, "chunk_index::insert");
    KVCACHE_EXPECTS(position >= 0, errc::invalid_argument,
                    "chunk_index::insert: position {} is negative", position);
    if constexpr (Eviction::uses_retention) retention.validate();
    const std::int32_t ps = this->ps_;
    const auto n = static_cast<std::int32_t>(pages.size());
    if (n == 0) return 0;
    const std::uint64_t anchor = window_hash(tokens.data());
    std::int32_t r = this->find_root(key);
    if (r >= 0) {
      for (std::int32_t c = lookup(r, anchor); c >= 0; c = chunk_of(c).next_same) {
        if (chunk_of(c).count >= n && common_pages(c, tokens.data(), n) == n) {
          ++this->tick_;
          this->touch(c);
          return 0;
        }
      }
    }
    this->mark_new_pages(pages, 0, "chunk_index::insert");
    // ---- commit ----
    ++this->tick_;
    if (r < 0) r = this->create_root(key, this->hasher_.root(key.salt, key.extra));
    const std::int32_t c = new_chunk();
    chunk& ch = chunk_of(c);
    ch.root = r;
    ch.count = n;
    ch.position = position;
    ch.anchor = anchor;
    page_id prev = -1;
    page_key pk = this->root(r).hash;
    for (std::int32_t i = 0; i < n; ++i) {
      const page_id p = pages[static_cast<std::size_t>(i)];
      const std::int32_t* tok = tokens.data() + static_cast<std::size_t>(i) * ps;
      this->store_tokens(p, tok);
      pk = this->hasher_.page(pk, this->page_span(tok), key.extra);
      this->keys_[static_cast<std::size_t>(p)] = pk;
      prev_[static_cast<std::size_t>(p)] = prev;
      next_[static_cast<std::size_t>(p)] = -1;
      if (prev >= 0) next_[static_cast<std::size_t>(prev)] = p;
      prev = p;
      this->adopt(p);
    }
    ch.first = pages[0];
    ch.last = prev;
    const std::uint64_t sh = slot_hash(r, anchor);
    const std::int32_t head = lookup(r, anchor);
    if (head >= 0) {
      ch.next_same = chunk_of(head).next_same;
      chunk_of(head).next_same = c;
    } else {
      table_.insert(sh, c);
    }
    ++filter_[filter_slot(sh)];
    ++this->root(r).users;
    this->touch(c);
    this->make_evictable(c);
    if (Eviction::uses_retention && !retention.is_default()) {
      std::pair<std::int32_t, std::chrono::nanoseconds> best{-1, {}};
      for (std::int32_t i = 0; i < n; ++i) {
        const auto s = retention.for_page(static_cast<std::int64_t>(i) * ps, ps);
        if (s.first > best.first) best = s;
      }
      this->retain(c, best.first, best.second, policy_now(), true);
    }
    return n;
  }

  /**
   * @brief Finds cached chunks anywhere in `prompt` (any token offset), left to right, each at
   * least `min_pages` pages: writes a `chunk_hit` per chunk to `hits` and its pages, in order, to
   * `pages` (each referenced once for the caller, who returns unused ones with `release_match`).
   * Stops when either output is full.
   * @throws kvcache::error unknown_id for an unregistered salt in "salts required" mode;
   * invalid_argument for min_pages < 1.
   */
  chunk_find_result find(std::span<const std::int32_t> prompt, const prefix_key& key,
                         std::span<chunk_hit> hits, std::span<page_id> pages,
                         std::int32_t min_pages = 1) {
    this->check_salt(key.salt);
    KVCACHE_EXPECTS(min_pages >= 1, errc::invalid_argument,
                    "chunk_index::find: min_pages {} must be >= 1", min_pages);
    const std::int64_t w = this->ps_;
    const auto len = static_cast<std::int64_t>(prompt.size());
    chunk_find_result res;
    ++this->tick_;
    ++this->stats_.lookups;
    this->stats_.lookup_tokens += len;
    const std::int32_t r = this->find_root(key);
    if (r >= 0 && len >= w && !hits.empty() && !pages.empty()) {
      const std::int32_t* t = prompt.data();
      std::uint64_t h = window_hash(t);
      std::int64_t o = 0;
      while (res.hits < static_cast<std::int32_t>(hits.size()) &&
             res.pages < static_cast<std::int32_t>(pages.size())) {
        const std::uint64_t sh = slot_hash(r, h);
        std::int32_t best = -1;
        std::int32_t best_len = 0;
        if (filter_[filter_slot(sh)] != 0) {
          const auto room = static_cast<std::int32_t>(
              std::min<std::int64_t>((len - o) / w, static_cast<std::int64_t>(pages.size()) - res.pages));
          for (std::int32_t c = lookup(r, h); c >= 0; c = chunk_of(c).next_same) {
            const std::int32_t k = common_pages(c, t + o, std::min(room, chunk_of(c).count));
            if (k > best_len) {
              best = c;
              best_len = k;
            }
          }
        }
        if (best >= 0 && best_len >= min_pages) {
          chunk_hit& hit = hits[static_cast<std::size_t>(res.hits++)];
          hit.offset = o;
          hit.tokens = best_len * w;
          hit.cached_position = chunk_of(best).position;
          hit.first_page = res.pages;
          hit.pages = best_len;
          page_id p = chunk_of(best).first;
          for (std::int32_t i = 0; i < best_len; ++i, p = next_[static_cast<std::size_t>(p)]) {
            pages[static_cast<std::size_t>(res.pages++)] = p;
            this->lend(p);
          }
          this->touch(best);
          ++this->stats_.hits;
          this->stats_.hit_tokens += hit.tokens;
          o += best_len * w;
          if (o + w > len) break;
          h = window_hash(t + o);
          continue;
        }
        if (o + w >= len) break;
        h = (h - mix(t[o]) * pow_) * base_mult + mix(t[o + w]);
        ++o;
      }
    }
    if (res.hits == 0) ++this->stats_.misses;
    return res;
  }

  /**
   * @brief Evicts up to n cached pages that only the index references: chunks in the policy's
   * order, pages from a chunk's end. @return pages freed.
   * @throws kvcache::error invalid_argument for n < 0.
   */
  std::int32_t evict(std::int32_t n) {
    KVCACHE_EXPECTS(n >= 0, errc::invalid_argument, "chunk_index::evict: {} pages", n);
    this->expire_due();
    std::int32_t freed = 0;
    auto less = this->evict_less();
    while (freed < n && !this->heap_.empty()) {
      const std::int32_t u = this->heap_.top();
      chunk& ch = chunk_of(u);
      const cache_salt salt = this->root(ch.root).key.salt;
      while (freed < n && ch.count > 0 && this->alloc_->ref_count(ch.last) == 1) {
        const page_id p = ch.last;
        ch.last = prev_[static_cast<std::size_t>(p)];
        if (ch.last >= 0) {
          next_[static_cast<std::size_t>(ch.last)] = -1;
        } else {
          ch.first = -1;
        }
        prev_[static_cast<std::size_t>(p)] = -1;
        --ch.count;
        this->note_removed(salt, p);
        this->forget_page(p);
        ++freed;
      }
      if (ch.count == 0) {
        remove_chunk(u);
      } else if (freed < n) {
        this->heap_.erase(u, less);
        this->pinned_.push_back(u);
      }
    }
    ++this->tick_;
    this->restore_pinned();
    this->stats_.evicted_pages += freed;
    this->publish_removed();
    return freed;
  }

  /// @brief Drops every cached chunk. O(pool pages + chunks).
  void clear() {
    release_all();
    chunks_.clear();
    free_chunks_.clear();
    std::fill(next_.begin(), next_.end(), -1);
    std::fill(prev_.begin(), prev_.end(), -1);
    table_.clear();
    std::fill(filter_.begin(), filter_.end(), 0u);
    this->clear_units();
    this->clear_roots();
    this->reset_pages();
    this->publish_cleared();
  }

  /// @brief Chunks cached now.
  [[nodiscard]] std::int32_t chunk_count() const noexcept {
    return static_cast<std::int32_t>(chunks_.size() - free_chunks_.size());
  }

  /// @brief Checks the structure (for tests). @throws kvcache::error logic_error.
  void check_invariants() const {
    std::int64_t pages = 0;
    for (std::size_t i = 0; i < chunks_.size(); ++i) {
      const chunk& ch = chunks_[i];
      if (ch.root < 0) continue;
      const auto u = static_cast<std::int32_t>(i);
      std::int32_t k = 0;
      page_id last = -1;
      for (page_id p = ch.first; p >= 0; p = next_[static_cast<std::size_t>(p)], ++k) {
        KVCACHE_EXPECTS(this->is_cached(p) && prev_[static_cast<std::size_t>(p)] == last,
                        errc::logic_error, "chunk {} page {} is broken", u, p);
        last = p;
      }
      KVCACHE_EXPECTS(k == ch.count && k > 0 && last == ch.last && this->heap_.contains(u),
                      errc::logic_error, "chunk {}: {} pages listed, {} recorded", u, k, ch.count);
      KVCACHE_EXPECTS(window_hash(this->page_tokens(ch.first)) == ch.anchor &&
                          filter_[filter_slot(slot_hash(ch.root, ch.anchor))] > 0,
                      errc::logic_error, "chunk {} has a stale anchor", u);
      pages += k;
    }
    KVCACHE_EXPECTS(pages == this->stats_.cached_pages, errc::logic_error,
                    "{} pages in chunks, stats say {}", pages, this->stats_.cached_pages);
  }

 private:
  struct chunk {
    std::int32_t root = -1;       // root record; -1 for a free slot
    std::int32_t next_same = -1;  // next chunk with the same (root, anchor)
    page_id first = -1;
    page_id last = -1;
    std::int32_t count = 0;
    std::int64_t position = 0;  // position of the first token when computed
    std::uint64_t anchor = 0;   // rolling hash of the first page's tokens
  };
  static constexpr std::uint64_t base_mult = 0x100000001B3ull;  // odd
  static constexpr int filter_bits = 16;

  [[nodiscard]] chunk& chunk_of(std::int32_t c) noexcept { return chunks_[static_cast<std::size_t>(c)]; }
  [[nodiscard]] const chunk& chunk_of(std::int32_t c) const noexcept {
    return chunks_[static_cast<std::size_t>(c)];
  }
  [[nodiscard]] static std::uint64_t mix(std::int32_t t) noexcept {  // splitmix64 finalizer
    std::uint64_t z = static_cast<std::uint32_t>(t) + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  /// Rolling hash of the page_size tokens at t.
  [[nodiscard]] std::uint64_t window_hash(const std::int32_t* t) const noexcept {
    std::uint64_t h = 0;
    for (std::int32_t i = 0; i < this->ps_; ++i) h = h * base_mult + mix(t[i]);
    return h;
  }
  [[nodiscard]] static std::uint64_t slot_hash(std::int32_t r, std::uint64_t anchor) noexcept {
    const std::uint64_t x = anchor ^ ((static_cast<std::uint64_t>(r) + 1) * 0x9E3779B97F4A7C15ull);
    return x ^ (x >> 29);
  }
  [[nodiscard]] static std::size_t filter_slot(std::uint64_t sh) noexcept {
    return static_cast<std::size_t>(sh >> (64 - filter_bits));
  }
  [[nodiscard]] std::int32_t lookup(std::int32_t r, std::uint64_t anchor) const {
    return table_.find(slot_hash(r, anchor), [&](std::int32_t v) {
      const chunk& c = chunks_[static_cast<std::size_t>(v)];
      return c.root == r && c.anchor == anchor;
    });
  }
  /// Leading pages of chunk c (at most `limit`) whose tokens equal those at t.
  [[nodiscard]] std::int32_t common_pages(std::int32_t c, const std::int32_t* t,
                                          std::int32_t limit) const noexcept {
    std::int32_t k = 0;
    for (page_id p = chunk_of(c).first; p >= 0 && k < limit; p = next_[static_cast<std::size_t>(p)]) {
      if (!this->tokens_equal(p, t + static_cast<std::size_t>(k) * static_cast<std::size_t>(this->ps_))) break;
      ++k;
    }
    return k;
  }
  [[nodiscard]] std::int64_t policy_now() const {
    if constexpr (Eviction::uses_retention) {
      return this->policy_.now();
    } else {
      return 0;
    }
  }
  std::int32_t new_chunk() {
    std::int32_t c;
    if (!free_chunks_.empty()) {
      c = free_chunks_.back();
      free_chunks_.pop_back();
    } else {
      c = static_cast<std::int32_t>(chunks_.size());
      chunks_.emplace_back();
      this->ensure_unit(c);
    }
    chunk_of(c) = chunk{};
    this->reset_unit(c);
    return c;
  }
  void remove_chunk(std::int32_t c) {
    const chunk ch = chunk_of(c);
    this->drop_unit(c);
    const std::uint64_t sh = slot_hash(ch.root, ch.anchor);
    const std::int32_t head = lookup(ch.root, ch.anchor);
    if (head == c) {
      if (ch.next_same >= 0) {
        table_.replace(sh, c, ch.next_same);
      } else {
        table_.erase(sh, c);
      }
    } else {
      std::int32_t q = head;
      while (chunk_of(q).next_same != c) q = chunk_of(q).next_same;
      chunk_of(q).next_same = ch.next_same;
    }
    --filter_[filter_slot(sh)];
    if (--this->root(ch.root).users == 0) this->destroy_root(ch.root);
    chunk_of(c) = chunk{};
    free_chunks_.push_back(c);
  }
  void release_all() noexcept {
    if (!this->alloc_) return;
    try {
      for (page_id p = 0; p < this->num_pages_; ++p) {
        if (this->is_cached(p)) this->alloc_->drop_ref(p);
      }
    } catch (...) {
      // a broken allocator: nothing sensible to do in a destructor
    }
  }

  std::vector<chunk> chunks_;
  std::vector<std::int32_t> free_chunks_;
  std::vector<page_id> next_;
  std::vector<page_id> prev_;
  detail::flat_table table_;          // (root, anchor) -> first chunk
  std::vector<std::uint32_t> filter_;  // counting filter over (root, anchor)
  std::uint64_t pow_ = 1;              // base_mult^(page_size - 1)
};

}  // namespace kvcache
