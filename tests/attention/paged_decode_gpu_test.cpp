// paged_decode_cuda against paged_decode_host: random f16 / bf16 pages (GQA 1..8, head dims 64 and
// 128, HND / NHD, per_head tables, forced and automatic splits), quantized pages (int8, fp8,
// KIVI-2/4 with the residual window) against the reference on their dequantized pages, the
// attention mass, NaN-poisoned memory (every slot beyond a length and every unused page), edge
// cases (length 1, exactly a page, empty entries, 16 with 128k tokens) and errors before launch.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "attention/decode_support.hpp"
#include "kvcache/attention/paged_decode.hpp"
#include "kvcache/core/cuda_error.hpp"
#include "kvcache/memory/buffer.hpp"
#include "kvcache/memory/stream.hpp"
#include "kvcache/quality/trace.hpp"
#include "kvcache/quant/quantizers.hpp"
#include "support/catch.hpp"

using namespace kvcache;
using namespace kvtest;

namespace {

template <class T>
buffer<T, cuda_space> upload(const T* p, std::size_t n) {
  buffer<T, cuda_space> b(std::max<std::size_t>(n, 1));
  if (n > 0) KVCACHE_CUDA_TRY(cudaMemcpy(b.data(), p, n * sizeof(T), cudaMemcpyHostToDevice));
  return b;
}
template <class T>
buffer<T, cuda_space> upload(const std::vector<T>& v) {
  return upload(v.data(), v.size());
}
template <class T>
std::vector<T> download(const buffer<T, cuda_space>& b, std::size_t n) {
  std::vector<T> v(n);
  if (n > 0) KVCACHE_CUDA_TRY(cudaMemcpy(v.data(), b.data(), n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

struct device_tables {
  buffer<std::int32_t, cuda_space> indptr, indices, last;
  page_table_view view;
  explicit device_tables(const tables_host& t)
      : indptr(upload(t.indptr)), indices(upload(t.indices)), last(upload(t.last)) {
    view = {indptr.data(), indices.data(), last.data(), static_cast<std::int32_t>(t.last.size()),
            t.page_size};
  }
};

struct gpu_result {
  std::vector<std::uint16_t> out;
  std::vector<float> lse, mass;
};

/// Runs the GPU call twice (outputs poisoned with NaN before each) and requires equal outputs.
template <class Call>
gpu_result run_gpu(const paged_decode_plan& plan, const std::vector<std::uint16_t>& q,
                   const tables_host& t, std::int64_t mass_stride, Call&& call) {
  const paged_decode_shape& s = plan.shape;
  device_tables dt(t);
  auto dq = upload(q);
  buffer<std::uint16_t, cuda_space> dout(std::max<std::size_t>(q.size(), 1));
  const std::size_t rows = static_cast<std::size_t>(s.batch) * s.num_qo_heads;
  buffer<float, cuda_space> dlse(std::max<std::size_t>(rows, 1));
  const std::size_t mass_n = static_cast<std::size_t>(s.batch) * s.num_kv_heads * mass_stride;
  buffer<float, cuda_space> dmass(std::max<std::size_t>(mass_n, 1));
  buffer<std::byte, cuda_space> ws(std::max<std::size_t>(plan.workspace_bytes, 256));
  stream st;
  gpu_result first;
  for (int round = 0; round < 2; ++round) {
    KVCACHE_CUDA_TRY(cudaMemset(dout.data(), 0xFF, dout.size() * 2));
    KVCACHE_CUDA_TRY(cudaMemset(dlse.data(), 0xFF, dlse.size() * 4));
    KVCACHE_CUDA_TRY(cudaMemset(dmass.data(), 0, dmass.size() * 4));
    KVCACHE_CUDA_TRY(cudaMemset(ws.data(), 0xFF, ws.size()));
    paged_decode_args a;
    a.q = dq.data();
    a.out = dout.data();
    a.lse = dlse.data();
    a.tables = dt.view;
    if (plan.attention_mass) a.mass = {dmass.data(), s.num_kv_heads * mass_stride, mass_stride};
    call(a, ws.data(), st.view());
    st.synchronize();
    KVCACHE_CUDA_TRY(cudaGetLastError());
    gpu_result r{download(dout, q.size()), download(dlse, rows), download(dmass, mass_n)};
    if (round == 0) {
      first = r;
    } else {
      CHECK(r.out == first.out);
      CHECK(std::memcmp(r.mass.data(), first.mass.data(), 4 * mass_n) == 0);
    }
  }
  return first;
}

/// Host reference (same plan; reference(args) runs it), compared with the GPU result.
template <class Reference>
void compare_with(const paged_decode_plan& plan, const gpu_result& g, const std::vector<std::uint16_t>& q,
             const tables_host& t, std::int64_t ms, Reference&& reference, double tol) {
  const paged_decode_shape& s = plan.shape;
  std::vector<std::uint16_t> out(q.size());
  std::vector<float> lse(static_cast<std::size_t>(s.batch) * s.num_qo_heads);
  std::vector<float> mass(static_cast<std::size_t>(s.batch) * s.num_kv_heads * ms, 0.0f);
  paged_decode_args a;
  a.q = q.data();
  a.out = out.data();
  a.lse = lse.data();
  a.tables = t.view();
  if (plan.attention_mass) a.mass = {mass.data(), s.num_kv_heads * ms, ms};
  reference(a);
  // bf16 outputs: both sides are rounded to bf16 (2^-8 relative steps, coarser than tol), so
  // results a hair apart can round one unit apart: that unit of |r| is allowed on top of tol
  double scale = 0, err = 0, ulp_err = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const float r = value_of(out[i], s.q_type);
    const float v = value_of(g.out[i], s.q_type);
    REQUIRE(std::isfinite(v));
    scale = std::max(scale, static_cast<double>(std::abs(r)));
    const double e = std::abs(v - r);
    const double unit =
        s.q_type == dtype::bf16 && r != 0.0f ? std::ldexp(1.0, std::ilogb(r) - 7) : 0.0;
    err = std::max(err, e);
    ulp_err = std::max(ulp_err, std::max(0.0, e - unit));
  }
  INFO("max abs error " << err << " (beyond one bf16 unit: " << ulp_err << ") output scale "
                        << scale);
  CHECK(ulp_err <= tol * std::max(scale, 1e-3));
  for (std::size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(lse[i])) {
      CHECK((std::isinf(g.lse[i]) && g.lse[i] < 0));
    } else {
      CHECK(std::abs(g.lse[i] - lse[i]) <= 2e-4 * std::max(1.0f, std::abs(lse[i])));
    }
  }
  if (plan.attention_mass) {
    const std::int32_t group = s.num_qo_heads / s.num_kv_heads;
    double merr = 0;
    for (std::int32_t b = 0; b < s.batch; ++b) {
      for (std::int32_t h = 0; h < s.num_kv_heads; ++h) {
        const std::int64_t len = t.tokens(static_cast<std::size_t>(h * s.table_head_stride + b));
        double sum = 0;
        for (std::int64_t p = 0; p < ms; ++p) {
          const std::size_t i = (static_cast<std::size_t>(b) * s.num_kv_heads + h) * ms + p;
          merr = std::max(merr, static_cast<double>(std::abs(g.mass[i] - mass[i])));
          sum += g.mass[i];
        }
        CHECK(std::abs(sum - (len > 0 ? group : 0)) <= 1e-4 * group);
      }
    }
    INFO("max mass error " << merr);
    CHECK(merr <= 1e-4);
  }
}

/// Host reference over the f16 / bf16 pages `ref_kv` (host).
void compare(const paged_decode_plan& plan, const gpu_result& g, const std::vector<std::uint16_t>& q,
             const tables_host& t, std::int64_t ms, const paged_kv_view& ref_kv, double tol) {
  compare_with(plan, g, q, t, ms,
               [&](const paged_decode_args& a) { paged_decode_host(plan, ref_kv, a); }, tol);
}

struct f16_case {
  paged_decode_shape shape;
  std::vector<std::int64_t> lens;
  kv_order order = kv_order::hnd;
  std::int32_t force_chunk = 0;
  bool mass = true;
  bool device_options = false;  // the split sized by paged_decode_cuda_options
  std::optional<dtype> pages = std::nullopt;  // the pages' dtype when it is not the queries'
};

void run_f16_case(const f16_case& c, std::uint64_t seed) {
  const paged_decode_shape& s = c.shape;
  INFO("batch " << s.batch << " heads " << s.num_qo_heads << "/" << s.num_kv_heads << " D "
                << s.head_dim << " page " << s.page_size << " stride " << s.table_head_stride
                << " dtype " << name_of(s.q_type) << " pages " << name_of(c.pages.value_or(s.q_type))
                << " chunk " << c.force_chunk << " seed " << seed);
  std::mt19937_64 rng(seed);
  const std::int32_t layers = 2, layer = 1;
  const std::int32_t pages = pages_for(c.lens, s.page_size) + 5;
  tables_host t = make_tables(c.lens, s.page_size, pages, rng);
  pool16 pool(layers, pages, s.page_size, s.table_head_stride == 0 ? s.num_kv_heads : 1,
              s.head_dim, c.order, c.pages.value_or(s.q_type));
  fill_tables(pool, t, s, layer, rng);
  auto q = random_q(s, rng);
  paged_decode_options o;
  o.attention_mass = c.mass;
  o.force_chunk_tokens = c.force_chunk;
  if (c.device_options) {
    o = paged_decode_cuda_options(pool.view, o);
    REQUIRE(o.ctas_per_sm >= 1);
  }
  const auto plan = plan_paged_decode(s, t.view(), o);
  const std::int64_t ms = std::max<std::int64_t>(1, plan.max_tokens);
  auto dpool = upload(pool.bytes.data(), pool.bytes.size);
  paged_kv_view dv = pool.view;
  dv.data = dpool.data();
  const auto g = run_gpu(plan, q, t, ms, [&](paged_decode_args a, std::byte* ws, stream_view st) {
    a.layer = layer;
    paged_decode_cuda(plan, dv, a, ws, st);
  });
  const double tol = s.q_type == dtype::bf16 || pool.view.type == dtype::bf16 ? 8e-3 : 2e-3;
  // compare() calls the host with layer 0: give it a view whose layer 0 is layer 1
  paged_kv_view hv = pool.view;
  hv.data = pool.view.data + layer * pool.view.layer_stride_bytes;
  compare(plan, g, q, t, ms, hv, tol);
}

template <class Q>
void run_quant_case(const paged_decode_shape& s, const std::vector<std::int64_t>& lens,
                    std::int32_t force_chunk, std::uint64_t seed, bool device_options = false,
                    int values_mode = 0, bool whole_groups = false) {
  INFO(Q::name << " batch " << s.batch << " heads " << s.num_qo_heads << "/" << s.num_kv_heads
               << " D " << s.head_dim << " page " << s.page_size << " chunk " << force_chunk
               << " seed " << seed << " values mode " << values_mode);
  std::mt19937_64 rng(seed);
  const std::int32_t pages = pages_for(lens, s.page_size) + 3;
  tables_host t = make_tables(lens, s.page_size, pages, rng);
  const auto n_tables = static_cast<std::int32_t>(lens.size());
  quant_fixture<Q> f(1, pages, s, n_tables);
  f.values_mode = values_mode;
  f.whole_groups = whole_groups;
  f.fill(t, s, 0, rng);
  auto q = random_q(s, rng);
  paged_decode_options o;
  o.attention_mass = true;
  o.force_chunk_tokens = force_chunk;
  if (device_options) {  // the split sized for the kernel's real occupancy
    o = paged_decode_cuda_options(f.qview, o);
    REQUIRE(o.ctas_per_sm >= 1);
    REQUIRE(o.attention_mass);
  }
  const auto plan = plan_paged_decode(s, t.view(), o);
  const std::int64_t ms = std::max<std::int64_t>(1, plan.max_tokens);
  auto dq = upload(f.qbytes.data(), f.qbytes.size);
  auto dst = upload(f.staging.bytes.data(), f.staging.bytes.size);
  auto dsp = upload(f.staging_page);
  auto dqt = upload(f.quantized_tokens);
  quantized_kv_view qv = f.qview;
  qv.data = dq.data();
  residual_view r;
  if (Q::residual > 0 && !whole_groups) {
    r.staging_page = dsp.data();
    r.quantized_tokens = dqt.data();
    r.staging = f.staging.view;
    r.staging.data = dst.data();
  }
  const auto g = run_gpu(plan, q, t, ms, [&](paged_decode_args a, std::byte* ws, stream_view st) {
    paged_decode_cuda(plan, qv, r, a, ws, st);
  });
  // the host reference on the quantized pages: the decoded values as the format defines them
  // (int8 / fp8: code x scale in f32; KIVI: f16), so the kernel's own error is what is measured
  const residual_view hr = whole_groups ? residual_view{} : f.residual();
  compare_with(plan, g, q, t, ms,
               [&](const paged_decode_args& a) { paged_decode_host(plan, f.qview, hr, a); }, 2e-3);
}

}  // namespace

TEST_CASE("paged_decode_cuda matches the host on f16 / bf16 pages", "[attention][gpu]") {
  const std::uint64_t seed = kvtest::seed();
  std::vector<f16_case> cases;
  // GQA 4 (Llama-3-8B heads), D 128, page 16, mixed lengths with an empty entry
  cases.push_back({{5, 32, 8, 128, 16, 0, dtype::f16}, {1, 16, 0, 300, 1000}});
  // same, forced split into 64-token chunks (merge with several and with one chunk)
  cases.push_back({{5, 32, 8, 128, 16, 0, dtype::f16}, {1, 16, 0, 300, 1000}, kv_order::hnd, 64});
  // D 64, MHA, NHD pages of 1 token
  cases.push_back({{3, 4, 4, 64, 1, 0, dtype::f16}, {33, 2, 70}, kv_order::nhd});
  // bf16, GQA 8, page 32, split
  cases.push_back({{2, 16, 2, 128, 32, 0, dtype::bf16}, {500, 97}, kv_order::hnd, 96});
  // GQA 6 (3 blocks of 2 heads), D 64, page 16
  cases.push_back({{2, 12, 2, 64, 16, 0, dtype::f16}, {45, 129}});
  // GQA 16 (two blocks of 8), D 128
  cases.push_back({{2, 32, 2, 128, 16, 0, dtype::f16}, {64, 257}, kv_order::hnd, 128});
  // per_head tables (lengths differ per head), page 16
  cases.push_back({{2, 8, 2, 128, 16, 3, dtype::f16}, {40, 0, 7, 200, 16, 5}});
  // edge: length 1, exactly one page, exactly two pages; no mass
  cases.push_back({{3, 8, 2, 128, 16, 0, dtype::f16}, {1, 16, 32}, kv_order::hnd, 0, false});
  // D 128, NHD pages of 5 tokens (a tile spans pages), GQA 4
  cases.push_back({{3, 16, 4, 128, 5, 0, dtype::f16}, {33, 2, 70}, kv_order::nhd});
  // the split of paged_decode_cuda_options (the kernel's real occupancy)
  cases.push_back({{4, 32, 8, 128, 16, 0, dtype::f16}, {3000, 17, 700, 1}, kv_order::hnd, 0, true, true});
  // bf16 queries over f16 pages (the tensor-core kernel), f16 queries over bf16 pages
  cases.push_back({{3, 32, 8, 128, 16, 0, dtype::bf16}, {300, 1, 1000}, kv_order::hnd, 0, true, false,
                   dtype::f16});
  cases.push_back({{3, 32, 8, 128, 16, 0, dtype::f16}, {300, 1, 1000}, kv_order::hnd, 0, true, false,
                   dtype::bf16});
  std::uint64_t k = 0;
  for (const auto& c : cases) run_f16_case(c, seed + 100 * ++k);
}

TEST_CASE("paged_decode_cuda: a batch mixing 16 and 128k tokens", "[attention][gpu]") {
  f16_case c{{2, 8, 2, 128, 16, 0, dtype::f16}, {16, 131072}};
  run_f16_case(c, kvtest::seed() + 5);
}

TEMPLATE_TEST_CASE("paged_decode_cuda on quantized pages matches the reference on the "
                   "dequantized pages",
                   "[attention][gpu]", int8_quantizer, fp8_e4m3_quantizer, kivi2, kivi4) {
  using Q = TestType;
  const std::uint64_t seed = kvtest::seed() + 31;
  // KIVI: 40 tokens (all residual), 300 (256 quantized + 44), 1000 (896 + 104), 0, 128 (all
  // quantized)
  run_quant_case<Q>({5, 32, 8, 128, 32, 0, dtype::f16}, {40, 300, 1000, 0, 128}, 0, seed);
  run_quant_case<Q>({5, 32, 8, 128, 32, 0, dtype::f16}, {40, 300, 1000, 0, 128}, 64, seed + 1);
  run_quant_case<Q>({2, 8, 2, 64, 64, 0, dtype::bf16}, {700, 33}, 128, seed + 2);
  run_quant_case<Q>({2, 8, 2, 128, 32, 2, dtype::f16}, {130, 0, 64, 257}, 0, seed + 3);
  // GQA 2 and MHA (padded query-head columns of the tensor-core kernel), split
  run_quant_case<Q>({2, 4, 2, 128, 32, 0, dtype::f16}, {200, 77}, 64, seed + 4);
  run_quant_case<Q>({2, 2, 2, 64, 32, 0, dtype::bf16}, {31, 150}, 0, seed + 5);
  // split sized by paged_decode_cuda_options (the kernel's occupancy on this device)
  run_quant_case<Q>({4, 32, 8, 128, 32, 0, dtype::f16}, {2000, 300, 5000, 64}, 0, seed + 10, true);
  // value scales outside the int8 / fp8 code path's range (quant_fixture::values_mode): large
  // values every third tile (exact-value tiles mixed with code tiles in one accumulator), small
  // values everywhere, and rows at +-65504 (KIVI's clamped stages)
  run_quant_case<Q>({2, 8, 2, 128, 32, 0, dtype::f16}, {700, 96}, 0, seed + 11, false, 1);
  run_quant_case<Q>({2, 8, 2, 64, 32, 0, dtype::bf16}, {333, 40}, 64, seed + 12, false, 1);
  run_quant_case<Q>({2, 8, 2, 128, 32, 0, dtype::f16}, {700, 96}, 0, seed + 13, false, 2);
  run_quant_case<Q>({2, 8, 2, 128, 32, 0, dtype::f16}, {700, 96}, 64, seed + 14, false, 3);
  if constexpr (Q::residual > 0) {
    // KIVI without a residual window: every token quantized, last stages ending inside a token
    // pair of the value metadata (13, 1 and 9 valid tokens: the pair's other half poisoned), or
    // on a pair boundary (14)
    run_quant_case<Q>({5, 8, 2, 128, 32, 0, dtype::f16}, {45, 333, 97, 1001, 334}, 0, seed + 15,
                      false, 0, true);
    run_quant_case<Q>({2, 8, 2, 64, 64, 0, dtype::f16}, {333, 77}, 64, seed + 16, false, 0, true);
  }
  if constexpr (Q::residual == 0) {
    // per-token formats: vLLM's page size 16 (the benchmark's) and pages that a 16-token tile
    // straddles (page 24, page 1)
    run_quant_case<Q>({3, 32, 8, 128, 16, 0, dtype::f16}, {1, 500, 4096}, 0, seed + 6);
    run_quant_case<Q>({3, 32, 8, 128, 16, 0, dtype::f16}, {1, 500, 4096}, 0, seed + 9, true);
    run_quant_case<Q>({2, 8, 2, 128, 24, 0, dtype::f16}, {100, 333}, 64, seed + 7);
    run_quant_case<Q>({2, 8, 2, 64, 1, 0, dtype::f16}, {17, 40}, 0, seed + 8);
  }
}

TEMPLATE_TEST_CASE("paged_decode_cuda_options: the device's SMs and the kernel's blocks per SM",
                   "[attention][gpu]", int8_quantizer, fp8_e4m3_quantizer, kivi2, kivi4) {
  using Q = TestType;
  quantized_kv_view v;
  v.format = Q::format;
  v.head_dim = 128;
  int dev = 0, sms = 0;
  REQUIRE(cudaGetDevice(&dev) == cudaSuccess);
  REQUIRE(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess);
  paged_decode_options base;
  base.min_chunk_tokens = 512;
  const auto o = paged_decode_cuda_options(v, base);
  CHECK(o.sm_count == sms);
  CHECK(o.ctas_per_sm >= 1);
  CHECK(o.ctas_per_sm <= 16);
  CHECK(o.min_chunk_tokens == 512);
  v.head_dim = 64;
  CHECK(paged_decode_cuda_options(v).ctas_per_sm >= 1);
  v.head_dim = 96;
  KVTEST_REQUIRE_ERROR((void)paged_decode_cuda_options(v), errc::not_supported, "head_dim 96");
}

TEST_CASE("paged_decode_cuda rejects bad input before launching", "[attention][gpu]") {
  std::mt19937_64 rng(kvtest::seed() + 77);
  paged_decode_shape s{2, 8, 2, 128, 16, 0, dtype::f16};
  tables_host t = make_tables({20, 5}, 16, 4, rng);
  pool16 pool(1, 4, 16, 2, 128, kv_order::hnd, dtype::f16);
  auto dpool = upload(pool.bytes.data(), pool.bytes.size);
  paged_kv_view dv = pool.view;
  dv.data = dpool.data();
  const auto plan = plan_paged_decode(s, t.view());
  buffer<std::uint16_t, cuda_space> q(2 * 8 * 128), out(2 * 8 * 128);
  buffer<std::byte, cuda_space> ws(std::max<std::size_t>(plan.workspace_bytes, 256));
  // pinned tables: read on the host before the launch
  buffer<std::int32_t, pinned_host_space> indptr(3), indices(2), last(2);
  std::memcpy(indptr.data(), t.indptr.data(), 12);
  std::memcpy(indices.data(), t.indices.data(), 8);
  std::memcpy(last.data(), t.last.data(), 8);
  indices.data()[1] = 1234;
  paged_decode_args a;
  a.q = q.data();
  a.out = out.data();
  a.tables = {indptr.data(), indices.data(), last.data(), 2, 16};
  stream st;
  KVTEST_REQUIRE_ERROR(paged_decode_cuda(plan, dv, a, ws.data(), st.view()), errc::out_of_range,
                       "page id 1234");
  indices.data()[1] = t.indices[1];
  paged_decode_shape d96 = s;
  d96.head_dim = 96;
  const auto plan96 = plan_paged_decode(d96, t.view());
  KVTEST_REQUIRE_ERROR(paged_decode_cuda(plan96, dv, a, ws.data(), st.view()), errc::not_supported,
                       "head_dim 96");
  KVTEST_REQUIRE_ERROR(paged_decode_cuda(plan, dv, a, nullptr, st.view()), errc::invalid_argument,
                       "workspace");
}

TEST_CASE("paged_decode_cuda matches the host on the recorded SmolLM2 traces", "[attention][gpu]") {
  // Real keys, values and queries (SmolLM2-135M: 9 query heads, 3 kv heads, head dim 64) of
  // every recorded layer of both fixture texts (decode_support.hpp's trace_case).
  for_each_trace_case(kvtest::seed(), [&](const std::string& label, const trace_case& c,
                                           const paged_decode_plan& plan, std::int64_t ms) {
    INFO(label);
    auto dpool = upload(c.pool.bytes.data(), c.pool.bytes.size);
    paged_kv_view dv = c.pool.view;
    dv.data = dpool.data();
    const auto g = run_gpu(plan, c.q, c.tables, ms, [&](paged_decode_args a, std::byte* ws, stream_view st) {
      paged_decode_cuda(plan, dv, a, ws, st);
    });
    compare(plan, g, c.q, c.tables, ms, c.pool.view, 2e-3);
  });
}
