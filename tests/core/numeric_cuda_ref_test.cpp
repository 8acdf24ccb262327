// numeric.hpp against CUDA's own host conversions (cuda_fp16.h, cuda_bf16.h, cuda_fp8.h compiled
// by the host compiler: no GPU needed). Bit for bit, except the NaN patterns of f16/bf16, where
// CUDA returns 0x7FFF and numeric.hpp keeps the sign and payload: there both must be NaN.
#include "support/catch.hpp"

#if __has_include(<cuda_fp16.h>) && __has_include(<cuda_bf16.h>) && __has_include(<cuda_fp8.h>)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/numeric_reference.hpp"
#include "kvcache/core/numeric.hpp"

using namespace kvcache;
using namespace kvtest::numeric;

namespace {

float cuda_f16_to_float(std::uint32_t b) {
  __half_raw r;
  r.x = static_cast<unsigned short>(b);
  return __half2float(__half(r));
}
float cuda_bf16_to_float(std::uint32_t b) {
  __nv_bfloat16_raw r;
  r.x = static_cast<unsigned short>(b);
  return __bfloat162float(__nv_bfloat16(r));
}
float cuda_fp8_to_float(std::uint32_t b, __nv_fp8_interpretation_t interpretation) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(b), interpretation);
  return __half2float(__half(h));
}
std::uint32_t cuda_float_to_f16(float x) { return static_cast<__half_raw>(__float2half_rn(x)).x; }
std::uint32_t cuda_float_to_bf16(float x) {
  return static_cast<__nv_bfloat16_raw>(__float2bfloat16_rn(x)).x;
}
std::uint32_t cuda_float_to_fp8(float x, fp8_saturation sat,
                                __nv_fp8_interpretation_t interpretation) {
  return __nv_cvt_float_to_fp8(x, sat == fp8_saturation::finite ? __NV_SATFINITE : __NV_NOSAT,
                               interpretation);
}

/// Decoded values agree: bit for bit, or both NaN.
void compare_decode(const char* name, std::uint32_t patterns, float (*ours)(std::uint32_t),
                    float (*theirs)(std::uint32_t)) {
  INFO(name);
  mismatch_log log;
  std::size_t nans = 0;
  for (std::uint32_t b = 0; b < patterns; ++b) {
    const float a = ours(b), c = theirs(b);
    const bool ok = std::isnan(a) || std::isnan(c) ? std::isnan(a) && std::isnan(c)
                                                   : bits_of_float(a) == bits_of_float(c);
    nans += std::isnan(a) ? 1u : 0u;
    if (!ok) log.add(hex(b) + ": numeric.hpp " + describe(a) + ", CUDA " + describe(c));
  }
  INFO(log.first);
  CHECK(log.count == 0);
  CHECK(nans > 0);
}

/// The encoder inputs: all f16 patterns as floats, every midpoint (and neighbours) of every
/// format, and about a million random floats.
std::vector<float> encoder_inputs() {
  std::vector<float> inputs;
  for (std::uint32_t b = 0; b < 0x10000u; ++b) inputs.push_back(kv_decode<float16>(b));
  for (const auto& f : {f16_format, bf16_format, e4m3_format, e5m2_format}) {
    const auto mids = midpoint_inputs(value_table(f));
    inputs.insert(inputs.end(), mids.begin(), mids.end());
    const auto random = random_inputs(
        f, std::size_t{1} << 18, kvtest::seed() + f.total_bits() + static_cast<unsigned>(f.bias));
    inputs.insert(inputs.end(), random.begin(), random.end());
  }
  return inputs;
}

bool is_f16_nan(std::uint32_t b) { return (b & 0x7FFFu) > 0x7C00u; }
bool is_bf16_nan(std::uint32_t b) { return (b & 0x7FFFu) > 0x7F80u; }

}  // namespace

TEST_CASE("decoding agrees with CUDA's host conversions for every pattern",
          "[core][numeric][cuda]") {
  compare_decode("f16", 0x10000u, kv_decode<float16>, cuda_f16_to_float);
  compare_decode("bf16", 0x10000u, kv_decode<bfloat16>, cuda_bf16_to_float);
  compare_decode("fp8_e4m3", 0x100u, kv_decode<float8_e4m3>,
                 [](std::uint32_t b) { return cuda_fp8_to_float(b, __NV_E4M3); });
  compare_decode("fp8_e5m2", 0x100u, kv_decode<float8_e5m2>,
                 [](std::uint32_t b) { return cuda_fp8_to_float(b, __NV_E5M2); });
}

TEST_CASE("encoding agrees with CUDA's host conversions", "[core][numeric][cuda]") {
  const std::vector<float> inputs = encoder_inputs();
  INFO(inputs.size() << " inputs, seed " << kvtest::seed());
  REQUIRE(inputs.size() > 1'000'000);
  mismatch_log f16, bf16, fp8;
  for (const float x : inputs) {
    const bool nan = std::isnan(x);
    {
      const std::uint32_t a = to_float16(x).bits, c = cuda_float_to_f16(x);
      if (nan ? !(is_f16_nan(a) && is_f16_nan(c)) : a != c) {
        f16.add(describe(x) + ": numeric.hpp " + hex(a) + ", CUDA " + hex(c));
      }
    }
    {
      const std::uint32_t a = to_bfloat16(x).bits, c = cuda_float_to_bf16(x);
      if (nan ? !(is_bf16_nan(a) && is_bf16_nan(c)) : a != c) {
        bf16.add(describe(x) + ": numeric.hpp " + hex(a) + ", CUDA " + hex(c));
      }
    }
    for (const auto sat : {fp8_saturation::finite, fp8_saturation::none}) {
      const char* mode = sat == fp8_saturation::finite ? " SATFINITE" : " NOSAT";
      const std::uint32_t a4 = to_float8_e4m3(x, sat).bits,
                          c4 = cuda_float_to_fp8(x, sat, __NV_E4M3);
      if (a4 != c4)
        fp8.add("e4m3" + std::string(mode) + " " + describe(x) + ": numeric.hpp " + hex(a4) +
                ", CUDA " + hex(c4));
      const std::uint32_t a5 = to_float8_e5m2(x, sat).bits,
                          c5 = cuda_float_to_fp8(x, sat, __NV_E5M2);
      if (a5 != c5)
        fp8.add("e5m2" + std::string(mode) + " " + describe(x) + ": numeric.hpp " + hex(a5) +
                ", CUDA " + hex(c5));
    }
  }
  INFO("f16:\n" << f16.first << "bf16:\n" << bf16.first << "fp8:\n" << fp8.first);
  CHECK(f16.count == 0);
  CHECK(bf16.count == 0);
  CHECK(fp8.count == 0);
}

TEST_CASE("CUDA's host NaN encodings are the ones numeric.hpp documents", "[core][numeric][cuda]") {
  for (const std::uint32_t u : {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFFA12345u}) {
    const float x = float_from_bits(u);
    INFO(hex(u));
    CHECK(cuda_float_to_f16(x) == 0x7FFFu);   // numeric.hpp: sign and payload kept
    CHECK(cuda_float_to_bf16(x) == 0x7FFFu);  // numeric.hpp: sign and payload kept
    for (const auto sat : {fp8_saturation::finite, fp8_saturation::none}) {
      CHECK(cuda_float_to_fp8(x, sat, __NV_E4M3) == 0x7Fu);  // numeric.hpp: the same
      CHECK(cuda_float_to_fp8(x, sat, __NV_E5M2) == 0x7Fu);
    }
  }
  // E4M3 without saturation: overflow is NaN *with* the sign (unlike a NaN input)
  CHECK(cuda_float_to_fp8(-1e9f, fp8_saturation::none, __NV_E4M3) == 0xFFu);
  CHECK(cuda_float_to_fp8(-INFINITY, fp8_saturation::none, __NV_E4M3) == 0xFFu);
  CHECK(cuda_float_to_fp8(-INFINITY, fp8_saturation::finite, __NV_E4M3) == 0xFEu);
}

#else
TEST_CASE("CUDA's fp16/bf16/fp8 headers are not available", "[core][numeric][cuda]") {
  WARN("cuda_fp16.h, cuda_bf16.h or cuda_fp8.h not found: nothing compared");
}
#endif
