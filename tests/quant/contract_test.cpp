// The quantizer contract, run over every model (TEMPLATE_LIST_TEST_CASE): page sizes and layout,
// round trips within the stated per-element bound, independent jobs on one page, sub-range
// dequantization, constant groups, tiny and huge magnitudes, NaN / Inf, argument errors, the
// host batch functions, and bytes per token.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kvcache/quant/kernels.hpp"
#include "kvcache/quant/quantizers.hpp"
#include "quant/quant_support.hpp"
#include "support/catch.hpp"

using namespace kvcache;
using kvtest::all_quantizers;

namespace {

constexpr std::int32_t head_dim = 128;

template <class Q>
void quantize(kv_side side, const std::uint16_t* rows, std::byte* page, std::int32_t p,
              std::int32_t d, std::int32_t first, std::int32_t n, bool* flag = nullptr) {
  if (side == kv_side::key) {
    Q::quantize_keys(rows, page, p, d, first, n, flag);
  } else {
    Q::quantize_values(rows, page, p, d, first, n, flag);
  }
}

template <class Q>
void dequantize(kv_side side, const std::byte* page, std::uint16_t* rows, std::int32_t p,
                std::int32_t d, std::int32_t first, std::int32_t n) {
  if (side == kv_side::key) {
    Q::dequantize_keys(page, rows, p, d, first, n);
  } else {
    Q::dequantize_values(page, rows, p, d, first, n);
  }
}

template <class Q>
std::size_t page_bytes(kv_side side, std::int32_t p, std::int32_t d) {
  return side == kv_side::key ? Q::key_page_bytes(p, d) : Q::value_page_bytes(p, d);
}

/// Quantizes a whole page of `rows`, dequantizes it, and checks every element against the
/// stated bound; returns the largest error relative to the bound (<= 1).
template <class Q>
double check_round_trip(kv_side side, const std::vector<std::uint16_t>& rows, std::int32_t p,
                        std::int32_t d) {
  std::vector<std::byte> page(page_bytes<Q>(side, p, d), std::byte{0xFF});
  quantize<Q>(side, rows.data(), page.data(), p, d, 0, p);
  std::vector<std::uint16_t> out(rows.size(), 0xFFFF);
  dequantize<Q>(side, page.data(), out.data(), p, d, 0, p);
  const quant_side_format& f = Q::format.side(side);
  double worst = 0.0;
  std::int64_t failures = 0;
  for (std::int32_t t = 0; t < p; ++t) {
    for (std::int32_t c = 0; c < d; ++c) {
      const std::size_t i = static_cast<std::size_t>(t) * d + c;
      if (f.scheme == quant_scheme::f16) {
        if (out[i] != rows[i]) ++failures;
        continue;
      }
      const double x = kvtest::f16_to_float(rows[i]);
      const double xhat = kvtest::f16_to_float(out[i]);
      const double bound = kvtest::error_bound(f, page.data(), p, d, t, c, x, xhat);
      const double err = std::fabs(x - xhat);
      if (!(err <= bound)) {
        if (failures < 5) {
          UNSCOPED_INFO(Q::name << " " << name_of(side) << " token " << t << " channel " << c
                                << ": x " << x << " x^ " << xhat << " error " << err
                                << " bound " << bound);
        }
        ++failures;
      }
      if (bound > 0) worst = std::max(worst, err / bound);
    }
  }
  CHECK(failures == 0);
  return worst;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("quantizer: page bytes follow the documented layout",
                        "[quant][contract]", all_quantizers) {
  using Q = TestType;
  STATIC_REQUIRE(quantizer<Q>);
  const std::int32_t p = kvtest::page_size_for<Q>();
  for (std::int32_t d : {32, 64, 128, 256}) {
    if (Q::format.value.scheme == quant_scheme::kivi_token && d % Q::format.value.group != 0) {
      continue;
    }
    for (kv_side side : {kv_side::key, kv_side::value}) {
      const quant_side_format& f = Q::format.side(side);
      // (2-bit per-token rows of a multiple of 16 bytes come in token pairs: an even count)
      const std::int32_t rows = f.paired_code_rows(d) ? (p + 1) / 2 * 2 : p;
      const std::size_t codes = static_cast<std::size_t>(rows) * d * f.bits / 8;
      std::size_t meta = 0;
      if (f.scheme == quant_scheme::int8_token || f.scheme == quant_scheme::fp8_e4m3_token) {
        meta = 4 * static_cast<std::size_t>(p);
      } else if (f.scheme == quant_scheme::kivi_channel) {
        meta = 4 * static_cast<std::size_t>(p / f.group) * d;
      } else if (f.scheme == quant_scheme::kivi_token) {
        meta = 8 * static_cast<std::size_t>((p + 1) / 2) * (d / f.group);  // token-pair records
      }
      const std::size_t expected = (((codes + 15) / 16 * 16) + meta + 15) / 16 * 16;
      CHECK(page_bytes<Q>(side, p, d) == expected);
      CHECK(page_bytes<Q>(side, p, d) % 16 == 0);
      CHECK(f.metadata_offset(p, d) % 16 == 0);
    }
  }
  CHECK(Q::residual % Q::group_size == 0);
  CHECK(p % Q::group_size == 0);
}

TEMPLATE_LIST_TEST_CASE("quantizer: round trip within the stated bound", "[quant][contract]",
                        all_quantizers) {
  using Q = TestType;
  std::mt19937_64 rng(kvtest::seed());
  INFO("seed " << kvtest::seed());
  const std::int32_t p = kvtest::page_size_for<Q>();
  double worst = 0.0;
  for (int trial = 0; trial < 8; ++trial) {
    for (float scale : {1.0f, 1e-3f, 300.0f}) {
      const auto rows = kvtest::random_rows(rng, p, head_dim, scale);
      for (kv_side side : {kv_side::key, kv_side::value}) {
        worst = std::max(worst, check_round_trip<Q>(side, rows, p, head_dim));
      }
    }
  }
  std::printf("%-28s worst error / bound over random pages: %.3f\n", std::string(Q::name).c_str(),
              worst);
}

TEMPLATE_LIST_TEST_CASE("quantizer: tiny and huge magnitudes stay within the bound",
                        "[quant][contract]", all_quantizers) {
  using Q = TestType;
  std::mt19937_64 rng(kvtest::seed() + 1);
  const std::int32_t p = kvtest::page_size_for<Q>();
  for (int trial = 0; trial < 4; ++trial) {
    const auto special = kvtest::special_rows(rng, p, head_dim);
    const auto tiny = kvtest::random_rows(rng, p, head_dim, 1e-6f);     // f16 subnormals
    const auto huge = kvtest::random_rows(rng, p, head_dim, 2000.0f);   // saturates at 65504
    for (kv_side side : {kv_side::key, kv_side::value}) {
      check_round_trip<Q>(side, special, p, head_dim);
      check_round_trip<Q>(side, tiny, p, head_dim);
      check_round_trip<Q>(side, huge, p, head_dim);
    }
  }
  // The extremes of the f16 range in one group: decoded values stay finite.
  std::vector<std::uint16_t> rows(static_cast<std::size_t>(p) * head_dim);
  for (std::size_t i = 0; i < rows.size(); ++i) rows[i] = (i % 3 == 0) ? 0xFBFF : 0x7BFF;
  for (kv_side side : {kv_side::key, kv_side::value}) {
    std::vector<std::byte> page(page_bytes<Q>(side, p, head_dim));
    quantize<Q>(side, rows.data(), page.data(), p, head_dim, 0, p);
    std::vector<std::uint16_t> out(rows.size());
    dequantize<Q>(side, page.data(), out.data(), p, head_dim, 0, p);
    CHECK(out == rows);  // two levels, +/-65504: every scheme represents them exactly
  }
}

TEMPLATE_LIST_TEST_CASE("quantizer: constant groups decode exactly", "[quant][contract]",
                        all_quantizers) {
  using Q = TestType;
  std::mt19937_64 rng(kvtest::seed() + 2);
  std::uniform_real_distribution<float> value(-100.0f, 100.0f);
  const std::int32_t p = kvtest::page_size_for<Q>();
  // every channel constant over the page and every row constant over 32 channels: a constant
  // group for keys per channel, keys / values per token, and per-token scales.
  for (float v : {0.0f, -0.0f, 1.0f, -3.5f, value(rng), 65504.0f, 0x1p-24f}) {
    const std::uint16_t h = kvtest::float_to_f16(v);
    std::vector<std::uint16_t> rows(static_cast<std::size_t>(p) * head_dim, h);
    for (kv_side side : {kv_side::key, kv_side::value}) {
      std::vector<std::byte> page(page_bytes<Q>(side, p, head_dim), std::byte{0xFF});
      quantize<Q>(side, rows.data(), page.data(), p, head_dim, 0, p);
      std::vector<std::uint16_t> out(rows.size(), 0xFFFF);
      dequantize<Q>(side, page.data(), out.data(), p, head_dim, 0, p);
      for (std::size_t i = 0; i < out.size(); ++i) {
        // -0 may come back as +0 (a group's min is made +0); the value is exact.
        if (kvtest::f16_to_float(out[i]) != kvtest::f16_to_float(h)) {
          FAIL_CHECK(Q::name << " " << name_of(side) << ": constant " << v << " decoded as "
                             << kvtest::f16_to_float(out[i]) << " at " << i);
          break;
        }
      }
      const quant_side_format& f = Q::format.side(side);
      if (f.scheme == quant_scheme::kivi_channel || f.scheme == quant_scheme::kivi_token) {
        CHECK(kvtest::kivi_min_scale(f, page.data(), p, head_dim, 0, 0).second == 0.0f);
      }
    }
  }
}

TEMPLATE_LIST_TEST_CASE("quantizer: jobs on one page are independent; sub-ranges dequantize alike",
                        "[quant][contract]", all_quantizers) {
  using Q = TestType;
  std::mt19937_64 rng(kvtest::seed() + 3);
  const std::int32_t p = kvtest::page_size_for<Q>();
  const auto rows = kvtest::random_rows(rng, p, head_dim);
  for (kv_side side : {kv_side::key, kv_side::value}) {
    const std::int32_t g = Q::format.side(side).token_group();
    std::vector<std::byte> whole(page_bytes<Q>(side, p, head_dim), std::byte{0xA5});
    std::vector<std::byte> pieces = whole;
    quantize<Q>(side, rows.data(), whole.data(), p, head_dim, 0, p);
    // group by group, in reverse order, each from its own rows
    for (std::int32_t first = p - g; first >= 0; first -= g) {
      quantize<Q>(side, rows.data() + static_cast<std::size_t>(first) * head_dim, pieces.data(), p,
                  head_dim, first, g);
    }
    CHECK(whole == pieces);
    // a page quantized up to some token leaves the rest of the page untouched
    std::vector<std::byte> half(whole.size(), std::byte{0xA5});
    quantize<Q>(side, rows.data(), half.data(), p, head_dim, 0, p / 2);
    std::vector<std::byte> rest = half;
    quantize<Q>(side, rows.data() + static_cast<std::size_t>(p / 2) * head_dim, rest.data(), p,
                head_dim, p / 2, p / 2);
    CHECK(rest == whole);
    // dequantizing [first, first + n) gives the same rows as the whole page
    std::vector<std::uint16_t> all(rows.size());
    dequantize<Q>(side, whole.data(), all.data(), p, head_dim, 0, p);
    for (auto [first, n] : {std::pair{0, 1}, std::pair{3, 7}, std::pair{p - 5, 5}, std::pair{p, 0}}) {
      std::vector<std::uint16_t> part(static_cast<std::size_t>(n) * head_dim + 1, 0xFFFF);
      dequantize<Q>(side, whole.data(), part.data(), p, head_dim, first, n);
      CHECK(std::equal(part.begin(), part.end() - 1,
                       all.begin() + static_cast<std::ptrdiff_t>(first) * head_dim));
      CHECK(part.back() == 0xFFFF);  // nothing written past the range
    }
  }
}

TEMPLATE_LIST_TEST_CASE("quantizer: NaN and Inf are rejected, or flagged without spreading",
                        "[quant][contract]", all_quantizers) {
  using Q = TestType;
  std::mt19937_64 rng(kvtest::seed() + 4);
  const std::int32_t p = kvtest::page_size_for<Q>();
  auto rows = kvtest::random_rows(rng, p, head_dim);
  const std::int32_t bad_token = 5;
  const std::int32_t bad_channel = 17;
  const std::size_t bad = static_cast<std::size_t>(bad_token) * head_dim + bad_channel;
  for (std::uint16_t special : {std::uint16_t{0x7E00}, std::uint16_t{0x7C00}, std::uint16_t{0xFC00}}) {
    rows[bad] = special;
    for (kv_side side : {kv_side::key, kv_side::value}) {
      std::vector<std::byte> page(page_bytes<Q>(side, p, head_dim), std::byte{0x5A});
      if constexpr (Q::format.key.scheme == quant_scheme::f16) {
        // identity: 16-bit words pass through, NaN stays in its element, nothing is flagged
        bool flag = false;
        quantize<Q>(side, rows.data(), page.data(), p, head_dim, 0, p, &flag);
        CHECK_FALSE(flag);
        std::vector<std::uint16_t> out(rows.size());
        dequantize<Q>(side, page.data(), out.data(), p, head_dim, 0, p);
        CHECK(out == rows);
      } else {
        // host: rejected before anything is written, naming the token (page position) and channel
        const std::vector<std::byte> before = page;
        KVTEST_REQUIRE_ERROR(quantize<Q>(side, rows.data(), page.data(), p, head_dim, 0, p),
                             errc::invalid_argument, "token 5 (row 5) channel 17");
        CHECK(page == before);
        if (Q::format.side(side).token_group() == 1) {  // rows from token 4: row 1 is token 5
          KVTEST_REQUIRE_ERROR(quantize<Q>(side, rows.data() + 4 * head_dim, page.data(), p,
                                           head_dim, 4, 8),
                               errc::invalid_argument, "token 5 (row 1) channel 17");
        }
        // with a flag (the kernels' behaviour): quantized, flagged, the other elements keep the
        // bound computed over the finite ones, and the bad element decodes to a finite value
        bool flag = false;
        quantize<Q>(side, rows.data(), page.data(), p, head_dim, 0, p, &flag);
        CHECK(flag);
        std::vector<std::uint16_t> out(rows.size());
        dequantize<Q>(side, page.data(), out.data(), p, head_dim, 0, p);
        const quant_side_format& f = Q::format.side(side);
        for (std::int32_t t = 0; t < p; ++t) {
          for (std::int32_t c = 0; c < head_dim; ++c) {
            const std::size_t i = static_cast<std::size_t>(t) * head_dim + c;
            const double xhat = kvtest::f16_to_float(out[i]);
            REQUIRE(std::isfinite(xhat));
            if (i == bad) continue;
            const double x = kvtest::f16_to_float(rows[i]);
            const double bound = kvtest::error_bound(f, page.data(), p, head_dim, t, c, x, xhat);
            if (!(std::fabs(x - xhat) <= bound)) {
              FAIL_CHECK(Q::name << " token " << t << " channel " << c << ": x " << x << " x^ "
                                 << xhat << " bound " << bound);
            }
          }
        }
        const double xbad = kvtest::f16_to_float(out[bad]);
        if (special == 0x7C00) CHECK(xbad > 0.0);  // +Inf saturates to the top of the group
        if (special == 0xFC00) CHECK(xbad < 0.0);
      }
    }
  }
}

TEMPLATE_LIST_TEST_CASE("quantizer: bad shapes and ranges are errors naming the value",
                        "[quant][contract]", all_quantizers) {
  using Q = TestType;
  const std::int32_t p = kvtest::page_size_for<Q>();
  KVTEST_REQUIRE_ERROR(Q::validate(0, 128), errc::invalid_argument, "page_size must be in [1, 65536], got 0");
  KVTEST_REQUIRE_ERROR(Q::validate(p, 12), errc::invalid_argument, "got 12");
  KVTEST_REQUIRE_ERROR(Q::validate(p, 0), errc::invalid_argument, "got 0");
  KVTEST_REQUIRE_ERROR(Q::validate(p, 264), errc::invalid_argument, "got 264");
  Q::validate(p, 128);
  std::vector<std::uint16_t> rows(static_cast<std::size_t>(p) * 128);
  std::vector<std::byte> page(Q::key_page_bytes(p, 128));
  KVTEST_REQUIRE_ERROR(Q::quantize_keys(rows.data(), page.data(), p, 128, p - Q::group_size, 2 * Q::group_size),
                       errc::out_of_range, "are not inside a page of");
  KVTEST_REQUIRE_ERROR(Q::dequantize_values(page.data(), rows.data(), p, 128, -1, 1),
                       errc::out_of_range, "tokens [-1, 0)");
  if constexpr (Q::group_size > 1) {
    KVTEST_REQUIRE_ERROR(Q::quantize_keys(rows.data(), page.data(), p, 128, 1, Q::group_size),
                         errc::invalid_argument, "multiples of the group size");
    KVTEST_REQUIRE_ERROR(Q::quantize_keys(rows.data(), page.data(), p, 128, 0, Q::group_size - 1),
                         errc::invalid_argument, "multiples of the group size");
  }
  KVTEST_REQUIRE_ERROR(Q::quantize_values(nullptr, page.data(), p, 128, 0, p), errc::invalid_argument,
                       "null rows or page");
  Q::quantize_values(nullptr, nullptr, p, 128, 0, 0);  // nothing to do
}

TEST_CASE("kivi: a key group never straddles pages: page_size % Group is checked",
          "[quant][kivi]") {
  KVTEST_REQUIRE_ERROR(kivi2::validate(16, 128), errc::invalid_argument,
                       "kivi2: page_size 16 must be a multiple of the key group size 32");
  KVTEST_REQUIRE_ERROR(kivi4::validate(48, 128), errc::invalid_argument, "page_size 48");
  KVTEST_REQUIRE_ERROR((kivi<2, 64, 128>::validate(32, 128)), errc::invalid_argument,
                       "group size 64");
  KVTEST_REQUIRE_ERROR(kivi2::validate(32, 80), errc::invalid_argument,
                       "head_dim 80 must be a multiple of the value group size 32");
  KVTEST_REQUIRE_ERROR((kivi<4, 128, 128>::validate(128, 64)), errc::invalid_argument, "head_dim 64");
  // keys per token have no token group: any page size works for them
  kivi2_token_keys::validate(16, 128);
  kivi2::validate(32, 128);
  kv_layout layout;
  layout.page_size = 16;
  KVTEST_REQUIRE_ERROR(kivi2::kv_bytes_per_token(layout, 4096), errc::invalid_argument, "page_size 16");
}

TEMPLATE_LIST_TEST_CASE("quantize_pages_host / dequantize_pages_host follow the per-page calls",
                        "[quant][contract][kernels]", all_quantizers) {
  using Q = TestType;
  std::mt19937_64 rng(kvtest::seed() + 5);
  const std::int32_t p = kvtest::page_size_for<Q>();
  const std::int32_t pages = 6;
  const std::size_t kb = Q::key_page_bytes(p, head_dim);
  const std::size_t vb = Q::value_page_bytes(p, head_dim);
  std::vector<std::byte> batch((kb + vb) * pages, std::byte{0xFF});
  std::vector<std::byte> single = batch;
  std::vector<std::vector<std::uint16_t>> rows;
  std::vector<quantize_job> jobs;
  for (std::int32_t i = 0; i < pages; ++i) {
    rows.push_back(kvtest::random_rows(rng, p, head_dim));
    const bool key = i % 2 == 0;
    const std::int32_t g = key ? Q::group_size : 1;
    const std::int32_t first = i < 2 ? 0 : g;
    const std::int32_t n = i < 2 ? p : std::max(g, p - 3 * g);
    std::byte* page = batch.data() + (kb + vb) * i + (key ? 0 : kb);
    jobs.push_back({rows.back().data(), page, first, n, key ? kv_side::key : kv_side::value});
    std::byte* ref = single.data() + (kb + vb) * i + (key ? 0 : kb);
    quantize<Q>(key ? kv_side::key : kv_side::value, rows.back().data(), ref, p, head_dim, first, n);
  }
  quantize_pages_host<Q>(jobs.data(), pages, p, head_dim);
  CHECK(batch == single);

  std::vector<std::vector<std::uint16_t>> out(pages, std::vector<std::uint16_t>(rows[0].size(), 0xFFFF));
  std::vector<dequantize_job> djobs;
  for (std::int32_t i = 0; i < pages; ++i) {
    djobs.push_back({jobs[i].page, out[i].data(), jobs[i].first_token, jobs[i].tokens, jobs[i].side});
  }
  dequantize_pages_host<Q>(djobs.data(), pages, p, head_dim);
  for (std::int32_t i = 0; i < pages; ++i) {
    std::vector<std::uint16_t> ref(rows[0].size(), 0xFFFF);
    dequantize<Q>(jobs[i].side, jobs[i].page, ref.data(), p, head_dim, jobs[i].first_token, jobs[i].tokens);
    CHECK(out[i] == ref);
  }

  // errors name the job
  std::vector<quantize_job> broken = jobs;
  broken[3].first_token = p;
  broken[3].tokens = 1;
  KVTEST_REQUIRE_ERROR(quantize_pages_host<Q>(broken.data(), pages, p, head_dim), errc::out_of_range,
                       "job 3");
  broken = jobs;
  broken[4].rows = reinterpret_cast<const std::uint16_t*>(reinterpret_cast<const std::byte*>(jobs[4].rows) + 2);
  KVTEST_REQUIRE_ERROR(quantize_pages_host<Q>(broken.data(), pages, p, head_dim), errc::invalid_argument,
                       "job 4: rows");
  // non-finite input: an error naming the job, or recorded in the status as the kernel does
  rows[2][7] = 0x7E00;
  quant_status status{7, 7};
  if constexpr (Q::format.key.scheme == quant_scheme::f16) {
    quantize_pages_host<Q>(jobs.data(), pages, p, head_dim, &status);
    CHECK(status == quant_status{});
  } else {
    KVTEST_REQUIRE_ERROR(quantize_pages_host<Q>(jobs.data(), pages, p, head_dim), errc::invalid_argument,
                         "quantize_pages_host: job 2:");
    quantize_pages_host<Q>(jobs.data(), pages, p, head_dim, &status);
    CHECK(status == quant_status{3, 0});
    KVTEST_REQUIRE_ERROR(throw_if_failed(status, "quantize_pages"), errc::invalid_argument,
                         "quantize_pages: job 2 held a NaN or Inf");
  }
  KVTEST_REQUIRE_ERROR(throw_if_failed(quant_status{0, 5}, "dequantize_pages"), errc::invalid_argument,
                       "job 4 was malformed");
}

TEMPLATE_LIST_TEST_CASE("quantizer: bytes per token", "[quant][contract][bytes]", all_quantizers) {
  using Q = TestType;
  kv_layout layout;
  layout.layers = 2;
  layout.kv_heads = 4;
  layout.q_heads = 8;
  layout.head_dim = 128;
  layout.page_size = kvtest::page_size_for<Q>();
  const double f16 = 2.0 * 2 * 4 * 128 * 2;
  for (std::int64_t context : {1, 100, 127, 128, 129, 4096, 4096 + 100, 32768}) {
    const std::int64_t residual = Q::residual_tokens(context);
    CHECK(residual == (Q::residual == 0 ? 0 : context % Q::residual));
    const double per_head_page = static_cast<double>(Q::key_page_bytes(layout.page_size, 128) +
                                                     Q::value_page_bytes(layout.page_size, 128));
    const double expected =
        ((context - residual) * per_head_page / layout.page_size + residual * 512.0) * 8 /
        static_cast<double>(context);
    CHECK(Q::kv_bytes_per_token(layout, context) == kvtest::Approx(expected).epsilon(1e-12));
    CHECK(Q::kv_bytes_per_token(layout, context) <= f16 * (1 + 1e-12));
  }
  KVTEST_REQUIRE_ERROR(Q::kv_bytes_per_token(layout, 0), errc::invalid_argument, "got 0");
}

TEST_CASE("bytes per token at 4k context, head dim 128, against f16", "[quant][bytes]") {
  kv_layout layout;
  layout.layers = 32;
  layout.kv_heads = 8;
  layout.q_heads = 32;
  layout.head_dim = 128;
  layout.page_size = 32;
  const double f16 = 2.0 * 32 * 8 * 128 * 2;
  std::printf("KV bytes per token at 4096 tokens (32 layers, 8 kv heads, head dim 128, page 32):\n");
  std::printf("  %-18s %10s %8s\n", "quantizer", "bytes", "ratio");
  for (std::string_view name : quantizer_names) {
    visit_quantizer(name, [&]<class Q>(quantizer_tag<Q>) {
      const double bytes = Q::kv_bytes_per_token(layout, 4096);
      std::printf("  %-18s %10.1f %8.4f\n", std::string(name).c_str(), bytes, bytes / f16);
    });
  }
  CHECK(identity_quantizer::kv_bytes_per_token(layout, 4096) / f16 == 1.0);
  CHECK(kivi2::kv_bytes_per_token(layout, 4096) / f16 <= 1.0 / 5);
  CHECK(kivi4::kv_bytes_per_token(layout, 4096) / f16 <= 1.0 / 3);
  CHECK(int8_quantizer::kv_bytes_per_token(layout, 4096) / f16 <= 0.53);
  CHECK(fp8_e4m3_quantizer::kv_bytes_per_token(layout, 4096) / f16 <= 0.53);
  // the residual window: 4096 + 127 tokens hold 127 of them in f16
  CHECK(kivi2::kv_bytes_per_token(layout, 4096 + 127) / f16 > 0.2);
  CHECK(kivi2::kv_bytes_per_token(layout, 100) == f16);  // all in the window
  layout.page_size = 128;  // larger pages change nothing (no padding at head dim 128)
  CHECK(kivi2::kv_bytes_per_token(layout, 4096) / f16 == 0.1875);
}

TEST_CASE("visit_quantizer maps runtime names to types", "[quant]") {
  CHECK(visit_quantizer("kivi2", []<class Q>(quantizer_tag<Q>) { return Q::name; }) == "kivi2");
  CHECK(visit_quantizer("none", []<class Q>(quantizer_tag<Q>) { return Q::name; }) == "identity");
  CHECK(visit_quantizer("fp8", []<class Q>(quantizer_tag<Q>) { return Q::key_bits; }) == 8);
  CHECK(visit_quantizer("kivi4_token_keys", []<class Q>(quantizer_tag<Q>) { return Q::group_size; }) == 1);
  KVTEST_REQUIRE_ERROR(visit_quantizer("kivi3", []<class Q>(quantizer_tag<Q>) {}), errc::invalid_argument,
                       "unknown quantizer 'kivi3'");
}
