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
#include <functional>
#include <memory>
#include <optional>
#include <queue>
#include <span>
#include <unordered_set>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "kvcache/core/error.hpp"
#include "kvcache/core/kv_layout.hpp"
#include "kvcache/paging/batch_builder.hpp"
#include "kvcache/paging/paged_kv_store.hpp"
#include "kvcache/quant/quantized_kv_store.hpp"
#include "kvcache/quant/quantizers.hpp"
#include "eviction.hpp"
#include "prefix_cache.hpp"
#include "trace.hpp"

namespace {

struct options {
  kvsim::trace_options trace;
  double memory_gib = 16.0;              // KV budget
  std::int32_t page_size = 16;
  std::int32_t max_batch = 1024;         // sequences per step
  std::int64_t max_batch_tokens = 8192;  // prefill + decode tokens per step
  double watermark = 0.01;               // admit only while this share of pages stays free (vLLM)
  std::string prefix = "none";           // none | radix | hash
  std::string quant = "none";            // none | int8 | fp8 | kivi2 | kivi4 (quantizers.hpp names)
  std::int32_t staging_pages = -1;       // quantized runs: staging pages (-1: sized from the trace)
  kvsim::evict_options evict;            // token eviction of the paged run
  bool page_size_given = false, max_batch_tokens_given = false;
  bool json = false;
  bool progress = true;
  kvcache::kv_layout layout{.layers = 32, .kv_heads = 8, .q_heads = 32, .head_dim = 128,
                            .page_size = 16};
};

using kvsim::request;

struct result {
  std::int64_t steps = 0;
  std::int64_t generated = 0;      // output tokens
  std::int64_t prefill_tokens = 0; // prompt tokens computed (recomputation included)
  std::int64_t preemptions = 0;
  std::int32_t max_batch = 0;
  double utilization_sum = 0;      // token slots holding data / slots reserved, per step
  std::int64_t utilization_steps = 0;
  double mean_batch = 0;
  double wall_ms = 0;
  double reserve_ns_per_seq = 0;   // paged only: host time of a step's bookkeeping per sequence
  double bytes_held_sum = 0;       // paged only: KV bytes held / logical tokens, per step
  std::int64_t bytes_held_steps = 0;
  std::int32_t staging_used_max = 0;
  kvsim::evict_stats evicted;
  // prefix caching (paged only)
  std::int64_t prompt_tokens = 0;       // prompt tokens at first admission
  std::int64_t hit_tokens = 0;          // of which cached
  std::int64_t ideal_hit_tokens = 0;    // of which an unbounded cache would hold
  std::int64_t saved_tokens = 0;        // prefill tokens not computed thanks to hits (re-admissions too)
  std::int64_t cached_pages_end = 0;
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

// Releases requests into the waiting queue as they arrive; a follow-up turn arrives its think
// time after the previous turn finished.
class arrivals {
 public:
  explicit arrivals(const std::vector<request>& t) : trace_(&t), follow_(t.size(), -1) {
    for (std::size_t i = 0; i < t.size(); ++i) {
      if (t[i].prev < 0) {
        heap_.push({t[i].arrival, static_cast<std::int32_t>(i)});
      } else {
        follow_[static_cast<std::size_t>(t[i].prev)] = static_cast<std::int32_t>(i);
      }
    }
  }
  template <class F>
  void release_until(std::int64_t step, F&& push) {
    while (!heap_.empty() && heap_.top().first <= step) {
      push(static_cast<std::size_t>(heap_.top().second));
      heap_.pop();
    }
  }
  void finished(std::size_t i, std::int64_t step) {
    const std::int32_t f = follow_[i];
    if (f >= 0) heap_.push({step + 1 + (*trace_)[static_cast<std::size_t>(f)].arrival, f});
  }

 private:
  const std::vector<request>* trace_;
  std::vector<std::int32_t> follow_;
  std::priority_queue<std::pair<std::int64_t, std::int32_t>,
                      std::vector<std::pair<std::int64_t, std::int32_t>>, std::greater<>>
      heap_;
};

// The context of a request after `produced` output tokens: prompt + output[0, produced).
void context(const request& r, std::int64_t produced, std::vector<std::int32_t>& out) {
  out.assign(r.prompt.begin(), r.prompt.end());
  out.insert(out.end(), r.output.begin(), r.output.begin() + produced);
}

// ---- paged: kvcache's store -------------------------------------------------------------------
using store_t = kvcache::paged_kv_store<kvcache::host_space, kvcache::span_layers>;
template <class Q>
using qstore_t = kvcache::quantized_kv_store<kvcache::host_space, kvcache::span_layers, Q>;

// One step's reservations: the batch builder over the plain store (slot mapping, CSR, COW), or
// the quantized store's own bookkeeping (pages, staging pages, window flushes).
template <class Store>
struct stepper {
  Store& store;
  kvcache::batch_builder<Store> batch;
  stepper(Store& s, const options& o) : store(s), batch(s, o.max_batch, o.max_batch_tokens) {}
  void clear() { batch.clear(); }
  bool add(kvcache::seq_id id, std::int64_t n) { return batch.try_add(id, n); }
  void finalize() { (void)batch.finalize(); }
  [[nodiscard]] std::int64_t size() const { return batch.size(); }
  Store& paged() { return store; }
  [[nodiscard]] double bytes_held(std::int64_t page_bytes) const {
    return static_cast<double>(store.stats().pages_used) * static_cast<double>(page_bytes);
  }
  [[nodiscard]] std::int32_t staging_used() const { return 0; }
};
template <class Q>
struct stepper<qstore_t<Q>> {
  qstore_t<Q>& store;
  std::int64_t added = 0;
  stepper(qstore_t<Q>& s, const options&) : store(s) {}
  void clear() { added = 0; }
  bool add(kvcache::seq_id id, std::int64_t n) {
    if (!store.try_reserve(id, n)) return false;
    ++added;
    return true;
  }
  void finalize() {}
  [[nodiscard]] std::int64_t size() const { return added; }
  auto& paged() { return store.pages(); }
  [[nodiscard]] double bytes_held(std::int64_t page_bytes) const {
    const auto st = store.stats();
    return static_cast<double>(st.pages.pages_used) * static_cast<double>(page_bytes) +
           static_cast<double>(st.staging_used) * static_cast<double>(staging_bytes);
  }
  [[nodiscard]] std::int32_t staging_used() const { return store.stats().staging_used; }
  std::int64_t staging_bytes = 0;
};

// The sizes a quantized run takes from the budget: real page bytes at the model's shape.
struct quant_sizes {
  std::int64_t page_bytes = 0;     // one page id: K and V of every layer, codes and metadata
  std::int64_t staging_bytes = 0;  // one staging page: `residual` f16 tokens of every layer
  std::int32_t residual = 0;
  double bytes_per_token = 0;      // the library's figure at the trace's mean context
  std::string name;
};

template <class Q>
quant_sizes sizes_of(const kvcache::kv_layout& l, double mean_context) {
  quant_sizes z;
  Q::validate(l.page_size, l.head_dim);
  z.page_bytes = 2 * static_cast<std::int64_t>(l.layers) * l.kv_heads *
                 static_cast<std::int64_t>(std::max(Q::key_page_bytes(l.page_size, l.head_dim),
                                                    Q::value_page_bytes(l.page_size, l.head_dim)));
  z.staging_bytes = static_cast<std::int64_t>(Q::residual) * static_cast<std::int64_t>(l.bytes_per_token());
  z.residual = Q::residual;
  z.bytes_per_token = Q::kv_bytes_per_token(l, std::max<std::int64_t>(1, std::llround(mean_context)));
  z.name = std::string(Q::name);
  return z;
}

template <class Q, class Geometry = kvcache::span_layers>
result run_paged(const options& o, const std::vector<request>& trace, std::int32_t num_pages,
                 std::int32_t staging_pages = 0, std::int64_t real_page_bytes = 0,
                 std::int64_t staging_bytes = 0) {
  using namespace kvcache;
  constexpr bool quantized = !std::is_void_v<Q>;
  constexpr bool span = std::is_same_v<Geometry, span_layers>;
  // one element per token; with eviction, the model's layers (per_layer) or layers and kv heads
  // (per_head) as tables, so that each compacts to its own budget
  const std::int32_t sim_layers = span ? 1 : o.layout.layers;
  const std::int32_t sim_heads = std::is_same_v<Geometry, per_head> ? o.layout.kv_heads : 1;
  const kv_layout tiny{.layers = sim_layers, .kv_heads = sim_heads, .q_heads = sim_heads,
                       .head_dim = quantized ? 32 : 1, .page_size = o.page_size,
                       .order = kv_order::nhd, .type = dtype::f16};
  using plain_store = paged_kv_store<host_space, Geometry>;
  using sim_store = std::conditional_t<quantized, qstore_t<std::conditional_t<quantized, Q, kivi2>>, plain_store>;
  auto make_store = [&] {
    if constexpr (quantized) {
      quantized_store_config cfg;
      cfg.layout = tiny;
      cfg.num_pages = num_pages;
      cfg.max_sequences = o.max_batch;
      cfg.staging_pages = std::max(1, staging_pages);
      return std::make_unique<sim_store>(cfg);
    } else {
      store_config cfg;
      cfg.layout = tiny;
      cfg.num_pages = num_pages;
      cfg.max_sequences = o.max_batch;
      return std::make_unique<sim_store>(cfg);
    }
  };
  auto store_ptr = make_store();
  sim_store& store = *store_ptr;
  stepper<sim_store> batch(store, o);
  if constexpr (quantized) batch.staging_bytes = staging_bytes;
  auto& paged = batch.paged();
  std::unique_ptr<kvsim::prefix_cache> cache;
  if constexpr (!quantized && span) cache = kvsim::make_prefix_cache(o.prefix, store);
  kvsim::evictor<sim_store> evict(o.evict, sim_layers, sim_heads, o.page_size, o.max_batch, o.trace.seed);
  if (cache) store.set_reclaimer([&](std::int32_t missing) { cache->evict(missing); });
  std::unordered_set<std::uint64_t> ideal;  // every page prefix ever inserted (unbounded cache)
  std::vector<std::uint64_t> keys;

  struct running {
    std::size_t req;
    seq_id id;
    std::int64_t produced;  // output tokens so far
    std::int64_t admitted;  // admission order, for preemption (the latest goes first)
  };
  std::deque<std::pair<std::size_t, std::int64_t>> waiting;  // (request, tokens already produced)
  std::vector<bool> seen(trace.size(), false);
  std::vector<running> run;
  run.reserve(static_cast<std::size_t>(o.max_batch));
  arrivals arrive(trace);
  std::int64_t finished = 0, admissions = 0;
  result res;
  double reserve_ns = 0;
  std::int64_t reserve_calls = 0;
  std::vector<std::int32_t> ctx;
  std::vector<page_id> pages;
  auto insert_pages = [&](const running& q, std::int64_t tokens) {
    context(trace[q.req], q.produced, ctx);
    pages.clear();
    paged.for_each_page(q.id, 0, [&](page_id p) { pages.push_back(p); });
    const std::int64_t full = std::min<std::int64_t>(tokens, static_cast<std::int64_t>(ctx.size())) / o.page_size;
    pages.resize(static_cast<std::size_t>(std::min<std::int64_t>(full, static_cast<std::int64_t>(pages.size()))));
    if (cache) {
      cache->insert(std::span<const std::int32_t>(ctx.data(), pages.size() * static_cast<std::size_t>(o.page_size)), pages);
    }
    kvsim::page_prefix_keys(ctx, static_cast<std::int64_t>(pages.size()) * o.page_size, o.page_size, keys);
    ideal.insert(keys.begin(), keys.end());
  };
  std::vector<std::size_t> admitted_now;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::int64_t step = 0; finished < static_cast<std::int64_t>(trace.size()); ++step) {
    arrive.release_until(step, [&](std::size_t i) { waiting.emplace_back(i, 0); });
    batch.clear();
    admitted_now.clear();
    const auto r0 = std::chrono::steady_clock::now();
    // 1. decode: every running sequence needs one slot; preempt the latest admitted when short.
    std::sort(run.begin(), run.end(),
              [](const running& a, const running& b) { return a.admitted < b.admitted; });
    std::int64_t step_tokens = 0;
    for (std::size_t i = 0; i < run.size();) {
      if (batch.add(run[i].id, 1)) {
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
      const request& r = trace[ri];
      context(r, produced, ctx);
      const auto n = static_cast<std::int64_t>(ctx.size());
      // prefix hit: whole cached pages, leaving at least one token to compute
      std::int64_t hit = 0;
      pages.clear();
      if (cache) {
        hit = cache->match(std::span<const std::int32_t>(ctx.data(), ctx.size()), pages);
        while (hit >= n && !pages.empty()) {
          cache->release_match(std::span<const page_id>(&pages.back(), 1));
          pages.pop_back();
          hit -= o.page_size;
        }
      }
      const std::int64_t compute = n - hit;
      const std::int64_t new_pages = (n + o.page_size - 1) / o.page_size - static_cast<std::int64_t>(pages.size());
      bool ok = !(step_tokens + compute > o.max_batch_tokens && step_tokens > 0);
      // cached pages nobody uses are free memory too: evict before judging the watermark
      const auto watermark = static_cast<std::int64_t>(o.watermark * num_pages);
      if (ok && cache && paged.allocator().free_count() - new_pages < watermark) {
        cache->evict(static_cast<std::int32_t>(new_pages + watermark - paged.allocator().free_count()));
      }
      ok = ok && (run.empty() || paged.allocator().free_count() - new_pages >= watermark);
      std::optional<seq_id> id;
      if (ok) id = store.try_create();
      if (id) {
        if constexpr (!quantized && span) store.adopt_prefix(*id, pages);
        pages.clear();  // the sequence owns those references now
        if (!batch.add(*id, compute)) {
          store.release(*id);
          id.reset();
        }
      }
      if (!id) {
        if (!pages.empty()) cache->release_match(pages);
        break;
      }
      waiting.pop_front();
      step_tokens += compute;
      res.prefill_tokens += compute;
      res.saved_tokens += hit;
      if (!seen[ri]) {  // hit rates count each request once, at its first admission
        seen[ri] = true;
        res.prompt_tokens += static_cast<std::int64_t>(r.prompt.size());
        res.hit_tokens += std::min<std::int64_t>(hit, static_cast<std::int64_t>(r.prompt.size()));
        {  // what an unbounded cache would hit (computed with or without a cache)
          kvsim::page_prefix_keys(r.prompt, static_cast<std::int64_t>(r.prompt.size()), o.page_size, keys);
          std::int64_t ideal_pages = 0;
          while (ideal_pages < static_cast<std::int64_t>(keys.size()) &&
                 ideal.count(keys[static_cast<std::size_t>(ideal_pages)]) != 0) {
            ++ideal_pages;
          }
          // as for real hits, at least one prompt token is left to compute
          ideal_pages = std::min<std::int64_t>(
              ideal_pages, (static_cast<std::int64_t>(r.prompt.size()) - 1) / o.page_size);
          res.ideal_hit_tokens += ideal_pages * o.page_size;
        }
      }
      run.push_back({ri, *id, produced, admissions++});
      admitted_now.push_back(run.size() - 1);
    }
    if (run.empty() && !waiting.empty()) {
      const auto& r = trace[waiting.front().first];
      KVCACHE_FAIL(kvcache::errc::out_of_memory,
                   "kvcache-sim: request {} ({} prompt tokens) does not fit the whole KV budget "
                   "of {} pages alone",
                   waiting.front().first, r.prompt.size(), num_pages);
    }
    batch.finalize();
    reserve_ns += std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - r0).count();
    reserve_calls += batch.size();
    // after prefill, the prompt's full pages become reusable
    for (std::size_t k : admitted_now) insert_pages(run[k], store.length(run[k].id));
    // eviction: tables over their budgets are compacted (right after prefill, then a page at a
    // time); the freed pages serve the next steps
    if (o.evict.enabled()) {
      if constexpr (!quantized) {
        for (std::size_t k : admitted_now) evict.admitted(run[k].id, store.length(run[k].id));
        for (std::size_t k = 0; k < run.size(); ++k) {
          const bool fresh = std::find(admitted_now.begin(), admitted_now.end(), k) != admitted_now.end();
          evict.step(store, run[k].id, fresh, res.evicted);
        }
      }
    }
    // 3. every sequence in the batch produced one token; finished ones leave.
    res.max_batch = std::max(res.max_batch, static_cast<std::int32_t>(run.size()));
    res.mean_batch += static_cast<double>(run.size());
    const auto st = paged.stats();
    std::int64_t seq_tokens = 0;
    for (const auto& q : run) seq_tokens += store.length(q.id);
    if (seq_tokens > 0) {
      res.bytes_held_sum += batch.bytes_held(real_page_bytes) / static_cast<double>(seq_tokens);
      ++res.bytes_held_steps;
    }
    res.staging_used_max = std::max(res.staging_used_max, batch.staging_used());
    // pages the cache holds for future hits only are not reserved by any sequence
    const std::int64_t seq_pages = st.pages_used - (cache ? cache->idle_pages() : 0);
    if (seq_pages > 0) {
      res.utilization_sum += static_cast<double>(st.logical_tokens) /
                             (static_cast<double>(seq_pages) * o.page_size);
      ++res.utilization_steps;
    }
    for (std::size_t i = 0; i < run.size();) {
      ++run[i].produced;
      ++res.generated;
      if (run[i].produced >= static_cast<std::int64_t>(trace[run[i].req].output.size())) {
        insert_pages(run[i], store.length(run[i].id));
        store.release(run[i].id);
        arrive.finished(run[i].req, step);
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
  if (cache) res.cached_pages_end = cache->cached_pages();
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
  arrivals arrive(trace);
  std::int64_t finished = 0, reserved = 0;
  result res;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::int64_t step = 0; finished < static_cast<std::int64_t>(trace.size()); ++step) {
    arrive.release_until(step, [&](std::size_t i) { waiting.push_back(i); });
    std::int64_t step_tokens = static_cast<std::int64_t>(run.size());
    if (run.empty() && !waiting.empty() &&
        static_cast<std::int64_t>(trace[waiting.front()].prompt.size()) + o.trace.max_new_tokens > slots) {
      KVCACHE_FAIL(kvcache::errc::out_of_memory,
                   "kvcache-sim: request {} needs {} reserved slots, more than the {} the budget "
                   "holds",
                   waiting.front(), trace[waiting.front()].prompt.size() + o.trace.max_new_tokens, slots);
    }
    while (!waiting.empty() && static_cast<std::int32_t>(run.size()) < o.max_batch) {
      const request& r = trace[waiting.front()];
      const auto prompt = static_cast<std::int64_t>(r.prompt.size());
      const std::int64_t need = prompt + o.trace.max_new_tokens;
      if (reserved + need > slots) break;
      if (step_tokens + prompt > o.max_batch_tokens && step_tokens > 0) break;
      reserved += need;
      step_tokens += prompt;
      res.prefill_tokens += prompt;
      run.push_back({waiting.front(), 0, need});
      waiting.pop_front();
    }
    res.max_batch = std::max(res.max_batch, static_cast<std::int32_t>(run.size()));
    res.mean_batch += static_cast<double>(run.size());
    std::int64_t data = 0;
    for (auto& q : run) data += static_cast<std::int64_t>(trace[q.req].prompt.size()) + q.produced + 1;
    if (reserved > 0) {
      res.utilization_sum += static_cast<double>(data) / static_cast<double>(reserved);
      ++res.utilization_steps;
    }
    for (std::size_t i = 0; i < run.size();) {
      ++run[i].produced;
      ++res.generated;
      if (run[i].produced >= static_cast<std::int64_t>(trace[run[i].req].output.size())) {
        reserved -= run[i].reserved;
        arrive.finished(run[i].req, step);
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
      "  --trace KIND          sharegpt (independent requests), multiturn (conversations whose\n"
      "                        turns resend the history), shared-prefix (a few long system\n"
      "                        prompts), (sharegpt)\n"
      "                        long (prompts of 8k-32k tokens; 300 requests, 1 per step)\n"
      "  --prefix KIND         prefix cache of the paged run: none, radix, hash (none)\n"
      "  --quant Q             quantized pages for the paged run: none, int8, fp8, kivi2, kivi4,\n"
      "                        kivi2_token_keys, kivi4_token_keys\n"
      "                        (none); KIVI takes page size 32 unless --page-size is given\n"
      "  --evict POLICY        token eviction: none, streaming, h2o, snapkv, scissorhands, tova,\n"
      "                        key_norm (none); tables per layer (per head with adaptive budgets)\n"
      "                        are compacted to their budgets; the simulator has no attention, so\n"
      "                        every policy keeps the same counts (StreamingLLM's rows)\n"
      "  --budget N|RATIO      kept tokens per table: a ratio of the sequence (< 1) or a count (0.2)\n"
      "  --budgets KIND        uniform, pyramid (PyramidKV), adaptive (AdaKV) (uniform)\n"
      "  --staging-pages N     quantized runs with a residual window (KIVI): f16 staging pages\n"
      "                        (default: the sequences the budget holds at the mean context)\n"
      "  --requests N          requests in the trace (2000)\n"
      "  --rate R              mean arrivals per step, Poisson (8); for multiturn: new\n"
      "                        conversations per step (0.05)\n"
      "  --prompt-median N     median prompt (or user message) tokens, log-normal (180);\n"
      "                        --prompt-sigma S (1.0)\n"
      "  --output-median N     median output tokens, log-normal (160); --output-sigma S (1.1)\n"
      "  --max-new-tokens N    per-request output cap; the contiguous baseline reserves it (2048)\n"
      "  --turns N             multiturn: mean turns per conversation (5); --think N: mean steps\n"
      "                        between a reply and the next turn (30)\n"
      "  --system-prompts N    shared-prefix: distinct system prompts (8)\n"
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
  bool rate_given = false;
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
    auto choice = [&](std::initializer_list<const char*> allowed) {
      const std::string v = value();
      for (const char* c : allowed)
        if (v == c) return v;
      std::fprintf(stderr, "kvcache-sim: bad value '%s' for %s\n", v.c_str(), a.data());
      std::exit(2);
    };
    auto& t = o.trace;
    if (a == "--rate") rate_given = true;
    if (a == "--trace") t.kind = choice({"sharegpt", "multiturn", "shared-prefix", "long"});
    else if (a == "--quant") o.quant = choice({"none", "int8", "fp8", "kivi2", "kivi4", "kivi2_token_keys", "kivi4_token_keys"});
    else if (a == "--staging-pages") o.staging_pages = static_cast<std::int32_t>(number(1));
    else if (a == "--evict") o.evict.policy = choice({"none", "streaming", "h2o", "snapkv", "scissorhands", "tova", "key_norm"});
    else if (a == "--budget") o.evict.budget = number(1e-6);
    else if (a == "--budgets") o.evict.budgets = choice({"uniform", "pyramid", "adaptive"});
    else if (a == "--prefix") o.prefix = choice({"none", "radix", "hash"});
    else if (a == "--requests") t.requests = static_cast<std::int64_t>(number(1));
    else if (a == "--rate") t.arrival_rate = number(1e-6);
    else if (a == "--prompt-median") t.prompt_median = number(1);
    else if (a == "--prompt-sigma") t.prompt_sigma = number(0);
    else if (a == "--output-median") t.output_median = number(1);
    else if (a == "--output-sigma") t.output_sigma = number(0);
    else if (a == "--max-new-tokens") t.max_new_tokens = static_cast<std::int64_t>(number(1));
    else if (a == "--turns") t.turns_mean = static_cast<std::int32_t>(number(1));
    else if (a == "--think") t.think_mean = number(0);
    else if (a == "--system-prompts") t.system_prompts = static_cast<std::int32_t>(number(1));
    else if (a == "--memory-gib") o.memory_gib = number(1e-3);
    else if (a == "--page-size") o.page_size = static_cast<std::int32_t>(number(1)), o.page_size_given = true;
    else if (a == "--max-batch") o.max_batch = static_cast<std::int32_t>(number(1));
    else if (a == "--max-batch-tokens") o.max_batch_tokens = static_cast<std::int64_t>(number(1)), o.max_batch_tokens_given = true;
    else if (a == "--watermark") o.watermark = number(0);
    else if (a == "--seed") t.seed = static_cast<std::uint64_t>(number(0));
    else if (a == "--json") o.json = true;
    else if (a == "--no-progress") o.progress = false;
    else if (a == "--help" || a == "-h") usage(0);
    else {
      std::fprintf(stderr, "kvcache-sim: unknown flag '%s'\n", argv[i]);
      usage(2);
    }
  }
  if (!rate_given && o.trace.kind == "multiturn") {
    // A conversation lives for about turns x (output + think) steps: 0.05 new conversations per
    // step keeps the default 16 GiB busy (a full cache, preemption-free batches of ~70) without
    // an overload that no cache could serve (see docs/prefix.md for the curve).
    o.trace.arrival_rate = 0.05;
  }
  if (o.trace.kind == "long") {
    // a handful of 8k-32k-token requests at a time: arrivals keep the budget full; a step must
    // take a whole 32k prompt next to the running decodes (no chunked prefill here)
    if (!rate_given) o.trace.arrival_rate = 1.0;
    if (!o.max_batch_tokens_given) o.max_batch_tokens = 40000;
    if (o.trace.requests == 2000) o.trace.requests = 300;
  }
  if (o.quant.rfind("kivi", 0) == 0 && !o.page_size_given) o.page_size = 32;  // KIVI: P % 32 == 0
  if (o.evict.enabled() && (o.quant != "none" || o.prefix != "none")) {
    std::fprintf(stderr, "kvcache-sim: --evict with --quant or --prefix is not supported yet\n");
    return 2;
  }
  if (o.quant != "none" && o.prefix != "none") {
    std::fprintf(stderr, "kvcache-sim: --prefix %s with --quant %s: prefix caching over quantized "
                 "pages is not supported yet\n", o.prefix.c_str(), o.quant.c_str());
    return 2;
  }
  try {
    o.layout.page_size = o.page_size;
    o.layout.validate();
    const double budget = o.memory_gib * 1024.0 * 1024.0 * 1024.0;
    auto num_pages = static_cast<std::int32_t>(budget / static_cast<double>(o.layout.bytes_per_page()));
    const std::int64_t slots = static_cast<std::int64_t>(budget / static_cast<double>(o.layout.bytes_per_token()));
    if (num_pages < 1) {
      std::fprintf(stderr, "kvcache-sim: %.3f GiB holds no %d-token page\n", o.memory_gib, o.page_size);
      return 2;
    }
    const auto trace = kvsim::make_trace(o.trace);
    double prompt_mean = 0, output_mean = 0;
    for (auto& r : trace) {
      prompt_mean += static_cast<double>(r.prompt.size());
      output_mean += static_cast<double>(r.output.size());
    }
    prompt_mean /= static_cast<double>(trace.size());
    output_mean /= static_cast<double>(trace.size());
    // A quantized run: pages of the quantizer's size, and staging pages for the residual window
    // taken from the same budget (sized for the sequences the budget holds at the trace's mean
    // context, unless --staging-pages says otherwise).
    quant_sizes qz;
    qz.page_bytes = static_cast<std::int64_t>(o.layout.bytes_per_page());
    qz.bytes_per_token = static_cast<double>(o.layout.bytes_per_token());
    qz.name = "none";
    std::int32_t staging = 0;
    const double mean_context = prompt_mean + output_mean / 2;
    if (o.quant != "none") {
      qz = kvcache::visit_quantizer(o.quant, [&](auto tag) {
        return sizes_of<typename decltype(tag)::type>(o.layout, mean_context);
      });
      if (qz.residual > 0) {
        staging = o.staging_pages;
        if (staging < 0) {
          // half again the sequences the budget holds at the mean context: shorter sequences let
          // more run at once, and a missing staging page should not be what stops them (1.5x
          // costs ~2% of the budget with KIVI-2 on the long trace)
          const double per_seq = mean_context * qz.bytes_per_token + static_cast<double>(qz.staging_bytes);
          staging = static_cast<std::int32_t>(std::min<double>(o.max_batch, std::ceil(1.5 * budget / per_seq)));
        }
      }
      num_pages = static_cast<std::int32_t>(
          (budget - static_cast<double>(staging) * static_cast<double>(qz.staging_bytes)) /
          static_cast<double>(qz.page_bytes));
      if (num_pages < 1) {
        std::fprintf(stderr, "kvcache-sim: %d staging pages leave no page of the budget\n", staging);
        return 2;
      }
    }
    // Eviction: one table per layer (uniform, pyramid) or per layer and kv head (adaptive), with
    // pages of one layer (or one head of one layer): the same bytes in more, smaller pages.
    if (o.evict.enabled()) {
      const std::int64_t split = o.evict.budgets == "adaptive"
                                     ? static_cast<std::int64_t>(o.layout.layers) * o.layout.kv_heads
                                     : o.layout.layers;
      qz.page_bytes = static_cast<std::int64_t>(o.layout.bytes_per_page()) / split;
      num_pages = static_cast<std::int32_t>(budget / static_cast<double>(qz.page_bytes));
    }
    const result paged =
        o.evict.enabled()
            ? (o.evict.budgets == "adaptive"
                   ? run_paged<void, kvcache::per_head>(o, trace, num_pages, 0, qz.page_bytes, 0)
                   : run_paged<void, kvcache::per_layer>(o, trace, num_pages, 0, qz.page_bytes, 0))
        : o.quant == "none"
            ? run_paged<void>(o, trace, num_pages, 0, qz.page_bytes, 0)
            : kvcache::visit_quantizer(o.quant, [&](auto tag) {
                return run_paged<typename decltype(tag)::type>(o, trace, num_pages, staging,
                                                              qz.page_bytes, qz.staging_bytes);
              });
    const double held = paged.bytes_held_steps ? paged.bytes_held_sum / static_cast<double>(paged.bytes_held_steps) : 0;
    const double f16_per_token = static_cast<double>(o.layout.bytes_per_token());
    const result contig = run_contiguous(o, trace, slots);
    const double hit_rate = paged.prompt_tokens ? static_cast<double>(paged.hit_tokens) / static_cast<double>(paged.prompt_tokens) : 0.0;
    const double ideal_rate = paged.prompt_tokens ? static_cast<double>(paged.ideal_hit_tokens) / static_cast<double>(paged.prompt_tokens) : 0.0;
    if (o.json) {
      fmt::print(
          "{{\"config\": {{\"trace\": \"{}\", \"prefix\": \"{}\", \"requests\": {}, \"rate\": {}, "
          "\"memory_gib\": {}, \"page_size\": {}, \"max_new_tokens\": {}, \"watermark\": {}, "
          "\"pages\": {}, \"token_slots\": {}, \"prompt_mean\": {:.1f}, \"output_mean\": {:.1f}, "
          "\"seed\": {}}},\n"
          " \"paged\": {{\"utilization\": {:.4f}, \"max_batch\": {}, \"mean_batch\": {:.1f}, "
          "\"preemptions\": {}, \"throughput_tokens_per_step\": {:.2f}, \"steps\": {}, "
          "\"generated_tokens\": {}, \"prefill_tokens\": {}, \"reserve_ns_per_sequence\": {:.1f}, "
          "\"wall_ms\": {:.1f}}},\n"
          " \"contiguous\": {{\"utilization\": {:.4f}, \"max_batch\": {}, \"mean_batch\": {:.1f}, "
          "\"throughput_tokens_per_step\": {:.2f}, \"steps\": {}, \"generated_tokens\": {}, "
          "\"prefill_tokens\": {}, \"wall_ms\": {:.1f}}},\n"
          " \"prefix\": {{\"hit_rate\": {:.4f}, \"ideal_hit_rate\": {:.4f}, "
          "\"prefill_tokens_saved\": {}, \"prompt_tokens\": {}, \"cached_pages_at_end\": {}}},\n"
          " \"quant\": {{\"quantizer\": \"{}\", \"kv_bytes_per_token\": {:.1f}, "
          "\"kv_bytes_per_token_f16\": {:.1f}, \"kv_bytes_per_token_held\": {:.1f}, "
          "\"staging_pages\": {}, \"staging_pages_used_max\": {}, \"page_bytes\": {}}},\n"
          " \"evict\": {{\"policy\": \"{}\", \"budget\": {}, \"budgets\": \"{}\", "
          "\"compactions\": {}, \"rows_evicted\": {}, \"refused\": {}}},\n"
          " \"max_batch_ratio\": {:.2f}}}\n",
          o.trace.kind, o.prefix, o.trace.requests, o.trace.arrival_rate, o.memory_gib,
          o.page_size, o.trace.max_new_tokens, o.watermark, num_pages, slots, prompt_mean,
          output_mean, o.trace.seed, paged.utilization(), paged.max_batch, paged.mean_batch,
          paged.preemptions, paged.throughput(), paged.steps, paged.generated,
          paged.prefill_tokens, paged.reserve_ns_per_seq, paged.wall_ms, contig.utilization(),
          contig.max_batch, contig.mean_batch, contig.throughput(), contig.steps,
          contig.generated, contig.prefill_tokens, contig.wall_ms, hit_rate, ideal_rate,
          paged.saved_tokens, paged.prompt_tokens, paged.cached_pages_end, o.quant,
          qz.bytes_per_token, f16_per_token, held, staging, paged.staging_used_max, qz.page_bytes,
          o.evict.policy, o.evict.budget, o.evict.budgets, paged.evicted.compactions,
          paged.evicted.rows_evicted, paged.evicted.refused,
          static_cast<double>(paged.max_batch) / std::max(1, contig.max_batch));
      return 0;
    }
    fmt::print("kvcache-sim: trace {}, {} requests, {:.2f} arrivals/step, prompts mean {:.0f} tokens, "
               "outputs mean {:.0f} tokens (cap {}), prefix cache: {}\n",
               o.trace.kind, o.trace.requests, o.trace.arrival_rate, prompt_mean, output_mean,
               o.trace.max_new_tokens, o.prefix);
    fmt::print("KV budget {:.1f} GiB at {}: {} pages of {} tokens = {} token slots\n",
               o.memory_gib, o.layout.to_string(), num_pages, o.page_size, slots);
    if (o.quant != "none") {
      fmt::print("quantizer {}: {:.1f} KV bytes per token at the mean context ({:.4f} of f16), "
                 "{:.1f} held on average in the run; {} staging pages of {} tokens (at most {} in "
                 "use)\n",
                 o.quant, qz.bytes_per_token, qz.bytes_per_token / f16_per_token, held, staging,
                 qz.residual, paged.staging_used_max);
    }
    if (o.evict.enabled()) {
      fmt::print("eviction: {} kept rows per table ({}), {} budgets; {} table compactions, {} rows "
                 "evicted; {:.1f} KV bytes held per token on average ({:.4f} of f16)\n",
                 o.evict.budget < 1 ? fmt::format("{:g} of the sequence", o.evict.budget)
                                    : fmt::format("{:g}", o.evict.budget),
                 o.evict.policy, o.evict.budgets, paged.evicted.compactions,
                 paged.evicted.rows_evicted, held, held / f16_per_token);
    }
    fmt::print("\n");
    fmt::print("{:<36}{:>14}{:>14}\n", "", "paged", "contiguous");
    fmt::print("{:<36}{:>14.3f}{:>14.3f}\n", "utilization (tokens / slots held)", paged.utilization(), contig.utilization());
    fmt::print("{:<36}{:>14}{:>14}\n", "max batch (sequences)", paged.max_batch, contig.max_batch);
    fmt::print("{:<36}{:>14.1f}{:>14.1f}\n", "mean batch (sequences)", paged.mean_batch, contig.mean_batch);
    fmt::print("{:<36}{:>14.2f}{:>14.2f}\n", "throughput (tokens / step)", paged.throughput(), contig.throughput());
    fmt::print("{:<36}{:>14}{:>14}\n", "steps to serve the trace", paged.steps, contig.steps);
    fmt::print("{:<36}{:>14}{:>14}\n", "prefill tokens computed", paged.prefill_tokens, contig.prefill_tokens);
    fmt::print("{:<36}{:>14}{:>14}\n", "preemptions (recompute)", paged.preemptions, 0);
    fmt::print("{:<36}{:>14.1f}{:>14}\n", "host bookkeeping ns / sequence / step", paged.reserve_ns_per_seq, "-");
    if (o.prefix != "none") {
      fmt::print("\nprefix cache ({}): hit rate {:.3f} of prompt tokens, ideal (unbounded) {:.3f} "
                 "({:.2f} of ideal); {} prefill tokens saved; {} pages cached at the end\n",
                 o.prefix, hit_rate, ideal_rate, ideal_rate > 0 ? hit_rate / ideal_rate : 0.0,
                 paged.saved_tokens, paged.cached_pages_end);
    }
    fmt::print("\npaged serves {:.2f}x the batch of the contiguous baseline\n",
               static_cast<double>(paged.max_batch) / std::max(1, contig.max_batch));
  } catch (const kvcache::error& e) {
    std::fprintf(stderr, "kvcache-sim: %s\n", e.what());
    return 1;
  }
  return 0;
}
