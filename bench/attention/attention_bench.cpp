// kvcache-bench-attention: paged decode attention (paged_decode_cuda) on an H100-sized batch.
//
// Shapes (issue 9): 32 query heads, 8 kv heads, head_dim 128, f16 queries; (batch, context) =
// (64, 4k), (64, 8k), (16, 32k), (1, 128k). Pages: f16 with page_size 16; int8 and fp8 E4M3 with
// page_size 16; KIVI-4 and KIVI-2 with page_size 32 (KIVI needs page_size % 32 == 0), every
// token quantized (contexts are multiples of 128, so KIVI's residual window is empty). Pages are
// shuffled in the pool (scattered, as after a long serving run); K/V are random (never zeros).
//
// Each case reports: time per call (CUDA events, median of the benchmark's iterations after two
// warm-up calls), kv_bytes (K + V bytes the call must read: pages' codes and metadata of the
// sequences' tokens), kv_GBps = kv_bytes / time, and fraction_of_memcpy = kv_GBps over the rate
// of a 1 GiB cudaMemcpyAsync D2D in the same process counting bytes read + written (what
// bench/quant calls the copy rate). One layer per call; the plan is made once per shape.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kvcache/attention/paged_decode.hpp"
#include "kvcache/quant/quantizers.hpp"

#ifdef KVCACHE_HAS_CUDA
#include <cuda_runtime_api.h>

#include "gpu_reference.hpp"

#include "kvcache/core/cuda_error.hpp"
#include "kvcache/core/numeric.hpp"
#include "kvcache/memory/buffer.hpp"
#include "kvcache/memory/stream.hpp"
#include "kvcache/quant/kernels.hpp"
#endif

using namespace kvcache;

namespace {

constexpr std::int32_t kQoHeads = 32;
constexpr std::int32_t kKvHeads = 8;
constexpr std::int32_t kHeadDim = 128;

#ifdef KVCACHE_HAS_CUDA
using kvbench::skip_without_gpu;

/// Copy rate (bytes read + written per second) of a 1 GiB D2D cudaMemcpyAsync, median of 9.
double memcpy_rate() { return kvbench::memcpy_rate(std::int64_t{2} << 30); }

/// `n` bytes of random f16 rows on the device (an 8 MiB random block repeated).
void fill_random_f16(std::byte* dst, std::size_t n, std::uint64_t seed) {
  const std::size_t block = std::min<std::size_t>(n, std::size_t{8} << 20);
  std::vector<std::uint16_t> h(block / 2);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& x : h) x = to_float16(nd(rng)).bits;
  for (std::size_t off = 0; off < n; off += block) {
    KVCACHE_CUDA_TRY(cudaMemcpy(dst + off, h.data(), std::min(block, n - off), cudaMemcpyHostToDevice));
  }
}

struct batch_tables {
  std::vector<std::int32_t> indptr{0}, indices, last;
  buffer<std::int32_t, cuda_space> d_indptr, d_indices, d_last;
  page_table_view host_view, dev_view;
  std::int32_t num_pages = 0;
  batch_tables(std::int32_t batch, std::int64_t len, std::int32_t page_size) {
    const auto per = static_cast<std::int32_t>((len + page_size - 1) / page_size);
    num_pages = per * batch;
    std::vector<std::int32_t> ids(static_cast<std::size_t>(num_pages));
    std::iota(ids.begin(), ids.end(), 0);
    std::mt19937_64 rng(42);
    std::shuffle(ids.begin(), ids.end(), rng);
    for (std::int32_t b = 0; b < batch; ++b) {
      indices.insert(indices.end(), ids.begin() + static_cast<std::ptrdiff_t>(b) * per,
                     ids.begin() + static_cast<std::ptrdiff_t>(b + 1) * per);
      indptr.push_back(indptr.back() + per);
      last.push_back(static_cast<std::int32_t>((len - 1) % page_size + 1));
    }
    d_indptr = buffer<std::int32_t, cuda_space>(indptr.size());
    d_indices = buffer<std::int32_t, cuda_space>(indices.size());
    d_last = buffer<std::int32_t, cuda_space>(last.size());
    KVCACHE_CUDA_TRY(cudaMemcpy(d_indptr.data(), indptr.data(), 4 * indptr.size(), cudaMemcpyHostToDevice));
    KVCACHE_CUDA_TRY(cudaMemcpy(d_indices.data(), indices.data(), 4 * indices.size(), cudaMemcpyHostToDevice));
    KVCACHE_CUDA_TRY(cudaMemcpy(d_last.data(), last.data(), 4 * last.size(), cudaMemcpyHostToDevice));
    host_view = {indptr.data(), indices.data(), last.data(), batch, page_size};
    dev_view = {d_indptr.data(), d_indices.data(), d_last.data(), batch, page_size};
  }
};

/// Times `call` with CUDA events; reports the counters.
template <class Call>
void time_calls(benchmark::State& state, stream& s, double kv_bytes, Call&& call) {
  for (int i = 0; i < 2; ++i) call();
  s.synchronize();
  event start, stop;
  double seconds = 0;
  for (auto _ : state) {
    start.record(s);
    call();
    stop.record(s);
    stop.synchronize();
    const double t = static_cast<double>(event::elapsed_ms(start, stop)) / 1e3;
    seconds += t;
    state.SetIterationTime(t);
  }
  KVCACHE_CUDA_TRY(cudaGetLastError());
  const double per = seconds / static_cast<double>(state.iterations());
  state.counters["us"] = per * 1e6;
  state.counters["kv_MB"] = kv_bytes / 1e6;
  state.counters["kv_GBps"] = kv_bytes / per / 1e9;
  state.counters["memcpy_GBps"] = memcpy_rate() / 1e9;
  state.counters["fraction_of_memcpy"] = kv_bytes / per / memcpy_rate();
}

paged_decode_shape shape_of(std::int32_t batch, std::int32_t page_size) {
  return {batch, kQoHeads, kKvHeads, kHeadDim, page_size, 0, dtype::f16};
}

/// Plans for pages like `kv` (split from the kernel's occupancy), makes random f16 queries
/// (seed `q_seed`) and times `call(plan, args, workspace, stream)`; reports the split too.
template <class View, class Call>
void time_decode(benchmark::State& state, const batch_tables& t, const View& kv, double kv_bytes,
                 std::uint64_t q_seed, Call&& call) {
  const auto batch = t.host_view.num_tables;
  const auto shape = shape_of(batch, kv.page_size);
  auto opts = paged_decode_cuda_options(kv);
  // measurements of other splits: KVCACHE_BENCH_CHUNK_TOKENS (a multiple of 32) forces the chunk
  if (const char* e = std::getenv("KVCACHE_BENCH_CHUNK_TOKENS"); e != nullptr && *e != '\0') {
    opts.force_chunk_tokens = static_cast<std::int32_t>(std::strtol(e, nullptr, 10));
  }
  const auto plan = plan_paged_decode(shape, t.host_view, opts);
  buffer<std::byte, cuda_space> ws(std::max<std::size_t>(plan.workspace_bytes, 256));
  buffer<std::byte, cuda_space> q(static_cast<std::size_t>(batch) * kQoHeads * kHeadDim * 2);
  buffer<std::byte, cuda_space> out(q.size());
  fill_random_f16(q.data(), q.size(), q_seed);
  paged_decode_args a;
  a.q = q.data();
  a.out = out.data();
  a.tables = t.dev_view;
  stream s;
  time_calls(state, s, kv_bytes, [&] { call(plan, a, ws.data(), s.view()); });
  state.counters["chunks"] = plan.max_chunks;
  state.counters["ctas_per_sm"] = opts.ctas_per_sm;
}

/// f16 pages, page_size 16.
void bm_decode_f16(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  const auto batch = static_cast<std::int32_t>(state.range(0));
  const std::int64_t len = state.range(1);
  const std::int32_t P = 16;
  batch_tables t(batch, len, P);
  paged_kv_view kv;
  kv.layers = 1;
  kv.num_pages = t.num_pages;
  kv.page_size = P;
  kv.heads_per_page = kKvHeads;
  kv.head_dim = kHeadDim;
  kv.elem_bytes = 2;
  kv.order = kv_order::hnd;
  kv.type = dtype::f16;
  kv.page_bytes = static_cast<std::int64_t>(P) * kKvHeads * kHeadDim * 2;
  kv.v_offset_bytes = kv.page_bytes * t.num_pages;
  buffer<std::byte, cuda_space> pool(static_cast<std::size_t>(2 * kv.v_offset_bytes));
  fill_random_f16(pool.data(), pool.size(), 1);
  kv.data = pool.data();
  const double kv_bytes = static_cast<double>(batch) * static_cast<double>(len) * kKvHeads * kHeadDim * 2 * 2;
  time_decode(state, t, kv, kv_bytes, 2, [&](const paged_decode_plan& plan, const paged_decode_args& a,
                                             std::byte* ws, stream_view sv) {
    paged_decode_cuda(plan, kv, a, ws, sv);
  });
  state.SetLabel("f16 page 16");
}

/// Quantized pages of Q (every token quantized).
template <class Q>
void bm_decode_quant(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  const auto batch = static_cast<std::int32_t>(state.range(0));
  const std::int64_t len = state.range(1);
  const std::int32_t P = Q::residual > 0 ? 32 : 16;
  batch_tables t(batch, len, P);
  quantized_kv_view kv;
  kv.head_page_bytes = static_cast<std::int64_t>(
      std::max(Q::key_page_bytes(P, kHeadDim), Q::value_page_bytes(P, kHeadDim)));
  kv.page_bytes = kv.head_page_bytes * kKvHeads;
  kv.v_offset_bytes = kv.page_bytes * t.num_pages;
  kv.num_pages = t.num_pages;
  kv.layers = 1;
  kv.page_size = P;
  kv.heads_per_page = kKvHeads;
  kv.head_dim = kHeadDim;
  kv.format = Q::format;
  buffer<std::byte, cuda_space> pool(static_cast<std::size_t>(2 * kv.v_offset_bytes));
  kv.data = pool.data();
  {  // quantize random f16 rows into every head page (on the device)
    const std::size_t rows_bytes = std::size_t{64} << 20;
    buffer<std::byte, cuda_space> rows(rows_bytes);
    fill_random_f16(rows.data(), rows_bytes, 3);
    const std::size_t page_rows = static_cast<std::size_t>(P) * kHeadDim * 2;
    const std::size_t slots = rows_bytes / page_rows;
    std::vector<quantize_job> jobs;
    const std::int64_t n_jobs = static_cast<std::int64_t>(t.num_pages) * kKvHeads * 2;
    jobs.reserve(static_cast<std::size_t>(n_jobs));
    for (std::int32_t p = 0; p < t.num_pages; ++p)
      for (std::int32_t h = 0; h < kKvHeads; ++h)
        for (kv_side side : {kv_side::key, kv_side::value}) {
          const auto* r = reinterpret_cast<const std::uint16_t*>(rows.data() + (jobs.size() % slots) * page_rows);
          jobs.push_back({r, kv.head_page(side, 0, p, h), 0, P, side});
        }
    buffer<quantize_job, cuda_space> djobs(jobs.size());
    KVCACHE_CUDA_TRY(cudaMemcpy(djobs.data(), jobs.data(), jobs.size() * sizeof(quantize_job), cudaMemcpyHostToDevice));
    stream qs;
    quantize_pages_cuda<Q>(djobs.data(), static_cast<std::int32_t>(jobs.size()), P, kHeadDim, nullptr, qs.view());
    qs.synchronize();
  }
  const double kv_bytes = static_cast<double>(batch) * static_cast<double>(len) * kKvHeads * 2 *
                          static_cast<double>(kv.head_page_bytes) / P;
  time_decode(state, t, kv, kv_bytes, 4, [&](const paged_decode_plan& plan, const paged_decode_args& a,
                                             std::byte* ws, stream_view sv) {
    paged_decode_cuda(plan, kv, residual_view{}, a, ws, sv);
  });
  state.SetLabel(std::string(Q::name) + " page " + std::to_string(P));
}

void shapes(benchmark::internal::Benchmark* b) {
  b->Args({64, 4096})->Args({64, 8192})->Args({16, 32768})->Args({1, 131072});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK(bm_decode_f16)->Apply(shapes);
BENCHMARK_TEMPLATE(bm_decode_quant, fp8_e4m3_quantizer)->Apply(shapes);
BENCHMARK_TEMPLATE(bm_decode_quant, int8_quantizer)->Apply(shapes);
BENCHMARK_TEMPLATE(bm_decode_quant, kivi4)->Apply(shapes);
BENCHMARK_TEMPLATE(bm_decode_quant, kivi2)->Apply(shapes);
#else
void bm_no_cuda(benchmark::State& state) {
  state.SkipWithError("built without CUDA");
  for (auto _ : state) {
  }
}
BENCHMARK(bm_no_cuda);
#endif

}  // namespace
