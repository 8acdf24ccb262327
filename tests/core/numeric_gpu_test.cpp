// GPU tests of convert.hpp: the device conversions (numeric.hpp compiled for the device, and
// CUDA's intrinsics) against the host functions, bit for bit, over every pattern of every format,
// every midpoint and about a million random floats. Skipped (exit 77) where there is no device.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/numeric_reference.hpp"
#include "kvcache/core/convert.hpp"
#include "kvcache/core/numeric.hpp"
#include "kvcache/memory/buffer.hpp"
#include "kvcache/memory/copy.hpp"
#include "kvcache/memory/stream.hpp"
#include "support/catch.hpp"

using namespace kvcache;
using namespace kvtest::numeric;

namespace {

template <class T>
buffer<T, cuda_space> upload(const std::vector<T>& host, stream_view s) {
  buffer<T> staging(host.size());
  std::memcpy(staging.data(), host.data(), host.size() * sizeof(T));
  buffer<T, cuda_space> device(host.size());
  copy(device, staging, s);
  synchronize(s);  // staging dies here
  return device;
}

/// Device memory with every byte 0xFF: NaN in every format, so unwritten outputs show up.
template <class T>
buffer<T, cuda_space> nan_filled(std::size_t n, stream_view s) {
  buffer<T> staging(n);
  std::memset(staging.data(), 0xFF, n * sizeof(T));
  buffer<T, cuda_space> device(n);
  copy(device, staging, s);
  synchronize(s);
  return device;
}

template <class T>
std::vector<T> download(const buffer<T, cuda_space>& device, stream_view s) {
  buffer<T> staging(device.size());
  copy(staging, device, s);
  synchronize(s);
  return std::vector<T>(staging.begin(), staging.end());
}

template <class T>
std::vector<decltype(T::bits)> all_patterns() {
  std::vector<decltype(T::bits)> out(format_of<T>().pattern_count());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<decltype(T::bits)>(i);
  return out;
}

template <class T>
void check_decode_on_device(stream_view s) {
  constexpr format_desc f = format_of<T>();
  INFO(f.name);
  using storage = decltype(T::bits);
  const std::vector<storage> patterns = all_patterns<T>();
  const auto src = upload(patterns, s);
  auto dst = nan_filled<float>(patterns.size(), s);
  convert_to_f32_async(float_format<T>::type, src.data(), dst.data(), patterns.size(), s.handle());
  const std::vector<float> got = download(dst, s);
  mismatch_log log;
  for (std::size_t i = 0; i < patterns.size(); ++i) {
    const float want = kv_decode<T>(patterns[i]);
    if (bits_of_float(got[i]) != bits_of_float(want)) {
      log.add(hex(patterns[i]) + ": device " + describe(got[i]) + ", host " + describe(want));
    }
  }
  INFO(log.first);
  CHECK(log.count == 0);
}

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

/// Encodes `inputs` on the device into `T` and compares with the host encoder: bit for bit, but
/// for CUDA's f16/bf16 intrinsics on NaN inputs only NaN-ness (they return 0x7FFF).
template <class T>
void check_encode_on_device(const std::vector<float>& inputs, const buffer<float, cuda_space>& src,
                            fp8_saturation sat, bool intrinsics, stream_view s) {
  constexpr format_desc f = format_of<T>();
  using storage = decltype(T::bits);
  INFO(f.name << (intrinsics ? " CUDA intrinsics" : " numeric.hpp")
              << (sat == fp8_saturation::finite ? " finite" : " none"));
  auto dst = nan_filled<storage>(inputs.size(), s);
  convert_from_f32_async(float_format<T>::type, src.data(), dst.data(), inputs.size(), sat,
                         intrinsics, s.handle());
  const std::vector<storage> got = download(dst, s);
  mismatch_log log;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const std::uint32_t want = kv_encode<T>(inputs[i], sat);
    const std::uint32_t g = got[i];
    bool ok = g == want;
    if (!ok && intrinsics && !f.fp8 && std::isnan(inputs[i])) {
      ok = std::isnan(ref_decode(f, g));
    }
    if (!ok) log.add(describe(inputs[i]) + ": device " + hex(g) + ", host " + hex(want));
  }
  INFO(log.first);
  CHECK(log.count == 0);
}

}  // namespace

TEST_CASE("device decoding of every pattern equals the host's", "[core][numeric][gpu]") {
  stream s;
  check_decode_on_device<float16>(s);
  check_decode_on_device<bfloat16>(s);
  check_decode_on_device<float8_e4m3>(s);
  check_decode_on_device<float8_e5m2>(s);

  // f32 -> f32 is a bit-exact copy, NaN payloads included
  std::vector<float> raw = random_inputs(bf16_format, 1 << 16, kvtest::seed());
  const auto src = upload(raw, s);
  auto dst = nan_filled<float>(raw.size(), s);
  convert_to_f32_async(dtype::f32, src.data(), dst.data(), raw.size(), s.view().handle());
  const auto got = download(dst, s);
  CHECK(std::memcmp(got.data(), raw.data(), raw.size() * sizeof(float)) == 0);
}

TEST_CASE("device encoding equals the host's, with numeric.hpp and with CUDA's intrinsics",
          "[core][numeric][gpu]") {
  stream s;
  const std::vector<float> inputs = encoder_inputs();
  REQUIRE(inputs.size() > 1'000'000);
  const auto src = upload(inputs, s);
  for (const bool intrinsics : {false, true}) {
    check_encode_on_device<float16>(inputs, src, fp8_saturation::finite, intrinsics, s);
    check_encode_on_device<bfloat16>(inputs, src, fp8_saturation::finite, intrinsics, s);
    for (const auto sat : {fp8_saturation::finite, fp8_saturation::none}) {
      check_encode_on_device<float8_e4m3>(inputs, src, sat, intrinsics, s);
      check_encode_on_device<float8_e5m2>(inputs, src, sat, intrinsics, s);
    }
  }
}

TEST_CASE("convert launchers validate their arguments", "[core][numeric][gpu]") {
  buffer<float, cuda_space> f(4);
  buffer<std::uint8_t, cuda_space> b(4);
  KVTEST_REQUIRE_ERROR(convert_to_f32_async(dtype::int8, b.data(), f.data(), 4, nullptr),
                       errc::not_supported, "int8");
  KVTEST_REQUIRE_ERROR(convert_from_f32_async(dtype::int4, f.data(), b.data(), 4,
                                              fp8_saturation::finite, false, nullptr),
                       errc::not_supported, "int4");
  KVTEST_REQUIRE_ERROR(convert_to_f32_async(dtype::f16, nullptr, f.data(), 4, nullptr),
                       errc::invalid_argument, "null pointer");
  convert_to_f32_async(dtype::f16, nullptr, nullptr, 0, nullptr);  // n = 0: nothing to do
  convert_from_f32_async(dtype::bf16, nullptr, nullptr, 0, fp8_saturation::none, true, nullptr);
  synchronize(stream_view{});
}
