// The scoring harness on the real fixture: properties that hold for an honest harness on real
// attention data, and the contract with configurations.
#include "kvcache/quality/score.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <string>

#include "kvcache/quality/baselines.hpp"
#include "kvcache/quality/compression.hpp"
#include "kvcache/quality/safetensors.hpp"
#include "kvcache/quality/trace.hpp"
#include "quality_support.hpp"
#include "support/catch.hpp"

using kvcache::errc;
namespace q = kvcache::quality;
namespace kq = kvtest::quality;

namespace {

const q::trace& prose() {
  static const q::trace tr = q::trace::load(kq::prose_trace());
  return tr;
}
const q::trace& code() {
  static const q::trace tr = q::trace::load(kq::code_trace());
  return tr;
}

q::score_options steps(std::int64_t n) {
  q::score_options o;
  o.steps = n;
  return o;
}

/// A test configuration that keeps everything but rounds keys and values to a grid: exercises
/// replacement rows and custom byte counts (a stand-in for the quantizers of later issues).
class rounding final : public q::compression {
 public:
  explicit rounding(float step) : step_(step) {}
  std::string name() const override { return "rounding"; }
  std::unique_ptr<q::head_compressor> start(const q::head_view& head, std::int64_t) const override {
    return std::make_unique<compressor>(head, step_);
  }

 private:
  struct compressor final : q::head_compressor {
    compressor(const q::head_view& h, float grid) : head(h), grid(grid) {}
    void step(std::int64_t t, q::kept_cache& out) override {
      const auto d = static_cast<std::size_t>(head.head_dim);
      for (std::int64_t pos = 0; pos <= t; ++pos) {
        out.tokens.push_back(pos);
        for (std::size_t c = 0; c < d; ++c) {
          out.keys.push_back(std::round(head.key(pos)[c] / grid) * grid);
          out.values.push_back(std::round(head.value(pos)[c] / grid) * grid);
        }
      }
      out.bytes = static_cast<double>(t + 1) * head.head_dim * 2;  // "8 bits" for K and V
    }
    void observe(std::int64_t, std::span<const float> probs, const q::kept_cache& kept) override {
      // One softmax row per query head of the group.
      REQUIRE(probs.size() == static_cast<std::size_t>(head.group_size) * kept.tokens.size());
      for (int g = 0; g < head.group_size; ++g) {
        double s = 0;
        for (std::size_t i = 0; i < kept.tokens.size(); ++i) s += probs[g * kept.tokens.size() + i];
        CHECK(s == kvtest::Approx(1.0).epsilon(1e-5));
      }
      ++observed;
    }
    q::head_view head;
    float grid;
    int observed = 0;
  };
  float step_;
};

/// A configuration returning whatever the test sets, to check the harness's validation.
class broken final : public q::compression {
 public:
  explicit broken(int mode) : mode_(mode) {}
  std::string name() const override { return "broken"; }
  std::unique_ptr<q::head_compressor> start(const q::head_view&, std::int64_t) const override {
    return std::make_unique<compressor>(mode_);
  }

 private:
  struct compressor final : q::head_compressor {
    explicit compressor(int m) : mode(m) {}
    void step(std::int64_t t, q::kept_cache& out) override {
      switch (mode) {
        case 0:
          break;  // nothing kept
        case 1:
          out.tokens = {t + 1};
          break;
        case 2:
          out.tokens = {t, t};
          break;
        case 3:
          out.tokens = {t};
          out.keys = {1.0f};
          break;
        default:
          out.tokens = {-1};
      }
    }
    int mode;
  };
  int mode_;
};

}  // namespace

TEST_CASE("score: the full cache has zero error and full recall", "[quality][score]") {
  const auto r = q::score(prose(), q::full_cache{}, steps(16));
  REQUIRE(r.heads.size() == 3u * 9);
  CHECK(r.config == "full");
  CHECK(r.text == "prose");
  for (const auto& h : r.heads) {
    CHECK(h.rel_l2 == 0.0);
    CHECK(h.rel_l2_max == 0.0);
    CHECK(h.cosine == kvtest::Approx(1.0).epsilon(1e-12));
    CHECK(h.recall == kvtest::Approx(1.0).epsilon(1e-12));
    CHECK(h.kv_bytes == h.full_kv_bytes);
    CHECK(h.steps == 16);
  }
  // 2 (K and V) * mean context (1016.5 tokens over steps 1008..1023) * 64 * 2 bytes
  CHECK(r.heads[0].full_kv_bytes == kvtest::Approx(2.0 * 1016.5 * 64 * 2));
}

TEST_CASE("score: keep-recent-window at 100% is the full cache", "[quality][score]") {
  const auto r = q::score(code(), q::recent_window{1.0}, steps(16));
  for (const auto& h : r.heads) {
    CHECK(h.rel_l2 == 0.0);
    CHECK(h.kv_ratio() == 1.0);
  }
}

TEST_CASE("score: the harness's full-cache output matches the model's recorded output",
          "[quality][score]") {
  // The trace's out was computed by the model in float64 from unrounded q, k, v; the harness
  // recomputes it from the fp16-rounded ones: agreement at fp16 precision.
  for (const q::trace* tr : {&prose(), &code()}) {
    const auto r = q::score(*tr, q::full_cache{}, steps(128));
    for (const auto& h : r.heads) {
      INFO(tr->meta("text") << " layer " << h.layer << " head " << h.q_head);
      REQUIRE(std::isfinite(h.recorded_rel_l2));
      CHECK(h.recorded_rel_l2 < 5e-3);
    }
    CHECK(r.summary().recorded_rel_l2 < 2e-3);
  }
  // Steps before out_first have no recorded output.
  const auto early = q::score(prose(), q::full_cache{}, steps(200));
  CHECK(std::isfinite(early.heads[0].recorded_rel_l2));  // 128 of the 200 steps have one
}

TEST_CASE("score: on every layer, a 10% window errs more than a 50% window", "[quality][score]") {
  for (const q::trace* tr : {&prose(), &code()}) {
    const auto w50 = q::score(*tr, q::recent_window{0.5}, steps(32)).by_layer();
    const auto w10 = q::score(*tr, q::recent_window{0.1}, steps(32)).by_layer();
    REQUIRE(w50.size() == 3);
    REQUIRE(w10.size() == 3);
    for (std::size_t i = 0; i < w50.size(); ++i) {
      INFO(tr->meta("text") << " layer " << w50[i].layer << ": rel_l2 " << w10[i].rel_l2
                            << " at 10% vs " << w50[i].rel_l2 << " at 50%");
      CHECK(w10[i].layer == w50[i].layer);
      CHECK(w10[i].rel_l2 > w50[i].rel_l2);
      CHECK(w10[i].recall < w50[i].recall);
      CHECK(w50[i].kv_ratio() == kvtest::Approx(0.5).epsilon(0.01));
      CHECK(w10[i].kv_ratio() == kvtest::Approx(0.1).epsilon(0.02));
    }
  }
}

TEST_CASE("score: keep-random is deterministic, seeded and budgeted", "[quality][score]") {
  q::score_options o = steps(8);
  o.layers = {15};
  const auto a = q::score(prose(), q::random_keep{0.25}, o);
  const auto b = q::score(prose(), q::random_keep{0.25}, o);
  const auto c = q::score(prose(), q::random_keep{0.25, 99}, o);
  REQUIRE(a.heads.size() == 9);
  bool differs = false;
  for (std::size_t i = 0; i < a.heads.size(); ++i) {
    CHECK(a.heads[i].rel_l2 == b.heads[i].rel_l2);
    CHECK(a.heads[i].kv_ratio() == kvtest::Approx(0.25).epsilon(0.01));
    CHECK(a.heads[i].rel_l2 > 0);
    CHECK(a.heads[i].recall < 1.0);
    differs = differs || a.heads[i].rel_l2 != c.heads[i].rel_l2;
  }
  CHECK(differs);
  CHECK(c.config == "random:0.25:99");
}

TEST_CASE("score: configurations that replace rows (quantizer-like)", "[quality][score]") {
  q::score_options o = steps(4);
  o.layers = {3};
  o.kv_heads = {1};
  const auto fine = q::score(prose(), rounding{1.0f / 64}, o);
  const auto coarse = q::score(prose(), rounding{0.5f}, o);
  REQUIRE(fine.heads.size() == 3);
  for (std::size_t i = 0; i < fine.heads.size(); ++i) {
    CHECK(fine.heads[i].q_head == 3 + static_cast<int>(i));
    CHECK(fine.heads[i].recall == kvtest::Approx(1.0));  // every token kept
    CHECK(fine.heads[i].rel_l2 > 0);
    CHECK(fine.heads[i].rel_l2 < coarse.heads[i].rel_l2);
    CHECK(fine.heads[i].kv_ratio() == kvtest::Approx(0.5));
  }
}

TEST_CASE("score: invalid requests and invalid configurations", "[quality][score]") {
  KVTEST_REQUIRE_ERROR(q::score(prose(), q::full_cache{}, steps(257)), errc::out_of_range,
                       "257 steps requested");
  KVTEST_REQUIRE_ERROR(q::score(prose(), q::full_cache{}, steps(0)), errc::out_of_range,
                       "0 steps requested");
  q::score_options o = steps(2);
  o.layers = {4};
  KVTEST_REQUIRE_ERROR(q::score(prose(), q::full_cache{}, o), errc::out_of_range, "layer 4");
  o.layers = {3};
  o.kv_heads = {3};
  KVTEST_REQUIRE_ERROR(q::score(prose(), q::full_cache{}, o), errc::out_of_range, "kv head 3");
  o.kv_heads = {0};
  KVTEST_REQUIRE_ERROR(q::score(prose(), broken{0}, o), errc::logic_error, "kept no token");
  KVTEST_REQUIRE_ERROR(q::score(prose(), broken{1}, o), errc::logic_error, "outside [0, 1022]");
  KVTEST_REQUIRE_ERROR(q::score(prose(), broken{2}, o), errc::logic_error, "twice");
  KVTEST_REQUIRE_ERROR(q::score(prose(), broken{3}, o), errc::logic_error, "1 key floats");
  KVTEST_REQUIRE_ERROR(q::score(prose(), broken{4}, o), errc::logic_error, "position -1");
}

TEST_CASE("compression specs", "[quality][score]") {
  CHECK(q::make_compression("full")->name() == "full");
  CHECK(q::make_compression("window:0.25")->name() == "window:0.25");
  CHECK(q::make_compression("random:0.1")->name() == "random:0.1");
  CHECK(q::make_compression("random:0.1:5")->name() == "random:0.1:5");
  CHECK(q::make_compression("window:1")->name() == "window:1");
  KVTEST_REQUIRE_ERROR(q::make_compression("window:2"), errc::invalid_argument, "outside (0, 1]");
  KVTEST_REQUIRE_ERROR(q::make_compression("window:0"), errc::invalid_argument, "outside (0, 1]");
  KVTEST_REQUIRE_ERROR(q::make_compression("window:abc"), errc::invalid_argument, "not a number");
  KVTEST_REQUIRE_ERROR(q::make_compression("window"), errc::invalid_argument, "one argument");
  KVTEST_REQUIRE_ERROR(q::make_compression("full:1"), errc::invalid_argument, "no arguments");
  KVTEST_REQUIRE_ERROR(q::make_compression("random:0.5:-1"), errc::invalid_argument, "seed '-1'");
  KVTEST_REQUIRE_ERROR(q::make_compression("h3o:0.5"), errc::invalid_argument,
                       "unknown compression 'h3o'");
  KVTEST_REQUIRE_ERROR(q::recent_window{1.5}, errc::invalid_argument, "1.5");

  q::register_compression("rounding", [](std::span<const std::string_view>) {
    return std::make_unique<rounding>(0.25f);
  });
  CHECK(q::make_compression("rounding")->name() == "rounding");
  const auto names = q::compression_names();
  CHECK(std::find(names.begin(), names.end(), "rounding") != names.end());
  KVTEST_REQUIRE_ERROR(q::register_compression("a:b", {}), errc::invalid_argument, "'a:b'");

  CHECK(q::split_specs(" full, window:0.5,,random:0.1 ") ==
        std::vector<std::string>{"full", "window:0.5", "random:0.1"});
  CHECK(q::budget_of(0.1, 1000) == 100);
  CHECK(q::budget_of(0.1, 1001) == 101);
  CHECK(q::budget_of(0.001, 10) == 1);
  CHECK(q::budget_of(1.0, 10) == 10);
}

TEST_CASE("score: means over heads and layers", "[quality][score]") {
  q::score_options o = steps(4);
  const auto r = q::score(code(), q::recent_window{0.25}, o);
  const auto layers = r.by_layer();
  REQUIRE(layers.size() == 3);
  double sum = 0;
  for (const auto& l : layers) {
    CHECK(l.q_head == -1);
    sum += l.rel_l2;
  }
  const auto s = r.summary();
  CHECK(s.layer == -1);
  CHECK(s.rel_l2 == kvtest::Approx(sum / 3));
  CHECK(s.rel_l2_max >= layers[0].rel_l2_max);
}
