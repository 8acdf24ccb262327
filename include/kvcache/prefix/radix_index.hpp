/**
 * @file radix_index.hpp
 * @brief `radix_index`: prefix caching with a radix tree at page granularity (RadixAttention, as
 * SGLang): each edge holds a run of cached pages with their tokens; a match walks down comparing
 * page-sized token chunks, and an edge is split where a match or insert ends inside it.
 *
 * Structure: one tree per (salt, extra) under a root edge with no pages. An edge keeps its page
 * ids, tokens and keys contiguous (a match compares whole runs with memcmp and never chases page
 * ids through memory); splitting an edge after j of its c pages copies min(j, c - j) pages (the
 * edge keeps a dead front that is compacted when it exceeds the live part), and a freed edge
 * keeps its arrays' capacity for reuse. A node's children are found through one flat hash table
 * keyed by (edge, 64-bit hash of the child's first page); the first page's tokens are compared,
 * so colliding siblings are told apart (chained), never confused. Pages are evicted from the end
 * of leaf edges, so a cached prefix never has a hole.
 *
 * Complexity: `match` and `insert` O(pages + edges on the path) token comparisons, one hash per
 * edge (insert also hashes each new page once, for its 128-bit key); `evict(n)` O(n + (e + p)
 * log l) with e edges emptied, l leaf edges and p leaves found in use (each then counts as used
 * now, so it is not scanned again soon). Memory: per cached page page_size x 4 + 20 bytes in
 * its edge; per pool page ~44 bytes (page and unit state, the child table), sized at
 * construction; per edge ~110 bytes.
 * Thread-safety: none; one scheduler thread owns the index, the allocator and the store.
 */
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
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
 * @brief Prefix index over a radix tree of pages.
 * @tparam Allocator the store's page allocator; the index holds one reference on each cached page.
 * @tparam Eviction `lru_eviction` (default) or `priority_eviction`; the unit is an edge, and an
 * insert with per-range retention splits edges where the priority changes.
 * @tparam Hasher hashes a child's first page (child lookup) and each page's 128-bit key (events,
 * the same keys as `hash_chain_index`).
 * @note The allocator must outlive the index; the destructor drops the index's references.
 */
template <page_allocator Allocator, eviction_policy Eviction = lru_eviction,
          page_hasher Hasher = xxh3_hasher>
class radix_index : public detail::index_base<Allocator, Eviction, Hasher> {
  using base = detail::index_base<Allocator, Eviction, Hasher>;

 public:
  /**
   * @param alloc the allocator of the store whose pages are cached (sizes the index).
   * @param page_size tokens per page (the store's layout.page_size).
   * @throws kvcache::error invalid_argument for page_size < 1.
   */
  explicit radix_index(Allocator& alloc, std::int32_t page_size,
                       const prefix_index_options& options = {}, Eviction policy = {},
                       Hasher hasher = {})
      : base(alloc, page_size, options, std::move(policy), std::move(hasher),
             /*page_storage=*/false),
        table_(static_cast<std::size_t>(this->num_pages_)) {
    edges_.reserve(static_cast<std::size_t>(this->num_pages_) + 64);
    this->reserve_units(static_cast<std::size_t>(this->num_pages_) + 64);
  }
  ~radix_index() { release_all(); }
  radix_index(radix_index&&) noexcept = default;
  radix_index& operator=(radix_index&& o) noexcept {
    if (this != &o) {
      release_all();
      base::operator=(std::move(o));
      edges_ = std::move(o.edges_);
      free_edges_ = std::move(o.free_edges_);
      table_ = std::move(o.table_);
      path_ = std::move(o.path_);
    }
    return *this;
  }

  /**
   * @brief The longest cached prefix of `tokens` under `key`, in whole pages, at most
   * `out.size()` pages: writes them to `out` and takes one reference on each for the caller, who
   * adopts them into a sequence (`paged_kv_store::adopt_prefix`) or returns them with
   * `release_match`. Counts as a use of the edges on the path; an edge the match ends inside is
   * split, so its unmatched rest keeps its own last use.
   * @throws kvcache::error unknown_id for an unregistered salt in "salts required" mode.
   */
  match_result match(std::span<const std::int32_t> tokens, const prefix_key& key,
                     std::span<page_id> out) {
    this->check_salt(key.salt);
    const std::int32_t ps = this->ps_;
    const auto n = static_cast<std::int32_t>(
        std::min<std::size_t>(tokens.size() / static_cast<std::size_t>(ps), out.size()));
    std::int32_t m = 0;
    std::int32_t e = -1;
    const std::int32_t r = this->find_root(key);
    if (r >= 0 && n > 0) {
      e = this->root(r).unit;
      while (m < n) {
        const std::int32_t* tok = tokens.data() + static_cast<std::size_t>(m) * ps;
        const std::int32_t c = find_child(e, tok, this->hasher_.content(this->page_span(tok)));
        if (c < 0) break;
        const edge& ec = edge_of(c);
        const std::int32_t cnt = ec.count();
        const std::int32_t limit = std::min(cnt, n - m);
        // the first page was compared by find_child
        const std::int32_t j = 1 + equal_pages(ec.tokens_at(1), tok + ps, limit - 1);
        std::copy_n(ec.pages.begin() + ec.off, j, out.begin() + m);
        m += j;
        if (j < cnt) {  // ended inside c: split off the matched part
          e = split(c, j);
          break;
        }
        e = c;
      }
    }
    ++this->tick_;
    for (std::int32_t i = 0; i < m; ++i) this->lend(out[static_cast<std::size_t>(i)]);
    if (m > 0) touch_path(e);
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
   * (more are ignored). Pages already cached under the same key are not duplicated: the index
   * keeps its own and the caller's page is not adopted. New pages become one edge (split where
   * the retention priority changes). Counts as a use of every page of the prompt.
   * @return pages newly cached.
   * @throws kvcache::error shape_mismatch when tokens do not fill the pages; out_of_range or
   * bad_free naming a page outside the pool or free; invalid_argument naming a page that is
   * cached at another position (or salt) or listed twice, or a bad retention setting; unknown_id
   * for an unregistered salt in "salts required" mode. Nothing changes when it throws.
   */
  std::int32_t insert(std::span<const std::int32_t> tokens, std::span<const page_id> pages,
                      const prefix_key& key = {}, const retention_config& retention = {}) {
    this->check_salt(key.salt);
    this->check_insert(tokens, pages, "radix_index::insert");
    if constexpr (Eviction::uses_retention) retention.validate();
    const std::int32_t ps = this->ps_;
    const auto n = static_cast<std::int32_t>(pages.size());
    std::int32_t r = this->find_root(key);
    std::int32_t f = 0;
    std::int32_t split_edge = -1;
    std::int32_t split_at = 0;
    path_.clear();
    if (r >= 0) {
      std::int32_t e = this->root(r).unit;
      while (f < n) {
        const std::int32_t* tok = tokens.data() + static_cast<std::size_t>(f) * ps;
        const std::int32_t c = find_child(e, tok, this->hasher_.content(this->page_span(tok)));
        if (c < 0) break;
        const edge& ec = edge_of(c);
        const std::int32_t cnt = ec.count();
        std::int32_t j = 0;
        for (;;) {
          const page_id cp = pages[static_cast<std::size_t>(f)];
          if (cp != ec.page(j)) {  // the caller's own page needs no comparison: it is the cached one
            if (j > 0 && !page_equal(ec.tokens_at(j), tokens.data() + static_cast<std::size_t>(f) * ps)) {
              break;
            }
            KVCACHE_EXPECTS(!this->is_cached(cp), errc::invalid_argument,
                            "radix_index::insert: page {} (index {}) is already cached at another "
                            "position or salt",
                            cp, f);
          }
          ++f;
          ++j;
          if (j == cnt || f == n) break;
        }
        path_.push_back(c);
        if (j < cnt) {  // ended inside c
          split_edge = c;
          split_at = j;
          break;
        }
        e = c;
      }
    }
    this->mark_new_pages(pages.subspan(static_cast<std::size_t>(f)), f, "radix_index::insert");
    // ---- commit (nothing below throws) ----
    ++this->tick_;
    if (split_edge >= 0) path_.back() = split(split_edge, split_at);
    page_key first_parent{};
    std::int32_t added = -1;
    if (f < n) {
      if (r < 0) {
        r = this->create_root(key, this->hasher_.root(key.salt, key.extra));
        const std::int32_t re = new_edge();
        edge_of(re).root = r;
        this->root(r).unit = re;
      }
      const std::int32_t attach = path_.empty() ? this->root(r).unit : path_.back();
      page_key pk = path_.empty() ? this->root(r).hash : edge_of(attach).keys.back();
      first_parent = pk;
      if (edge_of(attach).parent >= 0 && edge_of(attach).children == 0) {
        this->make_unevictable(attach);
      }
      added = new_edge();
      edge& ne = edge_of(added);
      ne.parent = attach;
      ne.root = r;
      ne.depth = f;
      ne.pages.assign(pages.begin() + f, pages.end());
      ne.tokens.assign(tokens.begin() + static_cast<std::ptrdiff_t>(f) * ps,
                       tokens.begin() + static_cast<std::ptrdiff_t>(n) * ps);
      for (std::int32_t i = f; i < n; ++i) {
        const std::int32_t* tok = tokens.data() + static_cast<std::size_t>(i) * ps;
        pk = this->hasher_.page(pk, this->page_span(tok), key.extra);
        ne.keys.push_back(pk);
        this->adopt(pages[static_cast<std::size_t>(i)]);
      }
      ne.child_hash = this->hasher_.content(this->page_span(ne.tokens_at(0)));
      link_child(added);
      ++edge_of(attach).children;
      path_.push_back(added);
    }
    if (!path_.empty()) touch_path(path_.back());
    if (added >= 0) this->make_evictable(added);
    if (Eviction::uses_retention && !retention.is_default()) {
      const std::int64_t now = policy_now();
      for (std::size_t i = 0; i < path_.size(); ++i) {
        retain_edge(path_[i], retention, now, path_[i] == added);
      }
    }
    if (added >= 0 && this->events_.enabled()) {
      prefix_event& ev = this->events_.start(prefix_event_type::block_stored, ps);
      ev.salt = key.salt;
      ev.extra = key.extra;
      ev.parent = first_parent;
      ev.first_token = static_cast<std::int64_t>(f) * ps;
      const edge& ne = edge_of(added);
      ev.keys.assign(ne.keys.begin() + ne.off, ne.keys.end());
      ev.pages.assign(pages.begin() + f, pages.end());
      ev.tokens.assign(tokens.begin() + static_cast<std::ptrdiff_t>(f) * ps,
                       tokens.begin() + static_cast<std::ptrdiff_t>(n) * ps);
      this->events_.publish();
    }
    return n - f;
  }

  /**
   * @brief Evicts up to n cached pages that only the index references, from the ends of leaf
   * edges, in the policy's order; they return to the allocator's free list.
   * @return pages freed (fewer than n when no more are evictable).
   * @throws kvcache::error invalid_argument for n < 0.
   */
  std::int32_t evict(std::int32_t n) {
    KVCACHE_EXPECTS(n >= 0, errc::invalid_argument, "radix_index::evict: {} pages", n);
    this->expire_due();
    std::int32_t freed = 0;
    auto less = this->evict_less();
    while (freed < n && !this->heap_.empty()) {
      const std::int32_t u = this->heap_.top();
      edge& eu = edge_of(u);
      const cache_salt salt = this->root(eu.root).key.salt;
      while (freed < n && eu.count() > 0 && this->alloc_->ref_count(eu.pages.back()) == 1) {
        const page_id p = eu.pages.back();
        this->note_removed(salt, eu.keys.back(), p);
        eu.pages.pop_back();
        eu.keys.pop_back();
        eu.tokens.resize(eu.tokens.size() - static_cast<std::size_t>(this->ps_));
        this->forget_page(p);
        ++freed;
      }
      if (eu.count() == 0) {
        remove_edge(u);
      } else if (freed < n) {  // its last page is in use
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

  /// @brief Drops every cached page (pages that sequences or matches reference stay theirs).
  /// O(pool pages + edges).
  void clear() {
    release_all();
    edges_.clear();
    free_edges_.clear();
    table_.clear();
    this->clear_units();
    this->clear_roots();
    this->reset_pages();
    this->publish_cleared();
  }

  /// @brief Edges in the trees now, root edges included (for tests and statistics).
  [[nodiscard]] std::int32_t edge_count() const noexcept {
    return static_cast<std::int32_t>(edges_.size() - free_edges_.size());
  }

  /// @brief Checks the structure (for tests): page lists, depths, child counts and lookups, the
  /// evictable set (leaf edges), page ownership and counts.
  /// @throws kvcache::error logic_error naming the first broken invariant. O(pool pages + edges).
  void check_invariants() const {
    std::vector<std::int32_t> children(edges_.size(), 0);
    std::int64_t pages = 0;
    for (std::size_t i = 0; i < edges_.size(); ++i) {
      const edge& e = edges_[i];
      if (e.root < 0) continue;
      const auto u = static_cast<std::int32_t>(i);
      if (e.parent < 0) {
        KVCACHE_EXPECTS(e.count() == 0 && this->root(e.root).unit == u, errc::logic_error,
                        "root edge {} holds {} pages or is not its root's", u, e.count());
        KVCACHE_EXPECTS(!this->heap_.contains(u), errc::logic_error, "root edge {} is evictable", u);
        continue;
      }
      ++children[static_cast<std::size_t>(e.parent)];
      const edge& par = edges_[static_cast<std::size_t>(e.parent)];
      KVCACHE_EXPECTS(par.root == e.root && e.depth == par.depth + par.count(), errc::logic_error,
                      "edge {}: root {} depth {}, parent {} root {} depth {} + {}", u, e.root,
                      e.depth, e.parent, par.root, par.depth, par.count());
      KVCACHE_EXPECTS(e.count() > 0 && e.off >= 0 && e.keys.size() == e.pages.size() &&
                          e.tokens.size() == e.pages.size() * static_cast<std::size_t>(this->ps_),
                      errc::logic_error, "edge {} holds no pages or its arrays disagree", u);
      for (std::int32_t k = 0; k < e.count(); ++k) {
        const page_id p = e.page(k);
        KVCACHE_EXPECTS(this->is_cached(p) && this->alloc_->ref_count(p) >= 1, errc::logic_error,
                        "edge {} page {} (index {}) is not cached", u, p, k);
      }
      pages += e.count();
      KVCACHE_EXPECTS(e.child_hash == this->hasher_.content(this->page_span(e.tokens_at(0))),
                      errc::logic_error, "edge {} has a stale child hash", u);
      bool found = false;
      for (std::int32_t q = lookup_child(e.parent, e.child_hash); q >= 0;
           q = edges_[static_cast<std::size_t>(q)].next_same) {
        found = found || q == u;
      }
      KVCACHE_EXPECTS(found, errc::logic_error, "edge {} is not found under its parent {}", u,
                      e.parent);
    }
    for (std::size_t i = 0; i < edges_.size(); ++i) {
      const edge& e = edges_[i];
      if (e.root < 0) continue;
      const auto u = static_cast<std::int32_t>(i);
      KVCACHE_EXPECTS(children[i] == e.children, errc::logic_error,
                      "edge {} has {} children, counted {}", u, e.children, children[i]);
      if (e.parent >= 0) {
        KVCACHE_EXPECTS(this->heap_.contains(u) == (e.children == 0), errc::logic_error,
                        "edge {} with {} children is {}in the eviction heap", u, e.children,
                        this->heap_.contains(u) ? "" : "not ");
      } else {
        KVCACHE_EXPECTS(e.children > 0, errc::logic_error, "root edge {} has no children", u);
      }
    }
    KVCACHE_EXPECTS(pages == this->stats_.cached_pages, errc::logic_error,
                    "{} pages in edges, stats say {}", pages, this->stats_.cached_pages);
  }

 private:
  struct edge {
    std::int32_t parent = -1;      // parent edge; -1 for a root edge (or a free slot)
    std::int32_t root = -1;        // root record; -1 for a free slot
    std::int32_t children = 0;     // child edges
    std::int32_t next_same = -1;   // next sibling with the same child hash
    std::int32_t depth = 0;        // prompt index of the first page
    std::int32_t off = 0;          // dead front entries of the arrays (left by splits)
    std::uint64_t child_hash = 0;  // content hash of the first page: the key under the parent
    std::vector<page_id> pages;         // [off, size): the edge's pages
    std::vector<std::int32_t> tokens;   // page_size per page, same indexing
    std::vector<page_key> keys;         // one per page, same indexing
    std::int32_t ps = 1;

    [[nodiscard]] std::int32_t count() const noexcept {
      return static_cast<std::int32_t>(pages.size()) - off;
    }
    [[nodiscard]] page_id page(std::int32_t j) const noexcept {
      return pages[static_cast<std::size_t>(off + j)];
    }
    [[nodiscard]] const std::int32_t* tokens_at(std::int32_t j) const noexcept {
      return tokens.data() + static_cast<std::size_t>(off + j) * static_cast<std::size_t>(ps);
    }
    void reset() noexcept {  // keeps the arrays' capacity
      parent = root = -1;
      children = 0;
      next_same = -1;
      depth = off = 0;
      child_hash = 0;
      pages.clear();
      tokens.clear();
      keys.clear();
    }
  };

  [[nodiscard]] edge& edge_of(std::int32_t u) noexcept { return edges_[static_cast<std::size_t>(u)]; }
  [[nodiscard]] const edge& edge_of(std::int32_t u) const noexcept {
    return edges_[static_cast<std::size_t>(u)];
  }
  [[nodiscard]] static std::uint64_t slot_hash(std::int32_t parent, std::uint64_t h) noexcept {
    return h ^ ((static_cast<std::uint64_t>(parent) + 1) * 0x9E3779B97F4A7C15ull);
  }
  [[nodiscard]] std::int64_t policy_now() const {
    if constexpr (Eviction::uses_retention) {
      return this->policy_.now();
    } else {
      return 0;
    }
  }
  std::int32_t new_edge() {
    std::int32_t u;
    if (!free_edges_.empty()) {
      u = free_edges_.back();
      free_edges_.pop_back();
    } else {
      u = static_cast<std::int32_t>(edges_.size());
      edges_.emplace_back();
      this->ensure_unit(u);
    }
    edge_of(u).reset();
    edge_of(u).ps = this->ps_;
    this->reset_unit(u);
    return u;
  }
  void free_edge(std::int32_t u) {
    edge_of(u).reset();
    free_edges_.push_back(u);
  }
  [[nodiscard]] bool page_equal(const std::int32_t* a, const std::int32_t* b) const noexcept {
    return std::memcmp(a, b, static_cast<std::size_t>(this->ps_) * sizeof(std::int32_t)) == 0;
  }
  /// Leading pages (at most k) of two token runs that are equal.
  [[nodiscard]] std::int32_t equal_pages(const std::int32_t* a, const std::int32_t* b,
                                         std::int32_t k) const noexcept {
    if (k <= 0) return 0;
    const auto ps = static_cast<std::size_t>(this->ps_);
    if (std::memcmp(a, b, static_cast<std::size_t>(k) * ps * sizeof(std::int32_t)) == 0) return k;
    std::int32_t j = 0;
    while (j < k && page_equal(a + static_cast<std::size_t>(j) * ps, b + static_cast<std::size_t>(j) * ps)) ++j;
    return j;
  }
  /// First child of `parent` stored under hash h (the siblings sharing it follow via next_same).
  [[nodiscard]] std::int32_t lookup_child(std::int32_t parent, std::uint64_t h) const {
    return table_.find(slot_hash(parent, h), [&](std::int32_t v) {
      const edge& c = edges_[static_cast<std::size_t>(v)];
      return c.parent == parent && c.child_hash == h;
    });
  }
  /// The child of e whose first page holds `tok`, or -1.
  [[nodiscard]] std::int32_t find_child(std::int32_t e, const std::int32_t* tok, std::uint64_t h) {
    const std::int32_t head = lookup_child(e, h);
    for (std::int32_t q = head; q >= 0; q = edge_of(q).next_same) {
      if (page_equal(edge_of(q).tokens_at(0), tok)) return q;
    }
    if (head >= 0) ++this->stats_.collisions;
    return -1;
  }
  /// Registers edge u under (its parent, its child hash).
  void link_child(std::int32_t u) {
    edge& e = edge_of(u);
    const std::int32_t head = lookup_child(e.parent, e.child_hash);
    if (head >= 0) {  // a sibling with another first page under the same hash
      e.next_same = edge_of(head).next_same;
      edge_of(head).next_same = u;
      ++this->stats_.collisions;
    } else {
      e.next_same = -1;
      table_.insert(slot_hash(e.parent, e.child_hash), u);
    }
  }
  /// Unregisters edge u (replacing it by `by` in place when by >= 0).
  void unlink_child(std::int32_t u, std::int32_t by = -1) {
    const edge& e = edge_of(u);
    const std::uint64_t sh = slot_hash(e.parent, e.child_hash);
    const std::int32_t head = lookup_child(e.parent, e.child_hash);
    if (head == u) {
      const std::int32_t next = by >= 0 ? by : e.next_same;
      if (next >= 0) {
        table_.replace(sh, u, next);
      } else {
        table_.erase(sh, u);
      }
      return;
    }
    std::int32_t q = head;
    while (edge_of(q).next_same != u) q = edge_of(q).next_same;
    edge_of(q).next_same = by >= 0 ? by : e.next_same;
  }
  /// Splits edge c after j pages (0 < j < count): a new edge takes the first j pages and c's
  /// place under its parent; c keeps the rest, its children, and its place in the heap. Copies
  /// min(j, count - j) pages. @return the new (upper) edge.
  std::int32_t split(std::int32_t c, std::int32_t j) {
    const std::int32_t h = new_edge();
    edge& ec = edge_of(c);
    edge& eh = edge_of(h);
    const auto ps = static_cast<std::size_t>(this->ps_);
    const auto cut = static_cast<std::size_t>(ec.off + j);  // array index of the tail's first page
    eh.parent = ec.parent;
    eh.root = ec.root;
    eh.children = 1;
    eh.next_same = ec.next_same;
    eh.depth = ec.depth;
    eh.child_hash = ec.child_hash;
    unlink_child(c, h);
    if (j <= ec.count() - j) {  // copy the head out; c's front becomes dead
      const auto from = static_cast<std::size_t>(ec.off);
      eh.pages.assign(ec.pages.begin() + static_cast<std::ptrdiff_t>(from), ec.pages.begin() + static_cast<std::ptrdiff_t>(cut));
      eh.tokens.assign(ec.tokens.begin() + static_cast<std::ptrdiff_t>(from * ps), ec.tokens.begin() + static_cast<std::ptrdiff_t>(cut * ps));
      eh.keys.assign(ec.keys.begin() + static_cast<std::ptrdiff_t>(from), ec.keys.begin() + static_cast<std::ptrdiff_t>(cut));
      ec.off = static_cast<std::int32_t>(cut);
      if (static_cast<std::size_t>(ec.off) > ec.pages.size() / 2) compact(ec);
    } else {  // the head keeps the arrays; the tail is copied into c's
      std::swap(eh.pages, ec.pages);
      std::swap(eh.tokens, ec.tokens);
      std::swap(eh.keys, ec.keys);
      eh.off = ec.off;
      ec.pages.assign(eh.pages.begin() + static_cast<std::ptrdiff_t>(cut), eh.pages.end());
      ec.tokens.assign(eh.tokens.begin() + static_cast<std::ptrdiff_t>(cut * ps), eh.tokens.end());
      ec.keys.assign(eh.keys.begin() + static_cast<std::ptrdiff_t>(cut), eh.keys.end());
      ec.off = 0;
      eh.pages.resize(cut);
      eh.tokens.resize(cut * ps);
      eh.keys.resize(cut);
    }
    ec.depth += j;
    ec.parent = h;
    ec.child_hash = this->hasher_.content(this->page_span(ec.tokens_at(0)));
    link_child(c);
    this->ev_[static_cast<std::size_t>(h)] = this->ev_[static_cast<std::size_t>(c)];
    this->sync_expiry(h);
    return h;
  }
  /// Drops an edge's dead front.
  void compact(edge& e) {
    const auto off = static_cast<std::ptrdiff_t>(e.off);
    e.pages.erase(e.pages.begin(), e.pages.begin() + off);
    e.tokens.erase(e.tokens.begin(), e.tokens.begin() + off * this->ps_);
    e.keys.erase(e.keys.begin(), e.keys.begin() + off);
    e.off = 0;
  }
  void touch_path(std::int32_t e) {
    for (std::int32_t u = e; u >= 0; u = edge_of(u).parent) this->touch(u);
  }
  /// Applies per-page retention to edge u, splitting it where the page's setting changes.
  void retain_edge(std::int32_t u, const retention_config& ret, std::int64_t now, bool fresh) {
    const std::int32_t ps = this->ps_;
    for (;;) {
      const std::int32_t d = edge_of(u).depth;
      const std::int32_t cnt = edge_of(u).count();
      const auto setting = ret.for_page(static_cast<std::int64_t>(d) * ps, ps);
      std::int32_t k = 1;
      while (k < cnt && ret.for_page(static_cast<std::int64_t>(d + k) * ps, ps) == setting) ++k;
      if (k == cnt) {
        this->retain(u, setting.first, setting.second, now, fresh);
        return;
      }
      this->retain(split(u, k), setting.first, setting.second, now, fresh);
    }
  }
  void remove_edge(std::int32_t u) {
    const std::int32_t parent = edge_of(u).parent;
    this->inherit(parent, u);  // before its state is reset
    this->drop_unit(u);
    unlink_child(u);
    free_edge(u);
    edge& par = edge_of(parent);
    if (--par.children == 0) {
      if (par.parent < 0) {  // an empty root
        const std::int32_t r = par.root;
        this->drop_unit(parent);
        free_edge(parent);
        this->destroy_root(r);
      } else {
        this->make_evictable(parent);
      }
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

  std::vector<edge> edges_;
  std::vector<std::int32_t> free_edges_;
  detail::flat_table table_;  // (parent edge, child hash) -> first such child
  std::vector<std::int32_t> path_;
};

static_assert(prefix_index<radix_index<lifo_allocator>>);
static_assert(prefix_index<radix_index<lifo_allocator, priority_eviction>>);

}  // namespace kvcache
