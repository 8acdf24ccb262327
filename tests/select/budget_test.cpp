// Budgets: per-layer and per-head budgets sum exactly to the total; PyramidKV's schedule
// decreases with depth; AdaKV gives more to the head whose attention is spread.
#include <numeric>
#include <random>
#include <vector>

#include "kvcache/select/budget.hpp"
#include "kvcache/select/snapkv.hpp"
#include "support/catch.hpp"

using namespace kvcache;

namespace {
std::int64_t sum(const std::vector<std::int64_t>& v) {
  return std::accumulate(v.begin(), v.end(), std::int64_t{0});
}
}  // namespace

TEST_CASE("layer budgets sum to the total, within capacity", "[select][budget]") {
  std::mt19937_64 rng(kvtest::seed());
  uniform_budget u;
  pyramid_budget p;
  adaptive_heads a;
  for (int it = 0; it < 2000; ++it) {
    const auto L = std::uniform_int_distribution<int>(1, 40)(rng);
    const auto cap = std::uniform_int_distribution<std::int64_t>(0, 5000)(rng);
    const auto total = std::uniform_int_distribution<std::int64_t>(0, cap * L + 10)(rng);
    std::vector<std::int64_t> out(static_cast<std::size_t>(L));
    INFO("L " << L << " cap " << cap << " total " << total);
    for (int which = 0; which < 3; ++which) {
      if (which == 0) u.layer_budgets(total, cap, out);
      if (which == 1) p.layer_budgets(total, cap, out);
      if (which == 2) a.layer_budgets(total, cap, out);
      REQUIRE(sum(out) == std::min(total, cap * L));
      for (auto b : out) REQUIRE((b >= 0 && b <= cap));
    }
    u.layer_budgets(total, cap, out);
    REQUIRE(*std::max_element(out.begin(), out.end()) - *std::min_element(out.begin(), out.end()) <= 1);
  }
}

TEST_CASE("pyramid: linear schedule, beta", "[select][budget]") {
  pyramid_budget p(20.0);
  std::vector<std::int64_t> out(32);
  p.layer_budgets(32 * 1000, 1 << 20, out);
  REQUIRE(sum(out) == 32000);
  for (std::size_t l = 1; l < out.size(); ++l) REQUIRE(out[l] <= out[l - 1]);
  // bottom 2m - m/beta = 1950, top m/beta = 50 (m = 1000)
  REQUIRE(out.front() == 1950);
  REQUIRE(out.back() == 50);
  // capacity clamps the bottom layers; the excess goes to the others
  p.layer_budgets(32 * 1000, 1200, out);
  REQUIRE(sum(out) == 32000);
  REQUIRE(out.front() == 1200);
}

TEST_CASE("head budgets sum to the total, never above a head's size", "[select][budget]") {
  std::mt19937_64 rng(kvtest::seed() + 1);
  adaptive_heads a;
  uniform_budget u;
  for (int it = 0; it < 1000; ++it) {
    const auto H = std::uniform_int_distribution<int>(1, 8)(rng);
    std::vector<std::int64_t> sizes(static_cast<std::size_t>(H));
    for (auto& s : sizes) s = std::uniform_int_distribution<std::int64_t>(0, 300)(rng);
    std::vector<float> scores(static_cast<std::size_t>(sum(sizes)));
    for (auto& s : scores) s = std::uniform_real_distribution<float>(0, 1)(rng);
    const auto total = std::uniform_int_distribution<std::int64_t>(0, sum(sizes) + 5)(rng);
    std::vector<std::int64_t> out(static_cast<std::size_t>(H));
    a.head_budgets(total, sizes, scores, out);
    REQUIRE(sum(out) == std::min(total, sum(sizes)));
    for (int h = 0; h < H; ++h) REQUIRE(out[h] <= sizes[h]);
    u.head_budgets(total, sizes, scores, out);
    REQUIRE(sum(out) == std::min(total, sum(sizes)));
    for (int h = 0; h < H; ++h) REQUIRE(out[h] <= sizes[h]);
  }
}

TEST_CASE("adaptive_heads gives more to the flatter head", "[select][budget]") {
  // Two heads of 200 tokens seen through SnapKV votes: head 0 concentrates its window's
  // attention on 5 tokens, head 1 spreads it over all of them.
  const std::int64_t n = 200, window = 8;
  std::vector<snapkv> heads(2, snapkv(window, 1));
  for (int h = 0; h < 2; ++h) {
    heads[h].reset(n);
    heads[h].append(n);
    std::vector<float> probs(static_cast<std::size_t>(window * n), 0.0f);
    for (std::int64_t q = 0; q < window; ++q) {
      const std::int64_t visible = n - window + q + 1;
      for (std::int64_t i = 0; i < visible; ++i) {
        float p = 0;
        if (h == 0) p = (i % 40 == 0) ? 0.2f : 0.0f;
        else p = 1.0f / static_cast<float>(visible);
        probs[static_cast<std::size_t>(q * n + i)] = p;
      }
    }
    heads[h].observe_prefill(probs, static_cast<std::int32_t>(window), 1);
  }
  adaptive_heads a;
  std::vector<std::int64_t> out(2), sizes;
  std::vector<float> scores;
  head_budgets_of(a, std::span<snapkv>(heads), 100, out, sizes, scores);
  INFO("budgets " << out[0] << " " << out[1]);
  REQUIRE(out[0] + out[1] == 100);
  // safeguard: floor(0.2 * 100 / 2) = 10 each; head 0 has 8 window + 5 hits worth keeping
  REQUIRE(out[0] >= 10);
  REQUIRE(out[1] > 2 * out[0]);
  uniform_budget u;
  head_budgets_of(u, std::span<snapkv>(heads), 100, out, sizes, scores);
  REQUIRE((out[0] == 50 && out[1] == 50));
}
