// Traces: the committed fixture loads with the documented shapes; malformed traces throw.
#include "kvcache/quality/trace.hpp"

#include <cmath>

#include "kvcache/quality/safetensors.hpp"
#include "quality_support.hpp"
#include "support/catch.hpp"

using kvcache::errc;
using kvcache::quality::safetensors_file;
using kvcache::quality::st_dtype;
using kvcache::quality::trace;
namespace kq = kvtest::quality;

namespace {
trace from_bytes(std::vector<std::byte> bytes) {
  return trace::from(safetensors_file::parse(std::move(bytes), "synthetic.safetensors"));
}
}  // namespace

TEST_CASE("trace: the committed fixture has the documented shape", "[quality][trace]") {
  for (const auto& path : {kq::prose_trace(), kq::code_trace()}) {
    const trace tr = trace::load(path);
    INFO(path.string());
    CHECK(tr.tokens() == 1024);
    CHECK(tr.q_heads() == 9);
    CHECK(tr.kv_heads() == 3);
    CHECK(tr.group_size() == 3);
    CHECK(tr.head_dim() == 64);
    CHECK(tr.q_first() == 768);
    CHECK(tr.out_first() == 896);
    CHECK(tr.scale() == 0.125);
    REQUIRE(tr.layers().size() == 3);
    CHECK(tr.layers()[0].index == 3);
    CHECK(tr.layers()[1].index == 15);
    CHECK(tr.layers()[2].index == 27);
    CHECK(tr.layer(15).k.size() == 1024u * 3 * 64);
    CHECK(tr.layer(15).q.size() == 256u * 9 * 64);
    CHECK(tr.layer(15).out.size() == 128u * 9 * 64);
    CHECK(tr.token_ids().size() == 1024);
    CHECK(tr.meta("model").find("SmolLM2-135M-Instruct") != std::string::npos);
    CHECK(tr.meta("rope_layout") == "half");
    CHECK(tr.meta("nope", "fallback") == "fallback");
    // Every value is finite and keys are not all zero.
    double sum = 0;
    std::size_t non_finite = 0;
    for (const auto& l : tr.layers()) {
      for (const auto* v : {&l.q, &l.k, &l.v, &l.out}) {
        for (const float x : *v) {
          non_finite += std::isfinite(x) ? 0 : 1;
          sum += std::abs(x);
        }
      }
    }
    CHECK(non_finite == 0);
    CHECK(sum > 0);
    // Accessors index the documented layouts.
    const auto& l = tr.layer(3);
    CHECK(tr.key(l, 5, 2).data() == l.k.data() + (5 * 3 + 2) * 64);
    CHECK(tr.query(l, 770, 4).data() == l.q.data() + (2 * 9 + 4) * 64);
    CHECK(tr.output(l, 1023, 8).data() == l.out.data() + (127 * 9 + 8) * 64);
    KVTEST_REQUIRE_ERROR(tr.query(l, 767, 0), errc::out_of_range, "position 767");
    KVTEST_REQUIRE_ERROR(tr.key(l, 1024, 0), errc::out_of_range, "position 1024");
    KVTEST_REQUIRE_ERROR(tr.value(l, 0, 3), errc::out_of_range, "kv head 3");
    KVTEST_REQUIRE_ERROR(tr.output(l, 895, 0), errc::out_of_range, "position 895");
    KVTEST_REQUIRE_ERROR(tr.layer(4), errc::out_of_range, "layer 4 is not recorded (have 3,15,27)");
  }
  // The token ids of the prose text start with the title "PRIDE AND PREJUDICE".
  CHECK(trace::load(kq::prose_trace()).meta("text") == "prose");
  CHECK(trace::load(kq::code_trace()).meta("text") == "code");
}

TEST_CASE("trace: a synthetic trace round-trips through write_safetensors", "[quality][trace]") {
  const auto s = kq::make_synth_trace();
  const trace tr = from_bytes(s.bytes());
  CHECK(tr.tokens() == 24);
  CHECK(tr.group_size() == 2);
  REQUIRE(tr.layers().size() == 2);
  CHECK(tr.layers()[1].index == 5);
  CHECK(tr.token_ids().empty());
}

TEST_CASE("trace: malformed traces give kvcache::error", "[quality][trace]") {
  SECTION("missing tensor") {
    auto s = kq::make_synth_trace();
    std::erase_if(s.tensors, [](const auto& t) { return t.name == "layer5.v"; });
    KVTEST_REQUIRE_ERROR(from_bytes(s.bytes()), errc::parse_error, "tensor 'layer5.v' is missing");
  }
  SECTION("wrong dtype") {
    auto s = kq::make_synth_trace();
    s.find("layer0.k")->dtype = st_dtype::i32;  // same size, integer elements
    KVTEST_REQUIRE_ERROR(from_bytes(s.bytes()), errc::dtype_mismatch,
                         "'layer0.k' is I32, expected F16, BF16 or F32");
  }
  SECTION("shapes that do not agree") {
    auto s = kq::make_synth_trace();
    s.find("layer5.v")->shape = {24, 4, 4};  // same bytes, other shape
    KVTEST_REQUIRE_ERROR(from_bytes(s.bytes()), errc::shape_mismatch,
                         "'layer5.v' has shape [24, 4, 4], expected [24, 2, 8]");
  }
  SECTION("shape disagrees with the metadata") {
    auto s = kq::make_synth_trace();
    s.metadata["tokens"] = "25";
    KVTEST_REQUIRE_ERROR(from_bytes(s.bytes()), errc::shape_mismatch, "expected [9, 4, 8]");
  }
  SECTION("query heads not a multiple of kv heads") {
    kq::synth_shape shape;
    shape.q_heads = 3;
    auto s = kq::make_synth_trace(shape);
    KVTEST_REQUIRE_ERROR(from_bytes(s.bytes()), errc::shape_mismatch,
                         "3 query heads are not a multiple of 2 kv heads");
  }
  SECTION("metadata") {
    auto s = kq::make_synth_trace();
    s.metadata.erase("head_dim");
    KVTEST_REQUIRE_ERROR(from_bytes(s.bytes()), errc::parse_error, "'head_dim' is missing");
    s = kq::make_synth_trace();
    s.metadata["format"] = "other/2";
    KVTEST_REQUIRE_ERROR(from_bytes(s.bytes()), errc::parse_error, "format is 'other/2'");
    s = kq::make_synth_trace();
    s.metadata["q_first"] = "12x";
    KVTEST_REQUIRE_ERROR(from_bytes(s.bytes()), errc::parse_error, "'q_first' = '12x'");
    s = kq::make_synth_trace();
    s.metadata["q_first"] = "24";
    KVTEST_REQUIRE_ERROR(from_bytes(s.bytes()), errc::parse_error, "outside [0, 23]");
    s = kq::make_synth_trace();
    s.metadata["layers"] = "0,";
    KVTEST_REQUIRE_ERROR(from_bytes(s.bytes()), errc::parse_error, "ends in a comma");
    s = kq::make_synth_trace();
    s.metadata["layers"] = "0,0";
    KVTEST_REQUIRE_ERROR(from_bytes(s.bytes()), errc::parse_error, "layer 0 appears twice");
  }
  SECTION("token ids of the wrong length") {
    auto s = kq::make_synth_trace();
    s.tensors.push_back({"tokens", st_dtype::i32, {2}, kq::f32_bytes({1.0f, 2.0f})});
    KVTEST_REQUIRE_ERROR(from_bytes(s.bytes()), errc::shape_mismatch, "'tokens' has shape [2]");
  }
  SECTION("not a file") {
    KVTEST_REQUIRE_ERROR(trace::load(kq::data_dir() / "missing.safetensors"), errc::io_error,
                         "missing.safetensors");
  }
}
