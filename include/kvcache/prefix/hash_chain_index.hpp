/**
 * @file hash_chain_index.hpp
 * @brief `hash_chain_index`: prefix caching by chained page hashes (as vLLM): each full page is
 * keyed by a 128-bit hash of (its parent page's key, its tokens, the extra key), and a hash table
 * maps keys to cached pages. Every hit is verified against the page's stored tokens and its
 * parent, so a hash collision can never hand one prompt another prompt's KV.
 *
 * Structure: one node per cached page, in a slab indexed by node id (not by page id): a record
 * holds the node's parent node, root (salt, extra), page, the next node sharing its 32-bit table
 * tag (collisions are chained, not dropped) and the page's tokens, so a verification reads one
 * record; its 128-bit key and child count sit in node-indexed arrays beside it, and the page's
 * state (cached, lent, its node) in the shared page-indexed array. Nodes are taken from a stack
 * that eviction refills tail first, so a chain inserted at once gets consecutive nodes. A page is
 * evictable when no cached page continues it (a chain tail) and only the index references it, so
 * a cached prefix never has a hole.
 *
 * Complexity: `match` O(pages matched + 1): where a chain's nodes are consecutive, the node after
 * the last one matched is verified directly (same parent and tokens: the node the table would
 * give, whose key is a function of both), with no hashing; elsewhere pages are hashed a block
 * ahead (up to 32), their table slots and then their records prefetched, then verified. `insert`
 * O(pages), hashing only pages that are not the caller's own already-cached pages. `evict(n)`
 * O((n + p) log u) with u evictable tails and p tails found in use (each counted as used then, so
 * it is not scanned again soon), O(1) a page along a chain: a tail's parent that becomes a tail
 * replaces it at the top of the heap (where it stays when it inherits the tail's time), and the
 * state of the next pages up the chain is prefetched. Large arrays ask for transparent huge pages (Linux).
 * Memory: per pool page about page_size x 4 + 88 bytes, allocated at construction.
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
#include "kvcache/prefix/detail/huge_allocator.hpp"
#include "kvcache/prefix/detail/index_base.hpp"
#include "kvcache/prefix/detail/prefetch.hpp"
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
      : base(alloc, page_size, options, std::move(policy), std::move(hasher),
             /*page_storage=*/false),
        stride_(header + this->ps_),
        records_(static_cast<std::size_t>(this->num_pages_) * static_cast<std::size_t>(stride_)),
        keys_(static_cast<std::size_t>(this->num_pages_)),
        children_(static_cast<std::size_t>(this->num_pages_), 0),
        table_(static_cast<std::size_t>(this->num_pages_)) {
    this->reserve_units(static_cast<std::size_t>(this->num_pages_));
    reset_nodes();
  }
  ~hash_chain_index() { release_all(); }
  hash_chain_index(hash_chain_index&&) noexcept = default;
  hash_chain_index& operator=(hash_chain_index&& o) noexcept {
    if (this != &o) {
      release_all();
      base::operator=(std::move(o));
      stride_ = o.stride_;
      records_ = std::move(o.records_);
      keys_ = std::move(o.keys_);
      children_ = std::move(o.children_);
      free_nodes_ = std::move(o.free_nodes_);
      table_ = std::move(o.table_);
      path_ = std::move(o.path_);
      fresh_ = std::move(o.fresh_);
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
    std::int32_t last = -1;
    const std::int32_t r = this->find_root(key);
    if (r >= 0 && n > 0) m = walk(tokens.data(), key.extra, r, n, out.data(), last);
    ++this->tick_;
    for (std::int32_t i = 0; i < m; ++i) {
      if (i + lend_ahead < m) this->prefetch_lend(out[static_cast<std::size_t>(i + lend_ahead)]);
      this->lend(out[static_cast<std::size_t>(i)]);
    }
    // Only the deepest page is stamped: its ancestors get the time when it goes (inherit).
    if (m > 0) this->touch(last);
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
    std::int32_t parent = -1;  // node
    std::int32_t f = 0;
    bool have_next = false;
    page_key next_key{};
    path_.clear();
    if (r >= 0) {
      for (; f < n; ++f) {
        const page_id p = pages[static_cast<std::size_t>(f)];
        const std::int32_t* tok = tokens.data() + static_cast<std::size_t>(f) * ps;
        // The caller's page is the cached one (it came from a match): its node is usually the
        // one after the parent's (a chain's nodes are allocated in a run), else found by page.
        std::int32_t q = parent >= 0 && parent + 1 < capacity() ? parent + 1 : -1;
        if (q < 0 || !holds(q, p, parent, r)) {
          q = this->page_unit(p);
          if (q >= 0 && !holds(q, p, parent, r)) q = -1;
        }
        if (q < 0) {
          if (parent >= 0) pk = keys_[static_cast<std::size_t>(parent)];
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
      if (parent >= 0) pk = keys_[static_cast<std::size_t>(parent)];
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
    if (parent >= 0 && children_[static_cast<std::size_t>(parent)] == 0) {
      this->make_unevictable(parent);
    }
    const page_key first_parent = pk;
    page_key kb[block];
    fresh_.clear();
    for (std::int32_t i0 = f; i0 < n; i0 += block) {
      // Keys of a block first (their table slots and the pages' states prefetched), then the
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
        this->prefetch_lend(p);
      }
      for (std::int32_t j = 0; j < b; ++j) {
        const std::int32_t i = i0 + j;
        const page_id p = pages[static_cast<std::size_t>(i)];
        const page_key& k = kb[j];
        const std::int32_t u = free_nodes_.back();
        free_nodes_.pop_back();
        std::int32_t* rec = record(u);
        rec[0] = parent;
        rec[1] = r;
        rec[2] = p;
        rec[3] = -1;
        std::memcpy(rec + header, tokens.data() + static_cast<std::size_t>(i) * ps,
                    static_cast<std::size_t>(ps) * sizeof(std::int32_t));
        keys_[static_cast<std::size_t>(u)] = k;
        const std::int32_t head = lookup(k);
        if (head >= 0) {  // same table tag, other content or parent: chain it
          rec[3] = record(head)[3];
          record(head)[3] = u;
          ++this->stats_.collisions;
        } else {
          table_.insert(k.lo, u);
        }
        if (parent >= 0) {
          ++children_[static_cast<std::size_t>(parent)];
        } else {
          ++this->root(r).users;
        }
        this->adopt(p);
        this->set_page_unit(p, u);
        this->reset_unit(u);
        this->stamp(u);
        if (retain) apply_retention(u, i, retention, now, true);
        fresh_.push_back(u);
        parent = u;
      }
    }
    this->make_evictable(parent);
    if (this->events_.enabled()) {
      prefix_event& e = this->events_.start(prefix_event_type::block_stored, ps);
      e.salt = key.salt;
      e.extra = key.extra;
      e.parent = first_parent;
      e.first_token = static_cast<std::int64_t>(f) * ps;
      for (const std::int32_t u : fresh_) {
        e.keys.push_back(keys_[static_cast<std::size_t>(u)]);
        e.pages.push_back(record(u)[2]);
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
    std::int32_t ahead = -1;  // a node up the current chain, whose page state is prefetched
    std::int32_t expect = -1;  // the parent of the last victim: the chain's next tail
    while (freed < n && !this->heap_.empty()) {
      const std::int32_t u = this->heap_.top();
      // Pages of a chain go tail first: prefetch the state of the pages evict_ahead up.
      if (u != expect) {
        ahead = u;
        for (std::int32_t k = 0; k < evict_ahead && ahead >= 0; ++k) {
          ahead = record(ahead)[0];
          if (ahead >= 0) prefetch_victim(ahead);
        }
      } else if (ahead >= 0) {
        ahead = record(ahead)[0];
        if (ahead >= 0) prefetch_victim(ahead);
      }
      const std::int32_t* rec = record(u);
      if (this->alloc_->ref_count(rec[2]) > 1) {  // in use: not evictable now
        this->heap_.erase(u, less);
        this->pinned_.push_back(u);
        expect = -1;
        continue;
      }
      expect = rec[0];
      const std::int32_t parent = rec[0];
      const std::int32_t r = rec[1];
      this->note_removed(this->root(r).key.salt, keys_[static_cast<std::size_t>(u)], rec[2]);
      if (parent >= 0) {
        this->inherit(parent, u);  // before u's state is reset
        if (--children_[static_cast<std::size_t>(parent)] == 0) {
          this->heap_.replace_top(parent, less);  // the parent is a tail now
        } else {
          this->heap_.pop(less);
        }
      } else {
        this->heap_.pop(less);
        if (--this->root(r).users == 0) this->destroy_root(r);
      }
      this->drop_unit(u);  // out of the expiry heap, state reset
      // Its table entry (slot prefetched evict_ahead victims ago), record and page go now.
      const page_id p = rec[2];
      unlink(u);
      std::int32_t* w = record(u);
      w[0] = w[1] = w[2] = w[3] = -1;
      this->forget_page(p);
      // Freed in eviction order (a chain tail first): taken back lowest first, so the next
      // chain inserted gets a run of consecutive nodes.
      free_nodes_.push_back(u);
      ++freed;
    }
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
    reset_nodes();
    table_.clear();
    this->clear_units();
    this->clear_roots();
    this->reset_pages();
    this->publish_cleared();
  }

  /// @brief Checks the structure against the allocator (for tests): every cached page has one
  /// node and is referenced, its parent cached in the same root, child counts and root users add
  /// up, the evictable set is exactly the chain tails, and every node is found under its key.
  /// @throws kvcache::error logic_error naming the first broken invariant. O(pool pages).
  void check_invariants() const {
    const std::int32_t cap = capacity();
    std::vector<std::int32_t> children(static_cast<std::size_t>(cap), 0);
    std::vector<std::int32_t> users(this->roots_.size(), 0);
    std::int64_t live = 0;
    for (std::int32_t u = 0; u < cap; ++u) {
      const std::int32_t* rec = record(u);
      if (rec[2] < 0) continue;
      ++live;
      const page_id p = rec[2];
      KVCACHE_EXPECTS(p < this->num_pages_ && this->is_cached(p) &&
                          this->page_unit(p) == u,
                      errc::logic_error, "node {}: page {} is not cached there", u, p);
      KVCACHE_EXPECTS(this->alloc_->ref_count(p) >= 1, errc::logic_error,
                      "cached page {} has reference count {}", p, this->alloc_->ref_count(p));
      if (rec[0] >= 0) {
        KVCACHE_EXPECTS(record(rec[0])[2] >= 0 && record(rec[0])[1] == rec[1], errc::logic_error,
                        "node {}: parent {} is not cached in root {}", u, rec[0], rec[1]);
        ++children[static_cast<std::size_t>(rec[0])];
      } else {
        ++users[static_cast<std::size_t>(rec[1])];
      }
      const page_key& k = keys_[static_cast<std::size_t>(u)];
      bool found = false;
      for (std::int32_t q = lookup(k); q >= 0; q = record(q)[3]) found = found || q == u;
      KVCACHE_EXPECTS(found, errc::logic_error, "node {} (page {}) is not found under its key", u,
                      p);
    }
    std::int64_t cached = 0;
    for (page_id p = 0; p < this->num_pages_; ++p) {
      if (!this->is_cached(p)) continue;
      ++cached;
      const std::int32_t u = this->page_unit(p);
      KVCACHE_EXPECTS(u >= 0 && record(u)[2] == p, errc::logic_error,
                      "cached page {} has no node", p);
    }
    KVCACHE_EXPECTS(cached == this->stats_.cached_pages && live == cached, errc::logic_error,
                    "{} pages cached, {} nodes, stats say {}", cached, live,
                    this->stats_.cached_pages);
    KVCACHE_EXPECTS(static_cast<std::int64_t>(free_nodes_.size()) + live == cap,
                    errc::logic_error, "{} free nodes and {} live of {}", free_nodes_.size(), live,
                    cap);
    for (std::int32_t u = 0; u < cap; ++u) {
      if (record(u)[2] < 0) continue;
      const std::int32_t c = children_[static_cast<std::size_t>(u)];
      KVCACHE_EXPECTS(children[static_cast<std::size_t>(u)] == c, errc::logic_error,
                      "node {} has {} children, counted {}", u, c,
                      children[static_cast<std::size_t>(u)]);
      KVCACHE_EXPECTS(this->heap_.contains(u) == (c == 0), errc::logic_error,
                      "node {} with {} children is {}in the eviction heap", u, c,
                      this->heap_.contains(u) ? "" : "not ");
    }
    for (std::size_t r = 0; r < this->roots_.size(); ++r) {
      KVCACHE_EXPECTS(users[r] == this->roots_[r].users, errc::logic_error,
                      "root {} has {} users, counted {}", r, this->roots_[r].users, users[r]);
    }
  }

 private:
  // A node's record: parent node (-1 for a prompt's first page), root, page (-1: a free node),
  // next node under the same table tag, then the page's tokens.
  static constexpr std::int32_t header = 4;
  static constexpr std::int32_t block = 32;              // pages hashed ahead at most
  static constexpr std::int32_t first_block = 4;         // pages hashed ahead after a jump
  static constexpr std::int32_t lend_ahead = 24;         // pages whose counts are prefetched
  static constexpr std::int32_t evict_ahead = 8;         // chain pages prefetched in evict

  [[nodiscard]] std::int32_t capacity() const noexcept { return this->num_pages_; }
  [[nodiscard]] std::int32_t* record(std::int32_t u) noexcept {
    return records_.data() + static_cast<std::size_t>(u) * static_cast<std::size_t>(stride_);
  }
  [[nodiscard]] const std::int32_t* record(std::int32_t u) const noexcept {
    return records_.data() + static_cast<std::size_t>(u) * static_cast<std::size_t>(stride_);
  }
  void prefetch_record(std::int32_t u) const noexcept {
    const char* a = reinterpret_cast<const char*>(record(u));
    detail::prefetch(a);
    detail::prefetch(a + static_cast<std::size_t>(stride_) * sizeof(std::int32_t) - 1);
  }
  void prefetch_victim(std::int32_t u) const noexcept {
    const page_id p = record(u)[2];
    this->prefetch_lend(p);
    table_.prefetch(keys_[static_cast<std::size_t>(u)].lo);
  }
  /// Whether node q is page p continuing `parent` in root r.
  [[nodiscard]] bool holds(std::int32_t q, page_id p, std::int32_t parent,
                           std::int32_t r) const noexcept {
    const std::int32_t* rec = record(q);
    return rec[2] == p && rec[0] == parent && rec[1] == r;
  }
  [[nodiscard]] bool tokens_at(std::int32_t q, const std::int32_t* tok) const noexcept {
    return std::memcmp(record(q) + header, tok,
                       static_cast<std::size_t>(this->ps_) * sizeof(std::int32_t)) == 0;
  }
  void reset_nodes() {
    std::fill(records_.begin(), records_.end(), -1);
    std::fill(children_.begin(), children_.end(), 0);
    free_nodes_.clear();
    free_nodes_.reserve(static_cast<std::size_t>(capacity()));
    for (std::int32_t u = capacity() - 1; u >= 0; --u) free_nodes_.push_back(u);  // 0 on top
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
    for (std::int32_t q = head; q >= 0; q = record(q)[3]) {
      const std::int32_t* rec = record(q);
      if (rec[0] == parent && rec[1] == r && tokens_at(q, tok)) return q;
    }
    if (head >= 0) ++this->stats_.collisions;
    return -1;
  }
  /// Matches up to n pages from the root. A chain's nodes are usually consecutive (inserted as
  /// a run), so the node after the last one matched is tried first: same parent and tokens make
  /// it the page the table would give (keys are a function of parent and tokens), with no hash.
  /// Where that fails, a block of pages is hashed (table slots prefetched, then the nodes found
  /// prefetched, then verified, so the misses overlap); the block doubles while jumps go on.
  std::int32_t walk(const std::int32_t* tokens, std::uint64_t extra, std::int32_t r,
                    std::int32_t n, page_id* out, std::int32_t& last) {
    const std::int32_t ps = this->ps_;
    const std::int32_t cap = capacity();
    page_key keys[block];
    std::int32_t heads[block];
    std::int32_t cur = -1;
    std::int32_t m = 0;
    std::int32_t bsize = first_block;
    for (;;) {
      if (cur >= 0) {
        const std::int32_t m0 = m;
        for (std::int32_t c = cur + 1; m < n && c < cap; ++c) {
          const std::int32_t* rec = record(c);
          if (rec[0] != cur ||
              std::memcmp(rec + header, tokens + static_cast<std::size_t>(m) * ps,
                          static_cast<std::size_t>(ps) * sizeof(std::int32_t)) != 0) {
            break;
          }
          out[m++] = rec[2];
          cur = c;
        }
        if (m == n) break;
        bsize = m > m0 ? first_block : std::min(block, bsize * 2);
      }
      page_key pk = cur >= 0 ? keys_[static_cast<std::size_t>(cur)] : this->root(r).hash;
      const std::int32_t b = std::min(bsize, n - m);
      for (std::int32_t i = 0; i < b; ++i) {
        const std::int32_t* tok = tokens + static_cast<std::size_t>(m + i) * ps;
        keys[i] = this->hasher_.page(pk, this->page_span(tok), extra);
        pk = keys[i];
        table_.prefetch(keys[i].lo);
      }
      std::int32_t found = 0;
      for (; found < b; ++found) {
        const std::int32_t h = lookup(keys[found]);
        if (h < 0) break;
        heads[found] = h;
        prefetch_record(h);
      }
      for (std::int32_t i = 0; i < found; ++i) {
        const std::int32_t q =
            verify(heads[i], cur, r, tokens + static_cast<std::size_t>(m) * ps);
        if (q < 0) {
          last = cur;
          return m;
        }
        out[m++] = record(q)[2];
        cur = q;
      }
      if (found < b || m == n) break;
    }
    last = cur;
    return m;
  }
  void unlink(std::int32_t u) {
    const page_key& k = keys_[static_cast<std::size_t>(u)];
    if (table_.contains(k.lo, u)) {  // u heads its chain
      const std::int32_t next = record(u)[3];
      if (next >= 0) {
        table_.replace(k.lo, u, next);
      } else {
        table_.erase(k.lo, u);
      }
      return;
    }
    std::int32_t q = lookup(k);
    while (record(q)[3] != u) q = record(q)[3];
    record(q)[3] = record(u)[3];
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

  std::int32_t stride_;                  // ints per record: header + page_size
  detail::huge_vector<std::int32_t> records_;    // node-indexed records
  detail::huge_vector<page_key> keys_;           // node-indexed
  detail::huge_vector<std::int32_t> children_;   // node-indexed: cached pages continuing the node
  std::vector<std::int32_t> free_nodes_;  // a stack
  detail::flat_table table_;             // key -> first node under its tag
  std::vector<std::int32_t> path_;
  std::vector<std::int32_t> fresh_;
};

static_assert(prefix_index<hash_chain_index<lifo_allocator>>);
static_assert(prefix_index<hash_chain_index<lifo_allocator, priority_eviction>>);

}  // namespace kvcache
