// Contract tests of the prefix_index models: a randomized run against a brute-force reference
// (also with a hasher that collides everything), salts, eviction order, events, bad input, and
// the integration with paged_kv_store.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "kvcache/paging/lifo_allocator.hpp"
#include "kvcache/paging/paged_kv_store.hpp"
#include "kvcache/prefix/hash_chain_index.hpp"
#include "kvcache/prefix/radix_index.hpp"
#include "support/catch.hpp"

using namespace kvcache;
using namespace std::chrono_literals;

namespace {

/// A hasher that maps everything to one value: every lookup collides.
struct colliding_hasher {
  [[nodiscard]] page_key root(cache_salt, std::uint64_t) const noexcept { return {7, 7}; }
  [[nodiscard]] page_key page(const page_key&, std::span<const std::int32_t>,
                              std::uint64_t) const noexcept {
    return {42, 42};
  }
  [[nodiscard]] std::uint64_t content(std::span<const std::int32_t>) const noexcept { return 42; }
};
static_assert(page_hasher<colliding_hasher>);

using index_models = std::tuple<radix_index<lifo_allocator>, hash_chain_index<lifo_allocator>>;
using colliding_models =
    std::tuple<radix_index<lifo_allocator, lru_eviction, colliding_hasher>,
               hash_chain_index<lifo_allocator, lru_eviction, colliding_hasher>>;
using priority_models = std::tuple<radix_index<lifo_allocator, priority_eviction>,
                                   hash_chain_index<lifo_allocator, priority_eviction>>;

template <class I>
constexpr bool is_radix = false;
template <class A, class E, class H>
constexpr bool is_radix<radix_index<A, E, H>> = true;

std::vector<std::int32_t> iota_tokens(std::int32_t n, std::int32_t from) {
  std::vector<std::int32_t> t(static_cast<std::size_t>(n));
  for (std::int32_t i = 0; i < n; ++i) t[static_cast<std::size_t>(i)] = from + i;
  return t;
}

std::vector<page_id> allocate(lifo_allocator& a, std::int32_t n) {
  std::vector<page_id> p(static_cast<std::size_t>(n));
  REQUIRE(a.try_allocate(std::span<page_id>(p)));
  return p;
}

void drop_all(lifo_allocator& a, std::span<const page_id> pages) {
  for (page_id p : pages) a.drop_ref(p);
}

// ---- brute-force reference --------------------------------------------------------------------
// Cached entries: (salt, extra, tokens of a whole-page prefix) -> the page holding its last page.
struct reference {
  std::int32_t ps;
  std::map<std::tuple<cache_salt, std::uint64_t, std::vector<std::int32_t>>, page_id> entries;

  [[nodiscard]] std::vector<page_id> longest(const prefix_key& k, std::span<const std::int32_t> t,
                                             std::size_t max_pages) const {
    std::vector<page_id> out;
    for (std::size_t i = 1; i <= std::min(max_pages, t.size() / static_cast<std::size_t>(ps)); ++i) {
      const auto it = entries.find({k.salt, k.extra, {t.begin(), t.begin() + static_cast<std::ptrdiff_t>(i) * ps}});
      if (it == entries.end()) break;
      out.push_back(it->second);
    }
    return out;
  }
  std::int32_t insert(const prefix_key& k, std::span<const std::int32_t> t,
                      std::span<const page_id> pages) {
    std::int32_t added = 0;
    for (std::size_t i = 0; i < pages.size(); ++i) {
      auto [it, fresh] = entries.try_emplace(
          {k.salt, k.extra, {t.begin(), t.begin() + static_cast<std::ptrdiff_t>(i + 1) * ps}}, pages[i]);
      added += fresh ? 1 : 0;
    }
    return added;
  }
  [[nodiscard]] bool holds(page_id p) const {
    for (const auto& [key, q] : entries) {
      if (q == p) return true;
    }
    return false;
  }
  /// Whether some cached entry continues the entry `key` (so evicting it would leave a hole).
  [[nodiscard]] bool has_child(const decltype(entries)::key_type& key) const {
    for (const auto& [k, q] : entries) {
      if (std::get<0>(k) == std::get<0>(key) && std::get<1>(k) == std::get<1>(key) &&
          std::get<2>(k).size() == std::get<2>(key).size() + static_cast<std::size_t>(ps) &&
          std::equal(std::get<2>(key).begin(), std::get<2>(key).end(), std::get<2>(k).begin())) {
        return true;
      }
    }
    return false;
  }
};

struct live_seq {
  prefix_key key;
  std::vector<std::int32_t> tokens;
  std::vector<page_id> pages;  // ceil(tokens / ps) pages, one reference each
};

/// The randomized contract run: random prompts sharing prefixes, matches, adoptions, releases,
/// inserts, evictions and clears, checked step by step against the reference.
template <class Index>
void run_against_reference(std::uint64_t seed, std::int32_t steps, std::int32_t pool) {
  constexpr std::int32_t ps = 4;
  lifo_allocator alloc(pool);
  std::chrono::nanoseconds now{0};  // the clock of priority policies
  constexpr bool priorities = std::is_same_v<typename Index::eviction_type, priority_eviction>;
  Index index = [&] {
    if constexpr (priorities) {
      return Index(alloc, ps, {}, priority_eviction([&] { return now; }));
    } else {
      return Index(alloc, ps);
    }
  }();
  reference ref{ps, {}};
  std::mt19937_64 rng(seed);
  auto uni = [&](std::int32_t lo, std::int32_t hi) {
    return std::uniform_int_distribution<std::int32_t>(lo, hi)(rng);
  };
  // A few base prompts over a small alphabet (so pages repeat across prompts and positions).
  std::vector<std::vector<std::int32_t>> bases(4);
  for (auto& b : bases) {
    b.resize(12 * ps);
    for (auto& t : b) t = uni(0, 3);
  }
  const prefix_key keys[] = {{0, 0}, {1, 0}, {0, 9}};
  std::vector<std::int32_t> holders(static_cast<std::size_t>(pool), 0);  // test-held references
  std::vector<live_seq> live;
  std::vector<page_id> out;

  auto check_accounting = [&](std::int32_t step) {
    INFO("step " << step << " seed " << seed);
    index.check_invariants();
    std::int32_t free_pages = 0, cached_only = 0, elsewhere = 0;
    for (page_id p = 0; p < pool; ++p) {
      const bool cached = index.is_cached(p);
      REQUIRE(cached == ref.holds(p));
      REQUIRE(alloc.ref_count(p) == holders[static_cast<std::size_t>(p)] + (cached ? 1 : 0));
      if (alloc.ref_count(p) == 0) {
        ++free_pages;
      } else if (holders[static_cast<std::size_t>(p)] == 0) {
        ++cached_only;
      } else {
        ++elsewhere;
      }
    }
    REQUIRE(free_pages == alloc.free_count());
    REQUIRE(free_pages + cached_only + elsewhere == pool);
    REQUIRE(index.stats().cached_pages == static_cast<std::int64_t>(ref.entries.size()));
  };
  // Evicts through the index and checks what went: only pages no one else held, never a page
  // that a cached page continues, and no fewer than asked while evictable pages remain.
  auto evict = [&](std::int32_t n) {
    std::vector<page_id> before;
    for (page_id p = 0; p < pool; ++p) {
      if (index.is_cached(p)) before.push_back(p);
    }
    const std::int32_t freed = index.evict(n);
    REQUIRE(freed <= n);
    std::int32_t gone = 0;
    for (page_id p : before) {
      if (index.is_cached(p)) continue;
      ++gone;
      REQUIRE(holders[static_cast<std::size_t>(p)] == 0);  // only the index referenced it
      REQUIRE(alloc.ref_count(p) == 0);
    }
    REQUIRE(gone == freed);
    std::erase_if(ref.entries, [&](const auto& e) { return !index.is_cached(e.second); });
    for (const auto& [k, p] : ref.entries) {  // no hole: every cached prefix's parent is cached
      if (std::get<2>(k).size() > static_cast<std::size_t>(ps)) {
        const auto parent = std::make_tuple(
            std::get<0>(k), std::get<1>(k),
            std::vector<std::int32_t>(std::get<2>(k).begin(), std::get<2>(k).end() - ps));
        REQUIRE(ref.entries.contains(parent));
      }
    }
    if (freed < n) {  // nothing evictable is left: every cached tail is held by someone
      for (const auto& [k, p] : ref.entries) {
        if (!ref.has_child(k)) REQUIRE(holders[static_cast<std::size_t>(p)] > 0);
      }
    }
  };
  auto insert_seq = [&](const live_seq& s) {
    const auto full = s.tokens.size() / ps;
    const std::span<const page_id> pages(s.pages.data(), full);
    const std::int32_t expected = ref.insert(s.key, s.tokens, pages);
    // random retention: a priority for the prompt and one for a random token range (a priority
    // policy splits radix edges where it changes; LRU ignores it)
    const token_range_retention range{.begin = uni(0, 8 * ps), .end = uni(8 * ps, 16 * ps),
                                      .priority = uni(0, 100),
                                      .duration = std::chrono::nanoseconds(uni(0, 3) * 10)};
    retention_config retention{.priority = uni(0, 100),
                               .duration = std::chrono::nanoseconds(uni(0, 3) * 10)};
    if (uni(0, 1) == 0) retention.ranges = std::span(&range, 1);
    if (uni(0, 2) == 0) retention = retention_config{};
    REQUIRE(index.insert(s.tokens, pages, s.key, retention) == expected);
  };

  for (std::int32_t step = 0; step < steps; ++step) {
    now += std::chrono::nanoseconds(uni(0, 4));
    const std::int32_t op = uni(0, 99);
    if (op < 40) {  // admit a request: match, then adopt or give back
      live_seq s;
      s.key = keys[uni(0, 2)];
      const auto& b = bases[static_cast<std::size_t>(uni(0, 3))];
      s.tokens.assign(b.begin(), b.begin() + uni(0, 12) * ps);
      for (std::int32_t i = uni(0, 6 * ps); i > 0; --i) s.tokens.push_back(uni(0, 3));
      if (s.tokens.empty()) s.tokens.push_back(1);
      out.assign(s.tokens.size() / ps, -1);
      const match_result r = index.match(s.tokens, s.key, out);
      const auto expect = ref.longest(s.key, s.tokens, out.size());
      INFO("step " << step << " seed " << seed);
      REQUIRE(r.pages == static_cast<std::int32_t>(expect.size()));
      REQUIRE(r.tokens == r.pages * ps);
      REQUIRE(std::equal(expect.begin(), expect.end(), out.begin()));
      for (std::int32_t i = 0; i < r.pages; ++i) ++holders[static_cast<std::size_t>(out[static_cast<std::size_t>(i)])];
      std::int32_t keep = r.pages;
      const std::int32_t how = uni(0, 9);
      if (how < 2) {
        keep = 0;
      } else if (how < 4 && keep > 0) {
        keep = uni(0, keep - 1);
      }
      if (keep < r.pages) {  // give back the tail of the match
        const std::span<const page_id> back(out.data() + keep, static_cast<std::size_t>(r.pages - keep));
        index.release_match(back);
        for (page_id p : back) --holders[static_cast<std::size_t>(p)];
      }
      if (how < 2) {
        check_accounting(step);
        continue;
      }
      s.pages.assign(out.begin(), out.begin() + keep);
      const auto total = static_cast<std::int32_t>((s.tokens.size() + ps - 1) / ps);
      std::vector<page_id> fresh(static_cast<std::size_t>(total - keep));
      if (!alloc.try_allocate(std::span<page_id>(fresh))) {
        evict(static_cast<std::int32_t>(fresh.size()) - alloc.free_count());
        if (!alloc.try_allocate(std::span<page_id>(fresh))) {  // pool short: give up the request
          index.release_match(s.pages);
          for (page_id p : s.pages) --holders[static_cast<std::size_t>(p)];
          check_accounting(step);
          continue;
        }
      }
      for (page_id p : fresh) {
        ++holders[static_cast<std::size_t>(p)];
        s.pages.push_back(p);
      }
      if (uni(0, 1) == 0) insert_seq(s);  // cache after prefill
      live.push_back(std::move(s));
    } else if (op < 55) {  // cache a live sequence's full pages
      if (!live.empty()) insert_seq(live[static_cast<std::size_t>(uni(0, static_cast<std::int32_t>(live.size()) - 1))]);
    } else if (op < 80) {  // finish a sequence (caching it first, or not)
      if (!live.empty()) {
        const auto i = static_cast<std::size_t>(uni(0, static_cast<std::int32_t>(live.size()) - 1));
        if (uni(0, 2) != 0) insert_seq(live[i]);
        for (page_id p : live[i].pages) {
          alloc.drop_ref(p);
          --holders[static_cast<std::size_t>(p)];
        }
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
      }
    } else if (op < 98) {
      evict(uni(0, 6));
    } else {
      index.clear();
      ref.entries.clear();
    }
    check_accounting(step);
  }
  for (auto& s : live) drop_all(alloc, s.pages);
  index.clear();
  REQUIRE(alloc.free_count() == pool);
}

}  // namespace

// ---- the contract, against the reference ------------------------------------------------------
TEMPLATE_LIST_TEST_CASE("prefix index: randomized run equals the brute-force reference",
                        "[prefix][reference]", index_models) {
  for (std::uint64_t run = 0; run < 4; ++run) {
    run_against_reference<TestType>(kvtest::seed() + run, 3000, 80);
  }
}

TEMPLATE_LIST_TEST_CASE("prefix index: randomized run with priorities equals the reference",
                        "[prefix][reference][eviction]", priority_models) {
  for (std::uint64_t run = 0; run < 2; ++run) {
    run_against_reference<TestType>(kvtest::seed() + 50 + run, 3000, 80);
  }
}

TEMPLATE_LIST_TEST_CASE("prefix index: a hasher colliding everything returns only correct matches",
                        "[prefix][collision]", colliding_models) {
  run_against_reference<TestType>(kvtest::seed() + 100, 1500, 40);
  // and the collisions are real: every lookup past the first cached prompt meets one
  lifo_allocator alloc(16);
  TestType index(alloc, 4);
  const auto a = iota_tokens(8, 0), b = iota_tokens(8, 100);
  const auto pa = allocate(alloc, 2), pb = allocate(alloc, 2);
  CHECK(index.insert(a, pa) == 2);
  CHECK(index.insert(b, pb) == 2);
  std::vector<page_id> out(2);
  CHECK(index.match(b, out).pages == 2);
  CHECK(out == pb);
  CHECK(index.match(a, out).pages == 2);
  CHECK(out == pa);
  CHECK(index.stats().collisions > 0);
  index.release_match(out);
  index.release_match(pb);
  drop_all(alloc, pa);
  drop_all(alloc, pb);
}

TEMPLATE_LIST_TEST_CASE("prefix index: match, insert, stats", "[prefix]", index_models) {
  lifo_allocator alloc(32);
  TestType index(alloc, 4);
  CHECK(index.page_size() == 4);
  const auto prompt = iota_tokens(18, 0);  // 4 full pages and 2 tokens
  const auto pages = allocate(alloc, 5);
  // the partial last page is not cached; more tokens than pages x page size is fine
  CHECK(index.insert(prompt, std::span<const page_id>(pages.data(), 4)) == 4);
  CHECK(index.insert(prompt, std::span<const page_id>(pages.data(), 4)) == 0);  // no duplicates
  for (page_id p : pages) CHECK(alloc.ref_count(p) == (p == pages[4] ? 1 : 2));

  std::vector<page_id> out(8, -1);
  auto r = index.match(prompt, out);
  CHECK(r.pages == 4);
  CHECK(r.tokens == 16);
  CHECK(std::equal(pages.begin(), pages.begin() + 4, out.begin()));
  CHECK(alloc.ref_count(pages[0]) == 3);
  // at most out.size() pages
  r = index.match(prompt, std::span<page_id>(out.data() + 4, 2));
  CHECK(r.pages == 2);
  // a prompt diverging in page 2 (at its last token)
  auto other = prompt;
  other[11] = -5;
  r = index.match(other, std::span<page_id>(out.data() + 6, 2));
  CHECK(r.pages == 2);
  CHECK(index.match(iota_tokens(3, 0), out).pages == 0);  // less than a page
  const prefix_stats st = index.stats();
  CHECK(st.cached_pages == 4);
  CHECK(st.lookups == 4);
  CHECK(st.hits == 3);
  CHECK(st.misses == 1);
  CHECK(st.hit_tokens == 32);
  CHECK(st.inserted_pages == 4);
  index.release_match(out);
  drop_all(alloc, pages);
  CHECK(alloc.free_count() == 28);
  CHECK(index.evict(100) == 4);
  CHECK(alloc.free_count() == 32);
  CHECK(index.stats().evicted_pages == 4);
}

TEMPLATE_LIST_TEST_CASE("prefix index: a branch shares the common pages", "[prefix]",
                        index_models) {
  lifo_allocator alloc(32);
  TestType index(alloc, 2);
  const std::vector<std::int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::vector<std::int32_t> b = {1, 2, 3, 4, 9, 9, 7, 8};  // same pages 0, 1 and 3
  const auto pa = allocate(alloc, 4), pb = allocate(alloc, 4);
  CHECK(index.insert(a, pa) == 4);
  CHECK(index.insert(b, pb) == 2);  // pb[0], pb[1] duplicate cached pages
  CHECK_FALSE(index.is_cached(pb[0]));
  CHECK(index.is_cached(pb[2]));
  std::vector<page_id> out(4);
  CHECK(index.match(b, out).pages == 4);
  CHECK(out == std::vector<page_id>{pa[0], pa[1], pb[2], pb[3]});
  index.release_match(out);
  if constexpr (is_radix<TestType>) CHECK(index.edge_count() == 4);  // root, [0,1], [2,3], [2,3]'
  drop_all(alloc, pa);
  drop_all(alloc, pb);
  CHECK(index.evict(2) == 2);  // tails only: the shared pages have two children
  CHECK(index.is_cached(pa[1]));
  CHECK(index.evict(10) == 4);
  CHECK(alloc.free_count() == 32);
  index.check_invariants();
}

// ---- salts --------------------------------------------------------------------------------------
TEMPLATE_LIST_TEST_CASE("prefix index: identical prompts under two salts never share pages",
                        "[prefix][salt]", index_models) {
  lifo_allocator alloc(32);
  TestType index(alloc, 4);
  const auto prompt = iota_tokens(12, 7);
  const auto p1 = allocate(alloc, 3), p2 = allocate(alloc, 3);
  CHECK(index.insert(prompt, p1, {.salt = 1}) == 3);
  CHECK(index.insert(prompt, p2, {.salt = 2}) == 3);  // no dedup across salts
  std::vector<page_id> out(3);
  CHECK(index.match(prompt, {.salt = 2}, out).pages == 3);
  CHECK(out == p2);
  index.release_match(out);
  CHECK(index.match(prompt, {.salt = 1}, out).pages == 3);
  CHECK(out == p1);
  index.release_match(out);
  CHECK(index.match(prompt, {.salt = 3}, out).pages == 0);  // unknown salt: a miss
  CHECK(index.match(prompt, {.salt = 0}, out).pages == 0);  // the shared partition too
  CHECK(index.match(prompt, {.salt = 1, .extra = 5}, out).pages == 0);  // another adapter
  // one salt's page cannot be cached under another salt
  KVTEST_REQUIRE_ERROR(index.insert(prompt, p1, {.salt = 3}), errc::invalid_argument,
                       "already cached");
  drop_all(alloc, p1);
  drop_all(alloc, p2);
  index.check_invariants();
}

TEMPLATE_LIST_TEST_CASE("prefix index: salts required mode", "[prefix][salt]", index_models) {
  lifo_allocator alloc(16);
  TestType index(alloc, 4, prefix_index_options{.require_registered_salts = true});
  const auto prompt = iota_tokens(8, 0);
  const auto pages = allocate(alloc, 2);
  std::vector<page_id> out(2);
  KVTEST_REQUIRE_ERROR(index.insert(prompt, pages, {.salt = 42}), errc::unknown_id,
                       "salt 42 is not registered");
  KVTEST_REQUIRE_ERROR(index.match(prompt, {.salt = 0}, out), errc::unknown_id,
                       "salt 0 is not registered");
  index.register_salt(42);
  CHECK(index.insert(prompt, pages, {.salt = 42}) == 2);
  CHECK(index.match(prompt, {.salt = 42}, out).pages == 2);
  index.release_match(out);
  index.unregister_salt(42);
  KVTEST_REQUIRE_ERROR(index.match(prompt, {.salt = 42}, out), errc::unknown_id, "salt 42");
  KVTEST_REQUIRE_ERROR(index.unregister_salt(42), errc::unknown_id, "salt 42 is not registered");
  drop_all(alloc, pages);
}

// ---- eviction order -----------------------------------------------------------------------------
TEMPLATE_LIST_TEST_CASE("prefix index: LRU eviction, tails first, never a referenced page",
                        "[prefix][eviction]", index_models) {
  lifo_allocator alloc(16);
  TestType index(alloc, 4);
  const auto a = iota_tokens(8, 0), b = iota_tokens(8, 100), c = iota_tokens(8, 200);
  const auto pa = allocate(alloc, 2), pb = allocate(alloc, 2), pc = allocate(alloc, 2);
  index.insert(a, pa);
  index.insert(b, pb);
  index.insert(c, pc);
  drop_all(alloc, pa);
  drop_all(alloc, pb);
  drop_all(alloc, pc);
  std::vector<page_id> out(2);
  index.match(a, out);  // a is now the most recent
  index.release_match(out);
  CHECK(index.evict(1) == 1);  // b's tail
  CHECK(index.is_cached(pb[0]));
  CHECK_FALSE(index.is_cached(pb[1]));
  CHECK(index.evict(1) == 1);  // then b's first page (now a tail), older than c
  CHECK_FALSE(index.is_cached(pb[0]));
  CHECK(index.match(c, out).pages == 2);  // c is held by a match
  CHECK(index.evict(2) == 2);             // so a goes, c stays
  CHECK_FALSE(index.is_cached(pa[0]));
  CHECK(index.is_cached(pc[0]));
  CHECK(index.evict(5) == 0);  // c is referenced
  CHECK(index.is_cached(pc[1]));
  index.release_match(out);
  CHECK(index.evict(5) == 2);
  CHECK(alloc.free_count() == 16);
}

TEMPLATE_LIST_TEST_CASE("prefix index: retention priorities and their duration",
                        "[prefix][eviction]", priority_models) {
  std::chrono::nanoseconds now{0};
  lifo_allocator alloc(32);
  TestType index(alloc, 4, {}, priority_eviction([&] { return now; }));
  const auto a = iota_tokens(8, 0), b = iota_tokens(8, 100), c = iota_tokens(8, 200);
  const auto pa = allocate(alloc, 2), pb = allocate(alloc, 2), pc = allocate(alloc, 2);
  index.insert(a, pa, {}, retention_config{.priority = 80, .duration = 10s});
  index.insert(b, pb);  // default priority 35
  index.insert(c, pc, {}, retention_config{.priority = 10});
  drop_all(alloc, pa);
  drop_all(alloc, pb);
  drop_all(alloc, pc);
  CHECK(index.evict(2) == 2);  // c: lowest priority, though the most recent
  CHECK_FALSE(index.is_cached(pc[0]));
  CHECK(index.evict(1) == 1);  // then b, before the older but higher a
  CHECK_FALSE(index.is_cached(pb[1]));
  // raise-only: a default-priority reuse does not lower a
  index.insert(a, pa);
  now = 11s;  // a's priority expires: a (older) goes before b's remaining page? b is default and
              // older than a's last use, so b goes first
  CHECK(index.evict(1) == 1);
  CHECK_FALSE(index.is_cached(pb[0]));
  CHECK(index.evict(2) == 2);
  CHECK(alloc.free_count() == 32);

  // per token range: the first two pages (a system prompt) at 90, the rest default
  const auto p = iota_tokens(16, 300), q = iota_tokens(8, 400);
  const auto pp = allocate(alloc, 4), pq = allocate(alloc, 2);
  index.insert(q, pq);  // older, default
  const token_range_retention ranges[] = {{.begin = 0, .end = 8, .priority = 90}};
  index.insert(p, pp, {}, retention_config{.ranges = ranges});
  drop_all(alloc, pp);
  drop_all(alloc, pq);
  CHECK(index.evict(3) == 3);  // q (older), then p's default tail page
  CHECK_FALSE(index.is_cached(pq[0]));
  CHECK_FALSE(index.is_cached(pp[3]));
  CHECK(index.is_cached(pp[2]));
  CHECK(index.evict(1) == 1);  // p's other default page before its 90s
  CHECK_FALSE(index.is_cached(pp[2]));
  CHECK(index.is_cached(pp[1]));
  index.check_invariants();
  KVTEST_REQUIRE_ERROR(index.insert(std::span(p).first(8), std::span(pp).first(2), {},
                                    retention_config{.priority = 101}),
                       errc::invalid_argument, "retention priority 101");
  CHECK(index.evict(2) == 2);
  CHECK(alloc.free_count() == 32);
}

// ---- events -------------------------------------------------------------------------------------
TEMPLATE_LIST_TEST_CASE("prefix index: events through a callback", "[prefix][events]",
                        index_models) {
  lifo_allocator alloc(16);
  TestType index(alloc, 4);
  std::vector<prefix_event> seen;
  index.events().set_callback([&](const prefix_event& e) { seen.push_back(e); });
  const auto prompt = iota_tokens(16, 0);
  const auto pages = allocate(alloc, 4);
  index.insert(std::span<const std::int32_t>(prompt).first(8), std::span<const page_id>(pages).first(2), {.salt = 3});
  index.insert(prompt, pages, {.salt = 3});  // stores pages 2 and 3 only
  std::vector<page_id> out(4);
  index.match(prompt, {.salt = 3}, out);  // no event
  index.release_match(out);
  REQUIRE(seen.size() == 2);
  CHECK(seen[0].type == prefix_event_type::block_stored);
  CHECK(seen[0].salt == 3);
  CHECK(seen[0].parent == xxh3_hasher{}.root(3, 0));
  CHECK(seen[0].first_token == 0);
  CHECK(seen[0].page_size == 4);
  CHECK(seen[0].keys.size() == 2);
  CHECK(seen[0].keys[0] == xxh3_hasher{}.page(seen[0].parent, std::span(prompt).first(4), 0));
  CHECK(seen[0].tokens == std::vector<std::int32_t>(prompt.begin(), prompt.begin() + 8));
  CHECK(seen[1].first_token == 8);
  CHECK(seen[1].parent == seen[0].keys[1]);  // the chain continues
  CHECK(seen[1].pages == std::vector<page_id>{pages[2], pages[3]});
  drop_all(alloc, pages);
  CHECK(index.evict(3) == 3);
  REQUIRE(seen.size() == 3);
  CHECK(seen[2].type == prefix_event_type::block_removed);
  CHECK(seen[2].salt == 3);
  CHECK(seen[2].keys == std::vector<page_key>{seen[1].keys[1], seen[1].keys[0], seen[0].keys[1]});
  index.clear();
  REQUIRE(seen.size() == 4);
  CHECK(seen[3].type == prefix_event_type::all_cleared);
}

TEST_CASE("prefix index: both indexes emit the same keys", "[prefix][events]") {
  lifo_allocator alloc(16);
  radix_index<lifo_allocator> radix(alloc, 4);
  hash_chain_index<lifo_allocator> chain(alloc, 4);
  std::vector<page_key> kr, kc;
  radix.events().set_callback([&](const prefix_event& e) { kr.insert(kr.end(), e.keys.begin(), e.keys.end()); });
  chain.events().set_callback([&](const prefix_event& e) { kc.insert(kc.end(), e.keys.begin(), e.keys.end()); });
  const auto prompt = iota_tokens(12, 5);
  const auto pages = allocate(alloc, 3);
  radix.insert(prompt, pages, {.salt = 1, .extra = 2});
  chain.insert(prompt, pages, {.salt = 1, .extra = 2});
  CHECK(kr.size() == 3);
  CHECK(kr == kc);
  drop_all(alloc, pages);
}

TEMPLATE_LIST_TEST_CASE("prefix index: events through a bounded queue", "[prefix][events]",
                        index_models) {
  lifo_allocator alloc(16);
  TestType index(alloc, 4);
  index.events().use_queue(2);
  const auto pages = allocate(alloc, 3);
  for (std::int32_t i = 0; i < 3; ++i) {
    index.insert(iota_tokens(4, 10 * i), std::span<const page_id>(&pages[static_cast<std::size_t>(i)], 1));
  }
  CHECK(index.events().queued() == 2);
  CHECK(index.events().dropped() == 1);  // the oldest went
  std::vector<page_id> got;
  CHECK(index.events().drain([&](const prefix_event& e) { got.push_back(e.pages.at(0)); }) == 2);
  CHECK(got == std::vector<page_id>{pages[1], pages[2]});
  CHECK(index.events().queued() == 0);
  drop_all(alloc, pages);
  index.evict(3);
  CHECK(index.events().queued() == 1);  // one block_removed for the salt
  index.events().drain([&](const prefix_event& e) { CHECK(e.keys.size() == 3); });
  KVTEST_REQUIRE_ERROR(index.events().use_queue(0), errc::invalid_argument, "capacity must be >= 1");
}

// ---- bad input ----------------------------------------------------------------------------------
TEMPLATE_LIST_TEST_CASE("prefix index: bad input names the value", "[prefix][errors]",
                        index_models) {
  lifo_allocator alloc(16);
  TestType index(alloc, 4);
  const auto prompt = iota_tokens(8, 0);
  const auto pages = allocate(alloc, 2);
  KVTEST_REQUIRE_ERROR(index.insert(std::span(prompt).first(7), pages), errc::shape_mismatch,
                       "2 pages of 4 tokens need >= 8 tokens, got 7");
  const std::vector<page_id> bad = {pages[0], 99};
  KVTEST_REQUIRE_ERROR(index.insert(prompt, bad), errc::out_of_range, "page 99 (index 1)");
  const std::vector<page_id> freed = {pages[0], 15};
  KVTEST_REQUIRE_ERROR(index.insert(prompt, freed), errc::bad_free, "page 15 (index 1) is free");
  const std::vector<page_id> twice = {pages[0], pages[0]};
  KVTEST_REQUIRE_ERROR(index.insert(prompt, twice), errc::invalid_argument, "listed twice");
  CHECK(index.stats().cached_pages == 0);  // nothing changed
  CHECK(index.insert(prompt, pages) == 2);
  const auto other = allocate(alloc, 1);
  const std::vector<page_id> moved = {other[0], pages[0]};  // pages[0] belongs to page 0
  KVTEST_REQUIRE_ERROR(index.insert(iota_tokens(8, 50), moved), errc::invalid_argument,
                       fmt::format("page {} (index 1) is already cached", pages[0]));
  CHECK(index.stats().cached_pages == 2);
  // releasing what was not matched
  KVTEST_REQUIRE_ERROR(index.release_match(std::vector<page_id>{pages[1]}), errc::bad_free,
                       fmt::format("page {} was not handed out by match", pages[1]));
  KVTEST_REQUIRE_ERROR(index.release_match(std::vector<page_id>{-3}), errc::out_of_range, "page -3");
  std::vector<page_id> out(2);
  CHECK(index.match(prompt, out).pages == 2);
  index.release_match(out);
  KVTEST_REQUIRE_ERROR(index.release_match(out), errc::bad_free, "was not handed out");
  KVTEST_REQUIRE_ERROR(index.evict(-1), errc::invalid_argument, "-1 pages");
  KVTEST_REQUIRE_ERROR(TestType(alloc, 0), errc::invalid_argument, "page size 0");
  drop_all(alloc, pages);
  drop_all(alloc, other);
  index.check_invariants();
}

TEMPLATE_LIST_TEST_CASE("prefix index: clear keeps matched references releasable",
                        "[prefix]", index_models) {
  lifo_allocator alloc(8);
  TestType index(alloc, 2);
  const auto prompt = iota_tokens(4, 0);
  const auto pages = allocate(alloc, 2);
  index.insert(prompt, pages);
  drop_all(alloc, pages);
  std::vector<page_id> out(2);
  CHECK(index.match(prompt, out).pages == 2);
  index.clear();
  CHECK(index.stats().cached_pages == 0);
  CHECK(alloc.free_count() == 6);
  index.release_match(out);
  CHECK(alloc.free_count() == 8);
}

TEMPLATE_LIST_TEST_CASE("prefix index: moving the index moves its references", "[prefix]",
                        index_models) {
  lifo_allocator alloc(8);
  const auto pages = allocate(alloc, 2);
  {
    TestType a(alloc, 2);
    a.insert(iota_tokens(4, 0), pages);
    TestType b(std::move(a));
    drop_all(alloc, pages);
    CHECK(alloc.free_count() == 6);
    std::vector<page_id> out(2);
    CHECK(b.match(iota_tokens(4, 0), out).pages == 2);
    b.release_match(out);
  }  // b's destructor drops the index's references, a's none
  CHECK(alloc.free_count() == 8);
}

// ---- integration with the store -------------------------------------------------------------------
TEMPLATE_LIST_TEST_CASE("prefix index: a store shares cached pages and reclaims them when short",
                        "[prefix][store]", index_models) {
  store_config cfg;
  cfg.layout = kv_layout{.layers = 1, .kv_heads = 1, .q_heads = 1, .head_dim = 4, .page_size = 4,
                         .order = kv_order::nhd, .type = dtype::f16};
  cfg.num_pages = 8;
  cfg.max_sequences = 4;
  paged_kv_store<host_space> store(cfg);
  TestType index(store.allocator(), cfg.layout.page_size);
  store.set_reclaimer([&](std::int32_t missing) { index.evict(missing); });
  const auto prompt = iota_tokens(22, 0);  // 5 full pages + 2 tokens
  std::vector<page_id> pages;

  // request 1: prefill, cache its full pages, finish
  const seq_id s1 = store.create();
  REQUIRE(store.try_append(s1, 22));
  store.for_each_page(s1, 0, [&](page_id p) { pages.push_back(p); });
  CHECK(index.insert(prompt, std::span<const page_id>(pages).first(5)) == 5);
  store.release(s1);
  CHECK(store.allocator().free_count() == 3);  // 5 cached pages stay

  // request 2: same prompt; reuse the cached pages, leaving at least one token to compute
  std::vector<page_id> out((prompt.size() - 1) / 4);
  const match_result hit = index.match(prompt, out);
  CHECK(hit.pages == 5);
  const seq_id s2 = store.create();
  store.adopt_prefix(s2, std::span<const page_id>(out).first(static_cast<std::size_t>(hit.pages)));
  REQUIRE(store.try_append(s2, 22 - hit.tokens));
  CHECK(store.length(s2) == 22);
  CHECK(store.stats().pages_free == 2);

  // request 3: unrelated and long: the store reclaims... nothing (all cached pages in use)
  const seq_id s3 = store.create();
  CHECK_FALSE(store.try_append(s3, 16).has_value());
  store.release(s2);
  // now the cached pages are unreferenced: the reclaimer evicts them on demand
  REQUIRE(store.try_append(s3, 30));
  CHECK(index.stats().cached_pages == 0);
  store.release(s3);
  CHECK(store.allocator().free_count() == 8);
}
