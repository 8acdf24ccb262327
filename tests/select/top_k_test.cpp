// Host side of the GPU selection path: select_top_k_host against each policy's select and a
// brute-force sort, observe_attention_mass against observe, retain_attention_mass_host against
// the policy's retain, and compact_segments_independent on try_compact's move lists.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "kvcache/paging/paged_kv_store.hpp"
#include "kvcache/select/attention_mass.hpp"
#include "kvcache/select/compact_segments.hpp"
#include "kvcache/select/h2o.hpp"
#include "kvcache/select/tova.hpp"
#include "kvcache/select/top_k.hpp"
#include "support/catch.hpp"

using namespace kvcache;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();

/// Brute force: sort all rows by (score desc, index desc), take k, sort ascending.
std::vector<std::int64_t> reference(const std::vector<float>& s, std::int64_t k) {
  std::vector<std::int64_t> o(s.size());
  std::iota(o.begin(), o.end(), 0);
  std::sort(o.begin(), o.end(), [&](std::int64_t a, std::int64_t b) {
    const float x = s[static_cast<std::size_t>(a)], y = s[static_cast<std::size_t>(b)];
    return x > y || (x == y && a > b);
  });
  o.resize(static_cast<std::size_t>(std::clamp<std::int64_t>(k, 0, static_cast<std::int64_t>(s.size()))));
  std::sort(o.begin(), o.end());
  return o;
}

}  // namespace

TEST_CASE("select_top_k_host: ties to the recent token, +inf, protect_recent, strided tables", "[select]") {
  // scores of 2 tables with a gap (stride 8): table 0 [3, 1, 3, inf, 1, 0] , table 1 [2, 2, 2, 2]
  std::vector<float> sc{3, 1, 3, inf, 1, -0.0f, -1, -1, 2, 2, 2, 2, -1, -1, -1, -1};
  sc[5] = -0.0f;
  std::vector<top_k_segment> seg(4);
  seg[0] = {.scores = 0, .rows = 6, .budget = 3, .keep = 0, .protect_recent = 0};
  seg[1] = {.scores = 8, .rows = 4, .budget = 2, .keep = 3, .protect_recent = 0};
  seg[2] = {.scores = 0, .rows = 6, .budget = 4, .keep = 5, .protect_recent = 2};  // rows 4, 5 +inf
  seg[3] = {.scores = 8, .rows = 4, .budget = 9, .keep = 9, .protect_recent = 0};   // all
  std::vector<std::int64_t> keep(13, -7);
  select_top_k_host(sc.data(), seg.data(), 4, keep.data());
  REQUIRE(std::vector<std::int64_t>(keep.begin(), keep.begin() + 3) == std::vector<std::int64_t>{0, 2, 3});
  REQUIRE(std::vector<std::int64_t>(keep.begin() + 3, keep.begin() + 5) == std::vector<std::int64_t>{2, 3});
  REQUIRE(std::vector<std::int64_t>(keep.begin() + 5, keep.begin() + 9) == std::vector<std::int64_t>{2, 3, 4, 5});
  REQUIRE(std::vector<std::int64_t>(keep.begin() + 9, keep.end()) == std::vector<std::int64_t>{0, 1, 2, 3});
  seg[1].rows = -1;
  KVTEST_REQUIRE_ERROR(select_top_k_host(sc.data(), seg.data(), 4, keep.data()),
                       errc::invalid_argument, "segment 1");
}

TEST_CASE("select_top_k_host equals a brute-force sort and each policy's select", "[select]") {
  std::mt19937_64 rng(kvtest::seed());
  for (int round = 0; round < 50; ++round) {
    const auto n = std::uniform_int_distribution<std::int64_t>(1, 3000)(rng);
    const int levels = std::uniform_int_distribution<int>(1, 40)(rng);  // few levels: many ties
    std::vector<float> s(static_cast<std::size_t>(n));
    for (auto& x : s) {
      const int r = std::uniform_int_distribution<int>(0, levels)(rng);
      x = r == levels ? inf : static_cast<float>(r) * 0.25f - 2.0f;
    }
    const auto k = std::uniform_int_distribution<std::int64_t>(0, n + 2)(rng);
    top_k_segment seg{.scores = 0, .rows = n, .budget = k, .keep = 0, .protect_recent = 0};
    std::vector<std::int64_t> keep(static_cast<std::size_t>(n));
    select_top_k_host(s.data(), &seg, 1, keep.data());
    keep.resize(static_cast<std::size_t>(kept_rows(seg)));
    REQUIRE(keep == reference(s, k));
  }
  // H2O: the mass with the recent window protected is h2o::select.
  h2o p(0.5);
  p.reset(512);
  p.append(500);
  std::vector<float> probs(2 * 500);
  for (auto& x : probs) x = static_cast<float>(std::uniform_int_distribution<int>(0, 9)(rng)) / 64.0f;
  p.observe(probs, 2);
  for (const std::int64_t budget : {0, 1, 7, 100, 499, 500, 600}) {
    std::vector<std::int64_t> want(500);
    want.resize(static_cast<std::size_t>(p.select(budget, want)));
    const top_k_segment seg = attention_mass_segment(0, 0, 0, 0, 500, budget, 0, p.recent_ratio());
    std::vector<std::int64_t> got(500);
    select_top_k_host(p.mass().data(), &seg, 1, got.data());
    got.resize(static_cast<std::size_t>(kept_rows(seg)));
    REQUIRE(got == want);
  }
}

TEST_CASE("observe_attention_mass is observe with the group mean; retain follows the rows", "[select]") {
  std::mt19937_64 rng(kvtest::seed() + 1);
  constexpr std::int32_t kv_heads = 2, group = 4, rows = 37, stride = 40;
  std::vector<h2o> direct(kv_heads), fed(kv_heads);
  std::vector<tova> tdirect(kv_heads), tfed(kv_heads);
  for (auto* v : {&direct, &fed}) for (auto& p : *v) { p.reset(64); p.append(rows); }
  for (auto* v : {&tdirect, &tfed}) for (auto& p : *v) { p.reset(64); p.append(rows); }
  std::vector<float> scratch;
  for (int step = 0; step < 3; ++step) {
    std::vector<float> mass(kv_heads * stride, 0.0f);  // what the attention kernel adds
    for (std::int32_t h = 0; h < kv_heads; ++h) {
      std::vector<float> probs(group * rows);
      for (auto& x : probs) x = static_cast<float>(std::uniform_int_distribution<int>(0, 63)(rng)) / 256.0f;
      for (std::int32_t q = 0; q < group; ++q)
        for (std::int32_t r = 0; r < rows; ++r) mass[h * stride + r] += probs[q * rows + r];
      direct[static_cast<std::size_t>(h)].observe(probs, group);
      tdirect[static_cast<std::size_t>(h)].observe(probs, group);
      const std::span<const float> row(mass.data() + h * stride, stride);
      observe_attention_mass(fed[static_cast<std::size_t>(h)], row, group, scratch);
      observe_attention_mass(tfed[static_cast<std::size_t>(h)], row, group, scratch);
    }
  }
  for (std::int32_t h = 0; h < kv_heads; ++h) {
    const auto i = static_cast<std::size_t>(h);
    for (std::int32_t r = 0; r < rows; ++r) {
      REQUIRE(fed[i].mass()[static_cast<std::size_t>(r)] == direct[i].mass()[static_cast<std::size_t>(r)]);
    }
    std::vector<std::int64_t> a(rows), b(rows);
    REQUIRE(tfed[i].select(9, a) == tdirect[i].select(9, b));
    REQUIRE(a == b);
  }
  // retain: rows follow keep, the rest becomes 0
  std::vector<float> mass(kv_heads * stride);
  for (auto& x : mass) x = static_cast<float>(std::uniform_int_distribution<int>(1, 99)(rng));
  const std::vector<float> before = mass;
  std::vector<top_k_segment> seg{attention_mass_segment(0, 0, 0, stride, rows, 10, 0),
                                 attention_mass_segment(0, 1, 0, stride, rows, 50, 10)};
  std::vector<std::int64_t> keep(10 + rows);
  select_top_k_host(mass.data(), seg.data(), 2, keep.data());
  retain_attention_mass_host(mass.data(), seg.data(), 2, keep.data());
  for (std::int64_t j = 0; j < rows; ++j) {
    REQUIRE(mass[static_cast<std::size_t>(j)] == (j < 10 ? before[static_cast<std::size_t>(keep[static_cast<std::size_t>(j)])] : 0.0f));
    REQUIRE(mass[static_cast<std::size_t>(stride + j)] == before[static_cast<std::size_t>(stride + j)]);
  }
}

TEST_CASE("compact_segments_independent: try_compact without sharing yes, with forks detected", "[select]") {
  std::mt19937_64 rng(kvtest::seed() + 2);
  store_config cfg;
  cfg.layout = kv_layout{.layers = 2, .kv_heads = 2, .q_heads = 4, .head_dim = 8, .page_size = 4,
                         .order = kv_order::nhd, .type = dtype::f16};
  cfg.num_pages = 4 * 64;
  cfg.max_sequences = 4;
  paged_kv_store<host_space, per_head> store(cfg);
  const seq_id a = store.create();
  REQUIRE(store.try_append(a, 50));
  std::vector<slot_move> moves;
  std::vector<std::int64_t> off{0}, keep;
  for (std::int32_t t = 0; t < store.tables_per_sequence(); ++t) {
    keep.clear();
    for (std::int64_t i = 0; i < 50; ++i)
      if (std::uniform_int_distribution<int>(0, 2)(rng) == 0) keep.push_back(i);
    REQUIRE(store.try_compact(a, t, keep, moves));
    off.push_back(static_cast<std::int64_t>(moves.size()));
  }
  REQUIRE(compact_segments_independent(moves.data(), off.data(), static_cast<std::int32_t>(off.size() - 1)));
  // two segments writing the same slot, and a read after a write inside one segment
  std::vector<slot_move> bad{{5, 1}, {6, 1}};
  std::vector<std::int64_t> bad_off{0, 1, 2};
  REQUIRE(!compact_segments_independent(bad.data(), bad_off.data(), 2));
  std::vector<slot_move> raw{{5, 1}, {1, 0}};
  std::vector<std::int64_t> raw_off{0, 2};
  REQUIRE(!compact_segments_independent(raw.data(), raw_off.data(), 1));
}
