// Synthetic request traces of kvcache-sim, at the level of token ids (so prefix caches see real
// sharing): independent ShareGPT-like requests, multi-turn conversations, and requests sharing a
// few long system prompts. Everything derives from one seed.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace kvsim {

struct request {
  std::int64_t arrival = 0;        ///< step it arrives at; for a follow-up turn: think time after `prev` ends
  std::int32_t prev = -1;          ///< the earlier turn of the same conversation, or -1
  std::int32_t conversation = -1;  ///< conversation or system-prompt id (-1: none)
  std::vector<std::int32_t> prompt;
  std::vector<std::int32_t> output;  ///< what it will generate (its length is unknown to the scheduler)
};

struct trace_options {
  std::string kind = "sharegpt";  ///< sharegpt | multiturn | shared-prefix | long
  std::int64_t requests = 2000;
  double arrival_rate = 8.0;      ///< requests (or conversations, for multiturn) per step
  double prompt_median = 180, prompt_sigma = 1.0;
  double output_median = 160, output_sigma = 1.1;
  std::int64_t max_prompt = 2048;
  std::int64_t max_new_tokens = 2048;
  std::int32_t turns_mean = 5;        ///< multiturn: mean turns per conversation
  double think_mean = 30;             ///< multiturn: mean steps between a reply and the next turn
  std::int32_t system_prompts = 8;    ///< shared-prefix: distinct system prompts
  std::int64_t system_min = 1000, system_max = 3000;
  std::int64_t long_min = 8192, long_max = 32768;  ///< long: prompt length range
  std::uint64_t seed = 1;
};

inline std::vector<request> make_trace(const trace_options& o) {
  std::mt19937_64 rng(o.seed);
  std::exponential_distribution<double> gap(o.arrival_rate);
  std::lognormal_distribution<double> p(std::log(o.prompt_median), o.prompt_sigma);
  std::lognormal_distribution<double> q(std::log(o.output_median), o.output_sigma);
  std::uniform_int_distribution<std::int32_t> tok(0, 127999);  // a Llama-3-sized vocabulary
  auto tokens = [&](std::int64_t n) {
    std::vector<std::int32_t> t(static_cast<std::size_t>(n));
    for (auto& x : t) x = tok(rng);
    return t;
  };
  auto out_len = [&] { return std::clamp<std::int64_t>(std::llround(q(rng)), 1, o.max_new_tokens); };
  std::vector<request> trace;
  trace.reserve(static_cast<std::size_t>(o.requests));
  double time = 0;
  if (o.kind == "sharegpt") {
    for (std::int64_t i = 0; i < o.requests; ++i) {
      time += gap(rng);
      request r;
      r.arrival = static_cast<std::int64_t>(time);
      r.prompt = tokens(std::clamp<std::int64_t>(std::llround(p(rng)), 4, o.max_prompt));
      r.output = tokens(out_len());
      trace.push_back(std::move(r));
    }
  } else if (o.kind == "multiturn") {
    std::geometric_distribution<std::int32_t> turns(1.0 / o.turns_mean);
    std::exponential_distribution<double> think(1.0 / o.think_mean);
    std::int32_t conv = 0;
    while (static_cast<std::int64_t>(trace.size()) < o.requests) {
      time += gap(rng);
      const std::int32_t n = 1 + std::min(turns(rng), 2 * o.turns_mean);  // bounded history
      std::vector<std::int32_t> history;
      for (std::int32_t k = 0; k < n && static_cast<std::int64_t>(trace.size()) < o.requests; ++k) {
        request r;
        r.conversation = conv;
        if (k == 0) {
          r.arrival = static_cast<std::int64_t>(time);
        } else {
          r.prev = static_cast<std::int32_t>(trace.size()) - 1;
          r.arrival = static_cast<std::int64_t>(think(rng));
        }
        // follow-up messages are shorter than opening ones
        const double scale = k == 0 ? 1.0 : 0.4;
        const auto msg = tokens(std::clamp<std::int64_t>(std::llround(scale * p(rng)), 4, o.max_prompt));
        history.insert(history.end(), msg.begin(), msg.end());
        r.prompt = history;
        r.output = tokens(out_len());
        history.insert(history.end(), r.output.begin(), r.output.end());
        trace.push_back(std::move(r));
      }
      ++conv;
    }
  } else if (o.kind == "long") {
    // long-context requests (document QA, code): prompts log-uniform in [long_min, long_max]
    std::uniform_real_distribution<double> lp(std::log(static_cast<double>(o.long_min)),
                                              std::log(static_cast<double>(o.long_max)));
    for (std::int64_t i = 0; i < o.requests; ++i) {
      time += gap(rng);
      request r;
      r.arrival = static_cast<std::int64_t>(time);
      r.prompt = tokens(std::llround(std::exp(lp(rng))));
      r.output = tokens(out_len());
      trace.push_back(std::move(r));
    }
  } else if (o.kind == "shared-prefix") {
    std::vector<std::vector<std::int32_t>> systems;
    std::uniform_int_distribution<std::int64_t> sys_len(o.system_min, o.system_max);
    for (std::int32_t s = 0; s < o.system_prompts; ++s) systems.push_back(tokens(sys_len(rng)));
    // Zipf-like popularity: weight 1 / (rank + 1).
    std::vector<double> w;
    for (std::int32_t s = 0; s < o.system_prompts; ++s) w.push_back(1.0 / (s + 1));
    std::discrete_distribution<std::int32_t> pick(w.begin(), w.end());
    for (std::int64_t i = 0; i < o.requests; ++i) {
      time += gap(rng);
      request r;
      r.arrival = static_cast<std::int64_t>(time);
      r.conversation = pick(rng);
      r.prompt = systems[static_cast<std::size_t>(r.conversation)];
      const auto user = tokens(std::clamp<std::int64_t>(std::llround(p(rng)), 4, o.max_prompt));
      r.prompt.insert(r.prompt.end(), user.begin(), user.end());
      r.output = tokens(out_len());
      trace.push_back(std::move(r));
    }
  }
  return trace;
}

/// Prefix keys of a token sequence's full pages: key i covers tokens [0, (i + 1) * page_size).
inline void page_prefix_keys(const std::vector<std::int32_t>& t, std::int64_t n, std::int32_t page_size,
                             std::vector<std::uint64_t>& keys) {
  keys.clear();
  std::uint64_t h = 0x9E3779B97F4A7C15ull;
  for (std::int64_t i = 0; i + page_size <= n; i += page_size) {
    for (std::int64_t j = i; j < i + page_size; ++j) {
      h ^= static_cast<std::uint64_t>(t[static_cast<std::size_t>(j)]) + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
      h *= 0xBF58476D1CE4E5B9ull;
    }
    keys.push_back(h);
  }
}

}  // namespace kvsim
