// chunk_index: cached chunks found anywhere in a prompt, with the position they were computed at;
// a randomized run against a brute-force scan.
#include <algorithm>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "kvcache/paging/lifo_allocator.hpp"
#include "kvcache/prefix/chunk_index.hpp"
#include "support/catch.hpp"

using namespace kvcache;

namespace {

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

template <class... Parts>
std::vector<std::int32_t> concat(const Parts&... parts) {
  std::vector<std::int32_t> out;
  (out.insert(out.end(), parts.begin(), parts.end()), ...);
  return out;
}

}  // namespace

TEST_CASE("chunk index: finds a chunk at any offset with its original position",
          "[prefix][chunk]") {
  lifo_allocator alloc(32);
  chunk_index<lifo_allocator> index(alloc, 4);
  const auto doc = iota_tokens(12, 1000);  // a 3-page RAG chunk
  const auto pages = allocate(alloc, 3);
  CHECK(index.insert(doc, pages, /*position=*/100) == 3);
  CHECK(index.chunk_count() == 1);
  drop_all(alloc, pages);

  // the chunk 5 tokens into a new prompt, between other text
  const auto prompt = concat(iota_tokens(5, 0), doc, iota_tokens(7, 50));
  std::vector<chunk_hit> hits(4);
  std::vector<page_id> out(8);
  const chunk_find_result r = index.find(prompt, {}, hits, out);
  REQUIRE(r.hits == 1);
  CHECK(r.pages == 3);
  CHECK(hits[0].offset == 5);
  CHECK(hits[0].tokens == 12);
  CHECK(hits[0].cached_position == 100);  // RoPE delta for the engine: 5 - 100
  CHECK(hits[0].first_page == 0);
  CHECK(hits[0].pages == 3);
  CHECK(std::equal(pages.begin(), pages.end(), out.begin()));
  for (page_id p : pages) CHECK(alloc.ref_count(p) == 2);
  index.release_match(std::span<const page_id>(out).first(3));

  // only the first two pages of the chunk appear: a shorter hit
  const auto partial = concat(iota_tokens(2, 7), std::span(doc).first(9));
  CHECK(index.find(partial, {}, hits, out).pages == 2);
  CHECK(hits[0].offset == 2);
  index.release_match(std::span<const page_id>(out).first(2));
  // min_pages filters short hits
  CHECK(index.find(partial, {}, hits, out, 3).hits == 0);
  // another salt does not see it
  CHECK(index.find(prompt, {.salt = 9}, hits, out).hits == 0);
  const prefix_stats st = index.stats();
  CHECK(st.lookups == 4);
  CHECK(st.hits == 2);
  CHECK(st.hit_tokens == 20);
  index.check_invariants();
}

TEST_CASE("chunk index: several chunks, dedup, eviction from a chunk's end", "[prefix][chunk]") {
  lifo_allocator alloc(32);
  chunk_index<lifo_allocator> index(alloc, 4);
  const auto a = iota_tokens(8, 100), b = iota_tokens(12, 200);
  const auto pa = allocate(alloc, 2), pb = allocate(alloc, 3), dup = allocate(alloc, 2);
  CHECK(index.insert(a, pa, 0) == 2);
  CHECK(index.insert(b, pb, 40) == 3);
  CHECK(index.insert(a, dup, 64) == 0);  // same content: kept once
  drop_all(alloc, dup);
  drop_all(alloc, pa);
  drop_all(alloc, pb);
  const auto prompt = concat(b, iota_tokens(3, 0), a);
  std::vector<chunk_hit> hits(4);
  std::vector<page_id> out(8);
  auto r = index.find(prompt, {}, hits, out);
  REQUIRE(r.hits == 2);
  CHECK(hits[0].offset == 0);
  CHECK(hits[0].cached_position == 40);
  CHECK(hits[1].offset == 15);
  CHECK(hits[1].cached_position == 0);
  CHECK(hits[1].first_page == 3);
  CHECK(index.evict(4) == 0);  // both chunks are held by the find
  index.release_match(std::span<const page_id>(out).subspan(3, 2));  // give a back
  CHECK(index.evict(1) == 1);  // a's end goes first; a's beginning stays findable
  CHECK_FALSE(index.is_cached(pa[1]));
  CHECK(index.is_cached(pa[0]));
  index.release_match(std::span<const page_id>(out).first(3));
  CHECK(index.evict(2) == 2);  // equally recent: a (first cached), then b's end
  CHECK_FALSE(index.is_cached(pa[0]));
  CHECK_FALSE(index.is_cached(pb[2]));
  CHECK(index.is_cached(pb[1]));
  r = index.find(prompt, {}, hits, out);  // b's first two pages remain findable
  CHECK(r.hits == 1);
  CHECK(r.pages == 2);
  index.release_match(std::span<const page_id>(out).first(2));
  CHECK(index.evict(10) == 2);
  CHECK(index.chunk_count() == 0);
  CHECK(alloc.free_count() == 32);
}

TEST_CASE("chunk index: bad input", "[prefix][chunk][errors]") {
  lifo_allocator alloc(16);
  chunk_index<lifo_allocator> index(alloc, 4);
  const auto pages = allocate(alloc, 2);
  KVTEST_REQUIRE_ERROR(index.insert(iota_tokens(7, 0), pages, 0), errc::shape_mismatch,
                       "need >= 8 tokens, got 7");
  KVTEST_REQUIRE_ERROR(index.insert(iota_tokens(8, 0), pages, -4), errc::invalid_argument,
                       "position -4 is negative");
  CHECK(index.insert(iota_tokens(8, 0), pages, 0) == 2);
  KVTEST_REQUIRE_ERROR(index.insert(iota_tokens(8, 50), pages, 0), errc::invalid_argument,
                       "already cached");
  KVTEST_REQUIRE_ERROR(index.release_match(pages), errc::bad_free, "not handed out by match");
  std::vector<chunk_hit> hits(1);
  std::vector<page_id> out(2);
  KVTEST_REQUIRE_ERROR(index.find(iota_tokens(8, 0), {}, hits, out, 0), errc::invalid_argument,
                       "min_pages 0");
  drop_all(alloc, pages);
}

TEST_CASE("chunk index: randomized scans equal a brute-force scan", "[prefix][chunk]") {
  constexpr std::int32_t ps = 3;
  constexpr std::int32_t pool = 64;
  std::mt19937_64 rng(kvtest::seed());
  auto uni = [&](std::int32_t lo, std::int32_t hi) {
    return std::uniform_int_distribution<std::int32_t>(lo, hi)(rng);
  };
  lifo_allocator alloc(pool);
  chunk_index<lifo_allocator> index(alloc, ps);
  struct cached {
    std::vector<std::int32_t> tokens;
    std::vector<page_id> pages;
    std::int64_t position;
  };
  std::vector<cached> ref;  // what the index holds (kept in sync through is_cached)
  std::vector<chunk_hit> hits(16);
  std::vector<page_id> out(64);
  for (std::int32_t step = 0; step < 1500; ++step) {
    INFO("step " << step);
    if (uni(0, 2) == 0 || ref.empty()) {  // cache a chunk over a 3-token alphabet
      const std::int32_t n = uni(1, 4);
      std::vector<std::int32_t> t(static_cast<std::size_t>(n * ps));
      for (auto& x : t) x = uni(0, 2);
      std::vector<page_id> p(static_cast<std::size_t>(n));
      if (!alloc.try_allocate(std::span<page_id>(p))) {
        index.evict(n);
        std::erase_if(ref, [&](const cached& c) { return !index.is_cached(c.pages[0]); });
        for (auto& c : ref) {  // chunks shrink from their end
          while (!index.is_cached(c.pages.back())) {
            c.pages.pop_back();
            c.tokens.resize(c.pages.size() * ps);
          }
        }
        if (!alloc.try_allocate(std::span<page_id>(p))) continue;
      }
      const bool dup = std::any_of(ref.begin(), ref.end(), [&](const cached& c) {
        return c.tokens.size() >= t.size() && std::equal(t.begin(), t.end(), c.tokens.begin());
      });
      const std::int64_t pos = uni(0, 1000);
      CHECK(index.insert(t, p, pos) == (dup ? 0 : n));
      if (!dup) ref.push_back({t, p, pos});
      drop_all(alloc, p);
      continue;
    }
    // a prompt made of random text and pieces of cached chunks
    std::vector<std::int32_t> prompt;
    for (std::int32_t k = uni(1, 4); k > 0; --k) {
      for (std::int32_t j = uni(0, 4); j > 0; --j) prompt.push_back(uni(0, 2));
      const auto& c = ref[static_cast<std::size_t>(uni(0, static_cast<std::int32_t>(ref.size()) - 1))];
      prompt.insert(prompt.end(), c.tokens.begin(), c.tokens.end());
    }
    // brute force: left to right, the longest cached chunk prefix (whole pages) at each offset
    struct expected_hit {
      std::int64_t offset, pages, position;
    };
    std::vector<expected_hit> expect;
    for (std::size_t o = 0; o + ps <= prompt.size();) {
      std::int64_t best = 0, pos = 0;
      for (const auto& c : ref) {
        std::int64_t k = 0;
        while (static_cast<std::size_t>(k) < c.pages.size() && o + static_cast<std::size_t>((k + 1) * ps) <= prompt.size() &&
               std::equal(c.tokens.begin() + k * ps, c.tokens.begin() + (k + 1) * ps,
                          prompt.begin() + static_cast<std::ptrdiff_t>(o) + k * ps)) {
          ++k;
        }
        if (k > best) {
          best = k;
          pos = c.position;
        }
      }
      if (best > 0) {
        expect.push_back({static_cast<std::int64_t>(o), best, pos});
        o += static_cast<std::size_t>(best * ps);
      } else {
        ++o;
      }
    }
    const chunk_find_result r = index.find(prompt, {}, hits, out);
    const auto shown = std::min<std::size_t>(expect.size(), hits.size());
    REQUIRE(static_cast<std::size_t>(r.hits) >= std::min<std::size_t>(shown, 1));
    for (std::int32_t i = 0; i < r.hits; ++i) {
      const chunk_hit& h = hits[static_cast<std::size_t>(i)];
      REQUIRE(static_cast<std::size_t>(i) < expect.size());
      CHECK(h.offset == expect[static_cast<std::size_t>(i)].offset);
      CHECK(h.pages == expect[static_cast<std::size_t>(i)].pages);
      // equal-length candidates may differ in position; the tokens are what must agree
      for (std::int32_t k = 0; k < h.pages; ++k) {
        const page_id p = out[static_cast<std::size_t>(h.first_page + k)];
        const auto& c = *std::find_if(ref.begin(), ref.end(), [&](const cached& x) {
          return std::find(x.pages.begin(), x.pages.end(), p) != x.pages.end();
        });
        const auto at = std::find(c.pages.begin(), c.pages.end(), p) - c.pages.begin();
        CHECK(std::equal(c.tokens.begin() + at * ps, c.tokens.begin() + (at + 1) * ps,
                         prompt.begin() + h.offset + k * ps));
      }
    }
    if (static_cast<std::size_t>(r.hits) < hits.size() && r.pages < static_cast<std::int32_t>(out.size())) {
      CHECK(static_cast<std::size_t>(r.hits) == expect.size());
    }
    index.release_match(std::span<const page_id>(out).first(static_cast<std::size_t>(r.pages)));
    index.check_invariants();
  }
  index.clear();
  CHECK(alloc.free_count() == pool);
}
