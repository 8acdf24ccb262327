// kvcache-bench-prefix: prefix-index lookups, inserts and evictions against an index holding
// 1M cached pages (16-token pages), for each index.
//
// The index (built once per index type, on first use) caches 32 "system prompts" of 128 pages,
// each continued by 16 conversations of 2,040 pages: 4,096 + 512 x 2,040 = 1,048,576 pages,
// random token ids below 128,000. Queries are 32k-token prompts (2,048 pages): the first 2,048
// pages of 64 of those conversations, used in turn.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <span>
#include <vector>

#include "kvcache/paging/lifo_allocator.hpp"
#include "kvcache/prefix/hash_chain_index.hpp"
#include "kvcache/prefix/radix_index.hpp"

using namespace kvcache;

namespace {

constexpr std::int32_t page_size = 16;
constexpr std::int32_t systems = 32;
constexpr std::int32_t system_pages = 128;
constexpr std::int32_t branches = 16;
constexpr std::int32_t branch_pages = 2040;
constexpr std::int32_t query_pages = 2048;  // a 32k-token prompt
constexpr std::int32_t spare_pages = 1 << 17;

template <class Index>
struct fixture {
  lifo_allocator alloc{systems * system_pages + systems * branches * branch_pages + spare_pages};
  Index index{alloc, page_size};
  std::vector<std::vector<std::int32_t>> queries;
  std::mt19937_64 rng{20261123};
  std::vector<page_id> pages;

  fixture() {
    if (std::getenv("KVBENCH_SCATTER")) {  // a long-running pool: free pages in random order
      std::vector<page_id> all(static_cast<std::size_t>(alloc.num_pages()));
      (void)alloc.try_allocate(std::span<page_id>(all));
      std::shuffle(all.begin(), all.end(), rng);
      for (page_id p : all) alloc.drop_ref(p);
    }
    std::uniform_int_distribution<std::int32_t> token(0, 127999);
    std::vector<std::int32_t> tokens;
    for (std::int32_t s = 0; s < systems; ++s) {
      std::vector<std::int32_t> system(static_cast<std::size_t>(system_pages * page_size));
      for (auto& t : system) t = token(rng);
      for (std::int32_t b = 0; b < branches; ++b) {
        tokens = system;
        for (std::int32_t i = 0; i < branch_pages * page_size; ++i) tokens.push_back(token(rng));
        pages.resize(static_cast<std::size_t>(system_pages + branch_pages));
        (void)alloc.try_allocate(std::span<page_id>(pages));
        index.insert(tokens, pages);
        for (page_id p : pages) alloc.drop_ref(p);  // the request finished: cached pages stay
        if (b < 2) {
          queries.emplace_back(tokens.begin(), tokens.begin() + query_pages * page_size);
        }
      }
    }
  }
  static fixture& get() {
    static fixture f;
    return f;
  }
  /// Fresh pages with random tokens: a request's new part.
  void fresh(std::vector<std::int32_t>& tokens, std::size_t from, std::int32_t n) {
    std::uniform_int_distribution<std::int32_t> token(0, 127999);
    tokens.resize(from);
    for (std::int32_t i = 0; i < n * page_size; ++i) tokens.push_back(token(rng));
  }
};

/// A full hit: match a cached 32k-token prompt, then insert it again (after its prefill, as an
/// engine does; every page deduplicates). The request's references are dropped untimed.
template <class Index>
void bm_match_insert_hit(benchmark::State& state) {
  auto& f = fixture<Index>::get();
  std::vector<page_id> out(query_pages);
  std::size_t q = 0;
  std::int64_t hit = 0;
  for (auto _ : state) {
    const auto& prompt = f.queries[q++ % f.queries.size()];
    const match_result r = f.index.match(prompt, {}, out);
    benchmark::DoNotOptimize(f.index.insert(prompt, std::span<const page_id>(out).first(
                                                        static_cast<std::size_t>(r.pages))));
    hit += r.pages;
    state.PauseTiming();
    for (std::int32_t i = 0; i < r.pages; ++i) f.alloc.drop_ref(out[static_cast<std::size_t>(i)]);
    state.ResumeTiming();
  }
  state.counters["hit_pages"] = static_cast<double>(hit) / static_cast<double>(state.iterations());
  state.counters["cached_pages"] = static_cast<double>(f.index.stats().cached_pages);
  state.SetItemsProcessed(state.iterations() * query_pages * 2);
}

/// Half a hit: a 32k-token prompt whose first 16k tokens are cached; match, then insert it with
/// 1,024 fresh pages (1,024 deduplicate, 1,024 are cached). Untimed: the fresh tokens, the
/// request's references, and an eviction of 1,024 pages that keeps the index at 1M pages.
template <class Index>
void bm_match_insert_half(benchmark::State& state) {
  auto& f = fixture<Index>::get();
  constexpr std::int32_t half = query_pages / 2;
  std::vector<page_id> out(query_pages);
  std::vector<std::int32_t> prompt;
  std::size_t q = 0;
  std::int64_t hit = 0;
  for (auto _ : state) {
    state.PauseTiming();
    const auto& base = f.queries[q++ % f.queries.size()];
    prompt.assign(base.begin(), base.begin() + half * page_size);
    f.fresh(prompt, prompt.size(), half);
    state.ResumeTiming();
    const match_result r = f.index.match(prompt, {}, out);
    (void)f.alloc.try_allocate(
        std::span<page_id>(out).subspan(static_cast<std::size_t>(r.pages)));
    benchmark::DoNotOptimize(f.index.insert(prompt, out));
    hit += r.pages;
    state.PauseTiming();
    for (page_id p : out) f.alloc.drop_ref(p);
    f.index.evict(query_pages - r.pages);
    state.ResumeTiming();
  }
  state.counters["hit_pages"] = static_cast<double>(hit) / static_cast<double>(state.iterations());
  state.counters["cached_pages"] = static_cast<double>(f.index.stats().cached_pages);
  state.SetItemsProcessed(state.iterations() * query_pages * 2);
}

/// evict(1000) of least recently used pages. Untimed: caching a fresh 1,000-page prompt, which
/// keeps the index at 1M pages.
template <class Index>
void bm_evict_1000(benchmark::State& state) {
  auto& f = fixture<Index>::get();
  constexpr std::int32_t n = 1000;
  std::vector<std::int32_t> prompt;
  std::vector<page_id> pages(n);
  std::int64_t freed = 0;
  for (auto _ : state) {
    freed += f.index.evict(n);
    state.PauseTiming();
    f.fresh(prompt, 0, n);
    (void)f.alloc.try_allocate(std::span<page_id>(pages));
    f.index.insert(prompt, pages);
    for (page_id p : pages) f.alloc.drop_ref(p);
    state.ResumeTiming();
  }
  state.counters["freed"] = static_cast<double>(freed) / static_cast<double>(state.iterations());
  state.counters["cached_pages"] = static_cast<double>(f.index.stats().cached_pages);
  state.SetItemsProcessed(state.iterations() * n);
}

using radix = radix_index<lifo_allocator>;
using chain = hash_chain_index<lifo_allocator>;

void median_of_5(benchmark::internal::Benchmark* b) {
  b->Unit(benchmark::kMicrosecond)->Repetitions(5)->ReportAggregatesOnly(true);
}
void bounded(benchmark::internal::Benchmark* b) {
  // A fixed count keeps the churn of the 1M-page index (and the run) bounded.
  b->Unit(benchmark::kMicrosecond)->Iterations(400)->Repetitions(5)->ReportAggregatesOnly(true);
}

BENCHMARK_TEMPLATE(bm_match_insert_hit, radix)->Apply(median_of_5);
BENCHMARK_TEMPLATE(bm_match_insert_hit, chain)->Apply(median_of_5);
BENCHMARK_TEMPLATE(bm_match_insert_half, radix)->Apply(bounded);
BENCHMARK_TEMPLATE(bm_match_insert_half, chain)->Apply(bounded);
BENCHMARK_TEMPLATE(bm_evict_1000, radix)->Apply(bounded);
BENCHMARK_TEMPLATE(bm_evict_1000, chain)->Apply(bounded);

}  // namespace
