// The safetensors reader: a file the Python tool wrote, C++ round trips, malformed input.
#include "kvcache/quality/safetensors.hpp"

#include <cmath>
#include <cstring>
#include <vector>

#include "quality_support.hpp"
#include "support/catch.hpp"

using kvcache::errc;
using kvcache::quality::safetensors_file;
using kvcache::quality::st_dtype;
using kvcache::quality::tensor_blob;
using kvcache::quality::write_safetensors;
namespace kq = kvtest::quality;

namespace {
safetensors_file parse(const std::string& header, std::size_t data_size) {
  return safetensors_file::parse(kq::raw_file(header, data_size), "test.safetensors");
}
}  // namespace

TEST_CASE("safetensors: reads the file tools/kvdump writes (names, shapes, dtypes, values)",
          "[quality][safetensors]") {
  const auto f = safetensors_file::open(kq::tiny_file());
  CHECK(f.metadata().at("format") == "kvdump-tiny/1");
  REQUIRE(f.tensors().size() == 7);
  // File order is the order the tool wrote them in.
  const char* names[] = {"a.f16",    "b.bf16",  "c.f32",        "d.i32",
                         "e.scalar", "f.empty", "g.f16.special"};
  for (std::size_t i = 0; i < 7; ++i) CHECK(f.tensors()[i].name == names[i]);

  CHECK(f.at("a.f16").dtype == st_dtype::f16);
  CHECK(f.at("a.f16").shape == std::vector<std::int64_t>{2, 3});
  CHECK(f.to_f32("a.f16") == std::vector<float>{-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f});

  CHECK(f.at("b.bf16").dtype == st_dtype::bf16);
  CHECK(f.to_f32("b.bf16") == std::vector<float>{1.0f, -2.5f, 3.140625f, 0.0f});

  CHECK(f.at("c.f32").shape == std::vector<std::int64_t>{2, 2, 2});
  CHECK(f.to_f32("c.f32") ==
        std::vector<float>{0.0f, 0.25f, 0.5f, 0.75f, 1.0f, 1.25f, 1.5f, 1.75f});

  CHECK(f.at("d.i32").dtype == st_dtype::i32);
  CHECK(f.to_i32("d.i32") == std::vector<std::int32_t>{1, -2, 2147483647});

  CHECK(f.at("e.scalar").shape.empty());
  CHECK(f.at("e.scalar").numel() == 1);
  CHECK(f.to_f32("e.scalar") == std::vector<float>{42.0f});

  CHECK(f.at("f.empty").shape == std::vector<std::int64_t>{0, 4});
  CHECK(f.at("f.empty").size_bytes == 0);
  CHECK(f.to_f32("f.empty").empty());

  const auto special = f.to_f32("g.f16.special");
  REQUIRE(special.size() == 4);
  CHECK(special[0] == 65504.0f);
  CHECK(special[1] == 0.0f);
  CHECK(std::signbit(special[1]));
  CHECK(special[2] == std::ldexp(1.0f, -24));  // the smallest f16 subnormal
  CHECK(special[3] == 0.333251953125f);        // f16(1/3)

  KVTEST_REQUIRE_ERROR(f.to_f32("d.i32"), errc::dtype_mismatch, "'d.i32' is I32");
  KVTEST_REQUIRE_ERROR(f.to_i32("a.f16"), errc::dtype_mismatch, "'a.f16' is F16");
  KVTEST_REQUIRE_ERROR(f.at("nope"), errc::parse_error, "no tensor named 'nope'");
  CHECK(f.find("nope") == nullptr);
}

TEST_CASE("safetensors: write and parse round-trip", "[quality][safetensors]") {
  const std::vector<float> x = {1.5f, -2.0f, 3.25f, 1e-30f, -0.0f, 7.0f};
  const std::vector<std::byte> bf16 = {std::byte{0x80}, std::byte{0x3f}, std::byte{0x00},
                                       std::byte{0xc0}};  // 1.0, -2.0
  std::vector<tensor_blob> blobs = {
      {"z.first", st_dtype::f32, {2, 3}, kq::f32_bytes(x)},
      {"a \"quoted\" name", st_dtype::bf16, {2}, bf16},
      {"empty", st_dtype::f16, {0}, {}},
  };
  const auto bytes = write_safetensors(blobs, {{"k", "v"}, {"json\"esc", "line\nbreak"}});
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  const auto f = safetensors_file::parse(bytes);
  REQUIRE(f.tensors().size() == 3);
  CHECK(f.tensors()[0].name == "z.first");
  CHECK(f.to_f32("z.first") == x);
  CHECK(f.to_f32("a \"quoted\" name") == std::vector<float>{1.0f, -2.0f});
  CHECK(f.metadata().at("json\"esc") == "line\nbreak");
  CHECK(f.source() == "<memory>");

  KVTEST_REQUIRE_ERROR(write_safetensors({{"x", st_dtype::f32, {3}, kq::f32_bytes({1.0f})}}),
                       errc::invalid_argument, "4 bytes given for 3 elements");
  KVTEST_REQUIRE_ERROR(
      write_safetensors({{"x", st_dtype::f32, {0}, {}}, {"x", st_dtype::f32, {0}, {}}}),
      errc::invalid_argument, "'x'");
}

TEST_CASE("safetensors: accepts tensors listed out of offset order", "[quality][safetensors]") {
  const auto f = parse(R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                       R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                       8);
  REQUIRE(f.tensors().size() == 2);
  CHECK(f.tensors()[0].name == "a");
  CHECK(f.tensors()[1].name == "b");
}

TEST_CASE("safetensors: malformed files give kvcache::error naming the problem",
          "[quality][safetensors]") {
  using kvcache::quality::safetensors_file;
  SECTION("truncated") {
    auto bytes = kq::read_bytes(kq::tiny_file());
    REQUIRE(bytes.size() > 100);
    KVTEST_REQUIRE_ERROR(safetensors_file::parse({bytes.begin(), bytes.begin() + 5}),
                         errc::parse_error, "shorter than the 8-byte header length");
    KVTEST_REQUIRE_ERROR(safetensors_file::parse({bytes.begin(), bytes.begin() + 40}),
                         errc::parse_error, "runs past the end");
    KVTEST_REQUIRE_ERROR(safetensors_file::parse({bytes.begin(), bytes.end() - 1}),
                         errc::parse_error, "data section");
    KVTEST_REQUIRE_ERROR(safetensors_file::parse({}), errc::parse_error, "0 bytes");
  }
  SECTION("extra bytes after the data") {
    KVTEST_REQUIRE_ERROR(parse(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 6),
                         errc::parse_error, "cover 4 bytes of the 6-byte data section");
  }
  SECTION("header") {
    KVTEST_REQUIRE_ERROR(parse(" {}", 0), errc::parse_error, "must start with '{'");
    KVTEST_REQUIRE_ERROR(parse("[]", 0), errc::parse_error, "must start with '{'");
    KVTEST_REQUIRE_ERROR(parse("{\"a\":", 0), errc::parse_error, "invalid JSON");
    KVTEST_REQUIRE_ERROR(parse("{}", 0).at("x"), errc::parse_error, "no tensor named 'x'");
    auto huge = kq::raw_file("{}", 0);
    const std::uint64_t n = 1ull << 40;
    std::memcpy(huge.data(), &n, 8);
    KVTEST_REQUIRE_ERROR(safetensors_file::parse(huge), errc::parse_error, "exceeds");
  }
  SECTION("entries") {
    KVTEST_REQUIRE_ERROR(parse(R"({"a":[1]})", 0), errc::parse_error, "not an object");
    KVTEST_REQUIRE_ERROR(parse(R"({"a":{"dtype":"F32","shape":[1]}})", 4), errc::parse_error,
                         "lacks \"data_offsets\"");
    KVTEST_REQUIRE_ERROR(
        parse(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}})", 4),
        errc::parse_error, "unexpected key \"extra\"");
    KVTEST_REQUIRE_ERROR(parse(R"({"a":{"dtype":"F17","shape":[1],"data_offsets":[0,4]}})", 4),
                         errc::parse_error, "unknown dtype \"F17\"");
    KVTEST_REQUIRE_ERROR(parse(R"({"a":{"dtype":1,"shape":[1],"data_offsets":[0,4]}})", 4),
                         errc::parse_error, "not a string");
    KVTEST_REQUIRE_ERROR(parse(R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8),
                         errc::not_supported, "dtype F64");
    KVTEST_REQUIRE_ERROR(parse(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
                         errc::parse_error, "non-negative");
    KVTEST_REQUIRE_ERROR(parse(R"({"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,4]}})", 4),
                         errc::parse_error, "non-negative integers");
    KVTEST_REQUIRE_ERROR(
        parse(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4),
        errc::parse_error, "overflows");
    KVTEST_REQUIRE_ERROR(
        parse(R"({"a":{"dtype":"F32","shape":[4294967296,2147483648,0],"data_offsets":[0,0]}})", 0),
        errc::parse_error, "overflows");
    KVTEST_REQUIRE_ERROR(parse(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4),
                         errc::parse_error, "[begin, end]");
    KVTEST_REQUIRE_ERROR(parse(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4),
                         errc::parse_error, "decrease");
  }
  SECTION("shape times dtype size disagrees with the offsets") {
    KVTEST_REQUIRE_ERROR(parse(R"({"a":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}})", 8),
                         errc::parse_error, "[3] F16 elements take 6 bytes");
  }
  SECTION("offsets out of range, overlapping, with gaps") {
    KVTEST_REQUIRE_ERROR(parse(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4),
                         errc::parse_error, "run past the 4-byte data section");
    KVTEST_REQUIRE_ERROR(parse(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                               8),
                         errc::parse_error, "overlaps");
    KVTEST_REQUIRE_ERROR(parse(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
                         errc::parse_error, "gap of 4 bytes");
  }
  SECTION("metadata") {
    KVTEST_REQUIRE_ERROR(parse(R"({"__metadata__":{"a":1}})", 0), errc::parse_error,
                         "not a string");
    KVTEST_REQUIRE_ERROR(parse(R"({"__metadata__":[]})", 0), errc::parse_error, "not an object");
  }
}

TEST_CASE("safetensors: file system errors are io_error", "[quality][safetensors]") {
  KVTEST_REQUIRE_ERROR(safetensors_file::open(kq::data_dir() / "does-not-exist.safetensors"),
                       errc::io_error, "does-not-exist.safetensors");
  KVTEST_REQUIRE_ERROR(safetensors_file::open(kq::data_dir()), errc::io_error, "regular file");
}
