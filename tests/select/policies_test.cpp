// Each selection policy against hand-checked cases and, on random cases, against a direct
// reference that keeps every observation per position and ranks all held tokens by brute force.
#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "kvcache/select/h2o.hpp"
#include "kvcache/select/key_norm.hpp"
#include "kvcache/select/scissorhands.hpp"
#include "kvcache/select/snapkv.hpp"
#include "kvcache/select/streaming_llm.hpp"
#include "kvcache/select/tova.hpp"
#include "support/catch.hpp"

using namespace kvcache;

namespace {

template <class P>
std::vector<std::int64_t> kept_positions(P& p, std::int64_t budget) {
  std::vector<std::int64_t> idx(static_cast<std::size_t>(p.size()));
  idx.resize(static_cast<std::size_t>(p.select(budget, idx)));
  std::vector<std::int64_t> pos;
  for (auto i : idx) pos.push_back(p.positions()[static_cast<std::size_t>(i)]);
  return pos;
}
using V = std::vector<std::int64_t>;

}  // namespace

TEST_CASE("streaming_llm keeps the sinks and the most recent tokens", "[select]") {
  streaming_llm p(2);
  p.reset(16);
  p.append(10);
  REQUIRE(kept_positions(p, 5) == V{0, 1, 7, 8, 9});
  REQUIRE(kept_positions(p, 20).size() == 10);
}

TEST_CASE("h2o: heavy hitters by accumulated mass plus a recent window", "[select]") {
  h2o p;  // half recent
  p.reset(8);
  p.append(8);
  // two heads; token 1 and 4 get the most mass
  std::vector<float> step(16, 0.01f);
  step[1] = 0.5f;
  step[8 + 4] = 0.9f;
  step[8 + 1] = 0.1f;
  p.observe(step, 2);
  // budget 4: recent 2 (tokens 6, 7), heavy 2 of 0..5: 4 (0.455) and 1 (0.3)
  REQUIRE(kept_positions(p, 4) == V{1, 4, 6, 7});
  std::vector<std::int64_t> keep{1, 4, 6, 7};
  p.retain(keep);
  REQUIRE(p.size() == 4);
  REQUIRE(p.mass()[1] == kvtest::Approx(0.455));
  p.append(1);
  // budget 3: recent 1 (token 8); heavy 2: 4 and 1
  REQUIRE(kept_positions(p, 3) == V{1, 4, 8});
}

TEST_CASE("snapkv: window votes, max-pooled, window kept", "[select]") {
  snapkv p(2, 3);  // window 2, kernel 3
  p.reset(8);
  p.append(8);
  // two window queries (tokens 6 and 7), one head; prefix = tokens 0..5
  std::vector<float> probs(2 * 8, 0.0f);
  probs[2] = 0.6f;          // query 0 -> token 2
  probs[8 + 5] = 0.3f;      // query 1 -> token 5
  probs[8 + 0] = 0.2f;      // query 1 -> token 0
  p.observe_prefill(probs, 2, 1);
  // votes: [0.2, 0, 0.6, 0, 0, 0.3]; pooled (k=3): [0.2, 0.6, 0.6, 0.6, 0.3, 0.3]
  // budget 5: window {6, 7} + 3 best: 1, 2, 3 (0.6; ties -> recent: 3, 2, 1)
  REQUIRE(kept_positions(p, 5) == V{1, 2, 3, 6, 7});
  // budget 4: 0.6 ties -> the two most recent: 2, 3
  REQUIRE(kept_positions(p, 4) == V{2, 3, 6, 7});
  // generated tokens are protected
  p.append(1);
  REQUIRE(kept_positions(p, 3) == V{6, 7, 8});
}

TEST_CASE("tova: drops what the current query ignores", "[select]") {
  tova p;
  p.reset(6);
  p.append(5);
  const std::vector<float> probs{0.4f, 0.05f, 0.3f, 0.2f, 0.05f};
  p.observe(probs, 1);
  p.append(1);  // unobserved: kept
  REQUIRE(kept_positions(p, 5) == V{0, 2, 3, 4, 5});  // drop 1 (tie with 4 -> older goes)
  REQUIRE(kept_positions(p, 3) == V{0, 2, 5});
}

TEST_CASE("scissorhands: counts unimportant steps over the history window", "[select]") {
  scissorhands p(2, 0.0);  // history 2, no recent window
  p.reset(4);
  p.append(4);
  // uniform share 1/4 = 0.25
  p.observe(std::vector<float>{0.1f, 0.5f, 0.3f, 0.1f}, 1);  // 0 and 3 low
  p.observe(std::vector<float>{0.1f, 0.6f, 0.1f, 0.2f}, 1);  // 0, 2, 3 low
  REQUIRE(p.unimportant(0) == 2);
  REQUIRE(p.unimportant(1) == 0);
  REQUIRE(p.unimportant(2) == 1);
  REQUIRE(p.unimportant(3) == 2);
  REQUIRE(kept_positions(p, 2) == V{1, 2});
  p.observe(std::vector<float>{0.7f, 0.1f, 0.1f, 0.1f}, 1);  // window slides: step 1 forgotten
  REQUIRE(p.unimportant(0) == 1);
  REQUIRE(p.unimportant(1) == 1);
}

TEST_CASE("key_norm keeps the lowest key norms", "[select]") {
  key_norm p;
  p.reset(4);
  p.append(4, std::vector<float>{3.0f, 1.0f, 2.0f, 0.5f});
  REQUIRE(kept_positions(p, 2) == V{1, 3});
  KVTEST_REQUIRE_ERROR(p.append(1), errc::invalid_argument, "key norms");
  REQUIRE(p.size() == 4);  // the refused append changed nothing
  REQUIRE(kept_positions(p, 2) == V{1, 3});
}

TEST_CASE("policies reject malformed calls", "[select]") {
  h2o p;
  p.reset(4);
  p.append(3);
  KVTEST_REQUIRE_ERROR(p.observe(std::vector<float>(4), 1), errc::shape_mismatch, "observe");
  KVTEST_REQUIRE_ERROR(p.observe(std::vector<float>{0.5f, std::nanf(""), 0.5f}, 1),
                       errc::invalid_argument, "probability 1 is nan");
  KVTEST_REQUIRE_ERROR(p.retain(std::vector<std::int64_t>{1, 1}), errc::invalid_argument, "retain");
  KVTEST_REQUIRE_ERROR(p.retain(std::vector<std::int64_t>{3}), errc::invalid_argument, "retain");
  KVTEST_REQUIRE_ERROR(snapkv(4, 2), errc::invalid_argument, "kernel");
}

// ---- random cases against a direct reference ------------------------------------------------

namespace {

enum class kind { streaming, h2o, snapkv, tova, scissorhands, knorm };

/// Everything known about one token, by position.
struct ref_token {
  std::int64_t pos = 0;
  float norm = 0;
  float mass = 0;                                         // h2o
  float last = std::numeric_limits<float>::infinity();    // tova
  float snap = std::numeric_limits<float>::infinity();    // snapkv
  std::vector<int> low;                                   // scissorhands: 1 = unimportant, in order
};

float mean_of(const std::vector<float>& probs, std::int64_t off, int heads, std::int64_t n,
              std::int64_t i) {
  float s = 0;
  for (int h = 0; h < heads; ++h) s += probs[static_cast<std::size_t>(off + h * n + i)];
  return s / static_cast<float>(heads);
}

template <class P>
void random_case(kind k, P policy, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uni = [&](float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng); };
  auto ival = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  const int heads = static_cast<int>(ival(1, 3));
  const std::int64_t prompt = ival(1, 60);
  const int sinks = 3, history = 5, window = 4, kernel = 3;
  policy.reset(prompt + 100);
  std::vector<ref_token> ref;
  std::vector<float> norms;
  std::int64_t next_pos = 0;
  auto append = [&](std::int64_t n) {
    norms.clear();
    for (std::int64_t i = 0; i < n; ++i) {
      // quantized values so that ties happen
      norms.push_back(std::round(uni(0, 8)));
      ref_token t;
      t.pos = next_pos++;
      t.norm = norms.back();
      ref.push_back(t);
    }
    policy.append(n, norms);
  };
  auto random_probs = [&](std::int64_t rows, std::int64_t n) {
    std::vector<float> p(static_cast<std::size_t>(rows * n));
    for (auto& x : p) x = std::round(uni(0, 4)) / 16.0f;
    return p;
  };
  auto scissor_count = [&](ref_token& t, bool low) {
    t.low.push_back(low ? 1 : 0);
  };
  append(prompt);
  // prefill: queries = the last q tokens of the prompt, causal
  const std::int64_t q = std::min<std::int64_t>(prompt, ival(0, 8));
  std::vector<float> pre = random_probs(q * heads, prompt);
  for (std::int64_t r = 0; r < q; ++r) {
    const std::int64_t at = prompt - q + r;
    for (int h = 0; h < heads; ++h)
      for (std::int64_t i = at + 1; i < prompt; ++i) pre[static_cast<std::size_t>((r * heads + h) * prompt + i)] = 0;
  }
  policy.observe_prefill(pre, static_cast<std::int32_t>(q), heads);
  const std::int64_t n0 = prompt;
  if (q > 0) {
    // h2o: every row
    for (std::int64_t r = 0; r < q; ++r)
      for (std::int64_t i = 0; i < n0; ++i) ref[static_cast<std::size_t>(i)].mass += mean_of(pre, r * heads * n0, heads, n0, i);
    // tova: the last row
    for (std::int64_t i = 0; i < n0; ++i) ref[static_cast<std::size_t>(i)].last = mean_of(pre, (q - 1) * heads * n0, heads, n0, i);
    // snapkv: votes of the last min(q, window) rows over the prefix before the window
    const std::int64_t prefix = std::max<std::int64_t>(0, n0 - window);
    std::vector<float> votes(static_cast<std::size_t>(prefix), 0.0f);
    for (std::int64_t r = q - std::min<std::int64_t>(q, window); r < q; ++r)
      for (std::int64_t i = 0; i < prefix; ++i) votes[static_cast<std::size_t>(i)] += mean_of(pre, r * heads * n0, heads, n0, i);
    for (std::int64_t i = 0; i < prefix; ++i) {
      float m = -1;
      for (std::int64_t j = i - kernel / 2; j <= i + kernel / 2; ++j)
        if (j >= 0 && j < prefix) m = std::max(m, votes[static_cast<std::size_t>(j)]);
      ref[static_cast<std::size_t>(i)].snap = m;
    }
    // scissorhands: the last min(q, history) rows, each over the tokens it sees
    for (std::int64_t r = q - std::min<std::int64_t>(q, history); r < q; ++r) {
      const std::int64_t visible = n0 - q + r + 1;
      for (std::int64_t i = 0; i < visible; ++i)
        scissor_count(ref[static_cast<std::size_t>(i)], mean_of(pre, r * heads * n0, heads, n0, i) < 1.0f / static_cast<float>(visible));
    }
  }
  std::vector<std::int64_t> got(200);
  for (int stepi = 0; stepi < 60; ++stepi) {
    append(ival(0, 2));
    const std::int64_t n = static_cast<std::int64_t>(ref.size());
    const std::int64_t budget = ival(0, n + 2);
    // reference scores
    std::vector<float> s(static_cast<std::size_t>(n));
    const auto recent = static_cast<std::int64_t>(std::floor((k == kind::h2o ? 0.5 : 0.1) * static_cast<double>(budget)));
    for (std::int64_t i = 0; i < n; ++i) {
      const auto& t = ref[static_cast<std::size_t>(i)];
      const float inf = std::numeric_limits<float>::infinity();
      switch (k) {
        case kind::streaming: s[i] = t.pos < sinks ? inf : static_cast<float>(t.pos); break;
        case kind::h2o: s[i] = i >= n - recent ? inf : t.mass; break;
        case kind::snapkv: s[i] = (t.pos >= n0 - window) ? inf : t.snap; break;
        case kind::tova: s[i] = t.last; break;
        case kind::knorm: s[i] = -t.norm; break;
        case kind::scissorhands: {
          int c = 0;
          for (std::size_t j = t.low.size() > static_cast<std::size_t>(history) ? t.low.size() - history : 0; j < t.low.size(); ++j) c += t.low[j];
          s[i] = i >= n - recent ? inf : -static_cast<float>(c);
          break;
        }
      }
      if (k == kind::snapkv && q == 0) s[i] = inf;  // never observed: all protected
    }
    std::vector<std::int64_t> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](auto a, auto b) { return s[a] > s[b] || (s[a] == s[b] && a > b); });
    order.resize(static_cast<std::size_t>(std::min(budget, n)));
    std::sort(order.begin(), order.end());
    const std::int64_t m = policy.select(budget, got);
    INFO("step " << stepi << " n " << n << " budget " << budget);
    REQUIRE(std::vector<std::int64_t>(got.begin(), got.begin() + m) == order);
    policy.retain(std::span<const std::int64_t>(got.data(), static_cast<std::size_t>(m)));
    std::vector<ref_token> next;
    for (auto i : order) next.push_back(ref[static_cast<std::size_t>(i)]);
    ref = std::move(next);
    for (std::size_t i = 0; i < ref.size(); ++i) REQUIRE(policy.positions()[i] == ref[i].pos);
    // a decode step's attention
    const auto nh = static_cast<std::int64_t>(ref.size());
    if (nh == 0) continue;
    const auto step = random_probs(heads, nh);
    policy.observe(step, heads);
    for (std::int64_t i = 0; i < nh; ++i) {
      auto& t = ref[static_cast<std::size_t>(i)];
      const float mu = mean_of(step, 0, heads, nh, i);
      t.mass += mu;
      t.last = mu;
      scissor_count(t, mu < 1.0f / static_cast<float>(nh));
    }
  }
}

}  // namespace

TEST_CASE("policies match the direct reference on random cases", "[select]") {
  const std::uint64_t seed = kvtest::seed();
  for (std::uint64_t i = 0; i < 200; ++i) {
    INFO("seed " << seed + i);
    random_case(kind::streaming, streaming_llm(3), seed + i);
    random_case(kind::h2o, h2o(0.5), seed + i);
    random_case(kind::snapkv, snapkv(4, 3), seed + i);
    random_case(kind::tova, tova(), seed + i);
    random_case(kind::scissorhands, scissorhands(5, 0.1), seed + i);
    random_case(kind::knorm, key_norm(), seed + i);
  }
}
