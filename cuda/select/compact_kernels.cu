// compact_kv kernels: gather the moves' source rows into scratch, then scatter them to their
// destinations, so the result equals the in-order host implementation (compact_kv_host)
// whatever the interleaving. One thread per (move, array, head, K/V, vector of the row).
#include <cuda_runtime.h>

#include "select/compact_kernels.cuh"

namespace kvcache::detail {

namespace {

constexpr int kThreads = 256;

template <class W>
__device__ std::int64_t row_offset(const compact_params& p, std::int64_t slot, std::int32_t a,
                                   std::int32_t h) {
  const std::int64_t page = slot / p.page_size;
  const std::int64_t tok = slot % p.page_size;
  const std::int64_t in_page = p.nhd ? tok * p.heads + h : static_cast<std::int64_t>(h) * p.page_size + tok;
  return a * p.layer_stride + page * p.page_bytes + in_page * p.row_bytes;
}

template <class W, bool Gather>
__global__ void __launch_bounds__(kThreads) compact_kernel(const compact_params p) {
  const std::int64_t words = p.row_bytes / static_cast<std::int64_t>(sizeof(W));
  const std::int64_t per_move = static_cast<std::int64_t>(p.arrays) * p.heads * 2 * words;
  const std::int64_t total = p.n * per_move;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t m = i / per_move;
    std::int64_t r = i % per_move;
    const auto a = static_cast<std::int32_t>(r / (static_cast<std::int64_t>(p.heads) * 2 * words));
    r %= static_cast<std::int64_t>(p.heads) * 2 * words;
    const auto h = static_cast<std::int32_t>(r / (2 * words));
    r %= 2 * words;
    const auto kv = static_cast<std::int32_t>(r / words);
    const std::int64_t w = r % words;
    const slot_move mv = p.moves[m];
    if (mv.src < 0 || mv.src >= p.slots || mv.dst < 0 || mv.dst >= p.slots) continue;
    auto* scratch = reinterpret_cast<W*>(p.scratch) + i;
    if constexpr (Gather) {
      const std::int64_t off = row_offset<W>(p, mv.src, a, h) + (kv ? p.v_off : 0);
      *scratch = reinterpret_cast<const W*>(p.pool + off)[w];
    } else {
      const std::int64_t off = row_offset<W>(p, mv.dst, a, h) + (kv ? p.v_off : 0);
      reinterpret_cast<W*>(p.pool + off)[w] = *scratch;
    }
  }
}

template <class W>
cudaError_t run(const compact_params& p, cudaStream_t s) {
  const std::int64_t total =
      p.n * p.arrays * p.heads * 2 * (p.row_bytes / static_cast<std::int64_t>(sizeof(W)));
  int dev = 0, sms = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e != cudaSuccess) return e;
  const std::int64_t want = (total + kThreads - 1) / kThreads;
  const auto blocks = static_cast<unsigned>(want < 8LL * sms ? (want > 0 ? want : 1) : 8LL * sms);
  compact_kernel<W, true><<<blocks, kThreads, 0, s>>>(p);
  e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  compact_kernel<W, false><<<blocks, kThreads, 0, s>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_compact_kv(const compact_params& p, cudaStream_t s) {
  const auto bits = static_cast<std::uint64_t>(p.row_bytes | p.page_bytes | p.v_off | p.layer_stride) |
                    static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(p.pool) |
                                               reinterpret_cast<std::uintptr_t>(p.scratch));
  if (bits % 16 == 0) return run<uint4>(p, s);
  if (bits % 4 == 0) return run<std::uint32_t>(p, s);
  return run<std::uint16_t>(p, s);
}

}  // namespace kvcache::detail
