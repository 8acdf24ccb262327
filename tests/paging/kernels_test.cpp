// Host implementations of the paging kernels (append_kv_host, gather_kv_host, copy_pages_host)
// against a naive reference written here with its own index arithmetic, over the three page
// geometries, NHD and HND, 2- and 4-byte elements and random shapes; every error case; and the
// multiply-high division the CUDA kernels index with.
#include "kvcache/paging/kernels.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../../cuda/paging/fast_divmod.cuh"
#include "support/catch.hpp"

using namespace kvcache;

namespace {

enum class geo { span_layers, per_layer, per_head };
const char* name_of(geo g) {
  return g == geo::span_layers ? "span_layers" : g == geo::per_layer ? "per_layer" : "per_head";
}

struct shape {
  geo g = geo::span_layers;
  kv_order order = kv_order::nhd;
  dtype type = dtype::f16;
  std::int32_t layers = 1, kv_heads = 1, head_dim = 1, page_size = 1, num_pages = 1;

  std::int64_t elem() const { return type == dtype::f32 ? 4 : 2; }
  std::int32_t hpp() const { return g == geo::per_head ? 1 : kv_heads; }
  std::int32_t arrays() const { return g == geo::span_layers ? layers : 1; }
  std::int64_t page_elems() const { return std::int64_t{page_size} * hpp() * head_dim; }
  std::int64_t pool_bytes() const { return 2 * arrays() * num_pages * page_elems() * elem(); }
  std::string str() const {
    return std::string(name_of(g)) + " " + kvcache::name_of(order) + " " +
           std::string(kvcache::name_of(type)) + " layers=" + std::to_string(layers) +
           " kv_heads=" + std::to_string(kv_heads) + " head_dim=" + std::to_string(head_dim) +
           " page_size=" + std::to_string(page_size) + " pages=" + std::to_string(num_pages);
  }
};

/// 8-byte aligned byte storage.
struct bytes {
  std::vector<std::uint64_t> words;
  std::int64_t n = 0;
  explicit bytes(std::int64_t size, std::uint8_t fill = 0xFF)
      : words(static_cast<std::size_t>(size / 8 + 1)), n(size) {
    std::memset(words.data(), fill, words.size() * 8);
  }
  std::byte* data() { return reinterpret_cast<std::byte*>(words.data()); }
  void randomize(std::mt19937_64& rng) {
    for (auto& w : words) w = rng();
  }
  bool operator==(const bytes& o) const { return n == o.n && words == o.words; }
};

/// The view, from the geometry's definition (not from page_pool).
paged_kv_view make_view(const shape& s, std::byte* data) {
  paged_kv_view v;
  v.data = data;
  v.page_bytes = s.page_elems() * s.elem();
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

/// Byte offset of one element of the pool: (layer array, K or V, page, token, head slot, dim).
std::int64_t ref_offset(const shape& s, std::int64_t array, int kv, std::int64_t page,
                        std::int64_t tok, std::int64_t head, std::int64_t d) {
  const std::int64_t in_page = s.order == kv_order::nhd
                                   ? (tok * s.hpp() + head) * s.head_dim + d
                                   : (head * s.page_size + tok) * s.head_dim + d;
  return (((array * 2 + kv) * s.num_pages + page) * s.page_elems() + in_page) * s.elem();
}

shape random_shape(std::mt19937_64& rng, geo g, kv_order order, dtype type) {
  auto pick = [&](std::initializer_list<std::int32_t> xs) {
    return *(xs.begin() + std::uniform_int_distribution<std::size_t>(0, xs.size() - 1)(rng));
  };
  shape s;
  s.g = g;
  s.order = order;
  s.type = type;
  s.layers = pick({1, 2, 3, 4});
  s.kv_heads = pick({1, 2, 3, 4, 8});
  s.head_dim = pick({1, 3, 4, 7, 8, 16, 40, 72, 128});
  s.page_size = pick({1, 2, 4, 16});
  s.num_pages = pick({1, 2, 5, 16, 33});
  return s;
}

constexpr geo all_geos[] = {geo::span_layers, geo::per_layer, geo::per_head};
constexpr kv_order all_orders[] = {kv_order::nhd, kv_order::hnd};
constexpr dtype all_types[] = {dtype::f32, dtype::f16, dtype::bf16};

// ---- append ---------------------------------------------------------------------------------
struct append_case {
  kv_input_view in;
  slot_mapping_view map;
  std::vector<std::int64_t> slots;
  bytes k{0}, v{0};
};

/// Random input and a slot mapping whose writes never collide (distinct slots within what lands
/// in one layer array), about 15% padding (-1), strides with random gaps.
append_case make_append(const shape& s, std::mt19937_64& rng) {
  append_case c;
  auto uni = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  const std::int64_t slots_total = std::int64_t{s.num_pages} * s.page_size;
  c.in.n_layers = static_cast<std::int32_t>(uni(1, s.layers));
  c.in.first_layer = static_cast<std::int32_t>(uni(0, s.layers - c.in.n_layers));
  c.in.kv_heads = s.kv_heads;
  // mappings: 1 (span_layers), n_layers (per_layer), n_layers x kv_heads (per_head)
  const std::int64_t maps = s.g == geo::span_layers ? 1
                            : s.g == geo::per_layer ? c.in.n_layers
                                                    : std::int64_t{c.in.n_layers} * s.kv_heads;
  const std::int64_t max_tokens =
      std::max<std::int64_t>(1, std::min<std::int64_t>(40, slots_total / maps));
  c.in.num_tokens = static_cast<std::int32_t>(uni(1, max_tokens));
  const std::int64_t n = c.in.num_tokens;
  std::vector<std::int64_t> perm(static_cast<std::size_t>(slots_total));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  const std::int64_t gap = uni(0, 3);
  if (s.g == geo::span_layers) {
    c.map.layer_stride = 0;
    c.map.head_stride = 0;
  } else if (s.g == geo::per_layer) {
    c.map.layer_stride = n + gap;
    c.map.head_stride = 0;
  } else {
    c.map.head_stride = n + gap;
    c.map.layer_stride = s.kv_heads * c.map.head_stride + uni(0, 2);
  }
  const std::int64_t len =
      (c.in.n_layers - 1) * c.map.layer_stride + (s.kv_heads - 1) * c.map.head_stride + n;
  c.slots.assign(static_cast<std::size_t>(len), -7);  // gaps: never read
  std::size_t next = 0;
  const std::int32_t ml = s.g == geo::span_layers ? 1 : c.in.n_layers;
  const std::int32_t mh = s.g == geo::per_head ? s.kv_heads : 1;
  for (std::int32_t l = 0; l < ml; ++l)
    for (std::int32_t h = 0; h < mh; ++h)
      for (std::int64_t i = 0; i < n; ++i)
        c.slots[static_cast<std::size_t>(l * c.map.layer_stride + h * c.map.head_stride + i)] =
            (uni(0, 99) < 15 || next == perm.size()) ? -1 : perm[next++];  // -1 once all used
  c.map.slots = c.slots.data();
  c.map.num_tokens = c.in.num_tokens;
  const std::int64_t in_bytes =
      std::int64_t{c.in.n_layers} * n * s.kv_heads * s.head_dim * s.elem();
  c.k = bytes(in_bytes);
  c.v = bytes(in_bytes);
  c.k.randomize(rng);
  c.v.randomize(rng);
  c.in.k = c.k.data();
  c.in.v = c.v.data();
  return c;
}

void ref_append(const shape& s, bytes& pool, const append_case& c) {
  const std::int64_t n = c.in.num_tokens, e = s.elem();
  const auto* k = reinterpret_cast<const std::byte*>(c.k.words.data());
  const auto* v = reinterpret_cast<const std::byte*>(c.v.words.data());
  for (std::int64_t l = 0; l < c.in.n_layers; ++l)
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t h = 0; h < s.kv_heads; ++h) {
        const std::int64_t slot = c.slots[static_cast<std::size_t>(
            (s.g == geo::span_layers ? 0 : l * c.map.layer_stride) +
            (s.g == geo::per_head ? h * c.map.head_stride : 0) + i)];
        if (slot < 0) continue;
        const std::int64_t page = slot / s.page_size, tok = slot % s.page_size;
        const std::int64_t array = s.g == geo::span_layers ? c.in.first_layer + l : 0;
        const std::int64_t head = s.g == geo::per_head ? 0 : h;
        for (std::int64_t d = 0; d < s.head_dim; ++d) {
          const std::int64_t src = (((l * n + i) * s.kv_heads + h) * s.head_dim + d) * e;
          for (int kv = 0; kv < 2; ++kv)
            std::memcpy(pool.data() + ref_offset(s, array, kv, page, tok, head, d),
                        (kv == 0 ? k : v) + src, static_cast<std::size_t>(e));
        }
      }
}

// ---- gather ---------------------------------------------------------------------------------
struct gather_case {
  std::vector<std::int32_t> indptr, indices, last;
  std::vector<std::int64_t> offsets;
  std::int64_t rows = 0;  // output rows, gaps included
  page_table_view tables;
};

gather_case make_gather(const shape& s, std::mt19937_64& rng) {
  auto uni = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  gather_case c;
  const auto t_count = static_cast<std::int32_t>(uni(0, 9));
  c.indptr.push_back(static_cast<std::int32_t>(uni(0, 2)));  // indptr[0] need not be 0
  c.indices.assign(static_cast<std::size_t>(c.indptr[0]), -1);
  std::vector<std::int64_t> tokens;
  for (std::int32_t t = 0; t < t_count; ++t) {
    const auto pages = static_cast<std::int32_t>(uni(0, 4) == 0 ? 0 : uni(1, 6));
    for (std::int32_t p = 0; p < pages; ++p)  // with repeats: shared prefix pages
      c.indices.push_back(static_cast<std::int32_t>(uni(0, s.num_pages - 1)));
    c.indptr.push_back(static_cast<std::int32_t>(c.indices.size()));
    c.last.push_back(pages == 0 ? 0 : static_cast<std::int32_t>(uni(1, s.page_size)));
    tokens.push_back(pages == 0 ? 0 : std::int64_t{pages - 1} * s.page_size + c.last.back());
  }
  // outputs in a shuffled table order with gaps
  std::vector<std::int32_t> order(static_cast<std::size_t>(t_count));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  c.offsets.assign(static_cast<std::size_t>(t_count), 0);
  for (const std::int32_t t : order) {
    c.rows += uni(0, 2);
    c.offsets[static_cast<std::size_t>(t)] = c.rows;
    c.rows += tokens[static_cast<std::size_t>(t)];
  }
  c.rows += 1;
  c.tables =
      page_table_view{c.indptr.data(), c.indices.data(), c.last.data(), t_count, s.page_size};
  return c;
}

void ref_gather(const shape& s, bytes& pool, std::int32_t layer, const gather_case& c, bytes& out_k,
                bytes& out_v) {
  const std::int64_t e = s.elem();
  for (std::size_t t = 0; t + 1 < c.indptr.size(); ++t) {
    const std::int64_t pages = c.indptr[t + 1] - c.indptr[t];
    if (pages == 0) continue;
    const std::int64_t tokens = (pages - 1) * s.page_size + c.last[t];
    for (std::int64_t j = 0; j < tokens; ++j) {
      const std::int64_t page = c.indices[static_cast<std::size_t>(c.indptr[t] + j / s.page_size)];
      for (std::int64_t hh = 0; hh < s.hpp(); ++hh)
        for (std::int64_t d = 0; d < s.head_dim; ++d) {
          const std::int64_t dst = (((c.offsets[t] + j) * s.hpp() + hh) * s.head_dim + d) * e;
          const std::int64_t array = s.g == geo::span_layers ? layer : 0;
          std::memcpy(out_k.data() + dst,
                      pool.data() + ref_offset(s, array, 0, page, j % s.page_size, hh, d),
                      static_cast<std::size_t>(e));
          std::memcpy(out_v.data() + dst,
                      pool.data() + ref_offset(s, array, 1, page, j % s.page_size, hh, d),
                      static_cast<std::size_t>(e));
        }
    }
  }
}

// ---- copy -----------------------------------------------------------------------------------
std::vector<page_copy> make_copies(const shape& s, std::mt19937_64& rng) {
  std::vector<std::int32_t> perm(static_cast<std::size_t>(s.num_pages));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  // the first n of the permutation are destinations; sources come from the rest (repeats allowed)
  const auto n = static_cast<std::int32_t>(s.num_pages / 2);
  std::vector<page_copy> copies;
  for (std::int32_t i = 0; i < n; ++i) {
    const auto src = std::uniform_int_distribution<std::int32_t>(n, s.num_pages - 1)(rng);
    copies.push_back({perm[static_cast<std::size_t>(src)], perm[static_cast<std::size_t>(i)]});
  }
  return copies;
}

void ref_copy(const shape& s, bytes& pool, const std::vector<page_copy>& copies) {
  const std::int64_t page = s.page_elems() * s.elem();
  for (const page_copy& c : copies)
    for (std::int64_t a = 0; a < s.arrays(); ++a)
      for (int kv = 0; kv < 2; ++kv)
        std::memcpy(pool.data() + ref_offset(s, a, kv, c.dst, 0, 0, 0),
                    pool.data() + ref_offset(s, a, kv, c.src, 0, 0, 0),
                    static_cast<std::size_t>(page));
}

}  // namespace

TEST_CASE("append_kv_host matches the reference", "[paging][kernels]") {
  std::mt19937_64 rng(kvtest::seed());
  for (geo g : all_geos)
    for (kv_order o : all_orders)
      for (dtype t : all_types)
        for (int trial = 0; trial < 12; ++trial) {
          const shape s = random_shape(rng, g, o, t);
          append_case c = make_append(s, rng);
          INFO(s.str() << " first_layer=" << c.in.first_layer << " n_layers=" << c.in.n_layers
                       << " tokens=" << c.in.num_tokens << " trial " << trial);
          bytes got(s.pool_bytes()), want(s.pool_bytes());  // 0xFF: NaN patterns
          append_kv_host(make_view(s, got.data()), c.in, c.map);
          ref_append(s, want, c);
          REQUIRE(got == want);
        }
}

TEST_CASE("gather_kv_host matches the reference", "[paging][kernels]") {
  std::mt19937_64 rng(kvtest::seed() + 1);
  for (geo g : all_geos)
    for (kv_order o : all_orders)
      for (dtype t : all_types)
        for (int trial = 0; trial < 12; ++trial) {
          const shape s = random_shape(rng, g, o, t);
          bytes pool(s.pool_bytes());
          pool.randomize(rng);
          const gather_case c = make_gather(s, rng);
          const auto layer = std::uniform_int_distribution<std::int32_t>(0, s.layers - 1)(rng);
          INFO(s.str() << " tables=" << c.tables.num_tables << " layer=" << layer << " trial "
                       << trial);
          const std::int64_t out_bytes = c.rows * s.hpp() * s.head_dim * s.elem();
          bytes gk(out_bytes), gv(out_bytes), wk(out_bytes), wv(out_bytes);
          gather_kv_host(make_view(s, pool.data()), layer, c.tables, c.offsets.data(), gk.data(),
                         gv.data());
          ref_gather(s, pool, layer, c, wk, wv);
          REQUIRE(gk == wk);
          REQUIRE(gv == wv);
        }
}

TEST_CASE("copy_pages_host matches the reference", "[paging][kernels]") {
  std::mt19937_64 rng(kvtest::seed() + 2);
  for (geo g : all_geos)
    for (kv_order o : all_orders)
      for (dtype t : all_types)
        for (int trial = 0; trial < 8; ++trial) {
          const shape s = random_shape(rng, g, o, t);
          bytes got(s.pool_bytes());
          got.randomize(rng);
          bytes want = got;
          const auto copies = make_copies(s, rng);
          INFO(s.str() << " copies=" << copies.size() << " trial " << trial);
          copy_pages_host(make_view(s, got.data()), copies.data(),
                          static_cast<std::int32_t>(copies.size()));
          ref_copy(s, want, copies);
          REQUIRE(got == want);
        }
}

TEST_CASE("copy_pages_host checks more than 64 copies without quadratic work",
          "[paging][kernels]") {
  std::mt19937_64 rng(kvtest::seed() + 3);
  shape s;
  s.g = geo::per_head;
  s.head_dim = 4;
  s.page_size = 2;
  s.num_pages = 400;
  bytes got(s.pool_bytes());
  got.randomize(rng);
  bytes want = got;
  const auto copies = make_copies(s, rng);
  REQUIRE(copies.size() == 200);
  copy_pages_host(make_view(s, got.data()), copies.data(), 200);
  ref_copy(s, want, copies);
  REQUIRE(got == want);
  auto bad = copies;
  bad[150].dst = bad[3].dst;
  KVTEST_REQUIRE_ERROR(copy_pages_host(make_view(s, got.data()), bad.data(), 200),
                       errc::invalid_argument, "copy 150: destination page");
  bad = copies;
  bad[199].dst = bad[10].src;
  KVTEST_REQUIRE_ERROR(copy_pages_host(make_view(s, got.data()), bad.data(), 200),
                       errc::invalid_argument, "is also a source");
}

TEST_CASE("append_kv_host rejects bad input and writes nothing", "[paging][kernels][errors]") {
  std::mt19937_64 rng(kvtest::seed() + 4);
  shape s;
  s.g = geo::span_layers;
  s.layers = 3;
  s.kv_heads = 2;
  s.head_dim = 8;
  s.page_size = 4;
  s.num_pages = 5;
  bytes pool(s.pool_bytes());
  const bytes before = pool;
  const paged_kv_view view = make_view(s, pool.data());
  append_case c = make_append(s, rng);
  c.in.first_layer = 0;
  c.in.n_layers = 3;
  c.k = bytes(3 * c.in.num_tokens * 2 * 8 * 2);
  c.v = bytes(3 * c.in.num_tokens * 2 * 8 * 2);
  c.in.k = c.k.data();
  c.in.v = c.v.data();

  SECTION("a slot beyond the pool names slot, token, layer and head") {
    c.slots.back() = 20;  // 5 pages x 4 tokens = 20 slots
    const std::string tok = std::to_string(c.in.num_tokens - 1);
    KVTEST_REQUIRE_ERROR(append_kv_host(view, c.in, c.map), errc::out_of_range,
                         "slot 20 of token " + tok + ", layer 0, kv head 0");
    CHECK(pool == before);
  }
  SECTION("per-layer mappings name the layer") {
    shape p = s;
    p.g = geo::per_layer;
    bytes pp(p.pool_bytes());
    append_case d = make_append(p, rng);
    d.slots[static_cast<std::size_t>((d.in.n_layers - 1) * d.map.layer_stride)] = 1000;
    KVTEST_REQUIRE_ERROR(
        append_kv_host(make_view(p, pp.data()), d.in, d.map), errc::out_of_range,
        "slot 1000 of token 0, layer " + std::to_string(d.in.first_layer + d.in.n_layers - 1));
  }
  SECTION("per-head mappings name the head") {
    shape p = s;
    p.g = geo::per_head;
    p.num_pages = 40;
    bytes pp(p.pool_bytes());
    append_case d = make_append(p, rng);
    d.slots[static_cast<std::size_t>(d.map.head_stride + 0)] = 160;
    KVTEST_REQUIRE_ERROR(
        append_kv_host(make_view(p, pp.data()), d.in, d.map), errc::out_of_range,
        "slot 160 of token 0, layer " + std::to_string(d.in.first_layer) + ", kv head 1");
  }
  SECTION("kv_heads disagreeing with the pool") {
    c.in.kv_heads = 3;
    KVTEST_REQUIRE_ERROR(append_kv_host(view, c.in, c.map), errc::shape_mismatch,
                         "the input has 3 kv heads, the pool's pages hold 2");
  }
  SECTION("layers beyond the pool") {
    c.in.first_layer = 1;
    KVTEST_REQUIRE_ERROR(
        append_kv_host(view, c.in, c.map), errc::shape_mismatch,
        "input layers 1..3 (first_layer 1, n_layers 3) are not within the pool's 3 layers");
    c.in.first_layer = -1;
    c.in.n_layers = 1;
    KVTEST_REQUIRE_ERROR(append_kv_host(view, c.in, c.map), errc::shape_mismatch, "first_layer -1");
  }
  SECTION("token counts that disagree") {
    c.map.num_tokens = c.in.num_tokens + 1;
    KVTEST_REQUIRE_ERROR(append_kv_host(view, c.in, c.map), errc::shape_mismatch,
                         "the slot mapping has " + std::to_string(c.in.num_tokens + 1) + " tokens");
  }
  SECTION("null pointers") {
    c.in.v = nullptr;
    KVTEST_REQUIRE_ERROR(append_kv_host(view, c.in, c.map), errc::invalid_argument, "input K");
    c.in.v = c.v.data();
    c.map.slots = nullptr;
    KVTEST_REQUIRE_ERROR(append_kv_host(view, c.in, c.map), errc::invalid_argument,
                         "the slot mapping is null");
    paged_kv_view nv = view;
    nv.data = nullptr;
    c.map.slots = c.slots.data();
    KVTEST_REQUIRE_ERROR(append_kv_host(nv, c.in, c.map), errc::invalid_argument,
                         "the pool's data is null");
  }
  SECTION("element sizes other than 2 or 4, or disagreeing with the dtype") {
    paged_kv_view bad = view;
    bad.elem_bytes = 8;
    KVTEST_REQUIRE_ERROR(append_kv_host(bad, c.in, c.map), errc::invalid_argument,
                         "element size 8 bytes is not supported");
    bad.elem_bytes = 1;
    KVTEST_REQUIRE_ERROR(append_kv_host(bad, c.in, c.map), errc::invalid_argument,
                         "element size 1 bytes");
    bad.elem_bytes = 4;  // dtype stays f16
    KVTEST_REQUIRE_ERROR(append_kv_host(bad, c.in, c.map), errc::dtype_mismatch,
                         "dtype f16 does not have 4-byte elements");
  }
  SECTION("a misaligned input") {
    c.in.k = c.k.data() + 1;
    KVTEST_REQUIRE_ERROR(append_kv_host(view, c.in, c.map), errc::invalid_argument,
                         "not aligned to 2-byte elements");
  }
  SECTION("negative strides, or many heads sharing one-head pages") {
    c.map.layer_stride = -1;
    KVTEST_REQUIRE_ERROR(append_kv_host(view, c.in, c.map), errc::invalid_argument,
                         "layer_stride -1");
    shape p = s;
    p.g = geo::per_head;
    bytes pp(p.pool_bytes());
    c.map.layer_stride = 0;
    c.map.head_stride = 0;
    KVTEST_REQUIRE_ERROR(append_kv_host(make_view(p, pp.data()), c.in, c.map),
                         errc::invalid_argument, "2 kv heads into one-head pages");
  }
  SECTION("inconsistent pool views") {
    paged_kv_view bad = view;
    bad.page_bytes -= 2;
    KVTEST_REQUIRE_ERROR(append_kv_host(bad, c.in, c.map), errc::invalid_argument, "page_bytes");
    bad = view;
    bad.v_offset_bytes = 0;
    KVTEST_REQUIRE_ERROR(append_kv_host(bad, c.in, c.map), errc::invalid_argument,
                         "v_offset_bytes 0");
    bad = view;
    bad.layer_stride_bytes = view.v_offset_bytes;
    KVTEST_REQUIRE_ERROR(append_kv_host(bad, c.in, c.map), errc::invalid_argument,
                         "layer_stride_bytes");
    bad = view;
    bad.num_pages = 0;
    KVTEST_REQUIRE_ERROR(append_kv_host(bad, c.in, c.map), errc::invalid_argument, "num_pages 0");
  }
  SECTION("negative slots are skipped; zero tokens are a no-op") {
    std::fill(c.slots.begin(), c.slots.end(), -1);
    append_kv_host(view, c.in, c.map);
    CHECK(pool == before);
    c.in.num_tokens = 0;
    c.map.num_tokens = 0;
    c.map.slots = nullptr;
    append_kv_host(view, c.in, c.map);
    CHECK(pool == before);
  }
}

TEST_CASE("gather_kv_host rejects bad tables and writes nothing", "[paging][kernels][errors]") {
  shape s;
  s.g = geo::per_layer;
  s.layers = 2;
  s.kv_heads = 2;
  s.head_dim = 4;
  s.page_size = 4;
  s.num_pages = 6;
  bytes pool(s.pool_bytes(), 0x11);
  const paged_kv_view view = make_view(s, pool.data());
  std::vector<std::int32_t> indptr{0, 2, 2, 3}, indices{5, 0, 3}, last{4, 0, 2};
  std::vector<std::int64_t> offsets{0, 8, 8};
  const page_table_view tables{indptr.data(), indices.data(), last.data(), 3, 4};
  bytes ok_k(10 * 2 * 4 * 2), ok_v(10 * 2 * 4 * 2);
  gather_kv_host(view, 1, tables, offsets.data(), ok_k.data(), ok_v.data());
  bytes out_k(10 * 2 * 4 * 2), out_v(10 * 2 * 4 * 2);
  const bytes before = out_k;
  auto gather = [&](const page_table_view& t, std::int32_t layer = 0) {
    gather_kv_host(view, layer, t, offsets.data(), out_k.data(), out_v.data());
  };

  SECTION("a page id beyond the pool") {
    indices[2] = 6;
    KVTEST_REQUIRE_ERROR(gather(tables), errc::out_of_range,
                         "page id 6 (table 2, indices[2]) is beyond the pool's 6 pages");
    indices[2] = -1;
    KVTEST_REQUIRE_ERROR(gather(tables), errc::out_of_range, "page id -1");
    CHECK(out_k == before);
  }
  SECTION("last_page_len outside 1..page_size for a non-empty table") {
    last[0] = 0;
    KVTEST_REQUIRE_ERROR(gather(tables), errc::out_of_range,
                         "last_page_len 0 of table 0 is not in 1..4");
    last[0] = 5;
    KVTEST_REQUIRE_ERROR(gather(tables), errc::out_of_range, "last_page_len 5 of table 0");
    CHECK(out_k == before);
  }
  SECTION("indptr decreasing or negative") {
    indptr[2] = 1;
    KVTEST_REQUIRE_ERROR(gather(tables), errc::invalid_argument,
                         "indptr decreases at table 1: 2 then 1");
    indptr[2] = 2;
    indptr[0] = -1;
    KVTEST_REQUIRE_ERROR(gather(tables), errc::invalid_argument, "indptr[0] is -1");
  }
  SECTION("a layer beyond the pool, a page size that disagrees, null pointers") {
    KVTEST_REQUIRE_ERROR(gather(tables, 2), errc::out_of_range,
                         "layer 2 is not in the pool's 2 layers");
    page_table_view t = tables;
    t.page_size = 8;
    KVTEST_REQUIRE_ERROR(gather(t), errc::shape_mismatch,
                         "the tables' page_size 8 differs from the pool's 4");
    t = tables;
    t.indptr = nullptr;
    KVTEST_REQUIRE_ERROR(gather(t), errc::invalid_argument, "indptr");
    t = tables;
    t.indices = nullptr;
    KVTEST_REQUIRE_ERROR(gather(t), errc::invalid_argument,
                         "table 0 has 2 pages but indices is null");
    KVTEST_REQUIRE_ERROR(gather_kv_host(view, 0, tables, offsets.data(), nullptr, out_v.data()),
                         errc::invalid_argument, "out_k");
    KVTEST_REQUIRE_ERROR(gather_kv_host(view, 0, tables, nullptr, out_k.data(), out_v.data()),
                         errc::invalid_argument, "out_offsets");
    offsets[2] = -3;
    KVTEST_REQUIRE_ERROR(gather(tables), errc::out_of_range, "out_offsets[2] is -3");
    CHECK(out_k == before);
  }
  SECTION("no tables is a no-op, with or without pointers") {
    gather(page_table_view{});
    gather(page_table_view{nullptr, nullptr, nullptr, 0, 4});
    CHECK(out_k == before);
  }
}

TEST_CASE("copy_pages_host rejects bad copies and writes nothing", "[paging][kernels][errors]") {
  shape s;
  s.g = geo::span_layers;
  s.layers = 2;
  s.kv_heads = 1;
  s.head_dim = 4;
  s.page_size = 2;
  s.num_pages = 4;
  bytes pool(s.pool_bytes());
  std::mt19937_64 rng(kvtest::seed() + 5);
  pool.randomize(rng);
  const bytes before = pool;
  const paged_kv_view view = make_view(s, pool.data());
  std::vector<page_copy> copies{{0, 1}, {0, 2}, {3, 4}};
  KVTEST_REQUIRE_ERROR(copy_pages_host(view, copies.data(), 3), errc::out_of_range,
                       "copy 2: destination page 4 is beyond the pool's 4 pages");
  copies[2] = {-2, 3};
  KVTEST_REQUIRE_ERROR(copy_pages_host(view, copies.data(), 3), errc::out_of_range,
                       "copy 2: source page -2 is beyond");
  copies[2] = {0, 1};
  KVTEST_REQUIRE_ERROR(copy_pages_host(view, copies.data(), 3), errc::invalid_argument,
                       "copy 2: destination page 1 is written twice");
  copies[2] = {1, 3};
  KVTEST_REQUIRE_ERROR(copy_pages_host(view, copies.data(), 3), errc::invalid_argument,
                       "copy 0: destination page 1 is also a source of the batch");
  KVTEST_REQUIRE_ERROR(copy_pages_host(view, nullptr, 3), errc::invalid_argument,
                       "3 copies from a null array");
  KVTEST_REQUIRE_ERROR(copy_pages_host(view, copies.data(), -1), errc::invalid_argument,
                       "-1 copies");
  paged_kv_view bad = view;
  bad.elem_bytes = 3;
  KVTEST_REQUIRE_ERROR(copy_pages_host(bad, copies.data(), 2), errc::invalid_argument,
                       "element size 3 bytes");
  CHECK(pool == before);
  copy_pages_host(view, nullptr, 0);  // nothing to do
  CHECK(pool == before);
}

namespace {
/// Divisors for the fast_divmod tests: 1..300, 2^s - 1, 2^s, 2^s + 1 for s in [9, max_shift], and
/// 300 random ones below 2^random_bits.
template <class U>
std::vector<U> test_divisors(std::mt19937_64& rng, int max_shift, int random_bits) {
  std::vector<U> divisors;
  for (U d = 1; d <= 300; ++d) divisors.push_back(d);
  for (int sh = 9; sh <= max_shift; ++sh) {
    const U p = U{1} << sh;
    for (U x : {p - 1, p, p + 1}) divisors.push_back(x);
  }
  for (int i = 0; i < 300; ++i) {
    divisors.push_back(
        static_cast<U>(1 + rng() % (std::uint64_t{1} << (1 + rng() % random_bits))));
  }
  return divisors;
}
}  // namespace

TEST_CASE("fast_divmod agrees with / and %", "[paging][kernels]") {
  std::mt19937_64 rng(kvtest::seed() + 6);
  const auto divisors = test_divisors<std::uint64_t>(rng, 62, 61);
  const std::uint64_t top = (std::uint64_t{1} << 63) - 1;
  for (const std::uint64_t d : divisors) {
    const kvcache::detail::fast_divmod f(d);
    std::vector<std::uint64_t> ns{0,     1,   d - 1,   d,           d + 1,          2 * d - 1,
                                  2 * d, top, top - 1, top / d * d, top / d * d - 1};
    for (int i = 0; i < 200; ++i) ns.push_back(rng() % (std::uint64_t{1} << (1 + rng() % 63)));
    for (int i = 0; i < 50; ++i) ns.push_back(d * (rng() % 1000) + rng() % d);
    for (const std::uint64_t n : ns) {
      if (n > top) continue;
      std::uint64_t q = 0, r = 0;
      f.divmod(n, q, r);
      if (q != n / d || r != n % d) {
        FAIL_CHECK("fast_divmod(" << d << ") of " << n << " gave " << q << " r " << r);
        return;
      }
    }
  }
  SUCCEED();
}

TEST_CASE("fast_divmod32 agrees with / for n < 2^31", "[paging][kernels]") {
  std::mt19937_64 rng(kvtest::seed() + 7);
  auto divisors = test_divisors<std::uint32_t>(rng, 30, 30);
  divisors.push_back((std::uint32_t{1} << 31) - 1);
  const std::uint32_t top = (std::uint32_t{1} << 31) - 1;
  for (const std::uint32_t d : divisors) {
    const kvcache::detail::fast_divmod32 f(d);
    std::vector<std::uint32_t> ns{0, 1, d - 1, d, d + 1, 2 * d - 1, top, top - 1, top / d * d,
                                  top / d * d - 1};
    if (d <= top / 2) ns.push_back(2 * d);
    for (int i = 0; i < 200; ++i) {
      ns.push_back(static_cast<std::uint32_t>(rng() % (std::uint64_t{1} << (1 + rng() % 31))));
    }
    for (int i = 0; i < 50; ++i) {
      const std::uint64_t n = std::uint64_t{d} * (rng() % 1000) + rng() % d;
      if (n <= top) ns.push_back(static_cast<std::uint32_t>(n));
    }
    for (const std::uint32_t n : ns) {
      if (n > top) continue;
      if (f.div(n) != n / d) {
        FAIL_CHECK("fast_divmod32(" << d << ") of " << n << " gave " << f.div(n));
        return;
      }
    }
  }
  SUCCEED();
}
