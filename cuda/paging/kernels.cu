// CUDA implementations of the paging kernels: append_kv (scatter new tokens into their slots),
// gather_kv (paged to contiguous) and copy_pages (whole-page copies), with their launchers.
//
// All three are copies, so they are written for bandwidth: each thread moves W-byte vectors
// (W = 16 when every row, page and base pointer allows it, else 8, 4 or 2), a warp's lanes touch
// consecutive vectors, each thread issues 2 x kUnroll independent loads (K and V) before its
// stores, and the grid is one full wave (SM count x resident blocks, cached per device) striding
// over the work.
// Index decoding uses multiply-high division (fast_divmod.cuh).
//
// No fmt here (nvcc cannot compile it): the argument checks and the throws live in the host
// library (kvcache/paging/detail/kernel_checks.hpp).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "kvcache/paging/detail/kernel_checks.hpp"
#include "kvcache/paging/kernels.hpp"
#include "paging/fast_divmod.cuh"

namespace kvcache {
namespace detail {
namespace {

constexpr int kThreads = 256;  ///< threads per block (a multiple of 32: warps are whole)
constexpr int kUnroll = 4;     ///< chunks per thread per round (x2: K and V loads in flight)
constexpr int kMinBlocks = 4;  ///< resident blocks per SM the registers must allow (append: 3)

// ---- vectors ----------------------------------------------------------------------------------
template <int W>
struct vec;
template <>
struct vec<16> {
  using type = uint4;
};
template <>
struct vec<8> {
  using type = uint2;
};
template <>
struct vec<4> {
  using type = unsigned int;
};
template <>
struct vec<2> {
  using type = unsigned short;
};
template <int W>
using vec_t = typename vec<W>::type;

/// Streaming load (evict-first: every source byte is read once).
template <int W>
__device__ __forceinline__ vec_t<W> load_once(const std::byte* p) {
  return __ldcs(reinterpret_cast<const vec_t<W>*>(p));
}
template <int W>
__device__ __forceinline__ void store(std::byte* p, vec_t<W> v) {
  *reinterpret_cast<vec_t<W>*>(p) = v;
}

/// The widest vector (16, 8, 4 or 2 bytes) dividing every offset and address OR-ed into `bits`.
/// The checks guarantee 2-byte alignment (elements of 2 or 4 bytes).
int pick_width(std::uint64_t bits) {
  if (bits % 16 == 0) return 16;
  if (bits % 8 == 0) return 8;
  if (bits % 4 == 0) return 4;
  return 2;
}
std::uint64_t bits_of_ptr(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

// ---- CUDA runtime helpers ---------------------------------------------------------------------
#define KVCACHE_PAGING_CUDA(who, call)                                                       \
  do {                                                                                       \
    const cudaError_t kvcache_status_ = (call);                                              \
    if (kvcache_status_ != cudaSuccess) {                                                    \
      (void)cudaGetLastError();                                                              \
      ::kvcache::detail::throw_cuda_failure((who), #call, cudaGetErrorName(kvcache_status_), \
                                            cudaGetErrorString(kvcache_status_), __FILE__,   \
                                            __LINE__);                                       \
    }                                                                                        \
  } while (0)

int current_device(const char* who) {
  int dev = 0;
  KVCACHE_PAGING_CUDA(who, cudaGetDevice(&dev));
  return dev;
}

/// Per-(key, device) integers computed once: the SM count, each kernel's resident blocks per SM,
/// pageable-memory access. A mutex and a short vector: a few entries per process.
template <class F>
int cached(const void* key, int dev, F&& compute) {
  struct entry {
    const void* key;
    int dev;
    int value;
  };
  static std::mutex m;
  static std::vector<entry> entries;
  {
    std::lock_guard<std::mutex> lock(m);
    for (const entry& e : entries)
      if (e.key == key && e.dev == dev) return e.value;
  }
  const int value = compute();
  std::lock_guard<std::mutex> lock(m);
  entries.push_back({key, dev, value});
  return value;
}
const char sm_count_key = 0;
const char pageable_key = 0;

int sm_count(int dev, const char* who) {
  return cached(&sm_count_key, dev, [&] {
    int n = 0;
    KVCACHE_PAGING_CUDA(who, cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return std::max(n, 1);
  });
}

bool pageable_memory_access(int dev, const char* who) {
  return cached(&pageable_key, dev, [&] {
           int v = 0;
           KVCACHE_PAGING_CUDA(who,
                               cudaDeviceGetAttribute(&v, cudaDevAttrPageableMemoryAccess, dev));
           return v;
         }) != 0;
}

/// Whether the host may read `p` now (pinned or, with HMM, pageable memory). Throws when the
/// device cannot dereference `p`.
bool host_readable(const void* p, int dev, const char* who, const char* what) {
  cudaPointerAttributes a{};
  KVCACHE_PAGING_CUDA(who, cudaPointerGetAttributes(&a, p));
  switch (a.type) {
    case cudaMemoryTypeDevice:
      return false;
    case cudaMemoryTypeManaged:
      return false;  // do not fault pages over to check them
    case cudaMemoryTypeHost:
      return true;  // pinned: mapped for the device
    default:
      if (!pageable_memory_access(dev, who)) throw_not_device_accessible(who, what, p);
      return true;
  }
}
void require_device_accessible(const void* p, int dev, const char* who, const char* what) {
  (void)host_readable(p, dev, who, what);
}

/// Launches `kernel` over min(blocks_needed, one full wave) blocks of kThreads on `st` and checks
/// the launch.
template <class Params>
void launch(void (*kernel)(Params), const Params& params, std::uint64_t blocks_needed, int dev,
            cudaStream_t st, const char* who, const char* name) {
  const int resident = cached(reinterpret_cast<const void*>(kernel), dev, [&] {
    int n = 0;
    KVCACHE_PAGING_CUDA(who,
                        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kThreads, 0));
    return std::max(n, 1);
  });
  const std::uint64_t wave = static_cast<std::uint64_t>(sm_count(dev, who)) * resident;
  const auto blocks =
      static_cast<unsigned>(std::max<std::uint64_t>(1, std::min(blocks_needed, wave)));
  kernel<<<blocks, kThreads, 0, st>>>(params);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess)
    throw_cuda_failure(who, name, cudaGetErrorName(status), cudaGetErrorString(status), __FILE__,
                       __LINE__);
}

std::uint64_t blocks_for(std::uint64_t chunks) {
  constexpr std::uint64_t per_block = std::uint64_t{kThreads} * kUnroll;
  return (chunks + per_block - 1) / per_block;
}

// ---- append_kv --------------------------------------------------------------------------------
struct append_params {
  std::byte* pool;
  std::int64_t layer_stride;  // bytes
  std::int64_t v_off;
  std::int64_t page_bytes;
  std::int64_t row_bytes;
  std::int32_t page_size;
  std::int32_t heads_per_page;
  std::int32_t first_layer;
  bool hnd;
  const std::byte* in_k;
  const std::byte* in_v;
  const std::int64_t* slots;
  std::int64_t slot_layer_stride;
  std::int64_t slot_head_stride;
  std::int64_t slot_limit;      // num_pages * page_size
  std::uint64_t chunks_per_kv;  // n_layers * num_tokens * kv_heads * (row_bytes / W)
  fast_divmod by_row_chunks;    // row_bytes / W
  fast_divmod by_heads;         // input kv_heads
  fast_divmod by_tokens;        // num_tokens
  fast_divmod by_page_size;
};

/// Flat over (layer, token, head, W-byte chunk of the row), chunk fastest: the input is read in
/// order and a warp writes whole rows (whole tokens under NHD). Each chunk moves its K and its V:
/// one index decode and one slot load serve two loads and two stores.
template <int W>
__global__ void __launch_bounds__(kThreads, kMinBlocks - 1)
    append_kv_kernel(const append_params p) {
  const std::uint64_t total = p.chunks_per_kv;
  const std::uint64_t stride = static_cast<std::uint64_t>(gridDim.x) * blockDim.x;
  for (std::uint64_t base = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       base < total; base += kUnroll * stride) {
    vec_t<W> kval[kUnroll], vval[kUnroll];
    std::byte* dst[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      dst[u] = nullptr;
      const std::uint64_t g = base + u * stride;  // chunk index in the input
      if (g >= total) continue;
      std::uint64_t row, c, rest, h, l, i;
      p.by_row_chunks.divmod(g, row, c);
      p.by_heads.divmod(row, rest, h);
      p.by_tokens.divmod(rest, l, i);
      kval[u] = load_once<W>(p.in_k + g * W);
      vval[u] = load_once<W>(p.in_v + g * W);
      const std::int64_t s =
          p.slots[static_cast<std::int64_t>(l) * p.slot_layer_stride +
                  static_cast<std::int64_t>(h) * p.slot_head_stride + static_cast<std::int64_t>(i)];
      if (s < 0 || s >= p.slot_limit) continue;  // padding, or out of the pool: skipped
      std::uint64_t page, tok;
      p.by_page_size.divmod(static_cast<std::uint64_t>(s), page, tok);
      const std::int64_t head = p.heads_per_page == 1 ? 0 : static_cast<std::int64_t>(h);
      const std::int64_t in_page = p.hnd ? head * p.page_size + static_cast<std::int64_t>(tok)
                                         : static_cast<std::int64_t>(tok) * p.heads_per_page + head;
      dst[u] = p.pool + (p.first_layer + static_cast<std::int64_t>(l)) * p.layer_stride +
               static_cast<std::int64_t>(page) * p.page_bytes + in_page * p.row_bytes +
               static_cast<std::int64_t>(c) * W;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (dst[u] == nullptr) continue;
      store<W>(dst[u], kval[u]);
      store<W>(dst[u] + p.v_off, vval[u]);
    }
  }
}

// ---- gather_kv --------------------------------------------------------------------------------
struct gather_params {
  const std::byte* pool;  // K array of the gathered layer
  std::int64_t v_off;
  std::int64_t page_bytes;
  std::int64_t token_bytes;  // heads_per_page * row_bytes: one output row
  std::int32_t num_pages;
  std::int32_t page_size;
  std::int32_t num_tables;
  bool hnd;
  const std::int32_t* indptr;
  const std::int32_t* indices;
  const std::int32_t* last_page_len;
  const std::int64_t* out_offsets;
  std::byte* out_k;
  std::byte* out_v;
  std::uint64_t token_chunks;  // token_bytes / W
  std::uint64_t segments;      // per page: ceil(page_size * token_chunks / (32 kUnroll))
  fast_divmod by_segments;     // segments
  fast_divmod by_row_chunks;   // row_bytes / W (HND)
  fast_divmod by_heads;        // heads_per_page (HND)
};

/// Units of work: (page of the CSR, segment of 32 x kUnroll chunks), one per warp at a time, K
/// and V together. The number of pages is only known on the device (indptr[num_tables]), so
/// each warp takes a contiguous share of the units and finds the table of its page by binary
/// search over indptr, cached while the warp stays in the same table. Chunks are numbered in
/// output order, so the writes are contiguous; under NHD the reads are too (a page's first tokens
/// are one run).
template <int W>
__global__ void __launch_bounds__(kThreads, kMinBlocks) gather_kv_kernel(const gather_params p) {
  constexpr std::uint64_t seg_chunks = 32 * kUnroll;
  const auto lane = static_cast<std::uint64_t>(threadIdx.x & 31);
  const std::uint64_t warp =
      (static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const std::uint64_t warps = (static_cast<std::uint64_t>(gridDim.x) * blockDim.x) / 32;
  if (p.indices == nullptr) return;
  const std::int32_t first = p.indptr[0];
  const std::int32_t end = p.indptr[p.num_tables];
  if (first < 0 || end <= first) return;
  const std::uint64_t units = static_cast<std::uint64_t>(end - first) * p.segments;
  const std::uint64_t share = (units + warps - 1) / warps;
  const std::uint64_t u_begin = warp * share;
  const std::uint64_t u_end = u_begin + share < units ? u_begin + share : units;
  std::int32_t tb = 0, te = 0;  // pages [tb, te) of the cached table; empty: none cached
  std::int32_t tokens_last = 0;
  std::int64_t row0 = 0;
  for (std::uint64_t u = u_begin; u < u_end; ++u) {
    std::uint64_t pk, seg;
    p.by_segments.divmod(u, pk, seg);
    const std::int32_t k = first + static_cast<std::int32_t>(pk);
    if (k < tb || k >= te) {  // smallest t with indptr[t + 1] > k
      std::int32_t lo = 0, hi = p.num_tables - 1;
      while (lo < hi) {
        const std::int32_t mid = lo + (hi - lo) / 2;
        if (p.indptr[mid + 1] > k) {
          hi = mid;
        } else {
          lo = mid + 1;
        }
      }
      tb = p.indptr[lo];
      te = p.indptr[lo + 1];
      row0 = p.out_offsets[lo];
      const std::int32_t last = p.last_page_len[lo];
      tokens_last = last < 0 ? 0 : (last > p.page_size ? p.page_size : last);
      if (k < tb || k >= te || row0 < 0) {  // malformed tables: skip
        tb = te = 0;
        continue;
      }
    }
    const std::int32_t page = p.indices[k];
    if (page < 0 || page >= p.num_pages) continue;
    const std::int32_t tokens = k == te - 1 ? tokens_last : p.page_size;
    const std::uint64_t valid = static_cast<std::uint64_t>(tokens) * p.token_chunks;
    const std::byte* src = p.pool + static_cast<std::int64_t>(page) * p.page_bytes;
    const std::int64_t dst_off =
        (row0 + static_cast<std::int64_t>(k - tb) * p.page_size) * p.token_bytes;
    const std::uint64_t v0 = seg * seg_chunks + lane;
    vec_t<W> kval[kUnroll], vval[kUnroll];
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) {
      const std::uint64_t v = v0 + 32 * j;  // chunk in output order: (token, head, chunk)
      if (v >= valid) continue;
      std::uint64_t off = v;
      if (p.hnd) {
        std::uint64_t row, c, tok, head;
        p.by_row_chunks.divmod(v, row, c);
        p.by_heads.divmod(row, tok, head);
        off = (head * p.page_size + tok) * p.by_row_chunks.divisor + c;
      }
      kval[j] = load_once<W>(src + off * W);
      vval[j] = load_once<W>(src + p.v_off + off * W);
    }
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) {
      const std::uint64_t v = v0 + 32 * j;
      if (v >= valid) continue;
      store<W>(p.out_k + dst_off + v * W, kval[j]);
      store<W>(p.out_v + dst_off + v * W, vval[j]);
    }
  }
}

// ---- copy_pages -------------------------------------------------------------------------------
struct copy_params {
  std::byte* pool;
  std::int64_t layer_stride;
  std::int64_t v_off;
  std::int64_t page_bytes;
  std::int32_t num_pages;
  const page_copy* copies;
  std::uint64_t total;         // copies * arrays * page_chunks
  fast_divmod by_page_chunks;  // page_bytes / W
  fast_divmod by_arrays;       // layer arrays
};

/// Flat over (copy, layer array, W-byte chunk of the page), chunk fastest; each chunk moves
/// its K and its V.
template <int W>
__global__ void __launch_bounds__(kThreads, kMinBlocks) copy_pages_kernel(const copy_params p) {
  const std::uint64_t stride = static_cast<std::uint64_t>(gridDim.x) * blockDim.x;
  for (std::uint64_t base = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       base < p.total; base += kUnroll * stride) {
    vec_t<W> kval[kUnroll], vval[kUnroll];
    std::byte* dst[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      dst[u] = nullptr;
      const std::uint64_t f = base + u * stride;
      if (f >= p.total) continue;
      std::uint64_t r, c, i, a;
      p.by_page_chunks.divmod(f, r, c);
      p.by_arrays.divmod(r, i, a);
      const std::int32_t src_page = p.copies[i].src;
      const std::int32_t dst_page = p.copies[i].dst;
      if (src_page < 0 || src_page >= p.num_pages || dst_page < 0 || dst_page >= p.num_pages)
        continue;  // out of the pool: skipped
      std::byte* array =
          p.pool + static_cast<std::int64_t>(a) * p.layer_stride + static_cast<std::int64_t>(c) * W;
      const std::byte* src = array + static_cast<std::int64_t>(src_page) * p.page_bytes;
      kval[u] = load_once<W>(src);
      vval[u] = load_once<W>(src + p.v_off);
      dst[u] = array + static_cast<std::int64_t>(dst_page) * p.page_bytes;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (dst[u] == nullptr) continue;
      store<W>(dst[u], kval[u]);
      store<W>(dst[u] + p.v_off, vval[u]);
    }
  }
}

}  // namespace
}  // namespace detail

// ---- launchers --------------------------------------------------------------------------------
void append_kv_cuda(const paged_kv_view& pool, const kv_input_view& input,
                    const slot_mapping_view& slots, stream_view s) {
  using namespace detail;
  constexpr const char* who = "append_kv_cuda";
  check_append_shapes(pool, input, slots, who);
  if (input.num_tokens == 0 || input.n_layers == 0) return;
  const int dev = current_device(who);
  require_device_accessible(pool.data, dev, who, "the pool");
  require_device_accessible(input.k, dev, who, "input K");
  require_device_accessible(input.v, dev, who, "input V");
  if (host_readable(slots.slots, dev, who, "the slot mapping"))
    check_append_contents(pool, input, slots, who);

  const std::int64_t row = pool.row_bytes();
  const int w = pick_width(static_cast<std::uint64_t>(row | pool.page_bytes | pool.v_offset_bytes |
                                                      pool.layer_stride_bytes) |
                           bits_of_ptr(pool.data) | bits_of_ptr(input.k) | bits_of_ptr(input.v));
  append_params p{};
  p.pool = pool.data;
  p.layer_stride = pool.layer_stride_bytes;
  p.v_off = pool.v_offset_bytes;
  p.page_bytes = pool.page_bytes;
  p.row_bytes = row;
  p.page_size = pool.page_size;
  p.heads_per_page = pool.heads_per_page;
  p.first_layer = input.first_layer;
  p.hnd = pool.order == kv_order::hnd;
  p.in_k = input.k;
  p.in_v = input.v;
  p.slots = slots.slots;
  p.slot_layer_stride = slots.layer_stride;
  p.slot_head_stride = slots.head_stride;
  p.slot_limit = static_cast<std::int64_t>(pool.num_pages) * pool.page_size;
  const auto row_chunks = static_cast<std::uint64_t>(row / w);
  p.chunks_per_kv = static_cast<std::uint64_t>(input.n_layers) *
                    static_cast<std::uint64_t>(input.num_tokens) *
                    static_cast<std::uint64_t>(input.kv_heads) * row_chunks;
  p.by_row_chunks = fast_divmod(row_chunks);
  p.by_heads = fast_divmod(static_cast<std::uint64_t>(input.kv_heads));
  p.by_tokens = fast_divmod(static_cast<std::uint64_t>(input.num_tokens));
  p.by_page_size = fast_divmod(static_cast<std::uint64_t>(pool.page_size));
  const auto st = static_cast<cudaStream_t>(s.handle());
  const std::uint64_t blocks = blocks_for(p.chunks_per_kv);
  switch (w) {
    case 16:
      launch(append_kv_kernel<16>, p, blocks, dev, st, who, "append_kv_kernel<16>");
      break;
    case 8:
      launch(append_kv_kernel<8>, p, blocks, dev, st, who, "append_kv_kernel<8>");
      break;
    case 4:
      launch(append_kv_kernel<4>, p, blocks, dev, st, who, "append_kv_kernel<4>");
      break;
    default:
      launch(append_kv_kernel<2>, p, blocks, dev, st, who, "append_kv_kernel<2>");
      break;
  }
}

void gather_kv_cuda(const paged_kv_view& pool, std::int32_t layer, const page_table_view& tables,
                    const std::int64_t* out_offsets, std::byte* out_k, std::byte* out_v,
                    stream_view s) {
  using namespace detail;
  constexpr const char* who = "gather_kv_cuda";
  check_gather_shapes(pool, layer, tables, out_offsets, out_k, out_v, who);
  if (tables.num_tables == 0) return;
  const int dev = current_device(who);
  require_device_accessible(pool.data, dev, who, "the pool");
  require_device_accessible(out_k, dev, who, "out_k");
  require_device_accessible(out_v, dev, who, "out_v");
  bool readable = host_readable(tables.indptr, dev, who, "the tables' indptr");
  readable = host_readable(tables.last_page_len, dev, who, "the tables' last_page_len") && readable;
  readable = host_readable(out_offsets, dev, who, "out_offsets") && readable;
  if (tables.indices != nullptr)
    readable = host_readable(tables.indices, dev, who, "the tables' indices") && readable;
  if (readable) check_gather_contents(pool, tables, out_offsets, who);

  const std::int64_t row = pool.row_bytes();
  const std::int64_t token_bytes = row * pool.heads_per_page;
  const bool hnd = pool.order == kv_order::hnd;
  // NHD copies a page's first tokens as one run (any width dividing a token's bytes); HND moves
  // head rows.
  const std::int64_t grain = hnd ? row : token_bytes;
  const std::byte* layer_base = pool.data + layer * pool.layer_stride_bytes;
  const int w =
      pick_width(static_cast<std::uint64_t>(grain | pool.page_bytes | pool.v_offset_bytes) |
                 bits_of_ptr(layer_base) | bits_of_ptr(out_k) | bits_of_ptr(out_v));
  gather_params p{};
  p.pool = layer_base;
  p.v_off = pool.v_offset_bytes;
  p.page_bytes = pool.page_bytes;
  p.token_bytes = token_bytes;
  p.num_pages = pool.num_pages;
  p.page_size = pool.page_size;
  p.num_tables = tables.num_tables;
  p.hnd = hnd;
  p.indptr = tables.indptr;
  p.indices = tables.indices;
  p.last_page_len = tables.last_page_len;
  p.out_offsets = out_offsets;
  p.out_k = out_k;
  p.out_v = out_v;
  p.token_chunks = static_cast<std::uint64_t>(token_bytes / w);
  constexpr std::uint64_t seg_chunks = 32 * kUnroll;
  p.segments =
      (static_cast<std::uint64_t>(pool.page_size) * p.token_chunks + seg_chunks - 1) / seg_chunks;
  p.by_segments = fast_divmod(p.segments);
  // HND only (under NHD a vector may span rows, and row / w may be 0)
  p.by_row_chunks = fast_divmod(hnd ? static_cast<std::uint64_t>(row / w) : 1);
  p.by_heads = fast_divmod(static_cast<std::uint64_t>(pool.heads_per_page));
  const auto st = static_cast<cudaStream_t>(s.handle());
  // The work is only known on the device: one full wave.
  const std::uint64_t blocks = ~std::uint64_t{0};
  switch (w) {
    case 16:
      launch(gather_kv_kernel<16>, p, blocks, dev, st, who, "gather_kv_kernel<16>");
      break;
    case 8:
      launch(gather_kv_kernel<8>, p, blocks, dev, st, who, "gather_kv_kernel<8>");
      break;
    case 4:
      launch(gather_kv_kernel<4>, p, blocks, dev, st, who, "gather_kv_kernel<4>");
      break;
    default:
      launch(gather_kv_kernel<2>, p, blocks, dev, st, who, "gather_kv_kernel<2>");
      break;
  }
}

void copy_pages_cuda(const paged_kv_view& pool, const page_copy* copies, std::int32_t n,
                     stream_view s) {
  using namespace detail;
  constexpr const char* who = "copy_pages_cuda";
  check_copy_shapes(pool, copies, n, who);
  if (n == 0) return;
  const int dev = current_device(who);
  require_device_accessible(pool.data, dev, who, "the pool");
  if (host_readable(copies, dev, who, "the copy pairs")) check_copy_contents(pool, copies, n, who);

  const int w = pick_width(
      static_cast<std::uint64_t>(pool.page_bytes | pool.v_offset_bytes | pool.layer_stride_bytes) |
      bits_of_ptr(pool.data));
  const std::int32_t arrays = pool.layer_stride_bytes == 0 ? 1 : pool.layers;
  copy_params p{};
  p.pool = pool.data;
  p.layer_stride = pool.layer_stride_bytes;
  p.v_off = pool.v_offset_bytes;
  p.page_bytes = pool.page_bytes;
  p.num_pages = pool.num_pages;
  p.copies = copies;
  const auto page_chunks = static_cast<std::uint64_t>(pool.page_bytes / w);
  p.total = static_cast<std::uint64_t>(n) * static_cast<std::uint64_t>(arrays) * page_chunks;
  p.by_page_chunks = fast_divmod(page_chunks);
  p.by_arrays = fast_divmod(static_cast<std::uint64_t>(arrays));
  const auto st = static_cast<cudaStream_t>(s.handle());
  const std::uint64_t blocks = blocks_for(p.total);
  switch (w) {
    case 16:
      launch(copy_pages_kernel<16>, p, blocks, dev, st, who, "copy_pages_kernel<16>");
      break;
    case 8:
      launch(copy_pages_kernel<8>, p, blocks, dev, st, who, "copy_pages_kernel<8>");
      break;
    case 4:
      launch(copy_pages_kernel<4>, p, blocks, dev, st, who, "copy_pages_kernel<4>");
      break;
    default:
      launch(copy_pages_kernel<2>, p, blocks, dev, st, who, "copy_pages_kernel<2>");
      break;
  }
}

}  // namespace kvcache
