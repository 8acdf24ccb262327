// paged_decode_host against a naive double-precision softmax, the attention mass, quantized pages
// against the reference on their dequantized pages, the plan's split choice, and bad input.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kvcache/quality/trace.hpp"
#include "attention/decode_support.hpp"
#include "kvcache/attention/paged_decode.hpp"
#include "kvcache/quant/quantizers.hpp"
#include "support/catch.hpp"

using namespace kvcache;
using namespace kvtest;

namespace {

struct host_case {
  paged_decode_shape shape;
  std::vector<std::int64_t> lens;  // one per table
  kv_order order = kv_order::hnd;
  std::int32_t layers = 1;
  std::int32_t layer = 0;
};

void check_against_naive(const host_case& c, std::uint64_t seed) {
  const paged_decode_shape& s = c.shape;
  INFO("batch " << s.batch << " heads " << s.num_qo_heads << "/" << s.num_kv_heads << " D "
                << s.head_dim << " page " << s.page_size << " stride " << s.table_head_stride
                << " seed " << seed);
  std::mt19937_64 rng(seed);
  const std::int32_t pages = pages_for(c.lens, s.page_size) + 3;  // a few unused (NaN) pages
  tables_host t = make_tables(c.lens, s.page_size, pages, rng);
  pool16 pool(c.layers, pages, s.page_size, s.table_head_stride == 0 ? s.num_kv_heads : 1,
              s.head_dim, c.order, s.q_type);
  fill_tables(pool, t, s, c.layer, rng);
  auto q = random_q(s, rng);
  paged_decode_options o;
  o.attention_mass = true;
  const auto plan = plan_paged_decode(s, t.view(), o);
  std::vector<std::uint16_t> out(q.size(), 0xFFFF);
  std::vector<float> lse(static_cast<std::size_t>(s.batch) * s.num_qo_heads);
  const std::int64_t ms = std::max<std::int64_t>(1, plan.max_tokens);
  std::vector<float> mass(static_cast<std::size_t>(s.batch) * s.num_kv_heads * ms, 0.5f);
  paged_decode_args a;
  a.q = q.data();
  a.out = out.data();
  a.lse = lse.data();
  a.tables = t.view();
  a.layer = c.layer;
  a.mass = {mass.data(), s.num_kv_heads * ms, ms};
  paged_decode_host(plan, pool.view, a);
  const auto ref = naive_decode(s, pool.view, t.view(), q.data(), c.layer, ms);
  double scale = 0;
  for (double v : ref.out) scale = std::max(scale, std::abs(v));
  double err = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const float v = value_of(out[i], s.q_type);
    REQUIRE(std::isfinite(v));
    err = std::max(err, std::abs(v - ref.out[i]));
  }
  // the output is rounded to f16 / bf16: 2^-11 / 2^-8 of its magnitude
  const double tol = s.q_type == dtype::bf16 ? 8e-3 : 1e-3;
  CHECK(err <= tol * std::max(scale, 1e-3));
  for (std::size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(ref.lse[i])) {
      CHECK(std::isinf(lse[i]));
      CHECK(lse[i] < 0);
    } else {
      CHECK(std::abs(lse[i] - ref.lse[i]) <= 1e-4 * std::max(1.0, std::abs(ref.lse[i])));
    }
  }
  const std::int32_t group = s.num_qo_heads / s.num_kv_heads;
  for (std::int32_t b = 0; b < s.batch; ++b) {
    for (std::int32_t h = 0; h < s.num_kv_heads; ++h) {
      const std::int64_t len = t.tokens(static_cast<std::size_t>(h * s.table_head_stride + b));
      double sum = 0;
      for (std::int64_t p = 0; p < ms; ++p) {
        const std::size_t i = (static_cast<std::size_t>(b) * s.num_kv_heads + h) * ms + p;
        const double got = mass[i] - 0.5;  // it adds
        CHECK(std::abs(got - ref.mass[i]) <= 1e-4);
        if (p >= len) CHECK(mass[i] == 0.5f);
        sum += got;
      }
      CHECK(std::abs(sum - (len > 0 ? group : 0)) <= 1e-4 * group);
    }
  }
}

}  // namespace

TEST_CASE("paged_decode_host matches a naive softmax", "[attention]") {
  std::uint64_t seed = kvtest::seed();
  SECTION("span_layers, GQA 4, D 128, page 16, mixed lengths, empty entry") {
    host_case c;
    c.shape = {4, 8, 2, 128, 16, 0, dtype::f16};
    c.lens = {1, 16, 0, 77};
    c.layers = 2;
    c.layer = 1;
    check_against_naive(c, seed);
  }
  SECTION("NHD pages, D 64, page 7, MHA") {
    host_case c;
    c.shape = {3, 4, 4, 64, 7, 0, dtype::f16};
    c.lens = {7, 50, 3};
    c.order = kv_order::nhd;
    check_against_naive(c, seed + 1);
  }
  SECTION("per_head tables, bf16, GQA 3, D 32") {
    host_case c;
    c.shape = {2, 6, 2, 32, 16, 2, dtype::bf16};
    c.lens = {5, 33, 16, 0};  // (b0,h0) (b1,h0) (b0,h1) (b1,h1)
    check_against_naive(c, seed + 2);
  }
  SECTION("empty batch") {
    host_case c;
    c.shape = {0, 8, 2, 128, 16, 0, dtype::f16};
    check_against_naive(c, seed + 3);
  }
}

TEMPLATE_TEST_CASE("paged_decode_host on quantized pages equals the reference on dequantized pages",
                   "[attention]", int8_quantizer, fp8_e4m3_quantizer, kivi2, kivi4) {
  using Q = TestType;
  std::mt19937_64 rng(kvtest::seed() + 7);
  paged_decode_shape s{3, 8, 2, 64, 32, 0, dtype::f16};
  const std::vector<std::int64_t> lens = {40, 300, 0};
  const std::int32_t pages = pages_for(lens, s.page_size) + 2;
  tables_host t = make_tables(lens, s.page_size, pages, rng);
  quant_fixture<Q> f(1, pages, s, 3);
  f.fill(t, s, 0, rng);
  auto q = random_q(s, rng);
  paged_decode_options o;
  o.attention_mass = true;
  const auto plan = plan_paged_decode(s, t.view(), o);
  const std::int64_t ms = plan.max_tokens;
  std::vector<std::uint16_t> out1(q.size()), out2(q.size());
  std::vector<float> m1(static_cast<std::size_t>(s.batch) * s.num_kv_heads * ms, 0.0f), m2 = m1;
  paged_decode_args a;
  a.q = q.data();
  a.tables = t.view();
  a.out = out1.data();
  a.mass = {m1.data(), s.num_kv_heads * ms, ms};
  paged_decode_host(plan, f.qview, f.residual(), a);
  a.out = out2.data();
  a.mass.data = m2.data();
  paged_decode_host(plan, f.deq.view, a);
  constexpr quant_scheme ks = Q::format.key.scheme;
  if constexpr (ks != quant_scheme::int8_token && ks != quant_scheme::fp8_e4m3_token) {
    CHECK(out1 == out2);  // KIVI decodes to f16: the same values
    CHECK(m1 == m2);
  } else {
    // int8 / fp8 decode to code x scale in f32, the f16 pages hold those rounded to f16 (2^-11
    // relative): close
    double scale = 0, err = 0, merr = 0;
    for (std::size_t i = 0; i < out1.size(); ++i) {
      const double x = to_float(float16{out1[i]}), y = to_float(float16{out2[i]});
      scale = std::max(scale, std::abs(y));
      err = std::max(err, std::abs(x - y));
    }
    for (std::size_t i = 0; i < m1.size(); ++i) merr = std::max(merr, std::abs(double{m1[i]} - m2[i]));
    INFO("max abs error " << err << " scale " << scale << " mass " << merr);
    CHECK(err <= 2e-3 * scale);
    CHECK(merr <= 2e-3);
  }
}

TEST_CASE("plan_paged_decode splits long sequences to fill the GPU", "[attention]") {
  auto plan_for = [](std::int32_t batch, std::int64_t len, paged_decode_options o = {}) {
    std::vector<std::int64_t> lens(static_cast<std::size_t>(batch), len);
    std::vector<std::int32_t> indptr{0}, last;
    for (auto l : lens) {
      indptr.push_back(indptr.back() + static_cast<std::int32_t>((l + 15) / 16));
      last.push_back(static_cast<std::int32_t>((l - 1) % 16 + 1));
    }
    page_table_view v{indptr.data(), nullptr, last.data(), batch, 16};
    return plan_paged_decode({batch, 32, 8, 128, 16, 0, dtype::f16}, v, o);
  };
  const auto a = plan_for(64, 4096);
  CHECK_FALSE(a.split());
  const auto b = plan_for(16, 32768);
  CHECK(b.split());
  CHECK(b.max_chunks * 16 * 8 <= 132 * 4);
  const auto c = plan_for(1, 131072);
  CHECK(c.split());
  CHECK(c.max_chunks >= 32);
  CHECK(c.max_chunks * 8 <= 132 * 4);
  CHECK(c.workspace_bytes >= static_cast<std::size_t>(c.max_chunks) * 32 * 128 * 4);
  // more than a wave: 512 blocks on 3 x 132 slots are 2 waves of whole tables; 3 chunks each
  // run in 4 waves of a third of the work (waves x chunk 4 x 1376 against 2 x 4096)
  paged_decode_options three;
  three.ctas_per_sm = 3;
  const auto d = plan_for(64, 4096, three);
  CHECK(d.max_chunks == 3);
  CHECK(d.chunk_tokens == 1376);
  // under a wave with min_waves 4 (f16 pages on the H100: 2 blocks per SM): 128 blocks become
  // 8 chunks of 4096 tokens, 1024 blocks in 4 waves of 264 (one wave: 2 chunks)
  paged_decode_options f16_h100;
  f16_h100.ctas_per_sm = 2;
  CHECK(plan_for(16, 32768, f16_h100).max_chunks == 2);
  f16_h100.min_waves = 4;
  const auto e = plan_for(16, 32768, f16_h100);
  CHECK(e.max_chunks == 8);
  CHECK(e.chunk_tokens == 4096);
  // a batch over a wave ignores min_waves (512 blocks: 2 waves of whole tables)
  CHECK_FALSE(plan_for(64, 8192, f16_h100).split());
  // no chunk below wave_chunk_tokens: (1, 128k) keeps its one-wave chunk of 4000 tokens (4 waves
  // would be chunks of 1024), (8, 32k) gets 4096-token chunks (2 waves; 4 waves: 2048)
  const auto f = plan_for(1, 131072, f16_h100);
  CHECK(f.chunk_tokens == 4000);
  CHECK(f.max_chunks * 8 <= 132 * 2);
  CHECK(plan_for(8, 32768, f16_h100).chunk_tokens == 4096);
  paged_decode_options odd_wave_chunk;
  odd_wave_chunk.wave_chunk_tokens = 100;
  KVTEST_REQUIRE_ERROR(plan_for(16, 32768, odd_wave_chunk), errc::invalid_argument,
                       "wave_chunk_tokens 100");
  paged_decode_options no_waves;
  no_waves.min_waves = 0;
  KVTEST_REQUIRE_ERROR(plan_for(16, 32768, no_waves), errc::invalid_argument, "min_waves 0");
  // no split when a wave holds the batch exactly, or when the chunks would be too short
  CHECK_FALSE(plan_for(64, 4096).split());
  paged_decode_options big_chunks = three;
  big_chunks.min_chunk_tokens = 4096;
  CHECK_FALSE(plan_for(64, 4096, big_chunks).split());
}

TEST_CASE("paged_decode rejects bad input naming the value", "[attention]") {
  std::mt19937_64 rng(kvtest::seed() + 11);
  paged_decode_shape s{2, 8, 2, 64, 16, 0, dtype::f16};
  tables_host t = make_tables({20, 5}, 16, 4, rng);
  pool16 pool(1, 4, 16, 2, 64, kv_order::hnd, dtype::f16);
  fill_tables(pool, t, s, 0, rng);
  auto q = random_q(s, rng);
  std::vector<std::uint16_t> out(q.size());
  const auto plan = plan_paged_decode(s, t.view());
  paged_decode_args a;
  a.q = q.data();
  a.out = out.data();
  a.tables = t.view();

  SECTION("head counts") {
    paged_decode_shape bad = s;
    bad.num_qo_heads = 6;
    bad.num_kv_heads = 4;
    KVTEST_REQUIRE_ERROR(plan_paged_decode(bad, t.view()), errc::shape_mismatch, "num_qo_heads 6");
  }
  SECTION("head dim and dtype") {
    paged_decode_shape bad = s;
    bad.head_dim = 12;
    KVTEST_REQUIRE_ERROR(plan_paged_decode(bad, t.view()), errc::not_supported, "head_dim");
    bad = s;
    bad.q_type = dtype::f32;
    KVTEST_REQUIRE_ERROR(plan_paged_decode(bad, t.view()), errc::not_supported, "f32");
  }
  SECTION("out-of-range page id") {
    tables_host bad = t;
    bad.indices[1] = 99;
    a.tables = bad.view();
    KVTEST_REQUIRE_ERROR(paged_decode_host(plan, pool.view, a), errc::out_of_range, "page id 99");
  }
  SECTION("plan of another batch shape") {
    tables_host one = make_tables({20}, 16, 4, rng);
    const auto plan1 = plan_paged_decode({1, 8, 2, 64, 16, 0, dtype::f16}, one.view());
    a.tables = one.view();
    paged_decode_plan p2 = plan;
    KVTEST_REQUIRE_ERROR(paged_decode_host(p2, pool.view, a), errc::shape_mismatch, "2 tables");
    (void)plan1;
  }
  SECTION("pool that does not match") {
    pool16 other(1, 4, 16, 2, 64, kv_order::hnd, dtype::f16);
    other.view.type = dtype::f32;
    other.view.elem_bytes = 4;
    KVTEST_REQUIRE_ERROR(paged_decode_host(plan, other.view, a), errc::dtype_mismatch, "f32");
    pool16 heads(1, 4, 16, 4, 64, kv_order::hnd, dtype::f16);
    KVTEST_REQUIRE_ERROR(paged_decode_host(plan, heads.view, a), errc::shape_mismatch, "4 heads");
  }
  SECTION("mass without a mass plan") {
    std::vector<float> m(64);
    a.mass = {m.data(), 32, 16};
    KVTEST_REQUIRE_ERROR(paged_decode_host(plan, pool.view, a), errc::invalid_argument,
                         "attention_mass");
  }
}

TEST_CASE("paged_decode_host matches a naive softmax on the recorded SmolLM2 traces", "[attention]") {
  // Real keys, values and queries of every recorded layer of both fixture texts
  // (decode_support.hpp's trace_case); the mass of each step sums to the group size.
  for_each_trace_case(kvtest::seed(), [&](const std::string& label, const trace_case& c,
                                           const paged_decode_plan& plan, std::int64_t ms) {
    INFO(label);
    const paged_decode_shape& s = c.shape;
    std::vector<std::uint16_t> out(c.q.size(), 0xFFFF);
    std::vector<float> lse(static_cast<std::size_t>(s.batch) * s.num_qo_heads);
    std::vector<float> mass(static_cast<std::size_t>(s.batch) * s.num_kv_heads * ms, 0.0f);
    paged_decode_args a;
    a.q = c.q.data();
    a.out = out.data();
    a.lse = lse.data();
    a.tables = c.tables.view();
    a.mass = {mass.data(), s.num_kv_heads * ms, ms};
    paged_decode_host(plan, c.pool.view, a);
    const auto ref = naive_decode(s, c.pool.view, c.tables.view(), c.q.data(), 0, ms);
    double scale = 0, err = 0, merr = 0;
    for (double v : ref.out) scale = std::max(scale, std::abs(v));
    for (std::size_t i = 0; i < out.size(); ++i) {
      const float v = value_of(out[i], s.q_type);
      REQUIRE(std::isfinite(v));
      err = std::max(err, std::abs(v - ref.out[i]));
    }
    for (std::size_t i = 0; i < mass.size(); ++i) merr = std::max(merr, std::abs(mass[i] - ref.mass[i]));
    INFO("max abs error " << err << " (output scale " << scale << "), max mass error " << merr);
    CHECK(err <= 1e-3 * std::max(scale, 1e-3));
    CHECK(merr <= 1e-4);
    const std::int32_t group = s.num_qo_heads / s.num_kv_heads;
    for (std::int32_t b = 0; b < s.batch; ++b) {
      for (std::int32_t h = 0; h < s.num_kv_heads; ++h) {
        double sum = 0;
        for (std::int64_t p = 0; p < ms; ++p) sum += mass[(static_cast<std::size_t>(b) * s.num_kv_heads + h) * ms + p];
        CHECK(std::abs(sum - group) <= 1e-4 * group);
      }
    }
  });
}
