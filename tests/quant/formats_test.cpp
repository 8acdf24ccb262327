// Each format against its definition, computed independently here (x / scale is computed as
// x * (1 / scale), as the library documents): int8 (symmetric, f32 scale),
// fp8 E4M3 (nearest value by enumeration, ties to even, saturating), KIVI (min, rounded-up scale,
// codes, packing lowest bits first), and KIVI's per-channel key grouping against per-token.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "kvcache/quant/fp8.hpp"
#include "kvcache/quant/int8.hpp"
#include "kvcache/quant/kivi.hpp"
#include "quant/quant_support.hpp"
#include "support/catch.hpp"

using namespace kvcache;

namespace {

/// The E4M3 code nearest to t (|t| <= 448 after saturation), ties to the even mantissa, found by
/// enumerating every finite positive code.
std::uint8_t e4m3_reference(float t) {
  const float a = std::fabs(t);
  std::uint8_t best = 0;
  double best_err = 1e30;
  for (unsigned code = 0; code <= 0x7E; ++code) {
    const unsigned e = code >> 3, m = code & 7u;
    const double v = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, static_cast<int>(e) - 7);
    const double err = std::fabs(v - a);
    if (err < best_err || (err == best_err && (code & 1u) == 0)) {
      best = static_cast<std::uint8_t>(code);
      best_err = err;
    }
  }
  if (a > 448.0f) best = 0x7E;  // saturate
  return static_cast<std::uint8_t>(best | (std::signbit(t) ? 0x80 : 0));
}

double e4m3_value(std::uint8_t code) {
  const unsigned e = (code >> 3) & 0xFu, m = code & 7u;
  const double v = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, static_cast<int>(e) - 7);
  return (code & 0x80u) != 0 ? -v : v;
}

}  // namespace

TEST_CASE("int8: codes and values follow the definition", "[quant][int8]") {
  std::mt19937_64 rng(kvtest::seed() + 10);
  const std::int32_t p = 16, d = 128;
  for (float scale : {1.0f, 1e-5f, 500.0f}) {
    auto rows = kvtest::random_rows(rng, p, d, scale);
    rows[3] = 0x0000;  // a zero among them
    std::vector<std::byte> page(int8_quantizer::key_page_bytes(p, d));
    int8_quantizer::quantize_keys(rows.data(), page.data(), p, d, 0, p);
    std::vector<std::uint16_t> out(rows.size());
    int8_quantizer::dequantize_keys(page.data(), out.data(), p, d, 0, p);
    for (std::int32_t t = 0; t < p; ++t) {
      float amax = 0.0f;
      for (std::int32_t c = 0; c < d; ++c) {
        amax = std::max(amax, std::fabs(kvtest::f16_to_float(rows[static_cast<std::size_t>(t) * d + c])));
      }
      const float s = kvtest::load_f32(page.data() + static_cast<std::size_t>(p) * d + 4 * t);
      REQUIRE(s == amax / 127.0f);
      for (std::int32_t c = 0; c < d; ++c) {
        const std::size_t i = static_cast<std::size_t>(t) * d + c;
        const float x = kvtest::f16_to_float(rows[i]);
        const auto q = static_cast<std::int8_t>(page[i]);
        const float expected = std::clamp(std::nearbyint(x * (1.0f / s)), -127.0f, 127.0f);
        REQUIRE(static_cast<float>(q) == expected);
        REQUIRE(out[i] == kvtest::float_to_f16(static_cast<float>(q) * s));
      }
    }
  }
}

TEST_CASE("fp8_e4m3: codes and values follow the definition (nearest even, saturating)",
          "[quant][fp8]") {
  std::mt19937_64 rng(kvtest::seed() + 11);
  const std::int32_t p = 16, d = 128;
  for (float scale : {1.0f, 1e-6f, 1000.0f}) {
    const auto rows = kvtest::random_rows(rng, p, d, scale);
    std::vector<std::byte> page(fp8_e4m3_quantizer::value_page_bytes(p, d));
    fp8_e4m3_quantizer::quantize_values(rows.data(), page.data(), p, d, 0, p);
    std::vector<std::uint16_t> out(rows.size());
    fp8_e4m3_quantizer::dequantize_values(page.data(), out.data(), p, d, 0, p);
    for (std::int32_t t = 0; t < p; ++t) {
      float amax = 0.0f;
      for (std::int32_t c = 0; c < d; ++c) {
        amax = std::max(amax, std::fabs(kvtest::f16_to_float(rows[static_cast<std::size_t>(t) * d + c])));
      }
      const float s = kvtest::load_f32(page.data() + static_cast<std::size_t>(p) * d + 4 * t);
      REQUIRE(s == amax / 448.0f);
      for (std::int32_t c = 0; c < d; ++c) {
        const std::size_t i = static_cast<std::size_t>(t) * d + c;
        const float x = kvtest::f16_to_float(rows[i]);
        const auto code = static_cast<std::uint8_t>(page[i]);
        INFO("token " << t << " channel " << c << " x " << x << " x / s " << x * (1.0f / s));
        REQUIRE(code == e4m3_reference(x * (1.0f / s)));
        REQUIRE(out[i] == kvtest::float_to_f16(static_cast<float>(e4m3_value(code)) * s));
      }
    }
  }
  // ties go to the even code; beyond 448 saturates (the row max maps to 448 exactly)
  CHECK(e4m3_reference(17.0f) == 0x58);  // 16 (0x58) and 18 (0x59) are the neighbours
  CHECK(e4m3_reference(500.0f) == 0x7E);
  CHECK(to_float8_e4m3(17.0f).bits == 0x58);
}

TEST_CASE("kivi: min, rounded-up scale, codes and packing follow the definition", "[quant][kivi]") {
  std::mt19937_64 rng(kvtest::seed() + 12);
  const std::int32_t p = 64, d = 128;
  auto check = [&]<class Q>(Q, kv_side side) {
    const quant_side_format& f = Q::format.side(side);
    for (float scale : {1.0f, 1e-5f, 1000.0f}) {
      const auto rows = kvtest::random_rows(rng, p, d, scale);
      std::vector<std::byte> page(side == kv_side::key ? Q::key_page_bytes(p, d) : Q::value_page_bytes(p, d));
      if (side == kv_side::key) {
        Q::quantize_keys(rows.data(), page.data(), p, d, 0, p);
      } else {
        Q::quantize_values(rows.data(), page.data(), p, d, 0, p);
      }
      const std::uint32_t max_code = (1u << f.bits) - 1u;
      for (std::int32_t t = 0; t < p; ++t) {
        for (std::int32_t c = 0; c < d; ++c) {
          // the group of (t, c)
          float mn = INFINITY, mx = -INFINITY;
          const bool per_channel = f.scheme == quant_scheme::kivi_channel;
          const std::int32_t t0 = per_channel ? t / f.group * f.group : t;
          const std::int32_t c0 = per_channel ? c : c / f.group * f.group;
          for (std::int32_t tt = t0; tt < t0 + (per_channel ? f.group : 1); ++tt) {
            for (std::int32_t cc = c0; cc < c0 + (per_channel ? 1 : f.group); ++cc) {
              const float v = kvtest::f16_to_float(rows[static_cast<std::size_t>(tt) * d + cc]);
              mn = std::min(mn, v);
              mx = std::max(mx, v);
            }
          }
          const auto [smin, sscale] = kvtest::kivi_min_scale(f, page.data(), p, d, t, c);
          REQUIRE(smin == mn);
          const float exact = (mx - mn) / static_cast<float>(max_code);
          REQUIRE(sscale >= exact);  // rounded up
          const std::uint16_t sb = kvtest::float_to_f16(sscale);
          if (sb > 0) REQUIRE(kvtest::f16_to_float(static_cast<std::uint16_t>(sb - 1)) < exact);
          const float x = kvtest::f16_to_float(rows[static_cast<std::size_t>(t) * d + c]);
          const unsigned expected =
              sscale == 0.0f ? 0u
                             : static_cast<unsigned>(std::clamp(std::nearbyint((x - mn) * (1.0f / sscale)), 0.0f,
                                                                static_cast<float>(max_code)));
          REQUIRE(kvtest::page_code(f, page.data(), t, c, d) == expected);
        }
      }
    }
  };
  check(kivi2{}, kv_side::key);
  check(kivi2{}, kv_side::value);
  check(kivi4{}, kv_side::key);
  check(kivi4{}, kv_side::value);
  check(kivi2_token_keys{}, kv_side::key);
  check(kivi<2, 64, 128>{}, kv_side::key);
}

TEST_CASE("kivi: packing is lowest bits first, metadata {min, scale} per group", "[quant][kivi]") {
  const std::int32_t p = 32, d = 32;
  // keys: channel c holds the values (c % 4) + 4 * (t % 2) ... chosen so that every channel's
  // group has min c % 4 and max c % 4 + 4 (2 bits: scale 4/3 rounded up); values: token t's row
  // is 0, 1, 2, 3, 0, 1, 2, 3, ... (one group of 32 channels, min 0, max 3, scale 1).
  std::vector<std::uint16_t> keys(static_cast<std::size_t>(p) * d), values(keys.size());
  for (std::int32_t t = 0; t < p; ++t) {
    for (std::int32_t c = 0; c < d; ++c) {
      keys[static_cast<std::size_t>(t) * d + c] = kvtest::float_to_f16(static_cast<float>(c % 4 + 4 * (t % 2)));
      values[static_cast<std::size_t>(t) * d + c] = kvtest::float_to_f16(static_cast<float>(c % 4));
    }
  }
  std::vector<std::byte> kp(kivi2::key_page_bytes(p, d)), vp(kivi2::value_page_bytes(p, d));
  CHECK(kp.size() == 32 * 8 + 32 * 4);  // codes [32][8 bytes], metadata [1][{32 mins}, {32 scales}]
  CHECK(vp.size() == 32 * 8 + 32 * 4);  // codes [32][8 bytes], metadata [16][{mins}, {scales}]
  kivi2::quantize_keys(keys.data(), kp.data(), p, d, 0, p);
  kivi2::quantize_values(values.data(), vp.data(), p, d, 0, p);
  // values: codes 0, 1, 2, 3 per byte, lowest bits first: 0b11'10'01'00 (8-byte rows: plain rows)
  CHECK(!kivi2::format.value.paired_code_rows(d));
  for (std::int32_t b = 0; b < 8; ++b) CHECK(vp[static_cast<std::size_t>(b)] == std::byte{0xE4});
  // rows of a multiple of 16 bytes (2-bit values, head_dim 64, 128, ...) are interleaved per
  // token pair: word 8 s + x = {bytes 16 s + x, 16 s + x + 8 of token 2i, the same of token 2i + 1}
  const quant_side_format& fv = kivi2::format.value;
  CHECK(fv.paired_code_rows(128));
  CHECK(fv.code_byte_offset(0, 0, 128) == 0);
  CHECK(fv.code_byte_offset(0, 8, 128) == 1);
  CHECK(fv.code_byte_offset(1, 0, 128) == 2);
  CHECK(fv.code_byte_offset(1, 8, 128) == 3);
  CHECK(fv.code_byte_offset(0, 1, 128) == 4);
  CHECK(fv.code_byte_offset(0, 16, 128) == 32);
  CHECK(fv.code_byte_offset(3, 31, 128) == 64 + 4 * 15 + 1 + 2);
  CHECK(fv.metadata_offset(33, 128) == 34 * 32);  // an odd page holds a last pair
  CHECK(!kivi4::format.value.paired_code_rows(128));
  // per-token metadata in token-pair records: {min t0, min t1}, {scale t0, scale t1} (1 group)
  CHECK(kvtest::load_u16(vp.data() + 256) == 0x0000);  // min 0 of token 0
  CHECK(kvtest::load_u16(vp.data() + 258) == 0x0000);  // of token 1
  CHECK(kvtest::load_u16(vp.data() + 260) == 0x3C00);  // scale 1 of token 0
  CHECK(kvtest::load_u16(vp.data() + 262) == 0x3C00);  // of token 1
  CHECK(kvtest::load_u16(vp.data() + 256 + 8 * 15 + 6) == 0x3C00);  // scale of token 31
  // keys: token 0 is at the min (codes 0), token 1 at the max (codes 3)
  CHECK(kp[0] == std::byte{0x00});
  CHECK(kp[8] == std::byte{0xFF});
  // per-channel metadata in pair order (2 bits: channels 0, 8, 1, 9, ... of each 16): channel 1
  // at position 2, channel 8 at position 1, channel 17 at 16 + 2; scales after the 32 mins
  CHECK(kvtest::load_u16(kp.data() + 256 + 2 * 2) == kvtest::float_to_f16(1.0f));  // channel 1 min
  CHECK(kvtest::load_u16(kp.data() + 256 + 2 * 1) == kvtest::float_to_f16(0.0f));  // channel 8 min
  CHECK(kvtest::load_u16(kp.data() + 256 + 2 * 18) == kvtest::float_to_f16(1.0f));  // channel 17
  CHECK(kvtest::f16_to_float(kvtest::load_u16(kp.data() + 256 + 64 + 2 * 2)) >= 4.0f / 3);
  std::vector<std::uint16_t> back(keys.size());
  kivi2::dequantize_keys(kp.data(), back.data(), p, d, 0, p);
  CHECK(back == keys);  // min + 3 * scale (4.00195) rounds back to min + 4 in f16
  // 4 bits: scale 3 / 15 rounds up to 0.2002, codes 0, 5, 10, 15 -> bytes 0x50, 0xFA
  std::vector<std::byte> vp4(kivi4::value_page_bytes(p, d));
  kivi4::quantize_values(values.data(), vp4.data(), p, d, 0, p);
  CHECK(vp4[0] == std::byte{0x50});
  CHECK(vp4[1] == std::byte{0xFA});
}

TEST_CASE("kivi: per-channel key groups beat per-token ones at 2 bits on outlier channels",
          "[quant][kivi]") {
  // Keys with a few large outlier channels (as KIVI observes in real keys): grouping over tokens
  // of one channel keeps an outlier from stretching the scale of the other channels.
  std::mt19937_64 rng(kvtest::seed() + 13);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  const std::int32_t p = 128, d = 128;
  double err_channel = 0.0, err_token = 0.0, norm = 0.0;
  for (int trial = 0; trial < 8; ++trial) {
    std::vector<float> magnitude(d);
    for (auto& m : magnitude) m = unit(rng) < 0.06f ? 10.0f + 20.0f * unit(rng) : 0.5f + unit(rng);
    std::vector<std::uint16_t> keys(static_cast<std::size_t>(p) * d);
    for (std::size_t i = 0; i < keys.size(); ++i) {
      keys[i] = kvtest::float_to_f16(normal(rng) * magnitude[i % d]);
    }
    std::vector<std::byte> a(kivi2::key_page_bytes(p, d)), b(kivi2_token_keys::key_page_bytes(p, d));
    kivi2::quantize_keys(keys.data(), a.data(), p, d, 0, p);
    kivi2_token_keys::quantize_keys(keys.data(), b.data(), p, d, 0, p);
    std::vector<std::uint16_t> ya(keys.size()), yb(keys.size());
    kivi2::dequantize_keys(a.data(), ya.data(), p, d, 0, p);
    kivi2_token_keys::dequantize_keys(b.data(), yb.data(), p, d, 0, p);
    for (std::size_t i = 0; i < keys.size(); ++i) {
      const double x = kvtest::f16_to_float(keys[i]);
      err_channel += std::pow(x - kvtest::f16_to_float(ya[i]), 2);
      err_token += std::pow(x - kvtest::f16_to_float(yb[i]), 2);
      norm += x * x;
    }
  }
  std::printf("KIVI-2 key relative RMS error on outlier-channel keys: per channel %.4f, per token %.4f\n",
              std::sqrt(err_channel / norm), std::sqrt(err_token / norm));
  CHECK(err_channel < err_token);
}
