/**
 * @file hash_chain_index.hpp
 * @brief `hash_chain_index`: prefix caching by chained page hashes (as vLLM): each full page is
 * keyed by a 128-bit hash of (its parent page's key, its tokens, the extra key), and a hash table
 * maps keys to cached pages. Every hit is verified against the page's stored tokens and its
 * parent, so a hash collision can never hand one prompt another prompt's KV.
 *
 * Structure: one node per cached page, stored at the page's own id (so no node allocation): its
 * parent page, its root (salt, extra), how many cached pages continue it, and the next node that
 * shares its 32-bit table tag (collisions are chained, not dropped). A page is evictable when no cached page
 * continues it (a chain tail) and only the index references it, so a cached prefix never has a
 * hole.
 *
 * Complexity: `match` O(pages matched + 1) hashes and lookups, pipelined 32 pages at a time
 * (keys computed ahead, table slots and nodes prefetched); `insert` O(pages), hashing only pages
 * that are not the caller's own already-cached pages; `evict(n)` O((n + p) log u) with u evictable
 * tails and p tails found in use (each counted as used then, so it is not scanned again soon).
 * Memory: per pool page about page_size x 4 + 68 bytes, allocated at construction.
 * Thread-safety: none; one scheduler thread owns the index, the allocator and the store.
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
#include "kvcache/prefix/prefix_index.hpp"

namespace kvcache {

/**
 * @brief Prefix index over chained 128-bit page hashes.
 * @tparam Allocator the store's page allocator; the index holds one reference on each cached page.
 * @tparam Eviction `lru_eviction` (default) or `priority_eviction`.
 * @tparam Hasher page key function (`xxh3_hasher`; tests inject colliding ones).
 * @note The allocator must outlive the index; the destructor drops the index's references.
 */
template <page_allocator Allocator, eviction_policy Eviction = lru_eviction,
          page_hasher Hasher = xxh3_hasher>
class hash_chain_index : public detail::index_base<Allocator, Eviction, Hasher> {
  using base = detail::index_base<Allocator, Eviction, Hasher>;

 public:
  /**
   * @param alloc the allocator of the store whose pages are cached (sizes the index).
   * @param page_size tokens per page (the store's layout.page_size).
   * @throws kvcache::error invalid_argument for page_size < 1.
   */
  explicit hash_chain_index(Allocator& alloc, std::int32_t page_size,
                            const prefix_index_options& options = {}, Eviction policy = {},
                            Hasher hasher = {})
      : base(alloc, page_size, options, std::move(policy), std::move(hasher)),
        nodes_(static_cast<std::size_t>(this->num_pages_)),
        table_(static_cast<std::size_t>(this->num_pages_)) {
    this->reserve_units(static_cast<std::size_t>(this->num_pages_));
  }
  ~hash_chain_index() { release_all(); }
  hash_chain_index(hash_chain_index&&) noexcept = default;
  hash_chain_index& operator=(hash_chain_index&& o) noexcept {
    if (this != &o) {
      release_all();
      base::operator=(std::move(o));
      nodes_ = std::move(o.nodes_);
      table_ = std::move(o.table_);
      path_ = std::move(o.path_);
      victims_ = std::move(o.victims_);
    }
    return *this;
  }

  /**
   * @brief The longest cached prefix of `tokens` under `key`, in whole pages, at most
   * `out.size()` pages: writes them to `out` and takes one reference on each for the caller, who
   * adopts them into a sequence (`paged_kv_store::adopt_prefix`) or returns them with
   * `release_match`. Counts as a use of every page returned.
   * @throws kvcache::error unknown_id for an unregistered salt in "salts required" mode.
   */
  match_result match(std::span<const std::int32_t> tokens, const prefix_key& key,
                     std::span<page_id> out) {
    this->check_salt(key.salt);
    const std::int32_t ps = this->ps_;
    const auto n = static_cast<std::int32_t>(
        std::min<std::size_t>(tokens.size() / static_cast<std::size_t>(ps), out.size()));
    std::int32_t m = 0;
    const std::int32_t r = this->find_root(key);
    if (r >= 0 && n > 0) m = walk(tokens.data(), key.extra, r, n, out.data());
    ++this->tick_;
    for (std::int32_t i = 0; i < m; ++i) {
      if (i + lookahead < m) this->prefetch_page_state(out[static_cast<std::size_t>(i + lookahead)]);
      this->lend(out[static_cast<std::size_t>(i)]);
    }
    // Only the deepest page is stamped: its ancestors get the time when it goes (inherit).
    if (m > 0) this->touch(out[static_cast<std::size_t>(m - 1)]);
    auto& st = this->stats_;
    ++st.lookups;
    st.lookup_tokens += static_cast<std::int64_t>(n) * ps;
    st.hit_tokens += static_cast<std::int64_t>(m) * ps;
    ++(m > 0 ? st.hits : st.misses);
    return {m, static_cast<std::int64_t>(m) * ps};
  }
  /// @brief `match` in the shared partition (salt 0, no extra key).
  match_result match(std::span<const std::int32_t> tokens, std::span<page_id> out) {
    return match(tokens, prefix_key{}, out);
  }

  /**
   * @brief Caches the full pages of a prompt: `pages[i]` holds tokens [i x page_size,
   * (i + 1) x page_size) of `tokens`, which must hold at least pages.size() x page_size tokens
   * (more are ignored). A page already cached under the same key is not duplicated: the index
   * keeps its own and the caller's page is not adopted. Adopted pages get one index reference.
   * Counts as a use of every page of the prompt; `retention` applies to them (priority policies).
   * @return pages newly cached.
   * @throws kvcache::error shape_mismatch when tokens do not fill the pages; out_of_range or
   * bad_free naming a page outside the pool or free; invalid_argument naming a page that is
   * cached at another position (or salt) or listed twice, or a bad retention setting; unknown_id
   * for an unregistered salt in "salts required" mode. Nothing changes when it throws.
   */
  std::int32_t insert(std::span<const std::int32_t> tokens, std::span<const page_id> pages,
                      const prefix_key& key = {}, const retention_config& retention = {}) {
    this->check_salt(key.salt);
    this->check_insert(tokens, pages, "hash_chain_index::insert");
    if constexpr (Eviction::uses_retention) retention.validate();
    const std::int32_t ps = this->ps_;
    const auto n = static_cast<std::int32_t>(pages.size());
    std::int32_t r = this->find_root(key);
    page_key pk = r >= 0 ? this->root(r).hash : this->hasher_.root(key.salt, key.extra);
    std::int32_t parent = -1;
    std::int32_t f = 0;
    bool have_next = false;
    page_key next_key{};
    path_.clear();
    if (r >= 0) {
      for (; f < n; ++f) {
        const page_id p = pages[static_cast<std::size_t>(f)];
        const std::int32_t* tok = tokens.data() + static_cast<std::size_t>(f) * ps;
        if (f + lookahead < n) {
          const page_id ahead = pages[static_cast<std::size_t>(f + lookahead)];
#if defined(__GNUC__)
          __builtin_prefetch(&nodes_[static_cast<std::size_t>(ahead)]);
#endif
          this->prefetch_page_state(ahead);
        }
        std::int32_t q = -1;
        if (this->is_cached(p) && node_of(p).parent == parent && node_of(p).root == r) {
          q = p;  // the caller's page is the cached one (it came from a match)
        } else {
          if (parent >= 0) pk = this->keys_[static_cast<std::size_t>(parent)];
          const page_key k = this->hasher_.page(pk, this->page_span(tok), key.extra);
          q = verify(lookup(k), parent, r, tok);
          if (q < 0) {
            next_key = k;
            have_next = true;
            break;
          }
          KVCACHE_EXPECTS(!this->is_cached(p), errc::invalid_argument,
                          "hash_chain_index::insert: page {} (index {}) is already cached at "
                          "another position or salt",
                          p, f);
        }
        path_.push_back(q);
        parent = q;  // its key is read only if a page after it needs hashing
      }
      if (parent >= 0) pk = this->keys_[static_cast<std::size_t>(parent)];
    }
    this->mark_new_pages(pages.subspan(static_cast<std::size_t>(f)), f,
                         "hash_chain_index::insert");
    // ---- commit (nothing below throws) ----
    ++this->tick_;
    const bool retain = Eviction::uses_retention && !retention.is_default();
    const std::int64_t now = retain ? policy_now() : 0;
    // Only the deepest page is stamped (the new tail below, or the last existing page): its
    // ancestors get the time when it goes (inherit).
    if (f == n && !path_.empty()) this->touch(path_.back());
    if (retain) {
      for (std::size_t i = 0; i < path_.size(); ++i) {
        apply_retention(path_[i], static_cast<std::int64_t>(i), retention, now, false);
      }
    }
    if (f == n) return 0;
    if (r < 0) r = this->create_root(key, pk);
    if (parent >= 0 && node_of(parent).children == 0) this->make_unevictable(parent);
    const page_key first_parent = pk;
    page_key kb[block];
    for (std::int32_t i0 = f; i0 < n; i0 += block) {
      // Keys of a block first (their table slots and the pages' records prefetched), then the
      // block's inserts: the cache misses of a block overlap.
      const std::int32_t b = std::min(block, n - i0);
      for (std::int32_t j = 0; j < b; ++j) {
        const std::int32_t i = i0 + j;
        const page_id p = pages[static_cast<std::size_t>(i)];
        const std::int32_t* tok = tokens.data() + static_cast<std::size_t>(i) * ps;
        kb[j] = (i == f && have_next) ? next_key
                                      : this->hasher_.page(pk, this->page_span(tok), key.extra);
        pk = kb[j];
        table_.prefetch(kb[j].lo);
#if defined(__GNUC__)
        __builtin_prefetch(&nodes_[static_cast<std::size_t>(p)], 1);
        __builtin_prefetch(&this->keys_[static_cast<std::size_t>(p)], 1);
        __builtin_prefetch(this->page_tokens(p), 1);
#endif
      }
      for (std::int32_t j = 0; j < b; ++j) {
        const std::int32_t i = i0 + j;
        const page_id p = pages[static_cast<std::size_t>(i)];
        const page_key& k = kb[j];
        node& nd = node_of(p);
        nd = node{parent, r, 0, -1};
        this->keys_[static_cast<std::size_t>(p)] = k;
        this->store_tokens(p, tokens.data() + static_cast<std::size_t>(i) * ps);
        const std::int32_t head = lookup(k);
        if (head >= 0) {  // same table tag, other content or parent: chain it
          nd.next_same = node_of(head).next_same;
          node_of(head).next_same = p;
          ++this->stats_.collisions;
        } else {
          table_.insert(k.lo, p);
        }
        if (parent >= 0) {
          ++node_of(parent).children;
        } else {
          ++this->root(r).users;
        }
        this->adopt(p);
        this->reset_unit(p);
        this->stamp(p);
        if (retain) apply_retention(p, i, retention, now, true);
        parent = p;
      }
    }
    this->make_evictable(pages[static_cast<std::size_t>(n - 1)]);
    if (this->events_.enabled()) {
      prefix_event& e = this->events_.start(prefix_event_type::block_stored, ps);
      e.salt = key.salt;
      e.extra = key.extra;
      e.parent = first_parent;
      e.first_token = static_cast<std::int64_t>(f) * ps;
      for (std::int32_t i = f; i < n; ++i) {
        const page_id p = pages[static_cast<std::size_t>(i)];
        e.keys.push_back(this->keys_[static_cast<std::size_t>(p)]);
        e.pages.push_back(p);
      }
      e.tokens.assign(tokens.begin() + static_cast<std::ptrdiff_t>(f) * ps,
                      tokens.begin() + static_cast<std::ptrdiff_t>(n) * ps);
      this->events_.publish();
    }
    return n - f;
  }

  /**
   * @brief Evicts up to n cached pages that only the index references, chain tails first, in the
   * policy's order; they return to the allocator's free list.
   * @return pages freed (fewer than n when no more are evictable).
   * @throws kvcache::error invalid_argument for n < 0.
   */
  std::int32_t evict(std::int32_t n) {
    KVCACHE_EXPECTS(n >= 0, errc::invalid_argument, "hash_chain_index::evict: {} pages", n);
    this->expire_due();
    std::int32_t freed = 0;
    auto less = this->evict_less();
    while (freed < n && !this->heap_.empty()) {
      const std::int32_t u = this->heap_.top();
      if (this->alloc_->ref_count(u) > 1) {  // in use: not evictable now
        this->heap_.erase(u, less);
        this->pinned_.push_back(u);
        continue;
      }
      detach(u);  // the table is updated below, prefetched
      victims_.push_back(u);
      ++freed;
    }
    for (std::size_t i = 0; i < victims_.size(); ++i) {
      if (i + prefetch_distance < victims_.size()) {
        table_.prefetch(this->keys_[static_cast<std::size_t>(victims_[i + prefetch_distance])].lo);
      }
      const page_id u = victims_[i];
      unlink(u);
      node_of(u) = node{};
      this->forget_page(u);
    }
    victims_.clear();
    ++this->tick_;
    this->restore_pinned();
    this->stats_.evicted_pages += freed;
    this->publish_removed();
    return freed;
  }

  /// @brief Drops every cached page (pages that sequences or matches reference stay theirs).
  /// O(pool pages).
  void clear() {
    release_all();
    for (auto& nd : nodes_) nd = node{};
    table_.clear();
    this->clear_units();
    this->clear_roots();
    this->reset_pages();
    this->publish_cleared();
  }

  /// @brief Checks the structure against the allocator (for tests): every cached page is
  /// referenced, its parent cached in the same root, child counts and root users add up, the
  /// evictable set is exactly the chain tails, and every node is found under its key.
  /// @throws kvcache::error logic_error naming the first broken invariant. O(pool pages).
  void check_invariants() const {
    const std::int32_t np = this->num_pages_;
    std::vector<std::int32_t> children(static_cast<std::size_t>(np), 0);
    std::vector<std::int32_t> users(this->roots_.size(), 0);
    std::int64_t cached = 0;
    for (page_id p = 0; p < np; ++p) {
      if (!this->is_cached(p)) continue;
      ++cached;
      const node& nd = node_of(p);
      KVCACHE_EXPECTS(this->alloc_->ref_count(p) >= 1, errc::logic_error,
                      "cached page {} has reference count {}", p, this->alloc_->ref_count(p));
      if (nd.parent >= 0) {
        KVCACHE_EXPECTS(this->is_cached(nd.parent) && node_of(nd.parent).root == nd.root,
                        errc::logic_error, "page {}: parent {} is not cached in root {}", p,
                        nd.parent, nd.root);
        ++children[static_cast<std::size_t>(nd.parent)];
      } else {
        ++users[static_cast<std::size_t>(nd.root)];
      }
      const page_key& k = this->keys_[static_cast<std::size_t>(p)];
      bool found = false;
      for (std::int32_t q = lookup(k); q >= 0; q = node_of(q).next_same) found = found || q == p;
      KVCACHE_EXPECTS(found, errc::logic_error, "page {} is not found under its key", p);
    }
    KVCACHE_EXPECTS(cached == this->stats_.cached_pages, errc::logic_error,
                    "{} pages cached, stats say {}", cached, this->stats_.cached_pages);
    for (page_id p = 0; p < np; ++p) {
      if (!this->is_cached(p)) continue;
      KVCACHE_EXPECTS(children[static_cast<std::size_t>(p)] == node_of(p).children,
                      errc::logic_error, "page {} has {} children, counted {}", p,
                      node_of(p).children, children[static_cast<std::size_t>(p)]);
      KVCACHE_EXPECTS(this->heap_.contains(p) == (node_of(p).children == 0), errc::logic_error,
                      "page {} with {} children is {}in the eviction heap", p, node_of(p).children,
                      this->heap_.contains(p) ? "" : "not ");
    }
    for (std::size_t r = 0; r < this->roots_.size(); ++r) {
      KVCACHE_EXPECTS(users[r] == this->roots_[r].users, errc::logic_error,
                      "root {} has {} users, counted {}", r, this->roots_[r].users, users[r]);
    }
  }

 private:
  struct node {
    std::int32_t parent = -1;     // parent page, -1 for a prompt's first page
    std::int32_t root = -1;       // root record
    std::int32_t children = 0;    // cached pages continuing this one
    std::int32_t next_same = -1;  // next node under the same key
  };
  static constexpr std::int32_t block = 32;  // pages hashed and prefetched ahead in match
  static constexpr std::size_t prefetch_distance = 8;  // victims whose table slot is prefetched
  static constexpr std::int32_t lookahead = 8;          // pages prefetched ahead in plain loops

  [[nodiscard]] node& node_of(page_id p) noexcept { return nodes_[static_cast<std::size_t>(p)]; }
  [[nodiscard]] const node& node_of(page_id p) const noexcept {
    return nodes_[static_cast<std::size_t>(p)];
  }
  [[nodiscard]] std::int64_t policy_now() const {
    if constexpr (Eviction::uses_retention) {
      return this->policy_.now();
    } else {
      return 0;
    }
  }
  void apply_retention(std::int32_t u, std::int64_t page_index, const retention_config& ret,
                       std::int64_t now, bool fresh) {
    const auto [priority, duration] = ret.for_page(page_index * this->ps_, this->ps_);
    this->retain(u, priority, duration, now, fresh);
  }
  /// First node stored under key k, or -1.
  [[nodiscard]] std::int32_t lookup(const page_key& k) const {
    // The table's identity is its 32-bit tag: nodes sharing it form one chain, told apart by
    // parent, root and tokens (never by reading keys, which would cost a cache miss per probe).
    return table_.find(k.lo, [](std::int32_t) { return true; });
  }
  /// The node among those under one key that continues `parent` in root r with these tokens.
  /// The parent and root are compared before the tokens, so another partition's page is never
  /// compared token by token.
  [[nodiscard]] std::int32_t verify(std::int32_t head, std::int32_t parent, std::int32_t r,
                                    const std::int32_t* tok) {
    for (std::int32_t q = head; q >= 0; q = node_of(q).next_same) {
      const node& nd = node_of(q);
      if (nd.parent == parent && nd.root == r && this->tokens_equal(q, tok)) return q;
    }
    if (head >= 0) ++this->stats_.collisions;
    return -1;
  }
  /// Hashes pages [m, m + b) of the chain continuing `pk` (b = min(block, n - m)) into keys,
  /// prefetching their table slots; `pk` becomes the last key. @return b.
  std::int32_t hash_block(const std::int32_t* tokens, std::uint64_t extra, std::int32_t m,
                          std::int32_t n, page_key& pk, page_key* keys) const {
    const std::int32_t b = std::min(block, n - m);
    for (std::int32_t i = 0; i < b; ++i) {
      const std::int32_t* tok = tokens + static_cast<std::size_t>(m + i) * this->ps_;
      keys[i] = this->hasher_.page(pk, this->page_span(tok), extra);
      pk = keys[i];
      table_.prefetch(keys[i].lo);
    }
    return b;
  }
  /// Matches up to n pages from the root, software-pipelined: while a block's nodes and tokens
  /// are being prefetched, the next block is hashed (its slots prefetched), then the block is
  /// verified; so the memory latency of a block's lookups overlaps the hashing of the next.
  std::int32_t walk(const std::int32_t* tokens, std::uint64_t extra, std::int32_t r,
                    std::int32_t n, page_id* out) {
    const std::int32_t ps = this->ps_;
    page_key keys[2][block];
    std::int32_t heads[block];
    page_key pk = this->root(r).hash;
    std::int32_t parent = -1;
    std::int32_t m = 0;
    std::int32_t cur = 0;
    std::int32_t b = hash_block(tokens, extra, 0, n, pk, keys[0]);
    while (b > 0) {
      std::int32_t found = 0;
      for (; found < b; ++found) {
        const std::int32_t h = lookup(keys[cur][found]);
        if (h < 0) break;
        heads[found] = h;
#if defined(__GNUC__)
        __builtin_prefetch(&nodes_[static_cast<std::size_t>(h)]);
#endif
        this->prefetch_page(h);
      }
      const std::int32_t next =
          found == b && m + b < n ? hash_block(tokens, extra, m + b, n, pk, keys[cur ^ 1]) : 0;
      for (std::int32_t i = 0; i < found; ++i) {
        const std::int32_t q = verify(heads[i], parent, r, tokens + static_cast<std::size_t>(m) * ps);
        if (q < 0) return m;
        out[m++] = q;
        parent = q;
      }
      if (found < b) return m;
      b = next;
      cur ^= 1;
    }
    return m;
  }
  void unlink(page_id u) {
    const page_key& k = this->keys_[static_cast<std::size_t>(u)];
    if (table_.contains(k.lo, u)) {  // u heads its chain
      const std::int32_t next = node_of(u).next_same;
      if (next >= 0) {
        table_.replace(k.lo, u, next);
      } else {
        table_.erase(k.lo, u);
      }
      return;
    }
    std::int32_t q = lookup(k);
    while (node_of(q).next_same != u) q = node_of(q).next_same;
    node_of(q).next_same = node_of(u).next_same;
  }
  /// Takes a victim out of the tree (heaps, parent, root), leaving its table entry and page.
  void detach(page_id u) {
    const node& nd = node_of(u);
    this->drop_unit(u);
    this->note_removed(this->root(nd.root).key.salt, u);
    if (nd.parent >= 0) {
      this->inherit(nd.parent, u);
      if (--node_of(nd.parent).children == 0) this->make_evictable(nd.parent);
    } else if (--this->root(nd.root).users == 0) {
      this->destroy_root(nd.root);
    }
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

  std::vector<node> nodes_;  // page-indexed
  detail::flat_table table_;
  std::vector<std::int32_t> path_;
  std::vector<page_id> victims_;
};

static_assert(prefix_index<hash_chain_index<lifo_allocator>>);
static_assert(prefix_index<hash_chain_index<lifo_allocator, priority_eviction>>);

}  // namespace kvcache
