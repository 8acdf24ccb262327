// The snippet of docs/quality.md, compiled and run.
#include <fmt/format.h>

#include "quality_support.hpp"
#include "support/catch.hpp"

// example-begin score
#include "kvcache/quality/baselines.hpp"
#include "kvcache/quality/score.hpp"
namespace kq = kvcache::quality;

void print_window_quality(const std::string& path) {
  const kq::trace tr = kq::trace::load(path);
  kq::score_options options;
  options.steps = 64;  // replay the last 64 queries
  const kq::score_result r = kq::score(tr, kq::recent_window{0.25}, options);
  for (const kq::score_row& l : r.by_layer())
    fmt::print("layer {}: rel_l2 {:.3f} recall {:.3f}\n", l.layer, l.rel_l2, l.recall);
}
// example-end score

TEST_CASE("docs/quality.md snippet runs", "[quality][api]") {
  REQUIRE_NOTHROW(print_window_quality(kvtest::quality::prose_trace().string()));
}
