// kvcache-bench-select: GPU selection + compaction of one 32768-token sequence, Llama-3-8B shape
// (32 layers x 8 kv heads, head_dim 128, f16, 16-token pages, NHD), `per_head` geometry (256
// tables), keeping 10% of each table (3277 rows; H2O-like: half the budget is the protected recent
// window, the rest the top scores of random f32 "attention mass").
//
// Cases (each timed with CUDA events after a warm-up, UseManualTime):
// - bm_select_top_k: select_top_k_cuda over the 256 tables; bytes = scores read (4 B/row) + kept
//   indices written (8 B/kept row).
// - bm_compact/scratch: compact_kv_cuda (gather every source row to scratch, then scatter);
//   bm_compact/segments: compact_kv_segments_cuda (one block per table, in order, no scratch).
//   The moves are those of try_compact for the selected rows (re-applied every iteration: the
//   same traffic); bytes = the minimum, each moved K and V row read once and written once.
// - bm_select_compact_gpu: top-k then segments compaction on one stream (the GPU time of the
//   acceptance figure); bm_select_compact_pipeline: the whole step timed on the host clock: top-k,
//   kept indices back (pinned), try_compact of the 256 tables on the host, moves up (pinned),
//   compaction, synchronize (the store is rebuilt outside the timed region).
// Every case reports bytes_per_second and fraction_of_memcpy: its rate over that of a
// cudaMemcpyAsync D2D moving the same bytes (read + written) in the same process (median of 9
// event-timed copies after 3 warm-ups). Without a device the cases are skipped.
#include <benchmark/benchmark.h>

#include <cstdint>

#ifdef KVCACHE_HAS_CUDA
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "gpu_reference.hpp"
#include "kvcache/core/cuda_error.hpp"
#include "kvcache/memory/buffer.hpp"
#include "kvcache/memory/copy.hpp"
#include "kvcache/memory/stream.hpp"
#include "kvcache/paging/paged_kv_store.hpp"
#include "kvcache/select/compact_segments.hpp"
#include "kvcache/select/top_k.hpp"

using namespace kvcache;

namespace {

constexpr std::int32_t kLayers = 32, kHeads = 8, kDim = 128, kPage = 16;
constexpr std::int64_t kTokens = 32768;
constexpr double kRatio = 0.10;

using kvbench::memcpy_rate;
using kvbench::skip_without_gpu;

template <class T>
struct pinned {
  T* p = nullptr;
  std::size_t n = 0;
  explicit pinned(std::size_t count) : n(count) {
    KVCACHE_CUDA_TRY(cudaMallocHost(reinterpret_cast<void**>(&p), std::max<std::size_t>(count, 1) * sizeof(T)));
  }
  ~pinned() { cudaFreeHost(p); }
  pinned(const pinned&) = delete;
  pinned& operator=(const pinned&) = delete;
};

/// The sequence, its scores and the selection, built once.
struct fixture {
  using store_t = paged_kv_store<cuda_space, per_head>;
  std::unique_ptr<store_t> store;
  seq_id id;
  std::int32_t tables = 0;
  std::int64_t budget = 0, kept_total = 0;
  std::vector<top_k_segment> seg;
  buffer<float, cuda_space> scores;
  buffer<top_k_segment, cuda_space> dseg;
  buffer<std::int64_t, cuda_space> keep;
  pinned<std::int64_t> keep_host;
  std::vector<slot_move> moves;
  std::vector<std::int64_t> seg_off;
  buffer<slot_move, cuda_space> dmoves;
  buffer<std::int64_t, cuda_space> doff;
  buffer<std::byte, cuda_space> scratch;
  pinned<slot_move> moves_host;
  pinned<std::int64_t> off_host;
  stream s;

  fixture()
      : scores(static_cast<std::size_t>(kLayers * kHeads * kTokens)),
        dseg(static_cast<std::size_t>(kLayers * kHeads)),
        keep(static_cast<std::size_t>(kLayers * kHeads * kTokens)),
        keep_host(static_cast<std::size_t>(kLayers * kHeads * kTokens)),
        moves_host(static_cast<std::size_t>(kLayers * kHeads * kTokens)),
        off_host(static_cast<std::size_t>(kLayers * kHeads + 1)) {
    rebuild_store();
    tables = store->tables_per_sequence();
    budget = static_cast<std::int64_t>(std::ceil(kRatio * static_cast<double>(kTokens)));
    std::vector<float> sc(scores.size());
    std::uint64_t x = 0x9E3779B97F4A7C15ull;
    for (auto& v : sc) {  // xorshift: varied "mass" in [0, 1) with 2^-20 steps (some ties)
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      v = static_cast<float>(x >> 44) * 0x1p-20f;
    }
    copy(scores.view(), buffer_view<const float, host_space>(sc.data(), sc.size()), s.view());
    for (std::int32_t t = 0; t < tables; ++t) {
      top_k_segment g;
      g.scores = t * kTokens;
      g.rows = kTokens;
      g.budget = budget;
      g.keep = t * kTokens;
      g.protect_recent = budget / 2;
      seg.push_back(g);
      kept_total += kept_rows(g);
    }
    copy(dseg.view(), buffer_view<const top_k_segment, host_space>(seg.data(), seg.size()), s.view());
    select_top_k_cuda(scores.data(), dseg.data(), tables, keep.data(), s.view());
    compact_on_host();
    dmoves = buffer<slot_move, cuda_space>(moves.size());
    doff = buffer<std::int64_t, cuda_space>(seg_off.size());
    copy(dmoves.view(), buffer_view<const slot_move, host_space>(moves.data(), moves.size()), s.view());
    copy(doff.view(), buffer_view<const std::int64_t, host_space>(seg_off.data(), seg_off.size()), s.view());
    scratch = buffer<std::byte, cuda_space>(static_cast<std::size_t>(
        compact_kv_scratch_bytes(store->pool().copy_view(), static_cast<std::int64_t>(moves.size()))));
    s.synchronize();
  }
  void rebuild_store() {
    store_config cfg;
    cfg.layout = kv_layout{.layers = kLayers, .kv_heads = kHeads, .q_heads = 4 * kHeads,
                           .head_dim = kDim, .page_size = kPage, .order = kv_order::nhd,
                           .type = dtype::f16};
    cfg.num_pages = static_cast<std::int32_t>(kLayers * kHeads * (kTokens / kPage) + 64);
    cfg.max_sequences = 2;
    if (!store) {
      store = std::make_unique<store_t>(cfg);
    } else {
      store->release(id);
    }
    id = store->create();
    if (!store->try_append(id, kTokens)) throw std::runtime_error("pool too small");
  }
  /// Kept indices back to the host, try_compact of every table (moves + segment offsets).
  void compact_on_host() {
    copy(buffer_view<std::int64_t, host_space>(keep_host.p, keep.size()), keep.view(), s.view());
    s.synchronize();
    moves.clear();
    seg_off.assign(1, 0);
    for (std::int32_t t = 0; t < tables; ++t) {
      const top_k_segment& g = seg[static_cast<std::size_t>(t)];
      if (!store->try_compact(id, t, std::span<const std::int64_t>(keep_host.p + g.keep, static_cast<std::size_t>(kept_rows(g))), moves))
        throw std::runtime_error("try_compact failed");
      seg_off.push_back(static_cast<std::int64_t>(moves.size()));
    }
  }
  [[nodiscard]] std::int64_t topk_bytes() const {
    return static_cast<std::int64_t>(tables) * kTokens * 4 + kept_total * 8;
  }
  [[nodiscard]] std::int64_t move_bytes() const {
    return static_cast<std::int64_t>(moves.size()) * 2 * store->pool().copy_view().row_bytes() * 2;
  }
};

fixture& fix() {
  static fixture* f = new fixture;  // never destroyed: no CUDA calls at static destruction
  return *f;
}

template <class F>
void time_events(benchmark::State& state, std::int64_t bytes, F&& launch) {
  fixture& f = fix();
  const double ref = memcpy_rate(bytes);
  launch();
  f.s.synchronize();
  event start, stop;
  double total = 0;
  for (auto _ : state) {
    start.record(f.s);
    launch();
    stop.record(f.s);
    stop.synchronize();
    const double secs = event::elapsed_ms(start, stop) / 1e3;
    total += secs;
    state.SetIterationTime(secs);
  }
  state.SetBytesProcessed(state.iterations() * bytes);
  state.counters["fraction_of_memcpy"] =
      static_cast<double>(bytes) * static_cast<double>(state.iterations()) / total / ref;
  state.counters["memcpy_GBps"] = ref / 1e9;
  state.counters["bytes_moved"] = static_cast<double>(bytes);
  state.counters["tables"] = f.tables;
  state.counters["moves"] = static_cast<double>(f.moves.size());
}

void bm_select_top_k(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  fixture& f = fix();
  time_events(state, f.topk_bytes(), [&] {
    select_top_k_cuda(f.scores.data(), f.dseg.data(), f.tables, f.keep.data(), f.s.view());
  });
  state.counters["kept"] = static_cast<double>(f.kept_total);
}

template <bool Segments>
void bm_compact(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  fixture& f = fix();
  const paged_kv_view v = f.store->pool().copy_view();
  const auto n = static_cast<std::int64_t>(f.moves.size());
  time_events(state, f.move_bytes(), [&] {
    if constexpr (Segments) {
      compact_kv_segments_cuda(v, f.dmoves.data(), n, f.doff.data(), f.tables, f.s.view());
    } else {
      compact_kv_cuda(v, f.dmoves.data(), n, f.scratch.data(), f.s.view());
    }
  });
}

void bm_select_compact_gpu(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  fixture& f = fix();
  const paged_kv_view v = f.store->pool().copy_view();
  const auto n = static_cast<std::int64_t>(f.moves.size());
  time_events(state, f.topk_bytes() + f.move_bytes(), [&] {
    select_top_k_cuda(f.scores.data(), f.dseg.data(), f.tables, f.keep.data(), f.s.view());
    compact_kv_segments_cuda(v, f.dmoves.data(), n, f.doff.data(), f.tables, f.s.view());
  });
}

void bm_select_compact_pipeline(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  fixture& f = fix();
  const std::int64_t bytes = f.topk_bytes() + f.move_bytes();
  const double ref = memcpy_rate(bytes);
  double total = 0, host_compact = 0;
  for (auto _ : state) {
    f.rebuild_store();  // not timed
    f.s.synchronize();
    const paged_kv_view v = f.store->pool().copy_view();
    const auto t0 = std::chrono::steady_clock::now();
    select_top_k_cuda(f.scores.data(), f.dseg.data(), f.tables, f.keep.data(), f.s.view());
    const auto t1 = std::chrono::steady_clock::now();
    f.compact_on_host();  // D2H of the kept rows (waits for top-k), try_compact x 256
    const auto t2 = std::chrono::steady_clock::now();
    const auto n = static_cast<std::int64_t>(f.moves.size());
    std::copy(f.moves.begin(), f.moves.end(), f.moves_host.p);
    std::copy(f.seg_off.begin(), f.seg_off.end(), f.off_host.p);
    copy(f.dmoves.view(), buffer_view<const slot_move, host_space>(f.moves_host.p, f.moves.size()), f.s.view());
    copy(f.doff.view(), buffer_view<const std::int64_t, host_space>(f.off_host.p, f.seg_off.size()), f.s.view());
    compact_kv_segments_cuda(v, f.dmoves.data(), n, f.doff.data(), f.tables, f.s.view());
    f.s.synchronize();
    const auto t3 = std::chrono::steady_clock::now();
    (void)t1;
    const double secs = std::chrono::duration<double>(t3 - t0).count();
    host_compact += std::chrono::duration<double>(t2 - t1).count();
    total += secs;
    state.SetIterationTime(secs);
  }
  state.SetBytesProcessed(state.iterations() * bytes);
  state.counters["fraction_of_memcpy"] =
      static_cast<double>(bytes) * static_cast<double>(state.iterations()) / total / ref;
  state.counters["keep_d2h_try_compact_ms"] = host_compact / static_cast<double>(state.iterations()) * 1e3;
  state.counters["memcpy_GBps"] = ref / 1e9;
  state.counters["bytes_moved"] = static_cast<double>(bytes);
}

}  // namespace

BENCHMARK(bm_select_top_k)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(bm_compact, false)->Name("bm_compact/scratch")->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(bm_compact, true)->Name("bm_compact/segments")->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(bm_select_compact_gpu)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(bm_select_compact_pipeline)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(5);

#endif  // KVCACHE_HAS_CUDA
