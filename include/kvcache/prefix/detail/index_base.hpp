/**
 * @file index_base.hpp
 * @brief `detail::index_base`: what the prefix indexes share: the allocator and the index's own
 * page references, the tokens and keys of cached pages (arrays indexed by page id, sized once
 * from the pool), roots per (salt, extra), salt registration, references lent by `match`,
 * statistics, events, and the eviction heap with its per-unit policy state and retention expiry.
 */
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "kvcache/core/error.hpp"
#include "kvcache/paging/page_allocator.hpp"
#include "kvcache/prefix/detail/prefetch.hpp"
#include "kvcache/prefix/detail/unit_heap.hpp"
#include "kvcache/prefix/events.hpp"
#include "kvcache/prefix/eviction.hpp"
#include "kvcache/prefix/hasher.hpp"
#include "kvcache/prefix/types.hpp"

namespace kvcache::detail {

/// A pointer that a move leaves null, so a moved-from index releases nothing.
template <class T>
struct moving_ptr {
  T* p = nullptr;
  moving_ptr() = default;
  explicit moving_ptr(T* q) noexcept : p(q) {}
  moving_ptr(moving_ptr&& o) noexcept : p(std::exchange(o.p, nullptr)) {}
  moving_ptr& operator=(moving_ptr&& o) noexcept {
    p = std::exchange(o.p, nullptr);
    return *this;
  }
  T* operator->() const noexcept { return p; }
  T& operator*() const noexcept { return *p; }
  explicit operator bool() const noexcept { return p != nullptr; }
};

struct prefix_key_hash {
  std::size_t operator()(const prefix_key& k) const noexcept {
    return static_cast<std::size_t>((k.salt * 0x9E3779B97F4A7C15ull) ^ (k.extra + 0x632BE59BD9B4E019ull));
  }
};

template <page_allocator Allocator, eviction_policy Eviction, page_hasher Hasher>
class index_base {
 public:
  using allocator_type = Allocator;
  using eviction_type = Eviction;
  using hasher_type = Hasher;

  /// @brief Tokens per page.
  [[nodiscard]] std::int32_t page_size() const noexcept { return ps_; }
  /// @brief The allocator whose pages the index references.
  [[nodiscard]] Allocator& allocator() const noexcept { return *alloc_; }
  /// @brief Counters (cached_pages is current).
  [[nodiscard]] prefix_stats stats() const noexcept { return stats_; }
  /// @brief Where events go (off by default).
  [[nodiscard]] prefix_event_sink& events() noexcept { return events_; }
  /// @brief The eviction policy object (e.g. to read its clock).
  [[nodiscard]] const Eviction& eviction() const noexcept { return policy_; }
  [[nodiscard]] const Hasher& hasher() const noexcept { return hasher_; }
  /// @brief Whether the index holds a reference on page p. O(1).
  [[nodiscard]] bool is_cached(page_id p) const noexcept {
    return p >= 0 && p < num_pages_ && meta_[static_cast<std::size_t>(p)].cached == 1;
  }

  /// @brief Allows `salt` in "salts required" mode (any mode: harmless).
  void register_salt(cache_salt salt) { salts_.insert(salt); }
  /// @brief Forbids further use of `salt` in "salts required" mode; its cached pages stay until
  /// evicted. @throws kvcache::error unknown_id when it was not registered.
  void unregister_salt(cache_salt salt) {
    KVCACHE_EXPECTS(salts_.erase(salt) == 1, errc::unknown_id, "prefix index: salt {} is not registered",
                    salt);
  }

  /**
   * @brief Returns references that `match` handed out and the caller did not adopt (any subset,
   * in any order, e.g. the last page of a full hit). O(pages).
   * @throws kvcache::error out_of_range for a page outside the pool; bad_free naming the page
   * when it has no reference outstanding from a match (never matched, or released or adopted
   * already, as far as the index can tell). Nothing changes when it throws.
   */
  void release_match(std::span<const page_id> pages) {
    std::size_t done = 0;
    try {
      for (; done < pages.size(); ++done) {
        const page_id p = pages[done];
        KVCACHE_EXPECTS(p >= 0 && p < num_pages_, errc::out_of_range,
                        "release_match: page {} is not in the pool of {} pages", p, num_pages_);
        auto& lent = meta_[static_cast<std::size_t>(p)].lent;
        KVCACHE_EXPECTS(lent > 0 && alloc_->ref_count(p) > lent_floor(p), errc::bad_free,
                        "release_match: page {} was not handed out by match (or is released "
                        "already)",
                        p);
        --lent;
      }
    } catch (...) {
      for (std::size_t i = 0; i < done; ++i) ++meta_[static_cast<std::size_t>(pages[i])].lent;
      throw;
    }
    for (page_id p : pages) alloc_->drop_ref(p);
  }

 protected:
  /// @param page_storage whether to keep tokens and keys in arrays indexed by page id (the radix
  /// index keeps them per edge instead).
  index_base(Allocator& alloc, std::int32_t page_size, const prefix_index_options& options,
             Eviction policy, Hasher hasher, bool page_storage = true)
      : alloc_(&alloc),
        ps_(checked_page_size(page_size)),
        num_pages_(alloc.num_pages()),
        options_(options),
        policy_(std::move(policy)),
        hasher_(std::move(hasher)),
        tokens_(page_storage ? static_cast<std::size_t>(num_pages_) * static_cast<std::size_t>(ps_)
                             : 0),
        keys_(page_storage ? static_cast<std::size_t>(num_pages_) : 0),
        meta_(static_cast<std::size_t>(num_pages_)) {}

  ~index_base() = default;
  index_base(index_base&&) noexcept = default;
  index_base& operator=(index_base&&) noexcept = default;
  index_base(const index_base&) = delete;
  index_base& operator=(const index_base&) = delete;

  static std::int32_t checked_page_size(std::int32_t ps) {
    KVCACHE_EXPECTS(ps >= 1, errc::invalid_argument, "prefix index: page size {} must be >= 1", ps);
    return ps;
  }

  // ---- pages ---------------------------------------------------------------------------------
  [[nodiscard]] const std::int32_t* page_tokens(page_id p) const noexcept {
    return tokens_.data() + static_cast<std::size_t>(p) * static_cast<std::size_t>(ps_);
  }
  [[nodiscard]] bool tokens_equal(page_id p, const std::int32_t* t) const noexcept {
    return std::memcmp(page_tokens(p), t, static_cast<std::size_t>(ps_) * sizeof(std::int32_t)) == 0;
  }
  void store_tokens(page_id p, const std::int32_t* t) noexcept {
    std::memcpy(tokens_.data() + static_cast<std::size_t>(p) * static_cast<std::size_t>(ps_), t,
                static_cast<std::size_t>(ps_) * sizeof(std::int32_t));
  }
  [[nodiscard]] std::span<const std::int32_t> page_span(const std::int32_t* t) const noexcept {
    return {t, static_cast<std::size_t>(ps_)};
  }
  void prefetch_page(page_id p) const noexcept {
    detail::prefetch(page_tokens(p));
  }
  /// The index's record of cached page p (-1 when none is set).
  [[nodiscard]] std::int32_t page_unit(page_id p) const noexcept {
    return meta_[static_cast<std::size_t>(p)].unit;
  }
  void set_page_unit(page_id p, std::int32_t u) noexcept { meta_[static_cast<std::size_t>(p)].unit = u; }
  /// References the caller may hold besides lent ones: at least the index's own.
  [[nodiscard]] std::int32_t lent_floor(page_id p) const noexcept { return is_cached(p) ? 1 : 0; }

  /// Hands one reference on a cached page to a match's caller.
  void lend(page_id p) {
    auto& lent = meta_[static_cast<std::size_t>(p)].lent;
    // Stale counts (references adopted by sequences since) are capped by the real references.
    lent = std::min(lent, alloc_->ref_count(p) - 1) + 1;
    alloc_->add_ref(p);
  }
  /// Takes a reference on a page the index caches from now on.
  void adopt(page_id p) {
    alloc_->add_ref(p);
    meta_[static_cast<std::size_t>(p)].cached = 1;
    meta_[static_cast<std::size_t>(p)].lent = 0;
    ++stats_.cached_pages;
    ++stats_.inserted_pages;
  }
  /// Drops the index's reference on an evicted page (only the index referenced it).
  void forget_page(page_id p) {
    meta_[static_cast<std::size_t>(p)].cached = 0;
    meta_[static_cast<std::size_t>(p)].lent = 0;
    meta_[static_cast<std::size_t>(p)].unit = -1;
    --stats_.cached_pages;
    alloc_->drop_ref(p);
  }

  /// @throws unknown_id for a salt that is not registered in "salts required" mode.
  void check_salt(cache_salt salt) const {
    KVCACHE_EXPECTS(!options_.require_registered_salts || salts_.contains(salt), errc::unknown_id,
                    "prefix index: salt {} is not registered (salts are required)", salt);
  }
  /// @throws shape_mismatch when tokens do not fill the pages; out_of_range / bad_free naming a
  /// page outside the pool or free.
  void check_insert(std::span<const std::int32_t> tokens, std::span<const page_id> pages,
                    const char* what) const {
    const auto need = static_cast<std::int64_t>(pages.size()) * ps_;
    KVCACHE_EXPECTS(static_cast<std::int64_t>(tokens.size()) >= need, errc::shape_mismatch,
                    "{}: {} pages of {} tokens need >= {} tokens, got {}", what, pages.size(), ps_,
                    need, tokens.size());
    for (std::size_t i = 0; i < pages.size(); ++i) {
      if constexpr (requires(const Allocator& a, page_id q) { a.prefetch(q); }) {
        if (i + page_ahead < pages.size()) {
          const page_id a = pages[i + page_ahead];
          if (a >= 0 && a < num_pages_) alloc_->prefetch(a);
        }
      }
      const page_id p = pages[i];
      KVCACHE_EXPECTS(p >= 0 && p < num_pages_, errc::out_of_range,
                      "{}: page {} (index {}) is not in the pool of {} pages", what, p, i, num_pages_);
      KVCACHE_EXPECTS(alloc_->ref_count(p) > 0, errc::bad_free,
                      "{}: page {} (index {}) is free: the caller must hold a reference", what, p, i);
    }
  }
  /// Marks `pages` as about to be adopted; throws (and unmarks) when one is cached already or
  /// listed twice.
  void mark_new_pages(std::span<const page_id> pages, std::int64_t first_index, const char* what) {
    for (std::size_t i = 0; i < pages.size(); ++i) {
      if (i + page_ahead < pages.size()) {
        const page_id a = pages[i + page_ahead];
        if (a >= 0 && a < num_pages_) detail::prefetch(&meta_[static_cast<std::size_t>(a)]);
      }
      auto& c = meta_[static_cast<std::size_t>(pages[i])].cached;
      if (c != 0) {
        const bool twice = c == 2;
        for (std::size_t k = 0; k < i; ++k) meta_[static_cast<std::size_t>(pages[k])].cached = 0;
        KVCACHE_FAIL(errc::invalid_argument, "{}: page {} (index {}) is {}", what, pages[i],
                     first_index + static_cast<std::int64_t>(i),
                     twice ? "listed twice" : "already cached at another position or salt");
      }
      c = 2;
    }
  }

  // ---- roots ---------------------------------------------------------------------------------
  struct root_record {
    prefix_key key;
    page_key hash;          // the key a first page chains from
    std::int32_t users = 0;  // units directly under the root
    std::int32_t unit = -1;  // radix: the root edge
  };
  [[nodiscard]] std::int32_t find_root(const prefix_key& k) const {
    const auto it = root_ids_.find(k);
    return it == root_ids_.end() ? -1 : it->second;
  }
  std::int32_t create_root(const prefix_key& k, const page_key& hash) {
    std::int32_t r;
    if (!free_roots_.empty()) {
      r = free_roots_.back();
      free_roots_.pop_back();
    } else {
      r = static_cast<std::int32_t>(roots_.size());
      roots_.emplace_back();
    }
    roots_[static_cast<std::size_t>(r)] = root_record{k, hash, 0, -1};
    root_ids_.emplace(k, r);
    return r;
  }
  void destroy_root(std::int32_t r) {
    root_ids_.erase(roots_[static_cast<std::size_t>(r)].key);
    roots_[static_cast<std::size_t>(r)] = root_record{};
    free_roots_.push_back(r);
  }
  void clear_roots() {
    root_ids_.clear();
    roots_.clear();
    free_roots_.clear();
  }
  [[nodiscard]] root_record& root(std::int32_t r) noexcept { return roots_[static_cast<std::size_t>(r)]; }
  [[nodiscard]] const root_record& root(std::int32_t r) const noexcept {
    return roots_[static_cast<std::size_t>(r)];
  }

  // ---- eviction order ------------------------------------------------------------------------
  void reserve_units(std::size_t n) {
    if (ev_.size() < n) ev_.resize(n);
    heap_.reserve(n);
    if constexpr (Eviction::uses_retention) expiry_.reserve(n);
  }
  void ensure_unit(std::int32_t u) {
    if (static_cast<std::size_t>(u) >= ev_.size()) reserve_units(static_cast<std::size_t>(u) * 2 + 16);
  }
  [[nodiscard]] auto evict_less() const noexcept {
    return [this](std::int32_t a, std::int32_t b) {
      const auto& sa = ev_[static_cast<std::size_t>(a)];
      const auto& sb = ev_[static_cast<std::size_t>(b)];
      if (policy_.before(sa, sb)) return true;
      if (policy_.before(sb, sa)) return false;
      return a < b;
    };
  }
  void reset_unit(std::int32_t u) { ev_[static_cast<std::size_t>(u)] = typename Eviction::state{}; }
  void touch(std::int32_t u) {
    policy_.touch(ev_[static_cast<std::size_t>(u)], tick_);
    if (heap_.contains(u)) heap_.update(u, evict_less());
  }
  /// Stamps a unit that is not in the eviction heap (a new one): no heap lookup.
  void stamp(std::int32_t u) { policy_.touch(ev_[static_cast<std::size_t>(u)], tick_); }
  /// A child unit is going: its parent keeps the later use of the two.
  void inherit(std::int32_t parent, std::int32_t child) {
    policy_.inherit(ev_[static_cast<std::size_t>(parent)], ev_[static_cast<std::size_t>(child)]);
  }
  /// Prefetches what `lend` and `touch` of page-unit p write (not the allocator's count).
  void prefetch_page_state(page_id p) const noexcept {
    detail::prefetch(&meta_[static_cast<std::size_t>(p)]);
    detail::prefetch(&ev_[static_cast<std::size_t>(p)]);
    // An allocator may offer `prefetch(page_id)` for its reference count (an optional member).
    if constexpr (requires(const Allocator& a) { a.prefetch(p); }) alloc_->prefetch(p);
  }
  /// Prefetches what `lend` reads and writes for page p (its page state, the allocator's count).
  void prefetch_lend(page_id p) const noexcept {
    detail::prefetch(&meta_[static_cast<std::size_t>(p)]);
    if constexpr (requires(const Allocator& a) { a.prefetch(p); }) alloc_->prefetch(p);
  }
  void make_evictable(std::int32_t u) {
    if (!heap_.contains(u)) heap_.push(u, evict_less());
  }
  void make_unevictable(std::int32_t u) {
    if (heap_.contains(u)) heap_.erase(u, evict_less());
  }
  /// Applies a retention setting to unit u (retention policies only).
  void retain(std::int32_t u, std::int32_t priority, std::chrono::nanoseconds duration,
              std::int64_t now, bool fresh) {
    if constexpr (Eviction::uses_retention) {
      auto& s = ev_[static_cast<std::size_t>(u)];
      if (!policy_.retain(s, priority, duration, now, fresh)) return;
      if (heap_.contains(u)) heap_.update(u, evict_less());
      sync_expiry(u);
    } else {
      (void)u, (void)priority, (void)duration, (void)now, (void)fresh;
    }
  }
  /// Unit u's state was copied or changed: (un)register its expiry.
  void sync_expiry(std::int32_t u) {
    if constexpr (Eviction::uses_retention) {
      const bool expires = Eviction::expires_at(ev_[static_cast<std::size_t>(u)]) != Eviction::never;
      if (expires && expiry_.contains(u)) {
        expiry_.update(u, expiry_less());
      } else if (expires) {
        expiry_.push(u, expiry_less());
      } else if (expiry_.contains(u)) {
        expiry_.erase(u, expiry_less());
      }
    } else {
      (void)u;
    }
  }
  /// Unit u is gone: out of both heaps, state reset.
  void drop_unit(std::int32_t u) {
    make_unevictable(u);
    if constexpr (Eviction::uses_retention) {
      if (expiry_.contains(u)) expiry_.erase(u, expiry_less());
    }
    reset_unit(u);
  }
  /// Drops priorities whose duration has ended (before each eviction).
  void expire_due() {
    if constexpr (Eviction::uses_retention) {
      if (expiry_.empty()) return;
      const std::int64_t now = policy_.now();
      while (!expiry_.empty()) {
        const std::int32_t u = expiry_.top();
        auto& s = ev_[static_cast<std::size_t>(u)];
        if (Eviction::expires_at(s) > now) break;
        expiry_.erase(u, expiry_less());
        policy_.expire(s);
        if (heap_.contains(u)) heap_.update(u, evict_less());
      }
    }
  }
  [[nodiscard]] auto expiry_less() const noexcept {
    return [this](std::int32_t a, std::int32_t b) {
      if constexpr (Eviction::uses_retention) {
        return Eviction::expires_at(ev_[static_cast<std::size_t>(a)]) <
               Eviction::expires_at(ev_[static_cast<std::size_t>(b)]);
      } else {
        return a < b;
      }
    };
  }
  /// Units found in use during an eviction count as used now, so the next eviction does not scan
  /// them again; they go back into the heap.
  void restore_pinned() {
    for (std::int32_t u : pinned_) {
      policy_.touch(ev_[static_cast<std::size_t>(u)], tick_);
      heap_.push(u, evict_less());
    }
    pinned_.clear();
  }
  void clear_units() {
    heap_.clear();
    if constexpr (Eviction::uses_retention) expiry_.clear();
    std::fill(ev_.begin(), ev_.end(), typename Eviction::state{});
  }

  // ---- events --------------------------------------------------------------------------------
  struct removed_page {
    cache_salt salt;
    page_key key;
    page_id page;
  };
  void note_removed(cache_salt salt, page_id p) {
    if (events_.enabled()) removed_.push_back({salt, keys_[static_cast<std::size_t>(p)], p});
  }
  void note_removed(cache_salt salt, const page_key& key, page_id p) {
    if (events_.enabled()) removed_.push_back({salt, key, p});
  }
  /// One block_removed event per run of one salt.
  void publish_removed() {
    if (removed_.empty()) return;
    std::size_t i = 0;
    while (i < removed_.size()) {
      prefix_event& e = events_.start(prefix_event_type::block_removed, ps_);
      e.salt = removed_[i].salt;
      for (; i < removed_.size() && removed_[i].salt == e.salt; ++i) {
        e.keys.push_back(removed_[i].key);
        e.pages.push_back(removed_[i].page);
      }
      events_.publish();
    }
    removed_.clear();
  }
  void publish_cleared() {
    if (!events_.enabled()) return;
    events_.start(prefix_event_type::all_cleared, ps_);
    events_.publish();
  }
  /// After clear: nothing cached. Lent counts stay: matched references may still be released.
  void reset_pages() {
    for (auto& m : meta_) {
      m.cached = 0;
      m.unit = -1;
    }
    stats_.cached_pages = 0;
  }

  static constexpr std::size_t page_ahead = 16;  // pages prefetched ahead in per-page checks
  moving_ptr<Allocator> alloc_;
  std::int32_t ps_;
  std::int32_t num_pages_;
  prefix_index_options options_;
  Eviction policy_;
  Hasher hasher_;
  prefix_stats stats_;
  prefix_event_sink events_;
  std::uint64_t tick_ = 0;
  std::vector<std::int32_t> tokens_;  // page-indexed: the tokens of cached pages (page_storage)
  std::vector<page_key> keys_;        // page-indexed: the keys of cached pages (page_storage)
  struct page_meta {
    std::int32_t lent = 0;    // references handed out by match (an upper bound, see lend)
    std::int32_t cached = 0;  // 1 cached, 2 being inserted
    std::int32_t unit = -1;   // the index's record of a cached page (hash chain: its node)
    std::int32_t spare = 0;   // (16 bytes: a page's state never straddles cache lines)
  };
  std::vector<page_meta> meta_;       // page-indexed
  std::unordered_set<cache_salt> salts_;
  std::unordered_map<prefix_key, std::int32_t, prefix_key_hash> root_ids_;
  std::vector<root_record> roots_;
  std::vector<std::int32_t> free_roots_;
  std::vector<typename Eviction::state> ev_;  // unit-indexed
  unit_heap heap_;                            // evictable units
  unit_heap expiry_;                          // units whose priority expires
  std::vector<std::int32_t> pinned_;
  std::vector<removed_page> removed_;
};

}  // namespace kvcache::detail
