// Exhaustive tests of numeric.hpp against the independent reference of numeric_reference.hpp:
// every bit pattern decoded, every value round-tripped, every tie between adjacent values,
// overflow per saturation mode, NaNs, and millions of random floats.
#include "kvcache/core/numeric.hpp"

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "core/numeric_reference.hpp"
#include "kvcache/core/dtype.hpp"
#include "support/catch.hpp"

using namespace kvcache;
using namespace kvtest::numeric;

namespace {
constexpr fp8_saturation both_modes[] = {fp8_saturation::finite, fp8_saturation::none};
constexpr const char* mode_name(fp8_saturation s) {
  return s == fp8_saturation::finite ? "finite" : "none";
}
/// Random inputs per format (about 1 s for all four in RelWithDebInfo, 3 s under ASan).
constexpr std::size_t random_count = std::size_t{3} << 20;
}  // namespace

// ---- compile time: the conversions are constexpr ---------------------------------------------
static_assert(to_float16(1.0f).bits == 0x3C00);
static_assert(to_float16(65504.0f).bits == 0x7BFF);
static_assert(to_float16(65520.0f).bits == 0x7C00);
static_assert(to_float16(-0x1p-24f).bits == 0x8001);
static_assert(to_float16(0x1p-25f).bits == 0x0000);
static_assert(to_bfloat16(1.0f).bits == 0x3F80);
static_assert(to_bfloat16(-2.0f).bits == 0xC000);
static_assert(to_float8_e4m3(448.0f).bits == 0x7E);
static_assert(to_float8_e4m3(464.0f, fp8_saturation::none).bits == 0x7E);
static_assert(to_float8_e4m3(465.0f, fp8_saturation::none).bits == 0x7F);
static_assert(to_float8_e4m3(-1000.0f).bits == 0xFE);
static_assert(to_float8_e4m3(0x1p-9f).bits == 0x01);
static_assert(to_float8_e5m2(57344.0f).bits == 0x7B);
static_assert(to_float8_e5m2(61440.0f, fp8_saturation::none).bits == 0x7C);
static_assert(to_float8_e5m2(61440.0f).bits == 0x7B);
static_assert(to_float(float16::from_bits(0x3C00)) == 1.0f);
static_assert(to_float(float16::from_bits(0x0001)) == 0x1p-24f);
static_assert(to_float(bfloat16::from_bits(0x0001)) == 0x1p-133f);
static_assert(to_float(float8_e4m3::from_bits(0x7E)) == 448.0f);
static_assert(to_float(float8_e4m3::from_bits(0x01)) == 0x1p-9f);
static_assert(to_float(float8_e5m2::from_bits(0x7B)) == 57344.0f);
static_assert(to_float(float8_e5m2::from_bits(0x01)) == 0x1p-16f);

TEST_CASE("format parameters agree with the specifications", "[core][numeric]") {
  CHECK(float_format<float16>::bias == f16_format.bias);
  CHECK(float_format<bfloat16>::bias == bf16_format.bias);
  CHECK(float_format<float8_e4m3>::bias == e4m3_format.bias);
  CHECK(float_format<float8_e5m2>::bias == e5m2_format.bias);
  CHECK(float_format<float16>::mantissa_bits == f16_format.man_bits);
  CHECK(float_format<bfloat16>::mantissa_bits == bf16_format.man_bits);
  CHECK(float_format<float8_e4m3>::mantissa_bits == e4m3_format.man_bits);
  CHECK(float_format<float8_e5m2>::mantissa_bits == e5m2_format.man_bits);

  const value_table f16(f16_format), bf16(bf16_format), e4m3(e4m3_format), e5m2(e5m2_format);
  for (const auto* t : {&f16, &bf16, &e4m3, &e5m2}) {
    INFO(t->format.name);
    CHECK(t->strictly_increasing());
    CHECK(t->values.front() == 0.0);
  }
  // max finite, its pattern, min subnormal, and the count of nonnegative finite values
  CHECK(f16.max_finite == 65504.0);
  CHECK(f16.max_finite_bits == float_format<float16>::max_finite_bits);
  CHECK(f16.values[1] == std::ldexp(1.0, -24));
  CHECK(f16.values.size() == 31u * 1024u);
  CHECK(bf16.max_finite == std::ldexp(255.0, 120));
  CHECK(bf16.max_finite_bits == float_format<bfloat16>::max_finite_bits);
  CHECK(bf16.values[1] == std::ldexp(1.0, -133));
  CHECK(bf16.values.size() == 255u * 128u);
  CHECK(e4m3.max_finite == 448.0);
  CHECK(e4m3.max_finite_bits == float_format<float8_e4m3>::max_finite_bits);
  CHECK(e4m3.values[1] == std::ldexp(1.0, -9));
  CHECK(e4m3.values.size() == 127u);
  CHECK(e4m3.beyond_max == 480.0);
  CHECK(e5m2.max_finite == 57344.0);
  CHECK(e5m2.max_finite_bits == float_format<float8_e5m2>::max_finite_bits);
  CHECK(e5m2.values[1] == std::ldexp(1.0, -16));
  CHECK(e5m2.values.size() == 31u * 4u);
}

TEMPLATE_TEST_CASE("decoding every bit pattern matches the formula", "[core][numeric]", float16,
                   bfloat16, float8_e4m3, float8_e5m2) {
  constexpr format_desc f = format_of<TestType>();
  INFO(f.name);
  mismatch_log values, nans;
  std::size_t nan_count = 0;
  for (std::uint32_t b = 0; b < f.pattern_count(); ++b) {
    const double want = ref_decode(f, b);
    const float got = kv_decode<TestType>(b);
    if (!same_value(got, want)) {
      values.add(hex(b) + ": got " + describe(got) + ", want " + std::to_string(want));
    }
    if (std::isnan(want)) {
      ++nan_count;
      // documented: quiet, sign kept, mantissa at the top of the float's
      const std::uint32_t m = b & ((1u << f.man_bits) - 1u);
      const std::uint32_t expect =
          ((b & f.sign_bit()) != 0 ? 0x80000000u : 0u) | 0x7FC00000u | (m << (23 - f.man_bits));
      if (bits_of_float(got) != expect) nans.add(hex(b) + ": got " + describe(got));
    }
  }
  INFO(values.first);
  CHECK(values.count == 0);
  INFO(nans.first);
  CHECK(nans.count == 0);
  CHECK(nan_count == (f.ieee_specials ? 2u * ((1u << f.man_bits) - 1u) : 2u));
}

TEMPLATE_TEST_CASE("every finite value encodes back to its own bits", "[core][numeric]", float16,
                   bfloat16, float8_e4m3, float8_e5m2) {
  constexpr format_desc f = format_of<TestType>();
  INFO(f.name);
  mismatch_log log;
  std::size_t finite = 0;
  for (std::uint32_t b = 0; b < f.pattern_count(); ++b) {
    if (!std::isfinite(ref_decode(f, b))) continue;
    ++finite;
    const float x = kv_decode<TestType>(b);
    for (const auto sat : both_modes) {
      const std::uint32_t got = kv_encode<TestType>(x, sat);
      if (got != b) log.add(hex(b) + " (" + mode_name(sat) + "): encodes to " + hex(got));
    }
  }
  INFO(log.first);
  CHECK(log.count == 0);
  CHECK(finite == 2 * value_table(f).values.size());
}

TEMPLATE_TEST_CASE("midpoints of adjacent values tie to even, their neighbours round to nearest",
                   "[core][numeric]", float16, bfloat16, float8_e4m3, float8_e5m2) {
  constexpr format_desc f = format_of<TestType>();
  INFO(f.name);
  const value_table t(f);
  const auto cases = midpoints(t);
  REQUIRE(cases.size() == t.values.size());
  mismatch_log log;
  std::size_t not_representable = 0;
  for (const auto& c : cases) {
    if (!c.representable) ++not_representable;
    for (const auto sat : both_modes) {
      for (const std::uint32_t sign : {0u, f.sign_bit()}) {
        const auto resolve = [&](std::uint32_t bits) {
          return bits == 0xFFFFFFFFu ? t.overflow_bits(sign, sat) : (sign | bits);
        };
        const float m = sign != 0 ? -c.mid : c.mid;
        const float away = std::nextafter(m, sign != 0 ? -INFINITY : INFINITY);
        const float toward = std::nextafter(m, 0.0f);
        const struct {
          float x;
          std::uint32_t want;
          const char* what;
        } probes[] = {{m, resolve(c.even_bits), "midpoint"},
                      {away, resolve(c.hi_bits), "above midpoint"},
                      {toward, resolve(c.lo_bits), "below midpoint"}};
        for (const auto& p : probes) {
          const std::uint32_t got = kv_encode<TestType>(p.x, sat);
          if (got != p.want) {
            log.add(std::string(p.what) + " " + describe(p.x) + " (" + mode_name(sat) + "): got " +
                    hex(got) + ", want " + hex(p.want));
          }
        }
      }
    }
  }
  CHECK(not_representable == 0);  // every midpoint is exactly a float
  INFO(log.first);
  CHECK(log.count == 0);
}

TEMPLATE_TEST_CASE("values beyond max finite and infinities follow the saturation mode",
                   "[core][numeric]", float16, bfloat16, float8_e4m3, float8_e5m2) {
  constexpr format_desc f = format_of<TestType>();
  INFO(f.name);
  const value_table t(f);
  const auto max = static_cast<float>(t.max_finite);
  const auto mid = static_cast<float>((t.max_finite + t.beyond_max) / 2);
  const float inputs[] = {max,
                          std::nextafter(max, INFINITY),
                          std::nextafter(mid, 0.0f),
                          mid,
                          std::nextafter(mid, INFINITY),
                          static_cast<float>(t.beyond_max),
                          2 * max,
                          FLT_MAX,
                          INFINITY};
  for (const auto sat : both_modes) {
    for (const float x : inputs) {
      for (const float s : {x, -x}) {
        INFO(describe(s) << " " << mode_name(sat));
        CHECK(kv_encode<TestType>(s, sat) == t.encode(s, sat));
      }
    }
  }
}

TEST_CASE("overflow and saturation: spot values", "[core][numeric]") {
  constexpr auto fin = fp8_saturation::finite;
  constexpr auto none = fp8_saturation::none;
  // f16 and bf16: IEEE, overflow to inf
  CHECK(to_float16(65519.99f).bits == 0x7BFF);
  CHECK(to_float16(65520.0f).bits == 0x7C00);
  CHECK(to_float16(-INFINITY).bits == 0xFC00);
  CHECK(to_float16(-FLT_MAX).bits == 0xFC00);
  CHECK(to_bfloat16(FLT_MAX).bits == 0x7F80);
  CHECK(to_bfloat16(-INFINITY).bits == 0xFF80);
  CHECK(to_bfloat16(0x1.FEp127f).bits == 0x7F7F);
  // E4M3: no inf; 464 is the tie between 448 and the would-be 480 and goes to even 448
  CHECK(to_float8_e4m3(464.0f, fin).bits == 0x7E);
  CHECK(to_float8_e4m3(464.0f, none).bits == 0x7E);
  CHECK(to_float8_e4m3(std::nextafter(464.0f, INFINITY), fin).bits == 0x7E);
  CHECK(to_float8_e4m3(std::nextafter(464.0f, INFINITY), none).bits == 0x7F);
  CHECK(to_float8_e4m3(-1e30f, none).bits == 0xFF);
  CHECK(to_float8_e4m3(INFINITY, fin).bits == 0x7E);
  CHECK(to_float8_e4m3(-INFINITY, fin).bits == 0xFE);
  CHECK(to_float8_e4m3(INFINITY, none).bits == 0x7F);
  CHECK(to_float8_e4m3(-INFINITY, none).bits == 0xFF);
  // E5M2: 61440 is the tie between 57344 (odd) and 65536 and overflows
  CHECK(to_float8_e5m2(std::nextafter(61440.0f, 0.0f), none).bits == 0x7B);
  CHECK(to_float8_e5m2(61440.0f, none).bits == 0x7C);
  CHECK(to_float8_e5m2(61440.0f, fin).bits == 0x7B);
  CHECK(to_float8_e5m2(-INFINITY, none).bits == 0xFC);
  CHECK(to_float8_e5m2(-INFINITY, fin).bits == 0xFB);
  CHECK(to_float8_e5m2(-1e30f, fin).bits == 0xFB);
  // underflow keeps the sign; half the min subnormal ties to zero
  CHECK(to_float16(-0x1p-25f).bits == 0x8000);
  CHECK(to_float16(std::nextafter(0x1p-25f, 1.0f)).bits == 0x0001);
  CHECK(to_float8_e4m3(-0x1p-10f).bits == 0x80);
  CHECK(to_float8_e4m3(0x1.8p-10f).bits == 0x01);
  CHECK(to_float8_e4m3(0x1.8p-9f).bits == 0x02);  // tie 1.5 * 2^-9 between 1 and 2: even
  CHECK(to_float8_e5m2(0x1.8p-16f).bits == 0x02);
  CHECK(to_bfloat16(0x1p-149f).bits == 0x0000);    // float subnormal below half a bf16 ulp
  CHECK(to_bfloat16(0x1p-134f).bits == 0x0000);    // tie to even zero
  CHECK(to_bfloat16(0x1.8p-133f).bits == 0x0002);  // tie to even 2 * 2^-133
  CHECK(to_bfloat16(-0x1.4p-133f).bits == 0x8001);
}

TEMPLATE_TEST_CASE("NaN inputs give the documented quiet NaN", "[core][numeric]", float16, bfloat16,
                   float8_e4m3, float8_e5m2) {
  constexpr format_desc f = format_of<TestType>();
  INFO(f.name);
  const value_table t(f);
  std::vector<std::uint32_t> nans = {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFF800001u,
                                     0x7FFFFFFFu, 0xFFFFFFFFu, 0x7FA00000u, 0x7F802000u,
                                     0x7FBFFFFFu, 0x7FC12345u, 0xFFE00000u};
  for (const std::uint32_t u : nans) {
    const float x = float_from_bits(u);
    for (const auto sat : both_modes) {
      INFO(hex(u) << " " << mode_name(sat));
      const std::uint32_t got = kv_encode<TestType>(x, sat);
      CHECK(got == t.nan_bits(x));
      CHECK(std::isnan(ref_decode(f, got)));
      if (!f.fp8) {
        CHECK(((got & f.sign_bit()) != 0) == ((u >> 31) != 0));  // sign kept
        CHECK(((got >> (f.man_bits - 1)) & 1u) == 1u);           // quiet
      }
    }
  }
}

TEMPLATE_TEST_CASE("random floats encode as the reference encoder says", "[core][numeric]", float16,
                   bfloat16, float8_e4m3, float8_e5m2) {
  constexpr format_desc f = format_of<TestType>();
  INFO(f.name << ", seed " << kvtest::seed());
  const value_table t(f);
  std::vector<float> inputs = random_inputs(f, random_count, kvtest::seed());
  // every f16 and bf16 value (and NaN) as an input too: exhaustive over the 16-bit grids
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    inputs.push_back(kv_decode<float16>(b));
    inputs.push_back(float_from_bits(b << 16));
  }
  mismatch_log log;
  for (const float x : inputs) {
    for (const auto sat : both_modes) {
      if (!f.fp8 && sat == fp8_saturation::none) continue;
      const std::uint32_t got = kv_encode<TestType>(x, sat);
      const std::uint32_t want = t.encode(x, sat);
      if (got != want) {
        log.add(describe(x) + " (" + mode_name(sat) + "): got " + hex(got) + ", want " + hex(want));
      }
    }
  }
  INFO(log.first);
  CHECK(log.count == 0);
}

TEST_CASE("load_as_float and store_from_float dispatch on the dtype", "[core][numeric]") {
  const float values[] = {1.0f, -2.5f, 0.0f, 3.0e-3f, 448.0f, 1e6f};
  for (const dtype t : {dtype::f32, dtype::f16, dtype::bf16, dtype::fp8_e4m3, dtype::fp8_e5m2}) {
    INFO(name_of(t));
    unsigned char storage[1 + 6 * 4] = {};  // odd offset: unaligned access must work
    void* p = storage + 1;
    for (std::size_t i = 0; i < 6; ++i) store_from_float(t, p, i, values[i]);
    for (std::size_t i = 0; i < 6; ++i) {
      float expect = values[i];
      switch (t) {
        case dtype::f16:
          expect = to_float(to_float16(values[i]));
          break;
        case dtype::bf16:
          expect = to_float(to_bfloat16(values[i]));
          break;
        case dtype::fp8_e4m3:
          expect = to_float(to_float8_e4m3(values[i]));
          break;
        case dtype::fp8_e5m2:
          expect = to_float(to_float8_e5m2(values[i]));
          break;
        default:
          break;
      }
      CHECK(load_as_float(t, p, i) == expect);
    }
  }
  unsigned char bytes[8] = {};
  store_from_float(dtype::fp8_e4m3, bytes, 0, 1e6f, fp8_saturation::none);
  CHECK(bytes[0] == 0x7F);
  store_from_float(dtype::fp8_e5m2, bytes, 0, 1e6f);
  CHECK(bytes[0] == 0x7B);
  for (const dtype t : {dtype::int8, dtype::uint8, dtype::int4, dtype::int2}) {
    KVTEST_REQUIRE_ERROR(load_as_float(t, bytes, 0), errc::not_supported, name_of(t));
    KVTEST_REQUIRE_ERROR(store_from_float(t, bytes, 0, 1.0f), errc::not_supported, name_of(t));
  }
}
