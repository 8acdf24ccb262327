// Select-layer kernels: batched top-k by radix select (select_top_k_cuda), in-place retain of
// attention-mass rows, and compaction by independent segments (compact_kv_segments_cuda).
#include <cuda_runtime.h>

#include <cub/block/block_scan.cuh>

#include "select/select_kernels.cuh"

namespace kvcache::detail {

namespace {

// ---- top-k ------------------------------------------------------------------------------------
constexpr int kTopKThreads = 512;
constexpr int kTopKItems = 8;  // ordered pass: a tile of 4096 scores, 8 consecutive per thread

/// Order-reversing 32-bit image of a score: a larger score gives a smaller key; -0 == +0.
__device__ __forceinline__ std::uint32_t desc_key(float f) {
  if (f == 0.0f) f = 0.0f;
  const std::uint32_t u = __float_as_uint(f);
  const std::uint32_t asc = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return ~asc;
}
constexpr std::uint32_t kInfKey = ~(0x7f800000u | 0x80000000u);  // desc_key(+inf)

__device__ __forceinline__ std::uint32_t key_at(const float* sc, std::int64_t i,
                                                std::int64_t protect_from) {
  return i >= protect_from ? kInfKey : desc_key(sc[i]);
}

__global__ void __launch_bounds__(kTopKThreads)
    top_k_kernel(const float* scores, const top_k_segment* segs, std::int32_t tables,
                 std::int64_t* keep) {
  using scan_t = cub::BlockScan<unsigned long long, kTopKThreads>;
  __shared__ typename scan_t::TempStorage scan_tmp;
  __shared__ unsigned hist[256];
  __shared__ unsigned s_bin, s_before, s_count;
  __shared__ unsigned long long s_tile_total;
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31;
  for (std::int32_t t = blockIdx.x; t < tables; t += gridDim.x) {
    const top_k_segment sg = segs[t];
    if (sg.rows < 0 || sg.rows >= (std::int64_t{1} << 31) || sg.scores < 0 || sg.keep < 0 ||
        sg.protect_recent < 0)
      continue;
    const std::int64_t n = sg.rows;
    const std::int64_t k = kept_rows(sg);
    std::int64_t* out = keep + sg.keep;
    if (k == n) {
      for (std::int64_t i = tid; i < n; i += kTopKThreads) out[i] = i;
      continue;
    }
    if (k == 0) continue;
    const float* sc = scores + sg.scores;
    const std::int64_t protect_from = n - (sg.protect_recent < n ? sg.protect_recent : n);
    // Radix select: the k-th smallest key, 8 bits per pass from the top.
    std::uint32_t prefix = 0, mask = 0;
    unsigned krem = static_cast<unsigned>(k), ties = 0;
    for (int pass = 0; pass < 4; ++pass) {
      const int shift = 24 - 8 * pass;
      for (int b = tid; b < 256; b += kTopKThreads) hist[b] = 0;
      __syncthreads();
      for (std::int64_t base = 0; base < n; base += kTopKThreads) {  // uniform trip count
        const std::int64_t i = base + tid;
        unsigned bin = 256;
        if (i < n) {
          const std::uint32_t key = key_at(sc, i, protect_from);
          if ((key & mask) == prefix) bin = (key >> shift) & 255u;
        }
        const unsigned peers = __match_any_sync(0xffffffffu, bin);
        if (bin != 256 && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], __popc(peers));
      }
      __syncthreads();
      if (tid < 32) {  // warp 0: lane l owns bins [8l, 8l + 8); find the bin holding the krem-th
        unsigned c[8], sum = 0;
#pragma unroll
        for (int j = 0; j < 8; ++j) sum += c[j] = hist[8 * lane + j];
        unsigned incl = sum;
#pragma unroll
        for (int d = 1; d < 32; d <<= 1) {
          const unsigned o = __shfl_up_sync(0xffffffffu, incl, d);
          if (lane >= d) incl += o;
        }
        const unsigned excl = incl - sum;
        if (excl < krem && krem <= incl) {
          unsigned run = excl;
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            if (run + c[j] >= krem && run < krem) {
              s_bin = 8u * lane + j;
              s_before = run;
              s_count = c[j];
            }
            run += c[j];
          }
        }
      }
      __syncthreads();
      krem -= s_before;
      prefix |= s_bin << shift;
      mask |= 255u << shift;
      ties = s_count;
      __syncthreads();  // s_* are rewritten by the next pass
    }
    // Ordered pass: keep key < T, and the ties (key == T) of rank >= skip (the most recent krem).
    const std::uint32_t T = prefix;
    const unsigned skip = ties - krem;
    unsigned long long base_counts = 0;  // (less << 32) | ties before the tile
    for (std::int64_t tile = 0; tile < n; tile += std::int64_t{kTopKThreads} * kTopKItems) {
      const std::int64_t first = tile + std::int64_t{tid} * kTopKItems;
      std::uint32_t keys[kTopKItems];
      unsigned less = 0, eq = 0;
#pragma unroll
      for (int j = 0; j < kTopKItems; ++j) {
        const std::int64_t i = first + j;
        keys[j] = i < n ? key_at(sc, i, protect_from) : 0xffffffffu;
        if (i < n) {
          less += keys[j] < T;
          eq += keys[j] == T;
        }
      }
      unsigned long long before = 0;
      scan_t(scan_tmp).ExclusiveSum((static_cast<unsigned long long>(less) << 32) | eq, before);
      if (tid == kTopKThreads - 1) s_tile_total = before + ((static_cast<unsigned long long>(less) << 32) | eq);
      before += base_counts;
      auto less_before = static_cast<unsigned>(before >> 32);
      auto tie_before = static_cast<unsigned>(before & 0xffffffffu);
#pragma unroll
      for (int j = 0; j < kTopKItems; ++j) {
        const std::int64_t i = first + j;
        if (i >= n) break;
        const unsigned kept_ties = tie_before > skip ? tie_before - skip : 0;
        if (keys[j] < T) {
          out[less_before + kept_ties] = i;
          ++less_before;
        } else if (keys[j] == T) {
          if (tie_before >= skip) out[less_before + kept_ties] = i;
          ++tie_before;
        }
      }
      __syncthreads();
      base_counts += s_tile_total;
      __syncthreads();  // scan_tmp and s_tile_total are reused by the next tile
    }
  }
}

// ---- retain rows ------------------------------------------------------------------------------
constexpr int kRetainThreads = 256;
constexpr int kRetainItems = 4;

__global__ void __launch_bounds__(kRetainThreads)
    retain_rows_kernel(float* mass, const top_k_segment* segs, std::int32_t tables,
                       const std::int64_t* keep) {
  const int tid = static_cast<int>(threadIdx.x);
  for (std::int32_t t = blockIdx.x; t < tables; t += gridDim.x) {
    const top_k_segment sg = segs[t];
    if (sg.rows < 0 || sg.scores < 0 || sg.keep < 0) continue;
    float* m = mass + sg.scores;
    const std::int64_t* kp = keep + sg.keep;
    const std::int64_t k = kept_rows(sg);
    // In order, a tile at a time: every load of the tile, a barrier, every store. keep ascends,
    // so keep[j] >= j: a row is read before a later tile overwrites it, and no tile reads a
    // row an earlier tile wrote.
    for (std::int64_t tile = 0; tile < k; tile += kRetainThreads * kRetainItems) {
      float v[kRetainItems];
#pragma unroll
      for (int r = 0; r < kRetainItems; ++r) {
        const std::int64_t j = tile + r * kRetainThreads + tid;
        const std::int64_t src = j < k ? kp[j] : -1;
        v[r] = src >= 0 && src < sg.rows ? m[src] : 0.0f;
      }
      __syncthreads();
#pragma unroll
      for (int r = 0; r < kRetainItems; ++r) {
        const std::int64_t j = tile + r * kRetainThreads + tid;
        if (j < k) m[j] = v[r];
      }
    }
    __syncthreads();
    for (std::int64_t j = k + tid; j < sg.rows; j += kRetainThreads) m[j] = 0.0f;
    __syncthreads();
  }
}

// ---- compaction by independent segments --------------------------------------------------------
constexpr int kCompactThreads = 512;
constexpr int kCompactItems = 4;

template <class W>
__global__ void __launch_bounds__(kCompactThreads)
    compact_segments_kernel(const compact_params p, const std::int64_t* seg_off,
                            std::int32_t segments) {
  const auto words = static_cast<std::uint32_t>(p.row_bytes / static_cast<std::int64_t>(sizeof(W)));
  const std::uint32_t per_head = 2 * words;
  const std::uint32_t per_array = static_cast<std::uint32_t>(p.heads) * per_head;
  const std::uint32_t per_move = static_cast<std::uint32_t>(p.arrays) * per_array;
  const int tid = static_cast<int>(threadIdx.x);
  for (std::int32_t sgi = blockIdx.x; sgi < segments; sgi += gridDim.x) {
    const std::int64_t m0 = seg_off[sgi], m1 = seg_off[sgi + 1];
    if (m0 < 0 || m1 < m0 || m1 > p.n) continue;
    const std::int64_t total = (m1 - m0) * per_move;
    for (std::int64_t tile = 0; tile < total; tile += std::int64_t{kCompactThreads} * kCompactItems) {
      W v[kCompactItems];
      std::int64_t dst[kCompactItems];
#pragma unroll
      for (int r = 0; r < kCompactItems; ++r) {
        const std::int64_t u = tile + r * kCompactThreads + tid;
        dst[r] = -1;
        if (u >= total) continue;
        const std::int64_t m = m0 + u / per_move;
        std::uint32_t rem = static_cast<std::uint32_t>(u % per_move);
        const std::uint32_t a = rem / per_array;
        rem -= a * per_array;
        const std::uint32_t h = rem / per_head;
        rem -= h * per_head;
        const std::uint32_t kv = rem >= words;
        const std::uint32_t w = rem - kv * words;
        const slot_move mv = p.moves[m];
        if (mv.src < 0 || mv.src >= p.slots || mv.dst < 0 || mv.dst >= p.slots) continue;
        const auto row = [&](std::int64_t slot) {
          const std::int64_t page = slot / p.page_size;
          const std::int64_t tok = slot - page * p.page_size;
          const std::int64_t in_page =
              p.nhd ? tok * p.heads + h : static_cast<std::int64_t>(h) * p.page_size + tok;
          return a * p.layer_stride + page * p.page_bytes + in_page * p.row_bytes +
                 (kv ? p.v_off : 0);
        };
        v[r] = reinterpret_cast<const W*>(p.pool + row(mv.src))[w];
        dst[r] = row(mv.dst) + static_cast<std::int64_t>(w) * static_cast<std::int64_t>(sizeof(W));
      }
      __syncthreads();  // every read of the tile happens before any write of it
#pragma unroll
      for (int r = 0; r < kCompactItems; ++r) {
        if (dst[r] >= 0) *reinterpret_cast<W*>(p.pool + dst[r]) = v[r];
      }
    }
  }
}

unsigned grid_for(std::int32_t items, int per_sm) {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    sms = 1;
  const long long cap = static_cast<long long>(sms) * per_sm;
  return static_cast<unsigned>(items < cap ? items : cap);
}

}  // namespace

cudaError_t launch_select_top_k(const float* scores, const top_k_segment* segments,
                                std::int32_t tables, std::int64_t* keep, cudaStream_t s) {
  if (tables <= 0) return cudaSuccess;
  top_k_kernel<<<grid_for(tables, 4), kTopKThreads, 0, s>>>(scores, segments, tables, keep);
  return cudaGetLastError();
}

cudaError_t launch_retain_rows(float* mass, const top_k_segment* segments, std::int32_t tables,
                               const std::int64_t* keep, cudaStream_t s) {
  if (tables <= 0) return cudaSuccess;
  retain_rows_kernel<<<grid_for(tables, 8), kRetainThreads, 0, s>>>(mass, segments, tables, keep);
  return cudaGetLastError();
}

cudaError_t launch_compact_kv_segments(const compact_params& p, const std::int64_t* seg_off,
                                       std::int32_t segments, cudaStream_t s) {
  if (segments <= 0 || p.n == 0) return cudaSuccess;
  const unsigned grid = grid_for(segments, 4);
  const auto bits = static_cast<std::uint64_t>(p.row_bytes | p.page_bytes | p.v_off | p.layer_stride) |
                    static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(p.pool));
  if (bits % 16 == 0) {
    compact_segments_kernel<uint4><<<grid, kCompactThreads, 0, s>>>(p, seg_off, segments);
  } else if (bits % 4 == 0) {
    compact_segments_kernel<std::uint32_t><<<grid, kCompactThreads, 0, s>>>(p, seg_off, segments);
  } else {
    compact_segments_kernel<std::uint16_t><<<grid, kCompactThreads, 0, s>>>(p, seg_off, segments);
  }
  return cudaGetLastError();
}

}  // namespace kvcache::detail
