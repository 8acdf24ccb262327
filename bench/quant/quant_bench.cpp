// kvcache-bench-quant: quantize and dequantize throughput of every quantizer.
//
// Host cases (bm_quantize_host / bm_dequantize_host): 64 key and 64 value head pages of 64
// tokens x head_dim 128 per iteration; bytes = f16 read + page bytes written (quantize) or page
// bytes read + f16 written (dequantize).
//
// GPU cases (bm_quantize_cuda / bm_dequantize_cuda): whole head pages (64 tokens x 128, keys and
// values alternating) holding the argument's bytes of f16 (256 MiB and 1 GiB), one batch per
// launch, timed with CUDA events after a warm-up. Bytes are counted read + written; each case
// reports bytes_per_second and fraction_of_memcpy, its rate over the rate of a cudaMemcpyAsync
// D2D moving the same number of bytes (read + written) in the same process (median of 9
// event-timed copies after 3 warm-ups, measured once per size). Without a device the GPU cases
// are skipped with an error.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "defaults.hpp"
#include "kvcache/quant/kernels.hpp"
#include "kvcache/quant/quantizers.hpp"

#ifdef KVCACHE_HAS_CUDA
#include <cuda_runtime_api.h>

#include "gpu_reference.hpp"

#include <algorithm>

#include "kvcache/core/cuda_error.hpp"
#include "kvcache/memory/buffer.hpp"
#include "kvcache/memory/stream.hpp"
#endif

using namespace kvcache;

namespace {

constexpr std::int32_t page_size = 64;
constexpr std::int32_t head_dim = 128;

/// Random finite f16 bits with magnitudes in [2^-5, 2^4) (xorshift; fast for large buffers).
void fill_rows(std::uint16_t* rows, std::size_t n, std::uint64_t seed) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (std::size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const auto r = static_cast<std::uint32_t>(x >> 20);
    const std::uint32_t exponent = 10 + (r >> 10) % 9;  // biased 10..18
    rows[i] = static_cast<std::uint16_t>(((r >> 20) & 1u) << 15 | exponent << 10 | (r & 0x3FFu));
  }
}

/// 64 key and 64 value head pages and their jobs, in host memory.
template <class Q>
struct host_batch {
  static constexpr std::int32_t pages = 128;
  std::size_t kb = Q::key_page_bytes(page_size, head_dim);
  std::size_t vb = Q::value_page_bytes(page_size, head_dim);
  std::vector<std::uint16_t> rows = std::vector<std::uint16_t>(
      static_cast<std::size_t>(pages) * page_size * head_dim);
  std::vector<std::uint16_t> out = rows;
  std::vector<std::byte> storage = std::vector<std::byte>((kb + vb) * pages / 2);
  std::vector<quantize_job> qjobs;
  std::vector<dequantize_job> djobs;
  host_batch() {
    fill_rows(rows.data(), rows.size(), 1);
    for (std::int32_t i = 0; i < pages; ++i) {
      const bool key = i % 2 == 0;
      std::byte* page = storage.data() + (kb + vb) * static_cast<std::size_t>(i / 2) + (key ? 0 : kb);
      const std::size_t r = static_cast<std::size_t>(i) * page_size * head_dim;
      const kv_side side = key ? kv_side::key : kv_side::value;
      qjobs.push_back({rows.data() + r, page, 0, page_size, side});
      djobs.push_back({page, out.data() + r, 0, page_size, side});
    }
  }
  std::int64_t bytes() const {
    return static_cast<std::int64_t>(rows.size() * 2 + storage.size());
  }
};

template <class Q>
void bm_quantize_host(benchmark::State& state) {
  host_batch<Q> b;
  for (auto _ : state) {
    quantize_pages_host<Q>(b.qjobs.data(), host_batch<Q>::pages, page_size, head_dim);
    benchmark::DoNotOptimize(b.storage.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * b.bytes());
  state.SetItemsProcessed(state.iterations() * host_batch<Q>::pages * page_size);  // tokens
  state.SetLabel(std::string(Q::name));
}

template <class Q>
void bm_dequantize_host(benchmark::State& state) {
  host_batch<Q> b;
  quantize_pages_host<Q>(b.qjobs.data(), host_batch<Q>::pages, page_size, head_dim);
  for (auto _ : state) {
    dequantize_pages_host<Q>(b.djobs.data(), host_batch<Q>::pages, page_size, head_dim);
    benchmark::DoNotOptimize(b.out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * b.bytes());
  state.SetItemsProcessed(state.iterations() * host_batch<Q>::pages * page_size);
  state.SetLabel(std::string(Q::name));
}

#ifdef KVCACHE_HAS_CUDA
using kvbench::memcpy_rate;
using kvbench::skip_without_gpu;

/// `n` random f16 rows (fill_rows, seed 2), made once per size: Google Benchmark runs each case
/// a few times (to find its iteration count), and filling 1 GiB on the host each time made the
/// GPU cases take minutes.
const std::vector<std::uint16_t>& host_rows(std::size_t n) {
  static std::map<std::size_t, std::vector<std::uint16_t>> cache;
  auto it = cache.find(n);
  if (it == cache.end()) {
    it = cache.emplace(n, std::vector<std::uint16_t>(n)).first;
    fill_rows(it->second.data(), n, 2);
  }
  return it->second;
}

/// Device rows (`f16_bytes` of them), pages and jobs of whole head pages, keys and values
/// alternating.
template <class Q>
struct device_batch {
  std::int32_t pages;
  std::size_t kb = Q::key_page_bytes(page_size, head_dim);
  std::size_t vb = Q::value_page_bytes(page_size, head_dim);
  buffer<std::uint16_t, cuda_space> rows;
  buffer<std::byte, cuda_space> storage;
  buffer<quantize_job, cuda_space> qjobs;
  buffer<dequantize_job, cuda_space> djobs;
  buffer<quant_status, cuda_space> status{1};

  explicit device_batch(std::int64_t f16_bytes)
      : pages(static_cast<std::int32_t>(f16_bytes / (2 * page_size * head_dim)) / 2 * 2),
        rows(static_cast<std::size_t>(pages) * page_size * head_dim),
        storage((kb + vb) * static_cast<std::size_t>(pages / 2)),
        qjobs(static_cast<std::size_t>(pages)),
        djobs(static_cast<std::size_t>(pages)) {
    const std::vector<std::uint16_t>& host = host_rows(rows.size());
    KVCACHE_CUDA_TRY(cudaMemcpy(rows.data(), host.data(), host.size() * 2, cudaMemcpyHostToDevice));
    std::vector<quantize_job> q;
    std::vector<dequantize_job> d;
    for (std::int32_t i = 0; i < pages; ++i) {
      const bool key = i % 2 == 0;
      std::byte* page = storage.data() + (kb + vb) * static_cast<std::size_t>(i / 2) + (key ? 0 : kb);
      std::uint16_t* r = rows.data() + static_cast<std::size_t>(i) * page_size * head_dim;
      const kv_side side = key ? kv_side::key : kv_side::value;
      q.push_back({r, page, 0, page_size, side});
      d.push_back({page, r, 0, page_size, side});
    }
    KVCACHE_CUDA_TRY(cudaMemcpy(qjobs.data(), q.data(), q.size() * sizeof(quantize_job), cudaMemcpyHostToDevice));
    KVCACHE_CUDA_TRY(cudaMemcpy(djobs.data(), d.data(), d.size() * sizeof(dequantize_job), cudaMemcpyHostToDevice));
  }
  /// Bytes read + written by one quantize (or dequantize) of every page.
  std::int64_t moved() const {
    return static_cast<std::int64_t>(rows.size() * 2 + storage.size());
  }
};

template <class Q, bool Quantize>
void bm_cuda(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  device_batch<Q> b(state.range(0));
  stream s;
  event start, stop;
  auto launch = [&] {
    if constexpr (Quantize) {
      quantize_pages_cuda<Q>(b.qjobs.data(), b.pages, page_size, head_dim, b.status.data(), s);
    } else {
      dequantize_pages_cuda<Q>(b.djobs.data(), b.pages, page_size, head_dim, b.status.data(), s);
    }
  };
  if constexpr (!Quantize) {
    quantize_pages_cuda<Q>(b.qjobs.data(), b.pages, page_size, head_dim, b.status.data(), s);
  }
  for (int i = 0; i < 2; ++i) launch();
  s.synchronize();
  double seconds = 0;
  for (auto _ : state) {
    start.record(s);
    launch();
    stop.record(s);
    stop.synchronize();
    const double t = static_cast<double>(event::elapsed_ms(start, stop)) / 1e3;
    seconds += t;
    state.SetIterationTime(t);
  }
  quant_status st{};
  KVCACHE_CUDA_TRY(cudaMemcpy(&st, b.status.data(), sizeof st, cudaMemcpyDeviceToHost));
  if (st != quant_status{}) state.SkipWithError("the kernel reported a bad job or non-finite input");
  const std::int64_t moved = b.moved();
  state.SetBytesProcessed(state.iterations() * moved);
  const double rate = static_cast<double>(moved) * static_cast<double>(state.iterations()) / seconds;
  state.counters["fraction_of_memcpy"] = rate / memcpy_rate(moved);
  state.counters["memcpy_GBps"] = memcpy_rate(moved) / 1e9;
  state.SetLabel(std::string(Q::name));
}

template <class Q>
void bm_quantize_cuda(benchmark::State& state) {
  bm_cuda<Q, true>(state);
}
template <class Q>
void bm_dequantize_cuda(benchmark::State& state) {
  bm_cuda<Q, false>(state);
}

/// The reference: cudaMemcpyAsync D2D of the argument's bytes (bytes_per_second counts read +
/// written, as the kernels' cases).
void bm_memcpy_d2d(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  const auto bytes = static_cast<std::size_t>(state.range(0));
  buffer<std::byte, cuda_space> a(bytes), b(bytes);
  stream s;
  const auto st = static_cast<cudaStream_t>(s.view().handle());
  KVCACHE_CUDA_TRY(cudaMemsetAsync(a.data(), 1, bytes, st));
  event start, stop;
  for (auto _ : state) {
    start.record(s);
    KVCACHE_CUDA_TRY(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, st));
    stop.record(s);
    stop.synchronize();
    state.SetIterationTime(static_cast<double>(event::elapsed_ms(start, stop)) / 1e3);
  }
  state.SetBytesProcessed(state.iterations() * 2 * static_cast<std::int64_t>(bytes));
}
#endif

}  // namespace

#define KVCACHE_QUANT_BENCH_HOST(Q)                                                 \
  BENCHMARK_TEMPLATE(bm_quantize_host, Q)->Unit(benchmark::kMillisecond);           \
  BENCHMARK_TEMPLATE(bm_dequantize_host, Q)->Unit(benchmark::kMillisecond)

KVCACHE_QUANT_BENCH_HOST(identity_quantizer);
KVCACHE_QUANT_BENCH_HOST(int8_quantizer);
KVCACHE_QUANT_BENCH_HOST(fp8_e4m3_quantizer);
KVCACHE_QUANT_BENCH_HOST(kivi2);
KVCACHE_QUANT_BENCH_HOST(kivi4);
KVCACHE_QUANT_BENCH_HOST(kivi2_token_keys);

#ifdef KVCACHE_HAS_CUDA
#define KVCACHE_QUANT_BENCH_CUDA(Q)                                                            \
  BENCHMARK_TEMPLATE(bm_quantize_cuda, Q)                                                      \
      ->Apply(kvbench::bandwidth_sizes)                                                        \
      ->UseManualTime()                                                                        \
      ->Unit(benchmark::kMicrosecond);                                                         \
  BENCHMARK_TEMPLATE(bm_dequantize_cuda, Q)                                                    \
      ->Apply(kvbench::bandwidth_sizes)                                                        \
      ->UseManualTime()                                                                        \
      ->Unit(benchmark::kMicrosecond)

BENCHMARK(bm_memcpy_d2d)->Apply(kvbench::bandwidth_sizes)->UseManualTime()->Unit(benchmark::kMicrosecond);
KVCACHE_QUANT_BENCH_CUDA(identity_quantizer);
KVCACHE_QUANT_BENCH_CUDA(int8_quantizer);
KVCACHE_QUANT_BENCH_CUDA(fp8_e4m3_quantizer);
KVCACHE_QUANT_BENCH_CUDA(kivi2);
KVCACHE_QUANT_BENCH_CUDA(kivi4);
KVCACHE_QUANT_BENCH_CUDA(kivi2_token_keys);
#endif
