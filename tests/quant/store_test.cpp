// The quantized store against a plain shadow model, for every quantizer and page geometry.
//
// The shadow keeps, per sequence and (layer, kv head), the f16 rows the store should read back
// and the number of quantized tokens q. It applies the store's documented semantics directly,
// without pages: when len - q reaches the residual window, rows [q, q + residual) are replaced by
// quantize + dequantize of themselves (the quantizer's own host functions on a scratch page);
// schemes without a window do so on every append; a truncation below q sets q to the length
// rounded down to the key group. So the store must read back *bit-identical* rows after any
// sequence of appends, forks, truncations and releases (data movement, grouping and sharing are
// checked exactly), and its rows must stay within the quantizer's stated bound of the original
// input for sequences never rolled back into their quantized part.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <tuple>
#include <vector>

#include "../support/catch.hpp"
#include "kvcache/quant/quantized_kv_store.hpp"
#include "kvcache/quant/quantizers.hpp"
#include "quant_support.hpp"

namespace {

using namespace kvcache;

template <class Q, class G, std::int32_t Page = 32>
struct config {
  using quantizer = Q;
  using geometry = G;
  static constexpr std::int32_t page = Page;
};

using store_configs =
    std::tuple<config<identity_quantizer, span_layers>, config<int8_quantizer, span_layers>,
               config<fp8_e4m3_quantizer, per_head>, config<kivi2, span_layers>,
               config<kivi2, per_head>, config<kivi2, per_layer>, config<kivi4, span_layers>,
               config<kivi2_token_keys, span_layers>, config<int8_quantizer, per_head>,
               config<kivi2, per_head, 64>, config<kivi4, span_layers, 256>>;

constexpr std::int32_t kLayers = 2, kHeads = 2, kDim = 32, kPage = 32;

kv_layout test_layout(std::int32_t page = kPage) {
  return kv_layout{.layers = kLayers, .kv_heads = kHeads, .q_heads = kHeads * 2, .head_dim = kDim,
                   .page_size = page, .order = kv_order::nhd, .type = dtype::f16};
}

using rows_t = std::vector<std::uint16_t>;

// quantize + dequantize of `count` rows in place, as one page of `count` tokens
template <class Q>
void round_trip(std::uint16_t* rows, std::int32_t count, kv_side side) {
  if (count == 0) return;
  std::vector<std::byte> page(side == kv_side::key ? Q::key_page_bytes(count, kDim)
                                                   : Q::value_page_bytes(count, kDim));
  rows_t out(static_cast<std::size_t>(count) * kDim);
  if (side == kv_side::key) {
    Q::quantize_keys(rows, page.data(), count, kDim, 0, count);
    Q::dequantize_keys(page.data(), out.data(), count, kDim, 0, count);
  } else {
    Q::quantize_values(rows, page.data(), count, kDim, 0, count);
    Q::dequantize_values(page.data(), out.data(), count, kDim, 0, count);
  }
  std::copy(out.begin(), out.end(), rows);
}

template <class Q>
struct shadow_seq {
  // [layer * heads + head] -> rows (len x kDim); originals alongside
  std::vector<rows_t> k{kLayers * kHeads}, v{kLayers * kHeads}, k0{kLayers * kHeads},
      v0{kLayers * kHeads};
  std::int64_t len = 0, q = 0;
  bool rolled_back = false;  // truncated into the quantized part at some point

  void flush() {
    const std::int32_t win = Q::residual == 0 ? static_cast<std::int32_t>(len - q) : Q::residual;
    while (len - q >= win && win > 0) {
      for (std::size_t i = 0; i < k.size(); ++i) {
        round_trip<Q>(k[i].data() + q * kDim, win, kv_side::key);
        round_trip<Q>(v[i].data() + q * kDim, win, kv_side::value);
      }
      q += win;
    }
  }
  void truncate(std::int64_t n) {
    if (n < q) {
      q = n / Q::group_size * Q::group_size;
      rolled_back = true;
    }
    len = n;
    for (auto* a : {&k, &v, &k0, &v0}) {
      for (auto& r : *a) r.resize(static_cast<std::size_t>(n) * kDim);
    }
  }
};

// the stated per-element bound, from the original rows (see docs/quantization.md), with the
// rounding slack the contract tests allow
template <class Q>
double bound(const shadow_seq<Q>& s, std::size_t lh, kv_side side, std::int64_t tok, int c,
             double decoded) {
  const auto& orig = side == kv_side::key ? s.k0[lh] : s.v0[lh];
  const auto f = Q::format.side(side);
  auto x = [&](std::int64_t t, int ch) {
    return static_cast<double>(kvtest::f16_to_float(orig[static_cast<std::size_t>(t * kDim + ch)]));
  };
  const double slack = kvtest::ulp16(decoded) / 2 + std::fabs(decoded) * 0x1p-22;
  switch (f.scheme) {
    case quant_scheme::f16: return 0;
    case quant_scheme::int8_token: {
      double amax = 0;
      for (int ch = 0; ch < kDim; ++ch) amax = std::max(amax, std::fabs(x(tok, ch)));
      return amax / 127 / 2 * (1 + 0x1p-20) + slack;
    }
    case quant_scheme::fp8_e4m3_token: {
      double amax = 0;
      for (int ch = 0; ch < kDim; ++ch) amax = std::max(amax, std::fabs(x(tok, ch)));
      const double sc = amax / 448;
      return sc * std::max(std::fabs(x(tok, c)) / sc / 16, 0x1p-10) * (1 + 0x1p-18) + slack;
    }
    case quant_scheme::kivi_channel:
    case quant_scheme::kivi_token: {
      double lo = 1e300, hi = -1e300;
      if (f.scheme == quant_scheme::kivi_channel) {
        const std::int64_t g0 = tok / f.group * f.group;
        for (std::int64_t t = g0; t < g0 + f.group; ++t) lo = std::min(lo, x(t, c)), hi = std::max(hi, x(t, c));
      } else {
        const int g0 = c / f.group * f.group;
        for (int ch = g0; ch < g0 + f.group; ++ch) lo = std::min(lo, x(tok, ch)), hi = std::max(hi, x(tok, ch));
      }
      return (hi - lo) / ((1 << f.bits) - 1) / 2 * (1 + 0x1p-9) + slack;
    }
  }
  return 0;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("quantized store: shadow model over appends, forks, truncations",
                        "[quant][store]", store_configs) {
  using Q = typename TestType::quantizer;
  using G = typename TestType::geometry;
  using store_t = quantized_kv_store<host_space, G, Q>;
  std::mt19937_64 rng(kvtest::seed() ^ std::hash<std::string_view>{}(Q::name));
  quantized_store_config cfg;
  cfg.layout = test_layout(TestType::page);
  cfg.num_pages = 160 * kPage / TestType::page *
                  (std::is_same_v<G, span_layers> ? 1 : G::tables_per_sequence(cfg.layout));
  cfg.max_sequences = 8;
  cfg.staging_pages = 5 * G::tables_per_sequence(cfg.layout);  // can run short: exercises failure
  store_t store(cfg);
  std::map<std::uint32_t, std::pair<seq_id, shadow_seq<Q>>> live;
  std::int64_t appended = 0, refused = 0, max_err_ratio_count = 0;
  double worst = 0;

  int op = 0;
  // bit-exact against the shadow after every operation; against the input's bound every 8th
  // operation and at the end (the bound check dominates the run time)
  auto check = [&](seq_id id, const shadow_seq<Q>& s, bool bounds = false) {
    const auto len = store.length(id);
    REQUIRE(len == s.len);
    store.check_sequence(id);
    rows_t k(static_cast<std::size_t>(kLayers * kHeads * len * kDim) + 8);
    rows_t v(k.size());
    store.read(id, k.data(), v.data());
    for (std::size_t lh = 0; lh < s.k.size(); ++lh) {
      for (std::int64_t i = 0; i < len * kDim; ++i) {
        const auto at = static_cast<std::size_t>(static_cast<std::int64_t>(lh) * len * kDim + i);
        const auto si = static_cast<std::size_t>(i);
        if (k[at] != s.k[lh][si] || v[at] != s.v[lh][si]) {
          FAIL("sequence " << id.index << " layer/head " << lh << " token " << i / kDim
                           << " channel " << i % kDim << ": store K " << k[at] << " V " << v[at]
                           << ", shadow K " << s.k[lh][si] << " V " << s.v[lh][si]);
        }
        if (s.rolled_back || !(bounds || op % 8 == 0)) continue;
        for (kv_side side : {kv_side::key, kv_side::value}) {
          const auto& got = side == kv_side::key ? k : v;
          const auto& orig = side == kv_side::key ? s.k0[lh] : s.v0[lh];
          const double d = kvtest::f16_to_float(got[at]);
          const double o = kvtest::f16_to_float(orig[si]);
          const std::int64_t tok = i / kDim;
          // staged tokens are exact
          const double b = tok < s.q ? bound(s, lh, side, tok, static_cast<int>(i % kDim), d) : 0;
          if (std::fabs(d - o) > b) {
            FAIL(Q::name << " sequence " << id.index << " token " << tok << " channel " << i % kDim
                         << " " << name_of(side) << ": |" << o << " - " << d << "| > " << b);
          }
          if (b > 0) worst = std::max(worst, std::fabs(d - o) / b);
          ++max_err_ratio_count;
        }
      }
    }
  };

  const std::int64_t sizes[] = {1, 1, 1, 1, 3, 31, 32, 100, 127, 128, 129, 200, 300};
  for (op = 0; op < 300; ++op) {
    const int kind = static_cast<int>(rng() % 10);
    if (live.empty() || (kind == 0 && live.size() < 6)) {
      const seq_id id = store.create();
      live[id.index] = {id, shadow_seq<Q>{}};
      continue;
    }
    auto it = live.begin();
    std::advance(it, static_cast<long>(rng() % live.size()));
    auto& [id, s] = it->second;
    if (kind <= 5) {  // append
      const std::int64_t n = sizes[rng() % std::size(sizes)];
      rows_t k(static_cast<std::size_t>(kLayers * kHeads * n * kDim)), v(k.size());
      for (std::size_t lh = 0; lh < s.k.size(); ++lh) {
        const auto a = kvtest::random_rows(rng, static_cast<std::int32_t>(n), kDim);
        const auto b = kvtest::random_rows(rng, static_cast<std::int32_t>(n), kDim, 0.1f);
        std::copy(a.begin(), a.end(), k.begin() + static_cast<long>(lh * n * kDim));
        std::copy(b.begin(), b.end(), v.begin() + static_cast<long>(lh * n * kDim));
      }
      const bool could = store.can_append(id, n);
      const auto before = store.stats();
      const auto r = store.try_append(id, n, k.data(), v.data());
      REQUIRE(r.has_value() == could);
      if (!r) {  // all or nothing
        ++refused;
        const auto after = store.stats();
        REQUIRE(after.pages.pages_used == before.pages.pages_used);
        REQUIRE(after.staging_used == before.staging_used);
        check(id, s);
        continue;
      }
      ++appended;
      for (std::size_t lh = 0; lh < s.k.size(); ++lh) {
        auto src_k = k.begin() + static_cast<long>(lh * n * kDim);
        auto src_v = v.begin() + static_cast<long>(lh * n * kDim);
        s.k[lh].insert(s.k[lh].end(), src_k, src_k + n * kDim);
        s.v[lh].insert(s.v[lh].end(), src_v, src_v + n * kDim);
        s.k0[lh].insert(s.k0[lh].end(), src_k, src_k + n * kDim);
        s.v0[lh].insert(s.v0[lh].end(), src_v, src_v + n * kDim);
      }
      s.len += n;
      s.flush();
    } else if (kind == 6 && live.size() < 6) {  // fork
      const seq_id child = store.fork(id);
      live[child.index] = {child, s};
    } else if (kind == 7) {  // truncate: usually a short rollback, sometimes deep
      const std::int64_t cut = rng() % 4 == 0 ? static_cast<std::int64_t>(rng() % (s.len + 1))
                                              : std::max<std::int64_t>(0, s.len - static_cast<std::int64_t>(rng() % 8));
      const auto before = store.stats();
      if (!store.try_truncate(id, cut)) {  // no staging page for the rollback: nothing changed
        REQUIRE(store.stats().staging_used == before.staging_used);
        REQUIRE(store.length(id) == s.len);
        check(id, s);
        continue;
      }
      s.truncate(cut);
    } else if (kind == 8) {  // release
      store.release(id);
      live.erase(it);
      store.check_invariants();
      continue;
    }
    store.check_invariants();
    check(id, s);
  }
  for (auto& [k, p] : live) check(p.first, p.second, true);
  for (auto& [k, p] : live) store.release(p.first);
  store.check_invariants();
  const auto st = store.stats();
  CHECK(st.pages.pages_used == 0);
  CHECK(st.staging_used == 0);
  INFO(Q::name << " appends " << appended << " refused " << refused << " worst error / bound "
               << worst);
  CHECK(appended > 50);
  WARN(Q::name << " / " << G::name << ": " << appended << " appends (" << refused
               << " refused for lack of pages), worst error / bound " << worst << " over "
               << max_err_ratio_count << " elements");
}

TEMPLATE_LIST_TEST_CASE("quantized store: bytes per token as the library computes them",
                        "[quant][store]", store_configs) {
  using Q = typename TestType::quantizer;
  using G = typename TestType::geometry;
  // 4096 tokens on one sequence: bytes used = pages x page bytes (+ no staging: 4096 % 128 == 0)
  quantized_store_config cfg;
  cfg.layout = kv_layout{.layers = 2, .kv_heads = 2, .q_heads = 4, .head_dim = 128,
                         .page_size = 32, .order = kv_order::nhd, .type = dtype::f16};
  cfg.num_pages = (4096 / 32 + 4) * G::tables_per_sequence(cfg.layout);
  cfg.max_sequences = 2;
  quantized_kv_store<host_space, G, Q> store(cfg);
  const seq_id id = store.create();
  REQUIRE(store.try_reserve(id, 4096).has_value());
  const auto st = store.stats();
  const double per_token = static_cast<double>(st.bytes_used) / 4096.0;
  const double f16 = static_cast<double>(cfg.layout.bytes_per_token());
  CHECK(per_token == kvtest::Approx(Q::kv_bytes_per_token(cfg.layout, 4096)).epsilon(1e-9));
  CHECK(st.staging_used == 0);
  REQUIRE(store.try_reserve(id, 100).has_value());
  CHECK(store.stats().staging_used == (Q::residual > 0 ? G::tables_per_sequence(cfg.layout) : 0));
  WARN(Q::name << " / " << G::name << ": " << per_token / f16 << " of f16 at 4096 tokens");
}

TEST_CASE("quantized store: rejects what it cannot store, naming the value", "[quant][store]") {
  quantized_store_config cfg;
  cfg.layout = test_layout();
  cfg.layout.page_size = 16;
  cfg.num_pages = 8;
  cfg.max_sequences = 2;
  KVTEST_REQUIRE_ERROR((quantized_kv_store<host_space, span_layers, kivi2>(cfg)),
                       errc::invalid_argument, "page_size 16");
  cfg.layout.page_size = 32;
  cfg.layout.type = dtype::bf16;
  KVTEST_REQUIRE_ERROR((quantized_kv_store<host_space, span_layers, kivi2>(cfg)),
                       errc::not_supported, "bf16");
  cfg.layout.type = dtype::f16;
  quantized_kv_store<host_space, span_layers, kivi2> store(cfg);
  const seq_id id = store.create();
  rows_t k(kLayers * kHeads * 128 * kDim, kvtest::float_to_f16(1.0f)), v = k;
  REQUIRE(store.try_append(id, 3, k.data(), v.data()));
  // NaN / Inf and misaligned rows are rejected before anything changes, naming the value
  k[kDim * 128 + 7] = 0x7e00;  // layer 0, head 1, row 0, channel 7
  KVTEST_REQUIRE_ERROR(store.try_append(id, 128, k.data(), v.data()), errc::invalid_argument,
                       "layer 0, kv head 1, position 3 (row 0 of this append), channel 7 is NaN");
  k[kDim * 128 + 7] = kvtest::float_to_f16(1.0f);
  v[kDim + 7] = 0x7c00;  // one token: layer 0, head 1's value row, channel 7
  KVTEST_REQUIRE_ERROR(store.try_append(id, 1, k.data(), v.data()), errc::invalid_argument,
                       "value input, layer 0, kv head 1, position 3 (row 0 of this append), channel 7 is Inf");
  v[kDim + 7] = kvtest::float_to_f16(1.0f);
  KVTEST_REQUIRE_ERROR(store.try_append(id, 1, k.data() + 1, v.data()), errc::invalid_argument,
                       "16-byte aligned");
  CHECK(store.length(id) == 3);
  CHECK(store.stats().staging_used == 1);
  store.check_sequence(id);
  store.release(id);
  store.check_invariants();
  CHECK(store.stats().staging_used == 0);
  CHECK(store.stats().pages.pages_used == 0);
}

TEMPLATE_LIST_TEST_CASE("quantized store: forks never write into shared pages or staging",
                        "[quant][store]", store_configs) {
  using Q = typename TestType::quantizer;
  using G = typename TestType::geometry;
  quantized_store_config cfg;
  cfg.layout = test_layout();
  cfg.num_pages = 64 * G::tables_per_sequence(cfg.layout);
  cfg.max_sequences = 4;
  quantized_kv_store<host_space, G, Q> store(cfg);
  std::mt19937_64 rng(kvtest::seed());
  auto rows = [&](std::int64_t n, float scale) {
    rows_t r;
    for (int lh = 0; lh < kLayers * kHeads; ++lh) {
      const auto a = kvtest::random_rows(rng, static_cast<std::int32_t>(n), kDim, scale);
      r.insert(r.end(), a.begin(), a.end());
    }
    return r;
  };
  // fork points: on a page boundary with staged tokens (the flush writes full shared pages),
  // mid-page (the partial page and the staging page are shared)
  for (std::int64_t at : {64, 50, 128, 1}) {
    const seq_id a = store.create();
    auto k0 = rows(at, 1.0f), v0 = rows(at, 0.5f);
    REQUIRE(store.try_append(a, at, k0.data(), v0.data()));
    const seq_id b = store.fork(a);
    rows_t ka_before(static_cast<std::size_t>(kLayers * kHeads * at * kDim)), va_before = ka_before;
    store.read(a, ka_before.data(), va_before.data());
    // b writes different data past the fork point, across a window flush; then a does too
    auto kb = rows(150, 3.0f), vb = rows(150, 2.0f);
    REQUIRE(store.try_append(b, 150, kb.data(), vb.data()));
    rows_t ka(static_cast<std::size_t>(kLayers * kHeads * at * kDim)), va = ka;
    store.read(a, ka.data(), va.data());
    CHECK(ka == ka_before);
    CHECK(va == va_before);
    auto ka2 = rows(150, 0.25f), va2 = rows(150, 0.125f);
    REQUIRE(store.try_append(a, 150, ka2.data(), va2.data()));
    // b's first `at` tokens equal a's as they were at the fork... as far as the quantizer's
    // grouping allows: compare b with a shadow built the same way
    shadow_seq<Q> sa, sb;
    auto push = [&](shadow_seq<Q>& s, const rows_t& k, const rows_t& v, std::int64_t n) {
      for (std::size_t lh = 0; lh < s.k.size(); ++lh) {
        s.k[lh].insert(s.k[lh].end(), k.begin() + static_cast<long>(lh * n * kDim),
                       k.begin() + static_cast<long>((lh + 1) * n * kDim));
        s.v[lh].insert(s.v[lh].end(), v.begin() + static_cast<long>(lh * n * kDim),
                       v.begin() + static_cast<long>((lh + 1) * n * kDim));
      }
      s.len += n;
      s.flush();
    };
    push(sa, k0, v0, at);
    sb = sa;
    push(sa, ka2, va2, 150);
    push(sb, kb, vb, 150);
    for (auto [id, s] : {std::pair{a, &sa}, std::pair{b, &sb}}) {
      const std::int64_t len = store.length(id);
      REQUIRE(len == s->len);
      rows_t k(static_cast<std::size_t>(kLayers * kHeads * len * kDim)), v = k;
      store.read(id, k.data(), v.data());
      for (std::size_t lh = 0; lh < s->k.size(); ++lh) {
        CHECK(std::equal(s->k[lh].begin(), s->k[lh].end(), k.begin() + static_cast<long>(lh * len * kDim)));
        CHECK(std::equal(s->v[lh].begin(), s->v[lh].end(), v.begin() + static_cast<long>(lh * len * kDim)));
      }
    }
    store.check_invariants();
    store.release(a);
    store.release(b);
  }
  CHECK(store.stats().pages.pages_used == 0);
}
