#include "support/catch.hpp"

#include <string>

#include "kvcache/core/dtype.hpp"
#include "kvcache/core/error.hpp"

namespace {
int checked_div(int a, int b) {
  KVCACHE_EXPECTS(b != 0, kvcache::errc::invalid_argument, "divisor must be non-zero, got {}", b);
  return a / b;
}
}  // namespace

TEST_CASE("KVCACHE_EXPECTS names the code, the value, the condition and file:line", "[core][error]") {
  REQUIRE(checked_div(6, 3) == 2);
  try {
    (void)checked_div(1, 0);
    FAIL("no throw");
  } catch (const kvcache::error& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(e.code() == kvcache::errc::invalid_argument);
    CHECK(what.find("invalid_argument") != std::string::npos);
    CHECK(what.find("got 0") != std::string::npos);
    CHECK(what.find("b != 0") != std::string::npos);
    CHECK(what.find("error_test.cpp:") != std::string::npos);
  }
}

TEST_CASE("kvcache::error is a std::runtime_error with a code", "[core][error]") {
  try {
    KVCACHE_FAIL(kvcache::errc::out_of_memory, "asked for {} bytes", 42);
  } catch (const std::runtime_error& e) {
    const auto* ke = dynamic_cast<const kvcache::error*>(&e);
    REQUIRE(ke != nullptr);
    CHECK(ke->code() == kvcache::errc::out_of_memory);
    CHECK(std::string(e.what()).find("asked for 42 bytes") != std::string::npos);
  }
}

TEST_CASE("every errc has a name", "[core][error]") {
  for (int c = 1; c <= static_cast<int>(kvcache::errc::logic_error); ++c) {
    CHECK(std::string(kvcache::to_string(static_cast<kvcache::errc>(c))) != "unknown_error");
  }
}

TEST_CASE("dtype traits: bits and bytes for n elements", "[core][dtype]") {
  using kvcache::dtype;
  CHECK(kvcache::bits_of(dtype::f32) == 32);
  CHECK(kvcache::bits_of(dtype::bf16) == 16);
  CHECK(kvcache::bits_of(dtype::fp8_e5m2) == 8);
  CHECK(kvcache::bits_of(dtype::int4) == 4);
  CHECK(kvcache::bytes_for(dtype::int4, 3) == 2);
  CHECK(kvcache::bytes_for(dtype::int2, 5) == 2);
  CHECK(kvcache::bytes_for(dtype::int2, 128) == 32);
  CHECK(kvcache::bytes_for(dtype::f16, 128) == 256);
  STATIC_REQUIRE(kvcache::dtype_traits<dtype::int2>::packed);
  STATIC_REQUIRE(!kvcache::dtype_traits<dtype::int8>::floating);
  for (int i = 0; i < kvcache::dtype_count; ++i) {
    const auto t = static_cast<dtype>(i);
    CHECK(kvcache::parse_dtype(kvcache::name_of(t)) == t);
  }
  KVTEST_REQUIRE_ERROR(kvcache::parse_dtype("f64"), kvcache::errc::invalid_argument, "'f64'");
}
