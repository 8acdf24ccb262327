// kvcache-sim: a serving simulator. A synthetic request trace (Poisson arrivals, heavy-tailed
// prompt and output lengths like ShareGPT's, fixed seed) is scheduled with continuous batching
// against a fixed KV memory budget, twice: through kvcache's paged store, and through a
// contiguous baseline that reserves each request's maximum length up front.
//
// The simulator runs the store's real bookkeeping (allocation, block tables, batch page tables,
// preemption); it moves no K/V data, so the pool it builds has the same number of pages as the
// budget but a one-element-per-token geometry.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "kvcache/core/error.hpp"
#include "kvcache/core/kv_layout.hpp"
#include "kvcache/paging/batch_builder.hpp"
#include "kvcache/paging/paged_kv_store.hpp"

namespace {

struct options {
  std::int64_t requests = 2000;
  double arrival_rate = 8.0;         // requests per step (Poisson)
  double prompt_median = 180, prompt_sigma = 1.0;
  double output_median = 160, output_sigma = 1.1;
  std::int64_t max_prompt = 2048;
  std::int64_t max_new_tokens = 2048;  // the request's cap: what a contiguous cache reserves
  double memory_gib = 16.0;            // KV budget
  std::int32_t page_size = 16;
  std::int32_t max_batch = 1024;       // sequences per step
  std::int64_t max_batch_tokens = 8192;  // prefill + decode tokens per step
  std::uint64_t seed = 1;
  double watermark = 0.01;             // admit only while this share of pages stays free (vLLM)
  bool json = false;
  bool progress = true;
  kvcache::kv_layout layout{.layers = 32, .kv_heads = 8, .q_heads = 32, .head_dim = 128,
                            .page_size = 16};
};

struct request {
  std::int64_t arrival = 0;  // step
  std::int64_t prompt = 0;
  std::int64_t output = 0;   // true output length, unknown to the scheduler
};

std::vector<request> make_trace(const options& o) {
  std::mt19937_64 rng(o.seed);
  std::exponential_distribution<double> gap(o.arrival_rate);
  std::lognormal_distribution<double> p(std::log(o.prompt_median), o.prompt_sigma);
  std::lognormal_distribution<double> q(std::log(o.output_median), o.output_sigma);
  std::vector<request> t(static_cast<std::size_t>(o.requests));
  double time = 0;
  for (auto& r : t) {
    time += gap(rng);
    r.arrival = static_cast<std::int64_t>(time);
    r.prompt = std::clamp<std::int64_t>(std::llround(p(rng)), 4, o.max_prompt);
    r.output = std::clamp<std::int64_t>(std::llround(q(rng)), 1, o.max_new_tokens);
  }
  return t;
}

struct result {
  std::int64_t steps = 0;
  std::int64_t generated = 0;      // output tokens
  std::int64_t prefill_tokens = 0; // prompt tokens processed (recomputation included)
  std::int64_t preemptions = 0;
  std::int32_t max_batch = 0;
  double utilization_sum = 0;      // token slots holding data / slots reserved, per step
  std::int64_t utilization_steps = 0;
  double mean_batch = 0;
  double wall_ms = 0;
  double reserve_ns_per_seq = 0;   // paged only: host time of try_add per sequence
  [[nodiscard]] double utilization() const {
    return utilization_steps ? utilization_sum / static_cast<double>(utilization_steps) : 0.0;
  }
  [[nodiscard]] double throughput() const {
    return steps ? static_cast<double>(generated) / static_cast<double>(steps) : 0.0;
  }
};

void show_progress(const options& o, const char* what, std::int64_t done, std::int64_t total,
                   std::int64_t step) {
  if (!o.progress || o.json) return;
  std::fprintf(stderr, "\r  %-10s step %7lld  finished %6lld / %lld", what,
               static_cast<long long>(step), static_cast<long long>(done),
               static_cast<long long>(total));
  if (done == total) std::fprintf(stderr, "\n");
}

// ---- paged: kvcache's store -------------------------------------------------------------------
result run_paged(const options& o, const std::vector<request>& trace, std::int32_t num_pages) {
  using namespace kvcache;
  using store_t = paged_kv_store<host_space, span_layers>;
  store_config cfg;
  cfg.layout = kv_layout{.layers = 1, .kv_heads = 1, .q_heads = 1, .head_dim = 1,
                         .page_size = o.page_size, .order = kv_order::nhd, .type = dtype::f16};
  cfg.num_pages = num_pages;
  cfg.max_sequences = o.max_batch;
  store_t store(cfg);
  batch_builder<store_t> batch(store, o.max_batch, o.max_batch_tokens);

  struct running {
    std::size_t req;
    seq_id id;
    std::int64_t produced;  // output tokens so far
    std::int64_t admitted;  // admission order, for preemption (the latest goes first)
  };
  std::deque<std::pair<std::size_t, std::int64_t>> waiting;  // (request, tokens already produced)
  std::vector<running> run;
  run.reserve(static_cast<std::size_t>(o.max_batch));
  std::size_t next = 0;
  std::int64_t finished = 0, admissions = 0;
  result res;
  double reserve_ns = 0;
  std::int64_t reserve_calls = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::int64_t step = 0; finished < static_cast<std::int64_t>(trace.size()); ++step) {
    while (next < trace.size() && trace[next].arrival <= step) waiting.emplace_back(next++, 0);
    batch.clear();
    const auto r0 = std::chrono::steady_clock::now();
    // 1. decode: every running sequence needs one slot; preempt the latest admitted when short.
    std::sort(run.begin(), run.end(),
              [](const running& a, const running& b) { return a.admitted < b.admitted; });
    std::int64_t step_tokens = 0;
    for (std::size_t i = 0; i < run.size();) {
      if (batch.try_add(run[i].id, 1)) {
        ++step_tokens;
        ++i;
        continue;
      }
      // pool short: preempt (recompute) the most recently admitted sequence not yet in the batch
      auto& victim = run.back();
      store.release(victim.id);
      waiting.emplace_front(victim.req, victim.produced);
      ++res.preemptions;
      const bool was_self = (&victim == &run[i]);
      run.pop_back();
      if (was_self) break;
    }
    // 2. admit waiting requests (prefill) while pages, sequence slots and the token budget last.
    while (!waiting.empty() && static_cast<std::int32_t>(run.size()) < o.max_batch) {
      const auto [ri, produced] = waiting.front();
      const std::int64_t ctx = trace[ri].prompt + produced;  // recompute what was generated
      if (step_tokens + ctx > o.max_batch_tokens && step_tokens > 0) break;
      const std::int64_t pages = (ctx + o.page_size - 1) / o.page_size;
      if (!run.empty() && store.allocator().free_count() - pages <
                              static_cast<std::int64_t>(o.watermark * num_pages)) {
        break;
      }
      auto id = store.try_create();
      if (!id) break;
      if (!batch.try_add(*id, ctx)) {
        store.release(*id);
        break;
      }
      waiting.pop_front();
      step_tokens += ctx;
      res.prefill_tokens += ctx;
      run.push_back({ri, *id, produced, admissions++});
    }
    if (run.empty() && !waiting.empty()) {
      const auto& r = trace[waiting.front().first];
      KVCACHE_FAIL(kvcache::errc::out_of_memory,
                   "kvcache-sim: request {} ({} prompt tokens) does not fit the whole KV budget "
                   "of {} pages alone",
                   waiting.front().first, r.prompt, num_pages);
    }
    (void)batch.finalize();
    reserve_ns += std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - r0).count();
    reserve_calls += batch.size();
    // 3. every sequence in the batch produced one token; finished ones leave.
    res.max_batch = std::max(res.max_batch, static_cast<std::int32_t>(run.size()));
    res.mean_batch += static_cast<double>(run.size());
    const auto st = store.stats();
    if (st.pages_used > 0) {
      res.utilization_sum += static_cast<double>(st.logical_tokens) /
                             (static_cast<double>(st.pages_used) * o.page_size);
      ++res.utilization_steps;
    }
    for (std::size_t i = 0; i < run.size();) {
      ++run[i].produced;
      ++res.generated;
      if (run[i].produced >= trace[run[i].req].output) {
        store.release(run[i].id);
        run[i] = run.back();
        run.pop_back();
        ++finished;
      } else {
        ++i;
      }
    }
    res.steps = step + 1;
    if (step % 200 == 0) show_progress(o, "paged", finished, static_cast<std::int64_t>(trace.size()), step);
  }
  show_progress(o, "paged", finished, static_cast<std::int64_t>(trace.size()), res.steps);
  res.wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  res.mean_batch /= static_cast<double>(std::max<std::int64_t>(res.steps, 1));
  res.reserve_ns_per_seq = reserve_calls ? reserve_ns / static_cast<double>(reserve_calls) : 0;
  return res;
}

// ---- contiguous: reserve prompt + max_new_tokens per request up front --------------------------
result run_contiguous(const options& o, const std::vector<request>& trace, std::int64_t slots) {
  struct running {
    std::size_t req;
    std::int64_t produced;
    std::int64_t reserved;
  };
  std::deque<std::size_t> waiting;
  std::vector<running> run;
  std::size_t next = 0;
  std::int64_t finished = 0, reserved = 0;
  result res;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::int64_t step = 0; finished < static_cast<std::int64_t>(trace.size()); ++step) {
    while (next < trace.size() && trace[next].arrival <= step) waiting.push_back(next++);
    std::int64_t step_tokens = static_cast<std::int64_t>(run.size());
    if (run.empty() && !waiting.empty() &&
        trace[waiting.front()].prompt + o.max_new_tokens > slots) {
      KVCACHE_FAIL(kvcache::errc::out_of_memory,
                   "kvcache-sim: request {} needs {} reserved slots, more than the {} the budget "
                   "holds",
                   waiting.front(), trace[waiting.front()].prompt + o.max_new_tokens, slots);
    }
    while (!waiting.empty() && static_cast<std::int32_t>(run.size()) < o.max_batch) {
      const request& r = trace[waiting.front()];
      const std::int64_t need = r.prompt + o.max_new_tokens;
      if (reserved + need > slots) break;
      if (step_tokens + r.prompt > o.max_batch_tokens && step_tokens > 0) break;
      reserved += need;
      step_tokens += r.prompt;
      res.prefill_tokens += r.prompt;
      run.push_back({waiting.front(), 0, need});
      waiting.pop_front();
    }
    res.max_batch = std::max(res.max_batch, static_cast<std::int32_t>(run.size()));
    res.mean_batch += static_cast<double>(run.size());
    std::int64_t data = 0;
    for (auto& q : run) data += trace[q.req].prompt + q.produced + 1;
    if (reserved > 0) {
      res.utilization_sum += static_cast<double>(data) / static_cast<double>(reserved);
      ++res.utilization_steps;
    }
    for (std::size_t i = 0; i < run.size();) {
      ++run[i].produced;
      ++res.generated;
      if (run[i].produced >= trace[run[i].req].output) {
        reserved -= run[i].reserved;
        run[i] = run.back();
        run.pop_back();
        ++finished;
      } else {
        ++i;
      }
    }
    res.steps = step + 1;
    if (step % 200 == 0) show_progress(o, "contiguous", finished, static_cast<std::int64_t>(trace.size()), step);
  }
  show_progress(o, "contiguous", finished, static_cast<std::int64_t>(trace.size()), res.steps);
  res.wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  res.mean_batch /= static_cast<double>(std::max<std::int64_t>(res.steps, 1));
  return res;
}

[[noreturn]] void usage(int code) {
  std::printf(
      "kvcache-sim: serve a synthetic trace with kvcache's paged store and a contiguous baseline\n"
      "  --requests N          requests in the trace (2000)\n"
      "  --rate R              mean arrivals per step, Poisson (8)\n"
      "  --prompt-median N     median prompt tokens, log-normal (180); --prompt-sigma S (1.0)\n"
      "  --output-median N     median output tokens, log-normal (160); --output-sigma S (1.1)\n"
      "  --max-new-tokens N    per-request output cap; the contiguous baseline reserves it (2048)\n"
      "  --memory-gib G        KV memory budget in GiB at Llama-3-8B shapes (16)\n"
      "  --page-size N         tokens per page (16)\n"
      "  --max-batch N         sequences per step (1024); --max-batch-tokens N (8192)\n"
      "  --watermark F         admit only while this share of pages stays free (0.01)\n"
      "  --seed N              trace seed (1)\n"
      "  --json                one JSON object on stdout\n"
      "  --no-progress         no progress line on stderr\n");
  std::exit(code);
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "kvcache-sim: %s needs a value\n", argv[i]);
        usage(2);
      }
      return argv[++i];
    };
    auto number = [&](double lo) {
      const char* v = value();
      char* end = nullptr;
      const double x = std::strtod(v, &end);
      if (end == v || *end != '\0' || !(x >= lo)) {
        std::fprintf(stderr, "kvcache-sim: bad value '%s' for %s (must be a number >= %g)\n", v,
                     a.data(), lo);
        std::exit(2);
      }
      return x;
    };
    if (a == "--requests") o.requests = static_cast<std::int64_t>(number(1));
    else if (a == "--rate") o.arrival_rate = number(1e-6);
    else if (a == "--prompt-median") o.prompt_median = number(1);
    else if (a == "--prompt-sigma") o.prompt_sigma = number(0);
    else if (a == "--output-median") o.output_median = number(1);
    else if (a == "--output-sigma") o.output_sigma = number(0);
    else if (a == "--max-new-tokens") o.max_new_tokens = static_cast<std::int64_t>(number(1));
    else if (a == "--memory-gib") o.memory_gib = number(1e-3);
    else if (a == "--page-size") o.page_size = static_cast<std::int32_t>(number(1));
    else if (a == "--max-batch") o.max_batch = static_cast<std::int32_t>(number(1));
    else if (a == "--max-batch-tokens") o.max_batch_tokens = static_cast<std::int64_t>(number(1));
    else if (a == "--watermark") o.watermark = number(0);
    else if (a == "--seed") o.seed = static_cast<std::uint64_t>(number(0));
    else if (a == "--json") o.json = true;
    else if (a == "--no-progress") o.progress = false;
    else if (a == "--help" || a == "-h") usage(0);
    else {
      std::fprintf(stderr, "kvcache-sim: unknown flag '%s'\n", argv[i]);
      usage(2);
    }
  }
  try {
    o.layout.page_size = o.page_size;
    o.layout.validate();
    const double budget = o.memory_gib * 1024.0 * 1024.0 * 1024.0;
    const auto num_pages = static_cast<std::int32_t>(budget / static_cast<double>(o.layout.bytes_per_page()));
    const std::int64_t slots = static_cast<std::int64_t>(budget / static_cast<double>(o.layout.bytes_per_token()));
    if (num_pages < 1) {
      std::fprintf(stderr, "kvcache-sim: %.3f GiB holds no %d-token page\n", o.memory_gib, o.page_size);
      return 2;
    }
    const auto trace = make_trace(o);
    double prompt_mean = 0, output_mean = 0;
    for (auto& r : trace) {
      prompt_mean += static_cast<double>(r.prompt);
      output_mean += static_cast<double>(r.output);
    }
    prompt_mean /= static_cast<double>(trace.size());
    output_mean /= static_cast<double>(trace.size());
    const result paged = run_paged(o, trace, num_pages);
    const result contig = run_contiguous(o, trace, slots);
    if (o.json) {
      fmt::print(
          "{{\"config\": {{\"requests\": {}, \"rate\": {}, \"memory_gib\": {}, \"page_size\": {}, "
          "\"max_new_tokens\": {}, \"watermark\": {}, \"pages\": {}, \"token_slots\": {}, \"prompt_mean\": {:.1f}, "
          "\"output_mean\": {:.1f}, \"seed\": {}}},\n"
          " \"paged\": {{\"utilization\": {:.4f}, \"max_batch\": {}, \"mean_batch\": {:.1f}, "
          "\"preemptions\": {}, \"throughput_tokens_per_step\": {:.2f}, \"steps\": {}, "
          "\"generated_tokens\": {}, \"prefill_tokens\": {}, \"reserve_ns_per_sequence\": {:.1f}, "
          "\"wall_ms\": {:.1f}}},\n"
          " \"contiguous\": {{\"utilization\": {:.4f}, \"max_batch\": {}, \"mean_batch\": {:.1f}, "
          "\"throughput_tokens_per_step\": {:.2f}, \"steps\": {}, \"generated_tokens\": {}, "
          "\"wall_ms\": {:.1f}}},\n"
          " \"max_batch_ratio\": {:.2f}}}\n",
          o.requests, o.arrival_rate, o.memory_gib, o.page_size, o.max_new_tokens, o.watermark, num_pages,
          slots, prompt_mean, output_mean, o.seed, paged.utilization(), paged.max_batch,
          paged.mean_batch, paged.preemptions, paged.throughput(), paged.steps, paged.generated,
          paged.prefill_tokens, paged.reserve_ns_per_seq, paged.wall_ms, contig.utilization(),
          contig.max_batch, contig.mean_batch, contig.throughput(), contig.steps,
          contig.generated, contig.wall_ms,
          static_cast<double>(paged.max_batch) / std::max(1, contig.max_batch));
      return 0;
    }
    fmt::print("kvcache-sim: {} requests, {:.1f} arrivals/step, prompts mean {:.0f} tokens, "
               "outputs mean {:.0f} tokens (cap {})\n",
               o.requests, o.arrival_rate, prompt_mean, output_mean, o.max_new_tokens);
    fmt::print("KV budget {:.1f} GiB at {}: {} pages of {} tokens = {} token slots\n\n",
               o.memory_gib, o.layout.to_string(), num_pages, o.page_size, slots);
    fmt::print("{:<34}{:>14}{:>14}\n", "", "paged", "contiguous");
    fmt::print("{:<34}{:>14.3f}{:>14.3f}\n", "utilization (data / reserved)", paged.utilization(), contig.utilization());
    fmt::print("{:<34}{:>14}{:>14}\n", "max batch (sequences)", paged.max_batch, contig.max_batch);
    fmt::print("{:<34}{:>14.1f}{:>14.1f}\n", "mean batch (sequences)", paged.mean_batch, contig.mean_batch);
    fmt::print("{:<34}{:>14.2f}{:>14.2f}\n", "throughput (tokens / step)", paged.throughput(), contig.throughput());
    fmt::print("{:<34}{:>14}{:>14}\n", "steps to serve the trace", paged.steps, contig.steps);
    fmt::print("{:<34}{:>14}{:>14}\n", "preemptions (recompute)", paged.preemptions, 0);
    fmt::print("{:<34}{:>14.1f}{:>14}\n", "host reserve ns / sequence / step", paged.reserve_ns_per_seq, "-");
    fmt::print("\npaged serves {:.2f}x the batch of the contiguous baseline\n",
               static_cast<double>(paged.max_batch) / std::max(1, contig.max_batch));
  } catch (const kvcache::error& e) {
    std::fprintf(stderr, "kvcache-sim: %s\n", e.what());
    return 1;
  }
  return 0;
}
