// The strict JSON subset parser behind the safetensors reader.
#include "kvcache/quality/detail/json.hpp"

#include <cstdint>
#include <limits>
#include <string>

#include "support/catch.hpp"

using kvcache::errc;
using kvcache::quality::detail::json_quote;
using kvcache::quality::detail::parse_json;

TEST_CASE("json: parses a safetensors-like header", "[quality][json]") {
  const auto v = parse_json(R"({"a.b":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},)"
                            R"( "__metadata__" : {"k": "v\n\u00e9\ud83d\ude00"}}   )");
  REQUIRE(v.is_object());
  REQUIRE(v.object().size() == 2);
  CHECK(v.object()[0].first == "a.b");
  const auto* e = v.find("a.b");
  REQUIRE(e != nullptr);
  CHECK(e->find("dtype")->string() == "F16");
  CHECK(e->find("shape")->array().size() == 2);
  CHECK(e->find("shape")->array()[1].integer() == 3);
  CHECK(v.find("__metadata__")->find("k")->string() == "v\n\xc3\xa9\xf0\x9f\x98\x80");
  CHECK(v.find("missing") == nullptr);
}

TEST_CASE("json: integers cover int64 exactly", "[quality][json]") {
  CHECK(parse_json("9223372036854775807").integer() == std::numeric_limits<std::int64_t>::max());
  CHECK(parse_json("-9223372036854775808").integer() == std::numeric_limits<std::int64_t>::min());
  CHECK(parse_json("0").integer() == 0);
  CHECK(parse_json("-0").integer() == 0);
  KVTEST_REQUIRE_ERROR(parse_json("9223372036854775808"), errc::parse_error, "int64");
  KVTEST_REQUIRE_ERROR(parse_json("-9223372036854775809"), errc::parse_error, "int64");
  KVTEST_REQUIRE_ERROR(parse_json("012"), errc::parse_error, "leading zeros");
}

TEST_CASE("json: rejects what a safetensors header never holds", "[quality][json]") {
  KVTEST_REQUIRE_ERROR(parse_json("1.5"), errc::parse_error, "only integers");
  KVTEST_REQUIRE_ERROR(parse_json("[1e3]"), errc::parse_error, "only integers");
  KVTEST_REQUIRE_ERROR(parse_json("true"), errc::parse_error, "true, false and null");
  KVTEST_REQUIRE_ERROR(parse_json("[null]"), errc::parse_error, "true, false and null");
  KVTEST_REQUIRE_ERROR(parse_json(R"({"a":1,"a":2})"), errc::parse_error, "duplicate key \"a\"");
  KVTEST_REQUIRE_ERROR(parse_json("{} x"), errc::parse_error, "after the end");
  KVTEST_REQUIRE_ERROR(parse_json(""), errc::parse_error, "expected a value");
  KVTEST_REQUIRE_ERROR(parse_json("{"), errc::parse_error, "byte 1");
  KVTEST_REQUIRE_ERROR(parse_json(R"({"a" 1})"), errc::parse_error, "expected ':'");
  KVTEST_REQUIRE_ERROR(parse_json("[1,]"), errc::parse_error, "expected a value");
  KVTEST_REQUIRE_ERROR(parse_json(R"({1:2})"), errc::parse_error, "string key");
  KVTEST_REQUIRE_ERROR(parse_json("\"abc"), errc::parse_error, "unterminated");
  KVTEST_REQUIRE_ERROR(parse_json("\"a\x01\""), errc::parse_error, "control character");
  KVTEST_REQUIRE_ERROR(parse_json(R"("\q")"), errc::parse_error, "bad escape");
  KVTEST_REQUIRE_ERROR(parse_json(R"("\u12")"), errc::parse_error, "hex digit");
  KVTEST_REQUIRE_ERROR(parse_json(R"("\ud800")"), errc::parse_error, "unpaired high surrogate");
  KVTEST_REQUIRE_ERROR(parse_json(R"("\udc00")"), errc::parse_error, "unpaired low surrogate");
  KVTEST_REQUIRE_ERROR(parse_json(std::string(100, '[') + std::string(100, ']')), errc::parse_error,
                       "nesting deeper");
  KVTEST_REQUIRE_ERROR(parse_json("[1", "my header"), errc::parse_error, "my header");
}

TEST_CASE("json: quote escapes what it must", "[quality][json]") {
  CHECK(json_quote("a\"b\\c\n\x01") == R"("a\"b\\c\n\u0001")");
  CHECK(parse_json(json_quote("x\ty\"z")).string() == "x\ty\"z");
}
