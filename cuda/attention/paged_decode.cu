// Paged decode attention kernels: one query token per sequence, GQA, split-KV with a log-sum-exp
// merge, f16 / bf16 pages or quantized pages (int8, fp8 E4M3, KIVI-2/4 + f16 residual), and the
// attention-mass output. Quantized pages: the tensor-core kernel of paged_decode_mma.cuh.
//
// f16 / bf16 pages (decode_kernel): one block (128 threads) = one (chunk of tokens, sequence, kv
// head, group of <= 4 query heads). It walks its chunk in tiles of 32 tokens, double-buffered with
// cp.async (each thread's page id is read a tile before the copy it addresses):
//   load   : f16 / bf16 rows straight into a tile [32][head_dim] of 16-bit elements (16-byte
//            chunks XOR-swizzled by row parity, so that no quarter-warp hits a bank twice);
//   scores : thread (8 dims, every 8th token) against the f32 queries (pre-scaled by
//            sm_scale * log2 e) in shared memory; a butterfly over the row's lanes sums them;
//   softmax: one warp per query head, online (running max and sum, log2 domain);
//   P V    : the same thread mapping; f32 accumulators rescaled per tile.
// Blocks of a split chunk write normalized partial outputs and their log2-sum-exp; the merge
// kernel combines them. With the mass output, the scores go to the workspace and the mass
// kernel adds exp2(s - lse) summed over the group once the final lse is known.
//
// No fmt here (nvcc cannot compile it): the checks live in paged_decode_launch.cpp.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <type_traits>

#include "attention/paged_decode.cuh"

namespace kvcache::detail {
namespace {

constexpr int kThreads = 128;
constexpr int kTile = 32;
constexpr int kMaxSub = 4;  // query heads per block (a group of 8 takes two blocks)

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int size = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(size));
}
/// 16 bytes from gmem to the shared-window address s (no predicate: a whole stage's copies).
__device__ __forceinline__ void cp_async16_s(unsigned s, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
/// 16 bytes into shared memory of which the first `bytes` (0..16) come from gmem, the rest zeros.
__device__ __forceinline__ void cp_async16n(void* smem, const void* gmem, int bytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int size = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(size));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/// Position of 16-byte chunk c of tile row r (bank-conflict-free for the access patterns above).
__device__ __forceinline__ int swz(int c, int r) { return c ^ ((r & 1) << 2); }

/// 8 elements of 16 bits (f16 or bf16) to f32.
template <bool Bf16>
__device__ __forceinline__ void to_f32x8(uint4 w, float* f) {
  const unsigned u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 v;
    if constexpr (Bf16) {
      v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u[i]));
    } else {
      v = __half22float2(*reinterpret_cast<const __half2*>(&u[i]));
    }
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}

__device__ __forceinline__ unsigned pack_f16x2(float a, float b) {
  const __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<const unsigned*>(&h);
}

__device__ __forceinline__ float load_q(const void* q, std::int64_t i, bool bf16) {
  const unsigned short b = static_cast<const unsigned short*>(q)[i];
  return bf16 ? __bfloat162float(__ushort_as_bfloat16(b)) : __half2float(__ushort_as_half(b));
}
__device__ __forceinline__ void store_o(void* out, std::int64_t i, float v, bool bf16) {
  unsigned short b = bf16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v))
                          : __half_as_ushort(__float2half_rn(v));
  static_cast<unsigned short*>(out)[i] = b;
}

/// What a block of either kernel works on: chunk `chunk` ([start, end) of the table's L tokens)
/// of sequence b and kv head h, query heads qh0 .. qh0 + sub (output rows row0 ..).
struct block_work {
  int chunk, b, h, qh0, sub, table, head_in_page, pg0, L, start, end;
  std::int64_t row0;
  bool qbf;
};

/// The block's work from its index; false when its chunk holds no token (the block then has
/// nothing to do, except chunk 0 of an unsplit empty table: zero output, lse -inf).
template <int D>
__device__ __forceinline__ bool block_work_of(const decode_params& p, block_work& w) {
  w.chunk = blockIdx.x;
  w.b = blockIdx.y;
  w.h = blockIdx.z / p.subgroups;
  w.qh0 = w.h * p.group + (blockIdx.z % p.subgroups) * p.sub;
  w.sub = p.sub;
  w.table = w.h * p.table_head_stride + w.b;
  w.head_in_page = p.table_head_stride == 0 ? w.h : 0;
  w.pg0 = p.indptr[w.table];
  const int npages = p.indptr[w.table + 1] - w.pg0;
  w.L = npages <= 0 ? 0 : (npages - 1) * p.page_size + p.last_page_len[w.table];
  w.start = w.chunk * p.chunk_tokens;
  w.qbf = p.q_bf16 != 0;
  w.row0 = static_cast<std::int64_t>(w.b) * p.qo_heads + w.qh0;
  if (w.start >= w.L) {
    if (!p.split && w.chunk == 0) {  // empty table: zeros, lse -inf
      for (int i = threadIdx.x; i < w.sub * D; i += kThreads) store_o(p.out, w.row0 * D + i, 0.0f, w.qbf);
      if (static_cast<int>(threadIdx.x) < w.sub) {
        if (p.lse_out != nullptr) p.lse_out[w.row0 + threadIdx.x] = -INFINITY;
        p.final_lse[w.row0 + threadIdx.x] = -INFINITY;
      }
    }
    return false;
  }
  w.end = w.chunk == p.max_chunks - 1 ? w.L : min(w.L, w.start + p.chunk_tokens);
  return true;
}

#ifndef KVCACHE_F16_DECODE_STAGES
#define KVCACHE_F16_DECODE_STAGES 2
#endif
/// f16 / bf16 pages (F = 0 / 1).
template <int D, int F>
struct tile_traits {
  static_assert(F == 0 || F == 1, "decode_kernel reads f16 and bf16 pages");
  static constexpr bool bf16 = F == 1;
  static constexpr int ch = D / 8;             // 16-byte chunks per canonical row
  static constexpr int row_bytes = D * 2;      // canonical row
  // canonical slots: double-buffered (a ring of 3 measured slower on the H100)
  static constexpr int cstages = KVCACHE_F16_DECODE_STAGES;
  static constexpr int canon_bytes = cstages * 2 * kTile * row_bytes;  // [slot][side][row]
  static constexpr int smem_bytes =
      canon_bytes + 4 * (kMaxSub * D + 2 * kMaxSub * kTile + 2 * kMaxSub);
  static constexpr int tpt = kTile * ch / kThreads;  // scores: tokens per thread
};

template <int D, int F>
__global__ void __launch_bounds__(kThreads) decode_kernel(const decode_params p) {
  using T = tile_traits<D, F>;
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* canon = smem;
  float* q_s = reinterpret_cast<float*>(smem + T::canon_bytes);  // [4][D]
  float* s_s = q_s + kMaxSub * D;                              // [4][32]
  float* p_s = s_s + kMaxSub * kTile;                          // [32][4]
  float* alpha_s = p_s + kMaxSub * kTile;                      // [4]
  float* l_s = alpha_s + kMaxSub;                              // [4]
  float* red = reinterpret_cast<float*>(canon);                // [4 warps][4][D] after the loop

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  block_work w;
  if (!block_work_of<D>(p, w)) return;
  const int chunk = w.chunk, sub = w.sub, head_in_page = w.head_in_page, pg0 = w.pg0;
  const int start = w.start, end = w.end;
  const bool qbf = w.qbf;
  const std::int64_t row0 = w.row0;

  for (int i = tid; i < sub * D; i += kThreads) {
    q_s[i] = load_q(p.q, row0 * D + i, qbf) * p.scale_log2;
  }

  // ---- loads ----------------------------------------------------------------------------------
  const int lr = tid >> 2;   // tile row of this thread (loads, decode, scores)
  const int part = tid & 3;  // its quarter of the row's chunks
  // page of this thread's row of the tile at t0 (read a tile before its issue: the load's latency
  // hides behind a tile's work)
  auto row_page = [&](int t0) { return lr < end - t0 ? p.indices[pg0 + (t0 + lr) / p.page_size] : 0; };
  auto issue = [&](int t0, int page, int stage) {
    const int nvalid = min(kTile, end - t0);
    const bool ok = lr < nvalid && page >= 0 && page < p.kv.num_pages;
    const std::int64_t off = ok ? p.kv.k_row_offset(p.layer, page, (t0 + lr) % p.page_size, head_in_page) : 0;
    const std::byte* base = p.kv.data + off;
    unsigned char* dk = canon + ((stage * 2 + 0) * kTile + lr) * T::row_bytes;
    unsigned char* dv = canon + ((stage * 2 + 1) * kTile + lr) * T::row_bytes;
#pragma unroll
    for (int j = 0; j < T::ch / 4; ++j) {
      const int c = 4 * j + part;
      cp_async16(dk + swz(c, lr) * 16, base + c * 16, ok);
      cp_async16(dv + swz(c, lr) * 16, base + p.kv.v_offset_bytes + c * 16, ok);
    }
  };

  // ---- main loop ------------------------------------------------------------------------------
  constexpr bool canon_bf16 = T::bf16;
  float m_run = -INFINITY;  // warp w: head w's running max (log2 domain) and sum
  float l_run = 0.0f;
  float acc[kMaxSub][8];
#pragma unroll
  for (int hh = 0; hh < kMaxSub; ++hh)
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[hh][e] = 0.0f;

  const int pc = tid % T::ch;  // P V: chunk of the head dim
  const int tg = tid / T::ch;  // P V: token group
  constexpr int kGroups = kThreads / T::ch;

  const int ntiles = (end - start + kTile - 1) / kTile;
#pragma unroll
  for (int k = 0; k < T::cstages - 1; ++k) {  // tiles 0 .. cstages-2 in flight
    if (k < ntiles) issue(start + k * kTile, row_page(start + k * kTile), k);
    cp_async_commit();
  }
  int next_page = T::cstages - 1 < ntiles ? row_page(start + (T::cstages - 1) * kTile) : 0;
  for (int it = 0; it < ntiles; ++it) {
    const int t0 = start + it * kTile;
    const int nvalid = min(kTile, end - t0);
    const int stage = it % T::cstages;  // canonical slot
    // tile it + cstages - 1 into the slot consumed at the previous iteration
    const int tn = it + T::cstages - 1;
    if (tn < ntiles) issue(start + tn * kTile, next_page, tn % T::cstages);
    cp_async_commit();
    if (tn + 1 < ntiles) next_page = row_page(start + (tn + 1) * kTile);
    cp_async_wait<T::cstages - 1>();
    __syncthreads();
    // scores: thread (chunk pc, token group tg) dots its 8 dims of tokens tg + 8k (D=128) with
    // the (<= 4) query heads; a butterfly over the chunk's lanes leaves lane l with the full sum
    // of value 2 (l % ch) / (kMaxSub * tpt / ch) ... (index = (kMaxSub * tpt / ch) * (l % ch) + i)
    {
      constexpr int tpt = T::tpt;
      constexpr int nv = kMaxSub * tpt;
      float v[nv];
      float kf[tpt][8];
      const unsigned char* kbase = canon + (stage * 2 + 0) * kTile * T::row_bytes;
#pragma unroll
      for (int k = 0; k < tpt; ++k) {
        const int r = tg + kGroups * k;
        to_f32x8<canon_bf16>(
            *reinterpret_cast<const uint4*>(kbase + r * T::row_bytes + swz(pc, r) * 16), kf[k]);
      }
#pragma unroll
      for (int hh = 0; hh < kMaxSub; ++hh) {
        float4 qa = make_float4(0.f, 0.f, 0.f, 0.f), qb = qa;
        if (hh < sub) {
          qa = *reinterpret_cast<const float4*>(q_s + hh * D + pc * 8);
          qb = *reinterpret_cast<const float4*>(q_s + hh * D + pc * 8 + 4);
        }
#pragma unroll
        for (int k = 0; k < tpt; ++k) {
          float a = qa.x * kf[k][0];
          a = fmaf(qa.y, kf[k][1], a);
          a = fmaf(qa.z, kf[k][2], a);
          a = fmaf(qa.w, kf[k][3], a);
          a = fmaf(qb.x, kf[k][4], a);
          a = fmaf(qb.y, kf[k][5], a);
          a = fmaf(qb.z, kf[k][6], a);
          a = fmaf(qb.w, kf[k][7], a);
          v[hh * tpt + k] = a;
        }
      }
      // butterfly: at the step of mask m, lanes with bit m keep the upper half of the values
      int n = nv;
#pragma unroll
      for (int m = T::ch / 2; m >= 1; m >>= 1) {
        const bool upper = (lane & m) != 0;
        n /= 2;
#pragma unroll
        for (int i = 0; i < nv / 2; ++i) {
          if (i < n) {
            const float send = upper ? v[i] : v[i + n];
            const float keep = upper ? v[i + n] : v[i];
            v[i] = keep + __shfl_xor_sync(0xFFFFFFFFu, send, m);
          }
        }
      }
      constexpr int per_lane = nv / T::ch;
#pragma unroll
      for (int i = 0; i < per_lane; ++i) {
        const int idx = per_lane * (lane % T::ch) + i;
        const int hh = idx / tpt;
        const int r = tg + kGroups * (idx % tpt);
        if (hh < sub && r < nvalid) s_s[hh * kTile + r] = v[i];
      }
    }
    __syncthreads();
    // online softmax: warp w owns head w
    if (warp < sub) {
      const int hh = warp;
      const bool ok = lane < nvalid;
      const float sv = ok ? s_s[hh * kTile + lane] : -INFINITY;
      float mx = sv;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, o));
      const float m_new = fmaxf(m_run, mx);
      const float alpha = exp2f(m_run - m_new);
      const float pr = ok ? exp2f(sv - m_new) : 0.0f;
      float sum = pr;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, o);
      l_run = l_run * alpha + sum;
      m_run = m_new;
      p_s[lane * kMaxSub + hh] = pr;
      if (lane == 0) alpha_s[hh] = alpha;
      if (p.scores != nullptr && ok && t0 + lane < p.score_stride) {
        p.scores[(row0 + hh) * p.score_stride + t0 + lane] = sv;
      }
    }
    __syncthreads();
    // P V
    {
#pragma unroll
      for (int hh = 0; hh < kMaxSub; ++hh) {
        if (hh < sub) {
          const float a = alpha_s[hh];
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[hh][e] *= a;
        }
      }
      const unsigned char* vbase = canon + (stage * 2 + 1) * kTile * T::row_bytes;
      for (int r = tg; r < nvalid; r += kGroups) {
        float vf[8];
        to_f32x8<canon_bf16>(
            *reinterpret_cast<const uint4*>(vbase + r * T::row_bytes + swz(pc, r) * 16), vf);
        const float4 pa = *reinterpret_cast<const float4*>(p_s + r * kMaxSub);
        const float pr[4] = {pa.x, pa.y, pa.z, pa.w};
#pragma unroll
        for (int hh = 0; hh < kMaxSub; ++hh) {
          if (hh < sub) {
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[hh][e] = fmaf(pr[hh], vf[e], acc[hh][e]);
          }
        }
      }
    }
    __syncthreads();
  }

  // ---- epilogue ---------------------------------------------------------------------------------
  {
    const int hh = warp;
    if (hh < sub && lane == 0) {
      l_s[hh] = l_run;
      const float lse2 = m_run + __log2f(l_run);
      if (p.split) {
        p.part_lse[(static_cast<std::int64_t>(chunk) * p.batch * p.qo_heads) + row0 + hh] = lse2;
      } else {
        p.final_lse[row0 + hh] = lse2;
        if (p.lse_out != nullptr) p.lse_out[row0 + hh] = lse2 * 0.69314718055994531f;
      }
    }
  }
#pragma unroll
  for (int hh = 0; hh < kMaxSub; ++hh) {
    if (hh < sub) {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        float v = acc[hh][e];
        v += __shfl_xor_sync(0xFFFFFFFFu, v, 16);
        if constexpr (D == 64) v += __shfl_xor_sync(0xFFFFFFFFu, v, 8);
        acc[hh][e] = v;
      }
      if (lane < T::ch) {
        float* dst = red + (warp * kMaxSub + hh) * D + lane * 8;
        *reinterpret_cast<float4*>(dst) = make_float4(acc[hh][0], acc[hh][1], acc[hh][2], acc[hh][3]);
        *reinterpret_cast<float4*>(dst + 4) = make_float4(acc[hh][4], acc[hh][5], acc[hh][6], acc[hh][7]);
      }
    }
  }
  __syncthreads();
  for (int i = tid; i < sub * D; i += kThreads) {
    const int hh = i / D;
    const int d = i % D;
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) o += red[(w * kMaxSub + hh) * D + d];
    o /= l_s[hh];
    if (p.split) {
      p.part_o[((static_cast<std::int64_t>(chunk) * p.batch * p.qo_heads) + row0 + hh) * D + d] = o;
    } else {
      store_o(p.out, (row0 + hh) * D + d, o, qbf);
    }
  }
}

#ifndef KVCACHE_F16_MMA
#define KVCACHE_F16_MMA 1  // 0: f16 pages of head_dim 128 on decode_kernel (CUDA cores) too
#endif
#include "attention/paged_decode_mma.cuh"

/// Kernels launched with programmatic dependent launch (launch_after, PDL) start while the
/// previous kernel's blocks finish: this waits until that kernel has completed and its memory
/// operations are visible (at once when it was launched normally).
__device__ __forceinline__ void wait_for_previous_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

/// Split-KV merge: one block per (sequence, query head), a thread per element of the head dim.
__global__ void __launch_bounds__(128) merge_kernel(const decode_params p, int D) {
  wait_for_previous_grid();
  const int b = blockIdx.x;
  const int qh = blockIdx.y;
  const int h = qh / p.group;
  const int table = h * p.table_head_stride + b;
  const int npages = p.indptr[table + 1] - p.indptr[table];
  const int L = npages <= 0 ? 0 : (npages - 1) * p.page_size + p.last_page_len[table];
  const int n = L == 0 ? 0 : min((L + p.chunk_tokens - 1) / p.chunk_tokens, p.max_chunks);
  const std::int64_t row = static_cast<std::int64_t>(b) * p.qo_heads + qh;
  const std::int64_t cstride = static_cast<std::int64_t>(p.batch) * p.qo_heads;
  const bool qbf = p.q_bf16 != 0;
  float mx = -INFINITY;
  for (int c = 0; c < n; ++c) mx = fmaxf(mx, p.part_lse[c * cstride + row]);
  float wsum = 0.0f;
  for (int c = 0; c < n; ++c) wsum += exp2f(p.part_lse[c * cstride + row] - mx);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float o = 0.0f;
    for (int c = 0; c < n; ++c) {
      o += exp2f(p.part_lse[c * cstride + row] - mx) * p.part_o[(c * cstride + row) * D + d];
    }
    store_o(p.out, row * D + d, n == 0 ? 0.0f : o / wsum, qbf);
  }
  if (threadIdx.x == 0) {
    const float lse2 = n == 0 ? -INFINITY : mx + __log2f(wsum);
    p.final_lse[row] = lse2;
    if (p.lse_out != nullptr) p.lse_out[row] = n == 0 ? -INFINITY : lse2 * 0.69314718055994531f;
  }
}

/// Attention mass: a thread per (sequence, kv head, position).
__global__ void __launch_bounds__(128) mass_kernel(const decode_params p) {
  wait_for_previous_grid();
  const std::int64_t pos = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int b = blockIdx.y;
  const int h = blockIdx.z;
  const int table = h * p.table_head_stride + b;
  const int npages = p.indptr[table + 1] - p.indptr[table];
  const int L = npages <= 0 ? 0 : (npages - 1) * p.page_size + p.last_page_len[table];
  if (pos >= L || pos >= p.score_stride) return;
  float m = 0.0f;
  for (int g = 0; g < p.group; ++g) {
    const std::int64_t row = static_cast<std::int64_t>(b) * p.qo_heads + h * p.group + g;
    m += exp2f(p.scores[row * p.score_stride + pos] - p.final_lse[row]);
  }
  p.mass[b * p.mass_seq_stride + h * p.mass_head_stride + pos] += m;
}

/// The quantized kernel's shared-memory attributes (once per kernel): room for its ring beyond
/// 48 KiB, and the largest shared-memory carveout (its loads bypass L1).
template <int D, int F>
cudaError_t qdecode_prepare() {
  static const cudaError_t e = [] {
    cudaError_t r = cudaFuncSetAttribute(qdecode_kernel<D, F>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         qring<D, F>::smem_bytes);
    if (r == cudaSuccess) {
      r = cudaFuncSetAttribute(qdecode_kernel<D, F>,
                               cudaFuncAttributePreferredSharedMemoryCarveout,
                               cudaSharedmemCarveoutMaxShared);
    }
    return r;
  }();
  return e;
}

/// Whether launch<D, F> runs the tensor-core kernel (quantized pages; f16 ones of head_dim 128).
template <int D, int F>
constexpr bool uses_qdecode() {
  return F >= 2 || (F == 0 && D == 128 && KVCACHE_F16_MMA);
}

/// The f16 / bf16 kernel's shared-memory attribute (once per kernel).
template <int D, int F>
cudaError_t decode_prepare() {
  static const cudaError_t e = cudaFuncSetAttribute(
      decode_kernel<D, F>, cudaFuncAttributeMaxDynamicSharedMemorySize, tile_traits<D, F>::smem_bytes);
  return e;
}

template <int D, int F>
cudaError_t launch(const decode_params& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.max_chunks), static_cast<unsigned>(p.batch),
                  static_cast<unsigned>(p.kv_heads * p.subgroups));
  if constexpr (uses_qdecode<D, F>()) {  // the tensor-core kernel (paged_decode_mma.cuh)
    const cudaError_t attr = qdecode_prepare<D, F>();
    if (attr != cudaSuccess) return attr;
    qdecode_kernel<D, F><<<grid, kThreads, qring<D, F>::smem_bytes, stream>>>(p);
    return cudaGetLastError();
  } else {
    const cudaError_t attr = decode_prepare<D, F>();
    if (attr != cudaSuccess) return attr;
    decode_kernel<D, F><<<grid, kThreads, tile_traits<D, F>::smem_bytes, stream>>>(p);
    return cudaGetLastError();
  }
}

template <int D>
cudaError_t launch_format(const decode_params& p, decode_format f, cudaStream_t s) {
  switch (f) {
    case decode_format::f16: return launch<D, 0>(p, s);
    case decode_format::bf16: return launch<D, 1>(p, s);
    case decode_format::int8: return launch<D, 2>(p, s);
    case decode_format::fp8: return launch<D, 3>(p, s);
    case decode_format::kivi2: return launch<D, 4>(p, s);
    case decode_format::kivi4: return launch<D, 5>(p, s);
  }
  return cudaErrorInvalidValue;
}

/// Blocks of the kernel launch<D, F> runs that fit one multiprocessor (negative: -error).
template <int D, int F>
int blocks_per_sm_of() {
  int n = 0;
  cudaError_t e;
  if constexpr (uses_qdecode<D, F>()) {
    e = qdecode_prepare<D, F>();
    if (e == cudaSuccess) {
      e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, qdecode_kernel<D, F>, kThreads,
                                                        qring<D, F>::smem_bytes);
    }
  } else {
    e = decode_prepare<D, F>();
    if (e == cudaSuccess) {
      e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_kernel<D, F>, kThreads,
                                                        tile_traits<D, F>::smem_bytes);
    }
  }
  return e == cudaSuccess ? n : -static_cast<int>(e);
}

template <int D>
int blocks_per_sm(decode_format f) {
  switch (f) {
    case decode_format::f16: return blocks_per_sm_of<D, 0>();
    case decode_format::bf16: return blocks_per_sm_of<D, 1>();
    case decode_format::int8: return blocks_per_sm_of<D, 2>();
    case decode_format::fp8: return blocks_per_sm_of<D, 3>();
    case decode_format::kivi2: return blocks_per_sm_of<D, 4>();
    case decode_format::kivi4: return blocks_per_sm_of<D, 5>();
  }
  return -static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace

cudaError_t decode_blocks_per_sm(decode_format format, int head_dim, int* blocks) {
  // cached per (head dim, format): the kernels' resources do not change at run time
  static std::atomic<int> cache[2][6] = {};
  const int fi = static_cast<int>(format);
  if (fi < 0 || fi > 5) return cudaErrorInvalidValue;
  std::atomic<int>& c = cache[head_dim == 64 ? 0 : 1][fi];
  int n = c.load(std::memory_order_relaxed);
  if (n <= 0) {
    n = head_dim == 64 ? blocks_per_sm<64>(format) : blocks_per_sm<128>(format);
    if (n < 0) return static_cast<cudaError_t>(-n);
    c.store(n, std::memory_order_relaxed);
  }
  *blocks = n;
  return cudaSuccess;
}

/// Whether the merge / mass kernels may be launched with programmatic dependent launch: the
/// device is sm_90 or newer and the kernels were compiled for it (griddepcontrol.wait present:
/// a build for older architectures leaves it out). Cached after the first call (one device
/// kind per process is assumed, as for the occupancy cache).
bool pdl_ok() {
  static std::atomic<int> cache{0};  // 0 unknown, 1 yes, 2 no
  int c = cache.load(std::memory_order_relaxed);
  if (c == 0) {
    int dev = 0, major = 0;
    cudaFuncAttributes fa{};
    const bool yes = cudaGetDevice(&dev) == cudaSuccess &&
                     cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) ==
                         cudaSuccess &&
                     major >= 9 && cudaFuncGetAttributes(&fa, merge_kernel) == cudaSuccess &&
                     fa.ptxVersion >= 90 && cudaFuncGetAttributes(&fa, mass_kernel) == cudaSuccess &&
                     fa.ptxVersion >= 90;
    c = yes ? 1 : 2;
    cache.store(c, std::memory_order_relaxed);
  }
  return c == 1;
}

cudaError_t launch_paged_decode(const decode_params& p, decode_format format, int head_dim,
                                cudaStream_t stream) {
  if (p.batch == 0) return cudaSuccess;
  cudaError_t e = head_dim == 64 ? launch_format<64>(p, format, stream)
                                 : launch_format<128>(p, format, stream);
  if (e != cudaSuccess) return e;
  // the merge and the mass kernels with programmatic dependent launch: their launch overlaps the
  // end of the kernel before them (they wait for it first thing: wait_for_previous_grid)
  auto launch_after = [&](auto kernel, dim3 grid, auto... args) {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = dim3(128);
    cfg.dynamicSmemBytes = 0;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl_ok() ? 1 : 0;  // else an ordinary launch (the wait is then a no-op)
    return cudaLaunchKernelEx(&cfg, kernel, args...);
  };
  if (p.split) {
    e = launch_after(merge_kernel,
                     dim3(static_cast<unsigned>(p.batch), static_cast<unsigned>(p.qo_heads)), p,
                     head_dim);
    if (e != cudaSuccess) return e;
  }
  if (p.mass != nullptr && p.score_stride > 0) {
    const auto blocks = static_cast<unsigned>((p.score_stride + 127) / 128);
    e = launch_after(mass_kernel,
                     dim3(blocks, static_cast<unsigned>(p.batch), static_cast<unsigned>(p.kv_heads)),
                     p);
  }
  return e;
}

}  // namespace kvcache::detail
