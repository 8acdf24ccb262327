// The CUDA paging kernels (append_kv_cuda, gather_kv_cuda, copy_pages_cuda) against their host
// implementations: fresh random shapes and data, every geometry, NHD and HND, 2- and 4-byte
// elements, rows of 16-byte multiples and not (head_dim 72, 40, 7, 3...), page sizes 1, 16 and
// 64, random page permutations, -1 padding, shifted pointers (narrower vectors), cases large
// enough for several grid-stride rounds. Destinations are filled with 0xFF bytes (NaN patterns)
// on both sides, so a slot the kernel misses, or one it should not write, differs; results are
// compared byte for byte. Plus: device-resident bad indices are skipped, host-readable ones are
// checked before the launch, and shape errors are thrown before it.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kvcache/memory/buffer.hpp"
#include "kvcache/memory/copy.hpp"
#include "kvcache/memory/stream.hpp"
#include "kvcache/paging/kernels.hpp"
#include "support/catch.hpp"

using namespace kvcache;

namespace {

enum class geo { span_layers, per_layer, per_head };
const char* name_of(geo g) {
  return g == geo::span_layers ? "span_layers" : g == geo::per_layer ? "per_layer" : "per_head";
}
constexpr geo all_geos[] = {geo::span_layers, geo::per_layer, geo::per_head};
constexpr kv_order all_orders[] = {kv_order::nhd, kv_order::hnd};
constexpr dtype all_types[] = {dtype::f32, dtype::f16, dtype::bf16};

struct shape {
  geo g = geo::span_layers;
  kv_order order = kv_order::nhd;
  dtype type = dtype::f16;
  std::int32_t layers = 1, kv_heads = 1, head_dim = 1, page_size = 1, num_pages = 1;
  std::int64_t shift = 0;  // bytes the pool (and the inputs/outputs) start after an aligned base

  std::int64_t elem() const { return type == dtype::f32 ? 4 : 2; }
  std::int32_t hpp() const { return g == geo::per_head ? 1 : kv_heads; }
  std::int32_t arrays() const { return g == geo::span_layers ? layers : 1; }
  std::int64_t page_bytes() const { return std::int64_t{page_size} * hpp() * head_dim * elem(); }
  std::int64_t pool_bytes() const { return 2 * arrays() * num_pages * page_bytes(); }
  std::string str() const {
    return std::string(name_of(g)) + " " + kvcache::name_of(order) + " " +
           std::string(kvcache::name_of(type)) + " layers=" + std::to_string(layers) +
           " kv_heads=" + std::to_string(kv_heads) + " head_dim=" + std::to_string(head_dim) +
           " page_size=" + std::to_string(page_size) + " pages=" + std::to_string(num_pages) +
           " shift=" + std::to_string(shift);
  }
};

paged_kv_view make_view(const shape& s, std::byte* data) {
  paged_kv_view v;
  v.data = data;
  v.page_bytes = s.page_bytes();
  v.v_offset_bytes = s.num_pages * v.page_bytes;
  v.layer_stride_bytes = s.g == geo::span_layers ? 2 * s.num_pages * v.page_bytes : 0;
  v.num_pages = s.num_pages;
  v.layers = s.layers;
  v.page_size = s.page_size;
  v.heads_per_page = s.hpp();
  v.head_dim = s.head_dim;
  v.elem_bytes = static_cast<std::int32_t>(s.elem());
  v.order = s.order;
  v.type = s.type;
  return v;
}

/// Host bytes (8-byte aligned, 64 guard bytes past the end) and their device twin.
struct twin {
  std::vector<std::uint64_t> host;
  buffer<std::uint64_t, cuda_space> dev;
  std::int64_t shift = 0;
  twin(std::int64_t bytes, std::int64_t shift_bytes)
      : host(static_cast<std::size_t>((bytes + shift_bytes) / 8 + 9)),
        dev(host.size()),
        shift(shift_bytes) {
    std::memset(host.data(), 0xFF, host.size() * 8);
  }
  void randomize(std::mt19937_64& rng) {
    for (auto& w : host) w = rng();
  }
  std::byte* h() { return reinterpret_cast<std::byte*>(host.data()) + shift; }
  std::byte* d() { return reinterpret_cast<std::byte*>(dev.data()) + shift; }
  void upload(stream_view s) {
    copy(dev.view(), buffer_view<const std::uint64_t, host_space>(host.data(), host.size()), s);
  }
  /// The device bytes, whole (guard included).
  std::vector<std::uint64_t> download(stream_view s) {
    std::vector<std::uint64_t> out(host.size());
    copy(buffer_view<std::uint64_t, host_space>(out.data(), out.size()),
         buffer_view<const std::uint64_t, cuda_space>(dev.data(), dev.size()), s);
    synchronize(s);
    return out;
  }
};

/// Reports the first differing byte.
void require_same(const std::vector<std::uint64_t>& gpu, const std::vector<std::uint64_t>& host,
                  const char* what) {
  REQUIRE(gpu.size() == host.size());
  const auto* a = reinterpret_cast<const unsigned char*>(gpu.data());
  const auto* b = reinterpret_cast<const unsigned char*>(host.data());
  const std::size_t n = gpu.size() * 8;
  const auto [pa, pb] = std::mismatch(a, a + n, b);
  if (pa != a + n) {
    FAIL(what << ": first difference at byte " << (pa - a) << " of " << n << ": GPU " << int{*pa}
              << ", host " << int{*pb});
  }
}

template <class T>
buffer<T, cuda_space> to_device(const std::vector<T>& v, stream_view s) {
  buffer<T, cuda_space> d(std::max<std::size_t>(v.size(), 1));
  if (!v.empty())
    copy(d.view().subview(0, v.size()), buffer_view<const T, host_space>(v.data(), v.size()), s);
  return d;
}
template <class T>
buffer<T, pinned_host_space> to_pinned(const std::vector<T>& v) {
  buffer<T, pinned_host_space> p(std::max<std::size_t>(v.size(), 1));
  std::copy(v.begin(), v.end(), p.data());
  return p;
}

std::int64_t uni(std::mt19937_64& rng, std::int64_t lo, std::int64_t hi) {
  return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
}

/// A random shape whose pool stays near `budget` bytes; `head_dim` and `page_size` as given.
shape random_shape(std::mt19937_64& rng, geo g, kv_order o, dtype t, std::int32_t head_dim,
                   std::int32_t page_size, std::int64_t budget = 4 << 20) {
  shape s;
  s.g = g;
  s.order = o;
  s.type = t;
  s.layers = static_cast<std::int32_t>(uni(rng, 1, 4));
  const std::int32_t heads[] = {1, 2, 3, 4, 8};
  s.kv_heads = heads[uni(rng, 0, 4)];
  s.head_dim = head_dim;
  s.page_size = page_size;
  const std::int64_t per_page = 2 * s.arrays() * s.page_bytes();
  s.num_pages = static_cast<std::int32_t>(std::clamp<std::int64_t>(budget / per_page, 2, 512));
  s.num_pages = static_cast<std::int32_t>(uni(rng, std::max(2, s.num_pages / 2), s.num_pages));
  const std::int64_t shifts[] = {0, 0, s.elem(), 8};
  s.shift = shifts[uni(rng, 0, 3)];
  return s;
}

/// (head_dim, page_size) pairs every geometry x order x dtype runs: 16-byte rows and not,
/// page sizes 1, 16 and 64.
struct dims {
  std::int32_t head_dim, page_size;
};
constexpr dims all_dims[] = {{128, 16}, {72, 64}, {40, 1}, {7, 16},
                             {3, 64},   {4, 1},   {64, 2}, {1, 4}};

// ---- append ---------------------------------------------------------------------------------
struct append_case {
  kv_input_view in;
  slot_mapping_view map;
  std::vector<std::int64_t> slots;
  std::int64_t in_bytes = 0;
};

/// Distinct slots (random permutation of the pool's slots) within what lands in one layer array,
/// about 15% -1 padding, strides with gaps.
append_case make_append(const shape& s, std::mt19937_64& rng, std::int64_t max_tokens = 300) {
  append_case c;
  const std::int64_t slots_total = std::int64_t{s.num_pages} * s.page_size;
  c.in.n_layers = static_cast<std::int32_t>(uni(rng, 1, s.layers));
  c.in.first_layer = static_cast<std::int32_t>(uni(rng, 0, s.layers - c.in.n_layers));
  c.in.kv_heads = s.kv_heads;
  const std::int64_t maps = s.g == geo::span_layers ? 1
                            : s.g == geo::per_layer ? c.in.n_layers
                                                    : std::int64_t{c.in.n_layers} * s.kv_heads;
  const std::int64_t most = std::clamp<std::int64_t>(slots_total / maps, 1, max_tokens);
  c.in.num_tokens = static_cast<std::int32_t>(uni(rng, std::max<std::int64_t>(1, most / 2), most));
  const std::int64_t n = c.in.num_tokens;
  std::vector<std::int64_t> perm(static_cast<std::size_t>(slots_total));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  const std::int64_t gap = uni(rng, 0, 5);
  if (s.g == geo::per_layer) {
    c.map.layer_stride = n + gap;
  } else if (s.g == geo::per_head) {
    c.map.head_stride = n + gap;
    c.map.layer_stride = s.kv_heads * c.map.head_stride + uni(rng, 0, 3);
  }
  const std::int64_t len =
      (c.in.n_layers - 1) * c.map.layer_stride + (s.kv_heads - 1) * c.map.head_stride + n;
  c.slots.assign(static_cast<std::size_t>(len), -3);
  std::size_t next = 0;
  const std::int32_t ml = s.g == geo::span_layers ? 1 : c.in.n_layers;
  const std::int32_t mh = s.g == geo::per_head ? s.kv_heads : 1;
  for (std::int32_t l = 0; l < ml; ++l)
    for (std::int32_t h = 0; h < mh; ++h)
      for (std::int64_t i = 0; i < n; ++i)
        c.slots[static_cast<std::size_t>(l * c.map.layer_stride + h * c.map.head_stride + i)] =
            (uni(rng, 0, 99) < 15 || next == perm.size()) ? -1 : perm[next++];
  c.map.num_tokens = c.in.num_tokens;
  c.in_bytes = std::int64_t{c.in.n_layers} * n * s.kv_heads * s.head_dim * s.elem();
  return c;
}

/// Runs append on both sides. `device_slots` (same length as c.slots) is what the GPU reads;
/// c.slots what the host reads (they differ only where a test plants out-of-range slots).
void run_append(const shape& s, append_case& c, std::mt19937_64& rng, stream_view st,
                const std::vector<std::int64_t>* device_slots = nullptr) {
  INFO(s.str() << " first_layer=" << c.in.first_layer << " n_layers=" << c.in.n_layers
               << " tokens=" << c.in.num_tokens << " layer_stride=" << c.map.layer_stride
               << " head_stride=" << c.map.head_stride);
  twin pool(s.pool_bytes(), s.shift);  // 0xFF
  twin k(c.in_bytes, s.shift), v(c.in_bytes, s.shift);
  k.randomize(rng);
  v.randomize(rng);
  pool.upload(st);
  k.upload(st);
  v.upload(st);
  auto d_slots = to_device(device_slots != nullptr ? *device_slots : c.slots, st);

  kv_input_view in = c.in;
  slot_mapping_view map = c.map;
  in.k = k.d();
  in.v = v.d();
  map.slots = d_slots.data();
  append_kv_cuda(make_view(s, pool.d()), in, map, st);
  const auto gpu = pool.download(st);

  in.k = k.h();
  in.v = v.h();
  map.slots = c.slots.data();
  append_kv_host(make_view(s, pool.h()), in, map);
  require_same(gpu, pool.host, "append_kv pool");
}

// ---- gather ---------------------------------------------------------------------------------
struct gather_case {
  std::vector<std::int32_t> indptr, indices, last;
  std::vector<std::int64_t> offsets;
  std::int64_t rows = 0;
  std::int32_t num_tables = 0;
};

/// Tables over a random permutation of the pool's pages (a few shared), some empty, random
/// last_page_len, outputs in a shuffled table order with gaps.
gather_case make_gather(const shape& s, std::mt19937_64& rng, std::int32_t max_tables = 40,
                        std::int32_t max_pages = 20) {
  gather_case c;
  c.num_tables = static_cast<std::int32_t>(uni(rng, 1, max_tables));
  std::vector<std::int32_t> perm(static_cast<std::size_t>(s.num_pages));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::size_t next = 0;
  c.indptr.push_back(static_cast<std::int32_t>(uni(rng, 0, 1) * uni(rng, 1, 3)));
  c.indices.assign(static_cast<std::size_t>(c.indptr[0]), -5);  // before indptr[0]: never read
  std::vector<std::int64_t> tokens;
  for (std::int32_t t = 0; t < c.num_tables; ++t) {
    const auto pages = static_cast<std::int32_t>(uni(rng, 0, 5) == 0 ? 0 : uni(rng, 1, max_pages));
    for (std::int32_t p = 0; p < pages; ++p) {
      const bool shared = next == perm.size() || uni(rng, 0, 9) == 0;
      c.indices.push_back(shared ? perm[static_cast<std::size_t>(uni(rng, 0, s.num_pages - 1))]
                                 : perm[next++]);
    }
    c.indptr.push_back(static_cast<std::int32_t>(c.indices.size()));
    c.last.push_back(pages == 0 ? 0 : static_cast<std::int32_t>(uni(rng, 1, s.page_size)));
    tokens.push_back(pages == 0 ? 0 : std::int64_t{pages - 1} * s.page_size + c.last.back());
  }
  std::vector<std::int32_t> order(static_cast<std::size_t>(c.num_tables));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  c.offsets.assign(static_cast<std::size_t>(c.num_tables), 0);
  for (const std::int32_t t : order) {
    c.rows += uni(rng, 0, 3);
    c.offsets[static_cast<std::size_t>(t)] = c.rows;
    c.rows += tokens[static_cast<std::size_t>(t)];
  }
  c.rows += 2;
  return c;
}

/// Runs gather on both sides; `device` (when given) replaces the tables the GPU reads.
/// `expect` may edit the host's result before the comparison (planted bad pages).
template <class Expect>
void run_gather(const shape& s, const gather_case& c, std::int32_t layer, std::mt19937_64& rng,
                stream_view st, const gather_case* device, Expect&& expect) {
  INFO(s.str() << " tables=" << c.num_tables << " pages=" << c.indptr.back() - c.indptr.front()
               << " rows=" << c.rows << " layer=" << layer);
  twin pool(s.pool_bytes(), s.shift);
  pool.randomize(rng);
  pool.upload(st);
  const std::int64_t out_bytes = c.rows * s.hpp() * s.head_dim * s.elem();
  twin ok(out_bytes, s.shift), ov(out_bytes, s.shift);  // 0xFF
  ok.upload(st);
  ov.upload(st);
  const gather_case& dc = device != nullptr ? *device : c;
  auto d_indptr = to_device(dc.indptr, st);
  auto d_indices = to_device(dc.indices, st);
  auto d_last = to_device(dc.last, st);
  auto d_offsets = to_device(dc.offsets, st);
  const page_table_view dt{d_indptr.data(), d_indices.data(), d_last.data(), c.num_tables,
                           s.page_size};
  gather_kv_cuda(make_view(s, pool.d()), layer, dt, d_offsets.data(), ok.d(), ov.d(), st);
  const auto gk = ok.download(st);
  const auto gv = ov.download(st);

  const page_table_view ht{c.indptr.data(), c.indices.data(), c.last.data(), c.num_tables,
                           s.page_size};
  gather_kv_host(make_view(s, pool.h()), layer, ht, c.offsets.data(), ok.h(), ov.h());
  expect(ok, ov);
  require_same(gk, ok.host, "gather_kv out_k");
  require_same(gv, ov.host, "gather_kv out_v");
}
void run_gather(const shape& s, const gather_case& c, std::int32_t layer, std::mt19937_64& rng,
                stream_view st) {
  run_gather(s, c, layer, rng, st, nullptr, [](twin&, twin&) {});
}

// ---- copy -----------------------------------------------------------------------------------
/// Distinct destinations from a random permutation, sources from the other pages (repeats).
std::vector<page_copy> make_copies(const shape& s, std::mt19937_64& rng, std::int32_t max_n = 200) {
  std::vector<std::int32_t> perm(static_cast<std::size_t>(s.num_pages));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  const auto n = static_cast<std::int32_t>(
      std::min<std::int64_t>(max_n, uni(rng, 1, std::max<std::int64_t>(1, s.num_pages / 2))));
  std::vector<page_copy> copies;
  for (std::int32_t i = 0; i < n; ++i) {
    const auto src = static_cast<std::size_t>(uni(rng, n, s.num_pages - 1));
    copies.push_back({perm[src], perm[static_cast<std::size_t>(i)]});
  }
  return copies;
}

void run_copy(const shape& s, const std::vector<page_copy>& host_copies, std::mt19937_64& rng,
              stream_view st, const std::vector<page_copy>* device_copies = nullptr) {
  INFO(s.str() << " copies=" << host_copies.size());
  twin pool(s.pool_bytes(), s.shift);
  pool.randomize(rng);
  // destinations start as 0xFF (NaN), so a chunk the kernel misses differs from the host's
  const paged_kv_view hv = make_view(s, pool.h());
  const std::int32_t arrays = s.arrays();
  for (const page_copy& c : host_copies)
    for (std::int32_t a = 0; a < arrays; ++a)
      for (std::int64_t kv : {std::int64_t{0}, hv.v_offset_bytes})
        std::memset(hv.data + a * hv.layer_stride_bytes + kv + c.dst * hv.page_bytes, 0xFF,
                    static_cast<std::size_t>(hv.page_bytes));
  pool.upload(st);
  const auto& dcopies = device_copies != nullptr ? *device_copies : host_copies;
  auto d_copies = to_device(dcopies, st);
  copy_pages_cuda(make_view(s, pool.d()), d_copies.data(),
                  static_cast<std::int32_t>(dcopies.size()), st);
  const auto gpu = pool.download(st);
  copy_pages_host(hv, host_copies.data(), static_cast<std::int32_t>(host_copies.size()));
  require_same(gpu, pool.host, "copy_pages pool");
}

}  // namespace

TEST_CASE("append_kv_cuda equals append_kv_host", "[paging][kernels][gpu]") {
  std::mt19937_64 rng(kvtest::seed() + 10);
  stream st;
  for (geo g : all_geos)
    for (kv_order o : all_orders)
      for (dtype t : all_types)
        for (const dims& dm : all_dims) {
          const shape s = random_shape(rng, g, o, t, dm.head_dim, dm.page_size);
          append_case c = make_append(s, rng);
          run_append(s, c, rng, st);
        }
}

TEST_CASE("gather_kv_cuda equals gather_kv_host", "[paging][kernels][gpu]") {
  std::mt19937_64 rng(kvtest::seed() + 11);
  stream st;
  for (geo g : all_geos)
    for (kv_order o : all_orders)
      for (dtype t : all_types)
        for (const dims& dm : all_dims) {
          const shape s = random_shape(rng, g, o, t, dm.head_dim, dm.page_size);
          const gather_case c = make_gather(s, rng);
          run_gather(s, c, static_cast<std::int32_t>(uni(rng, 0, s.layers - 1)), rng, st);
        }
}

TEST_CASE("copy_pages_cuda equals copy_pages_host", "[paging][kernels][gpu]") {
  std::mt19937_64 rng(kvtest::seed() + 12);
  stream st;
  for (geo g : all_geos)
    for (kv_order o : all_orders)
      for (dtype t : all_types)
        for (const dims& dm : all_dims) {
          const shape s = random_shape(rng, g, o, t, dm.head_dim, dm.page_size);
          run_copy(s, make_copies(s, rng), rng, st);
        }
}

TEST_CASE("paging kernels over many grid-stride rounds (Llama-like, 64-128 MiB)",
          "[paging][kernels][gpu]") {
  std::mt19937_64 rng(kvtest::seed() + 13);
  for (kv_order o : all_orders) {
    shape s;  // 4 layers of Llama-3-8B: 512 pages x 256 KiB = 128 MiB
    s.g = geo::span_layers;
    s.order = o;
    s.type = dtype::bf16;
    s.layers = 4;
    s.kv_heads = 8;
    s.head_dim = 128;
    s.page_size = 16;
    s.num_pages = 512;
    append_case c = make_append(s, rng, 8192);  // up to 8192 tokens x 4 layers: 64 MiB of K+V
    c.in.first_layer = 0;
    c.in.n_layers = 4;
    c.in_bytes = std::int64_t{4} * c.in.num_tokens * 8 * 128 * 2;
    run_append(s, c, rng, stream_view{});
    const gather_case gc = make_gather(s, rng, 64, 24);
    run_gather(s, gc, 3, rng, stream_view{});
    run_copy(s, make_copies(s, rng, 256), rng, stream_view{});
  }
  shape h;  // per_head, odd rows: 16 tokens x 80 bytes per page, many small pages
  h.g = geo::per_head;
  h.order = kv_order::hnd;
  h.type = dtype::f16;
  h.layers = 2;
  h.kv_heads = 4;
  h.head_dim = 40;
  h.page_size = 16;
  h.num_pages = 40000;
  append_case c = make_append(h, rng, 4000);
  run_append(h, c, rng, stream_view{});
  run_gather(h, make_gather(h, rng, 3000, 12), 0, rng, stream_view{});
  run_copy(h, make_copies(h, rng, 20000), rng, stream_view{});
}

TEST_CASE("device-resident bad indices are skipped, never followed", "[paging][kernels][gpu]") {
  std::mt19937_64 rng(kvtest::seed() + 14);
  stream st;
  for (geo g : all_geos) {
    const shape s = random_shape(rng, g, kv_order::nhd, dtype::f16, 72, 16);
    {  // slots at or past num_pages * page_size: the host sees -1 there
      append_case c = make_append(s, rng);
      std::vector<std::int64_t> dev = c.slots;
      const std::int64_t limit = std::int64_t{s.num_pages} * s.page_size;
      for (std::size_t i = 0; i < dev.size(); i += 3) {
        if (dev[i] < 0) continue;
        dev[i] = i % 2 == 0 ? limit : limit + 1000003;
        c.slots[i] = -1;
      }
      run_append(s, c, rng, st, &dev);
    }
    {  // page ids outside the pool in the device tables: those pages' rows stay untouched
      gather_case c = make_gather(s, rng);
      gather_case dev = c;
      struct planted {
        std::int64_t row;
        std::int64_t tokens;
      };
      std::vector<planted> rows;
      for (std::int32_t t = 0; t < c.num_tables; ++t) {
        const std::int32_t begin = c.indptr[static_cast<std::size_t>(t)];
        const std::int32_t end = c.indptr[static_cast<std::size_t>(t) + 1];
        if (end == begin || t % 2 != 0) continue;
        const std::int32_t p = static_cast<std::int32_t>(uni(rng, begin, end - 1));
        dev.indices[static_cast<std::size_t>(p)] = t % 4 == 0 ? s.num_pages : -1 - t;
        rows.push_back(
            {c.offsets[static_cast<std::size_t>(t)] + std::int64_t{p - begin} * s.page_size,
             p == end - 1 ? c.last[static_cast<std::size_t>(t)] : s.page_size});
      }
      const std::int64_t row_bytes = s.hpp() * s.head_dim * s.elem();
      run_gather(s, c, 0, rng, st, &dev, [&](twin& k, twin& v) {
        for (const planted& r : rows) {
          std::memset(k.h() + r.row * row_bytes, 0xFF,
                      static_cast<std::size_t>(r.tokens * row_bytes));
          std::memset(v.h() + r.row * row_bytes, 0xFF,
                      static_cast<std::size_t>(r.tokens * row_bytes));
        }
      });
    }
    {  // copy pairs naming pages outside the pool: those pairs do nothing
      const auto copies = make_copies(s, rng);
      std::vector<page_copy> dev, host;
      for (std::size_t i = 0; i < copies.size(); ++i) {
        if (i % 3 == 1) {
          dev.push_back(i % 2 == 0 ? page_copy{s.num_pages + 7, copies[i].dst}
                                   : page_copy{copies[i].src, -2});
        } else {
          dev.push_back(copies[i]);
          host.push_back(copies[i]);
        }
      }
      run_copy(s, host, rng, st, &dev);
    }
  }
}

TEST_CASE("pinned index arrays are checked on the host before the launch",
          "[paging][kernels][gpu]") {
  std::mt19937_64 rng(kvtest::seed() + 15);
  stream st;
  shape s = random_shape(rng, geo::per_layer, kv_order::hnd, dtype::f32, 40, 16);
  twin pool(s.pool_bytes(), 0);
  pool.upload(st);
  const paged_kv_view view = make_view(s, pool.d());

  append_case c = make_append(s, rng);
  twin k(c.in_bytes, 0), v(c.in_bytes, 0);
  c.in.k = k.d();
  c.in.v = v.d();
  auto pinned_slots = to_pinned(c.slots);
  c.map.slots = pinned_slots.data();
  append_kv_cuda(view, c.in, c.map, st);  // valid pinned slots work
  synchronize(st);
  pinned_slots.data()[c.slots.size() - 1] = std::int64_t{s.num_pages} * s.page_size;
  KVTEST_REQUIRE_ERROR(
      append_kv_cuda(view, c.in, c.map, st), errc::out_of_range,
      "append_kv_cuda: slot " + std::to_string(std::int64_t{s.num_pages} * s.page_size));

  gather_case g = make_gather(s, rng);
  g.last[0] = s.page_size + 1;
  g.indptr[1] = g.indptr[0] + 1;  // table 0 not empty
  for (std::size_t t = 1; t + 1 < g.indptr.size(); ++t)
    g.indptr[t] = std::max(g.indptr[t], g.indptr[1]);
  if (g.indices.size() < static_cast<std::size_t>(g.indptr.back()))
    g.indices.resize(static_cast<std::size_t>(g.indptr.back()), 0);
  g.indices[static_cast<std::size_t>(g.indptr[0])] = 0;
  auto pi = to_pinned(g.indptr);
  auto px = to_pinned(g.indices);
  auto pl = to_pinned(g.last);
  auto po = to_pinned(g.offsets);
  twin out(g.rows * s.hpp() * s.head_dim * s.elem() + 4096, 0);
  KVTEST_REQUIRE_ERROR(
      gather_kv_cuda(view, 0,
                     page_table_view{pi.data(), px.data(), pl.data(), g.num_tables, s.page_size},
                     po.data(), out.d(), out.d(), st),
      errc::out_of_range, "last_page_len " + std::to_string(s.page_size + 1) + " of table 0");

  std::vector<page_copy> bad{{0, 1}, {2, 1}};
  auto pc = to_pinned(bad);
  KVTEST_REQUIRE_ERROR(copy_pages_cuda(view, pc.data(), 2, st), errc::invalid_argument,
                       "copy 1: destination page 1 is written twice");
  synchronize(st);
}

TEST_CASE("CUDA launchers check shapes and pointers before the launch", "[paging][kernels][gpu]") {
  std::mt19937_64 rng(kvtest::seed() + 16);
  shape s = random_shape(rng, geo::span_layers, kv_order::nhd, dtype::f16, 128, 16);
  s.kv_heads = 4;
  twin pool(s.pool_bytes(), 0);
  const paged_kv_view view = make_view(s, pool.d());
  append_case c = make_append(s, rng);
  twin k(c.in_bytes, 0), v(c.in_bytes, 0);
  auto d_slots = to_device(c.slots, {});
  c.in.k = k.d();
  c.in.v = v.d();
  c.map.slots = d_slots.data();
  c.in.kv_heads = 2;
  KVTEST_REQUIRE_ERROR(append_kv_cuda(view, c.in, c.map, {}), errc::shape_mismatch,
                       "append_kv_cuda: the input has 2 kv heads, the pool's pages hold 4");
  c.in.kv_heads = 4;
  c.in.n_layers = s.layers + 1;
  KVTEST_REQUIRE_ERROR(append_kv_cuda(view, c.in, c.map, {}), errc::shape_mismatch, "layers");
  c.in.n_layers = 1;
  c.in.first_layer = 0;
  paged_kv_view bad = view;
  bad.elem_bytes = 8;
  KVTEST_REQUIRE_ERROR(append_kv_cuda(bad, c.in, c.map, {}), errc::invalid_argument,
                       "element size 8 bytes");
  KVTEST_REQUIRE_ERROR(
      gather_kv_cuda(view, s.layers, page_table_view{}, nullptr, nullptr, nullptr, {}),
      errc::out_of_range, "gather_kv_cuda: layer");
  KVTEST_REQUIRE_ERROR(copy_pages_cuda(view, nullptr, 1, {}), errc::invalid_argument,
                       "copy_pages_cuda: 1 copies from a null array");

  // pageable host memory: refused unless the device can read it (HMM)
  int pageable = 0;
  REQUIRE(cudaDeviceGetAttribute(&pageable, cudaDevAttrPageableMemoryAccess, 0) == cudaSuccess);
  std::vector<std::int64_t> host_slots = c.slots;
  c.map.slots = host_slots.data();
  if (pageable == 0) {
    KVTEST_REQUIRE_ERROR(append_kv_cuda(view, c.in, c.map, {}), errc::invalid_argument,
                         "the slot mapping");
  } else {
    host_slots[0] = std::int64_t{1} << 40;
    KVTEST_REQUIRE_ERROR(append_kv_cuda(view, c.in, c.map, {}), errc::out_of_range,
                         "slot 1099511627776");
  }
  synchronize({});
  CHECK(cudaGetLastError() == cudaSuccess);
}
