// kvcache-bench-paging: host bookkeeping of the paging layer.
#include <benchmark/benchmark.h>

#include <vector>

#include "kvcache/paging/batch_builder.hpp"
#include "kvcache/paging/lifo_allocator.hpp"
#include "kvcache/paging/paged_kv_store.hpp"

using namespace kvcache;

namespace {
// Allocate + free of one page.
template <class Allocator>
void bm_allocate_free_page(benchmark::State& state) {
  Allocator a(1 << 20);
  for (int i = 0; i < 1000; ++i) (void)a.try_allocate();  // not a pristine stack
  for (auto _ : state) {
    auto p = a.try_allocate();
    benchmark::DoNotOptimize(p);
    a.drop_ref(*p);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK_TEMPLATE(bm_allocate_free_page, lifo_allocator);

store_config bench_config(std::int32_t seqs, std::int32_t pages) {
  store_config c;
  // Bookkeeping does not depend on the data geometry: a minimal pool keeps memory small.
  c.layout = kv_layout{.layers = 1, .kv_heads = 1, .q_heads = 1, .head_dim = 1, .page_size = 16};
  c.num_pages = pages;
  c.max_sequences = seqs;
  return c;
}

// One decode step of `batch` sequences of ~1k tokens: try_append(seq, 1) with its slot.
template <class Geometry>
void bm_decode_step_reserve(benchmark::State& state) {
  const auto batch = static_cast<std::int32_t>(state.range(0));
  store_config cfg = bench_config(batch, batch * 80);
  paged_kv_store<host_space, Geometry> store(cfg);
  std::vector<seq_id> seqs;
  for (std::int32_t i = 0; i < batch; ++i) {
    seqs.push_back(store.create());
    (void)store.try_append(seqs.back(), 1000 + i % 16);
  }
  std::vector<std::int64_t> slot(store.tables_per_sequence());
  std::int64_t steps = 0;
  for (auto _ : state) {
    for (const seq_id id : seqs) {
      auto r = store.try_append(id, 1, slot);
      benchmark::DoNotOptimize(r);
      benchmark::DoNotOptimize(slot.data());
    }
    if (++steps % 256 == 0) {  // keep lengths bounded
      state.PauseTiming();
      for (const seq_id id : seqs) store.truncate(id, 1000);
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["us_per_step"] = benchmark::Counter(
      static_cast<double>(state.iterations()), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK_TEMPLATE(bm_decode_step_reserve, span_layers)->Arg(256)->Unit(benchmark::kMicrosecond);

// The whole step through batch_builder: reserve, slot mapping and CSR page tables of 256
// sequences of ~1k tokens (64 pages each), on the host.
void bm_decode_step_batch(benchmark::State& state) {
  const auto batch = static_cast<std::int32_t>(state.range(0));
  using store_t = paged_kv_store<host_space, span_layers>;
  store_t store(bench_config(batch, batch * 80));
  batch_builder<store_t> builder(store, batch);
  std::vector<seq_id> seqs;
  for (std::int32_t i = 0; i < batch; ++i) {
    seqs.push_back(store.create());
    (void)store.try_append(seqs.back(), 1000 + i % 16);
  }
  std::int64_t steps = 0;
  for (auto _ : state) {
    builder.clear();
    for (const seq_id id : seqs) benchmark::DoNotOptimize(builder.try_add(id, 1));
    const auto& v = builder.finalize();
    benchmark::DoNotOptimize(v.tables.indices);
    if (++steps % 256 == 0) {
      state.PauseTiming();
      for (const seq_id id : seqs) store.truncate(id, 1000);
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations() * batch);
}
BENCHMARK(bm_decode_step_batch)->Arg(256)->Unit(benchmark::kMicrosecond);

// Fork + release of a 4k-token sequence (256 pages): O(pages).
void bm_fork_release(benchmark::State& state) {
  paged_kv_store<host_space, span_layers> store(bench_config(4, 1024));
  const seq_id a = store.create();
  (void)store.try_append(a, 4096);
  for (auto _ : state) {
    const seq_id b = store.fork(a);
    store.release(b);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(bm_fork_release);
}  // namespace
