// kvcache-bench-paging-gpu: the paging kernels' bandwidth against cudaMemcpy device-to-device,
// measured in the same process.
//
// Bytes are counted read + written. Each case reports bytes_per_second and fraction_of_memcpy:
// its rate over the rate of a cudaMemcpyAsync D2D moving the same bytes (median of 9 event-timed
// copies after 3 warm-ups, measured once per size and cached). Every case times its launches with
// CUDA events (UseManualTime) after a warm-up, and touches far more memory than the 50 MB L2
// (inputs rotate where one launch is small), so the cache is not what is measured.
#include <benchmark/benchmark.h>

#include <cstdint>

#ifdef KVCACHE_HAS_CUDA
#include <cuda_runtime_api.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <vector>

#include "gpu_reference.hpp"
#include "kvcache/core/cuda_error.hpp"
#include "kvcache/memory/buffer.hpp"
#include "kvcache/memory/copy.hpp"
#include "kvcache/memory/stream.hpp"
#include "kvcache/paging/kernels.hpp"

using namespace kvcache;

namespace {

constexpr std::int64_t MiB = std::int64_t{1} << 20;

using kvbench::memcpy_rate;
using kvbench::skip_without_gpu;

/// Times `launch(i)` with events: each benchmark iteration enqueues `per_iter` launches
/// (i = 0, 1, ...) between two events and reports the time of one. A warm-up round first.
/// Sets bytes_per_second (from `moved` per launch) and fraction_of_memcpy (against
/// memcpy_rate(ref_moved)).
template <class F>
void time_launches(benchmark::State& state, stream& s, int per_iter, std::int64_t moved,
                   std::int64_t ref_moved, F&& launch) {
  const double ref = memcpy_rate(ref_moved);
  for (int i = 0; i < per_iter; ++i) launch(i);
  s.synchronize();
  event start, stop;
  double total_s = 0;
  std::int64_t launches = 0;
  int next = 0;
  for (auto _ : state) {
    start.record(s);
    for (int i = 0; i < per_iter; ++i) launch(next++ % per_iter);
    stop.record(s);
    stop.synchronize();
    const double secs = event::elapsed_ms(start, stop) / 1e3;
    total_s += secs;
    launches += per_iter;
    state.SetIterationTime(secs / per_iter);
  }
  state.SetBytesProcessed(state.iterations() * moved);
  const double rate = static_cast<double>(moved) * static_cast<double>(launches) / total_s;
  state.counters["fraction_of_memcpy"] = rate / ref;
  state.counters["memcpy_GBps"] = ref / 1e9;
}

/// A pool view over `data` (FlashInfer layout; see paged_kv_view).
paged_kv_view make_view(std::byte* data, std::int32_t layer_arrays, std::int32_t layers,
                        std::int32_t num_pages, std::int32_t page_size, std::int32_t heads_per_page,
                        std::int32_t head_dim, kv_order order) {
  paged_kv_view v;
  v.data = data;
  v.page_bytes = std::int64_t{page_size} * heads_per_page * head_dim * 2;
  v.v_offset_bytes = v.page_bytes * num_pages;
  v.layer_stride_bytes = layer_arrays > 1 ? 2 * v.v_offset_bytes : 0;
  v.num_pages = num_pages;
  v.layers = layers;
  v.page_size = page_size;
  v.heads_per_page = heads_per_page;
  v.head_dim = head_dim;
  v.elem_bytes = 2;
  v.order = order;
  v.type = dtype::f16;
  return v;
}

template <class T>
buffer<T, cuda_space> upload(const std::vector<T>& v) {
  buffer<T, cuda_space> d(v.size());
  copy(d.view(), buffer_view<const T, host_space>(v.data(), v.size()));
  synchronize({});
  return d;
}

std::vector<std::int32_t> permutation(std::int32_t n, std::mt19937_64& rng) {
  std::vector<std::int32_t> p(static_cast<std::size_t>(n));
  std::iota(p.begin(), p.end(), 0);
  std::shuffle(p.begin(), p.end(), rng);
  return p;
}

// Llama-3-8B: 32 layers, 8 kv heads, head_dim 128, f16, 16-token pages.
constexpr std::int32_t kLayers = 32, kHeads = 8, kDim = 128, kPage = 16;

// ---- copy_pages -------------------------------------------------------------------------------
/// copy_pages of random (src, dst) pairs in a pool 4x the bytes copied. span_layers: 2 MiB page
/// ids (32 layers x K and V x 32 KiB); per_head: 8 KiB page ids (one head, K and V of 4 KiB).
template <bool PerHead>
void bm_copy_pages(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  const std::int64_t moved = state.range(0);
  const std::int32_t arrays = PerHead ? 1 : kLayers;
  const std::int32_t hpp = PerHead ? 1 : kHeads;
  const std::int64_t page_id_bytes = std::int64_t{2} * arrays * kPage * hpp * kDim * 2;
  const auto pairs = static_cast<std::int32_t>(moved / 2 / page_id_bytes);
  const std::int32_t num_pages = 4 * pairs;
  buffer<std::byte, cuda_space> pool(static_cast<std::size_t>(page_id_bytes * num_pages));
  KVCACHE_CUDA_TRY(cudaMemset(pool.data(), 0x3C, pool.size()));
  const paged_kv_view view =
      make_view(pool.data(), arrays, kLayers, num_pages, kPage, hpp, kDim, kv_order::nhd);
  std::mt19937_64 rng(42);
  const auto perm = permutation(num_pages, rng);
  std::vector<page_copy> copies;
  for (std::int32_t i = 0; i < pairs; ++i)
    copies.push_back(
        {perm[static_cast<std::size_t>(2 * i)], perm[static_cast<std::size_t>(2 * i + 1)]});
  const auto d_copies = upload(copies);
  stream s;
  time_launches(state, s, 1, moved, moved,
                [&](int) { copy_pages_cuda(view, d_copies.data(), pairs, s); });
  state.counters["pairs"] = pairs;
}

// ---- gather_kv --------------------------------------------------------------------------------
/// gather_kv of one layer for 256 sequences of full 16-token pages (32 KiB of K per page),
/// scattered over a pool 4x what is read; NHD or HND.
template <kv_order Order>
void bm_gather_kv(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  const std::int64_t moved = state.range(0);
  const std::int64_t page_kv_bytes = std::int64_t{2} * kPage * kHeads * kDim * 2;  // K + V
  const auto pages = static_cast<std::int32_t>(moved / 2 / page_kv_bytes);
  constexpr std::int32_t seqs = 256;
  const std::int32_t per_seq = pages / seqs;
  const std::int32_t num_pages = 4 * pages;
  buffer<std::byte, cuda_space> pool(static_cast<std::size_t>(page_kv_bytes * num_pages));
  KVCACHE_CUDA_TRY(cudaMemset(pool.data(), 0x3C, pool.size()));
  const paged_kv_view view =
      make_view(pool.data(), 1, kLayers, num_pages, kPage, kHeads, kDim, Order);
  std::mt19937_64 rng(43);
  const auto perm = permutation(num_pages, rng);
  std::vector<std::int32_t> indptr{0}, indices, last;
  std::vector<std::int64_t> offsets;
  for (std::int32_t t = 0; t < seqs; ++t) {
    offsets.push_back(std::int64_t{t} * per_seq * kPage);
    for (std::int32_t p = 0; p < per_seq; ++p)
      indices.push_back(perm[static_cast<std::size_t>(t * per_seq + p)]);
    indptr.push_back(static_cast<std::int32_t>(indices.size()));
    last.push_back(kPage);
  }
  const auto d_indptr = upload(indptr), d_indices = upload(indices), d_last = upload(last);
  const auto d_offsets = upload(offsets);
  const std::int64_t out_bytes = std::int64_t{seqs} * per_seq * page_kv_bytes / 2;
  buffer<std::byte, cuda_space> out_k(static_cast<std::size_t>(out_bytes)),
      out_v(static_cast<std::size_t>(out_bytes));
  const page_table_view tables{d_indptr.data(), d_indices.data(), d_last.data(), seqs, kPage};
  const std::int64_t actual = 2 * 2 * out_bytes;
  stream s;
  time_launches(state, s, 1, actual, actual, [&](int) {
    gather_kv_cuda(view, 0, tables, d_offsets.data(), out_k.data(), out_v.data(), s);
  });
  state.counters["tokens"] = static_cast<double>(seqs) * per_seq * kPage;
}

// ---- append_kv --------------------------------------------------------------------------------
/// One decode step of 256 sequences, all 32 layers in one launch: 256 tokens x 32 layers x
/// 8 heads x 256 bytes of K and of V (32 MiB read, 32 MiB written) into a span_layers pool of
/// 4096 page ids (8 GiB), each sequence's slot on a random page. 8 steps rotate (inputs and slot
/// mappings: 256 MiB read, 256 MiB of pool lines written), so neither side stays in L2.
void bm_append_kv_decode(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  constexpr std::int32_t seqs = 256, num_pages = 4096, rotate = 8;
  const std::int64_t page_id_bytes = std::int64_t{2} * kLayers * kPage * kHeads * kDim * 2;
  buffer<std::byte, cuda_space> pool(static_cast<std::size_t>(page_id_bytes * num_pages));
  KVCACHE_CUDA_TRY(cudaMemset(pool.data(), 0, pool.size()));
  const paged_kv_view view =
      make_view(pool.data(), kLayers, kLayers, num_pages, kPage, kHeads, kDim, kv_order::nhd);
  const std::int64_t in_bytes = std::int64_t{kLayers} * seqs * kHeads * kDim * 2;
  buffer<std::byte, cuda_space> k(static_cast<std::size_t>(in_bytes * rotate)),
      v(static_cast<std::size_t>(in_bytes * rotate));
  KVCACHE_CUDA_TRY(cudaMemset(k.data(), 0x11, k.size()));
  KVCACHE_CUDA_TRY(cudaMemset(v.data(), 0x22, v.size()));
  std::mt19937_64 rng(44);
  std::vector<std::int64_t> slots;
  for (std::int32_t r = 0; r < rotate; ++r) {
    const auto perm = permutation(num_pages, rng);
    for (std::int32_t b = 0; b < seqs; ++b)
      slots.push_back(std::int64_t{perm[static_cast<std::size_t>(b)]} * kPage +
                      static_cast<std::int64_t>(rng() % kPage));
  }
  const auto d_slots = upload(slots);
  stream s;
  const std::int64_t moved = 2 * 2 * in_bytes;  // K and V, read and written
  time_launches(state, s, rotate, moved, 512 * MiB, [&](int r) {
    kv_input_view in;
    in.k = k.data() + r * in_bytes;
    in.v = v.data() + r * in_bytes;
    in.first_layer = 0;
    in.n_layers = kLayers;
    in.num_tokens = seqs;
    in.kv_heads = kHeads;
    slot_mapping_view map;
    map.slots = d_slots.data() + std::int64_t{r} * seqs;
    map.num_tokens = seqs;
    append_kv_cuda(view, in, map, s);
  });
}

// ---- reference --------------------------------------------------------------------------------
/// cudaMemcpyAsync D2D moving state.range(0) bytes (copying half), the reference of the others.
void bm_memcpy_d2d(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  const std::int64_t moved = state.range(0);
  const auto bytes = static_cast<std::size_t>(moved / 2);
  buffer<std::byte, cuda_space> a(bytes), b(bytes);
  KVCACHE_CUDA_TRY(cudaMemset(a.data(), 1, bytes));
  stream s;
  const auto st = static_cast<cudaStream_t>(s.view().handle());
  time_launches(state, s, 1, moved, moved, [&](int) {
    KVCACHE_CUDA_TRY(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, st));
  });
}

void moved_sizes(benchmark::internal::Benchmark* b) {
  for (std::int64_t mib : {512, 1024}) b->Arg(mib * MiB);
}

}  // namespace

BENCHMARK(bm_memcpy_d2d)->Apply(moved_sizes)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(bm_copy_pages, false)
    ->Name("bm_copy_pages/span_layers")
    ->Apply(moved_sizes)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(bm_copy_pages, true)
    ->Name("bm_copy_pages/per_head")
    ->Apply(moved_sizes)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(bm_gather_kv, kv_order::nhd)
    ->Name("bm_gather_kv/nhd")
    ->Apply(moved_sizes)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(bm_gather_kv, kv_order::hnd)
    ->Name("bm_gather_kv/hnd")
    ->Apply(moved_sizes)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(bm_append_kv_decode)->UseManualTime()->Unit(benchmark::kMicrosecond);

#endif  // KVCACHE_HAS_CUDA
