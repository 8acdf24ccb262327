// kvcache-quality: scores KV-cache compression configurations against the full cache on recorded
// attention traces (safetensors files written by tools/kvdump).
//
//   kvcache-quality [--trace FILE[,FILE...]] [--configs SPEC,...] [--steps N] [--layers L,...]
//                   [--heads] [--summary] [--json]
//
// Defaults: the two committed fixture traces under tests/data, configurations full, window and
// random at keep ratios 0.5, 0.25 and 0.1, the last 64 queries. See docs/quality.md.

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kvcache/core/error.hpp"
#include "kvcache/quality/compression.hpp"
#include "kvcache/quality/detail/json.hpp"
#include "kvcache/quality/score.hpp"
#include "kvcache/quality/trace.hpp"

namespace kq = kvcache::quality;

namespace {

// The default table: the baselines; the quantizers next to the eviction baselines at their bytes
// (head_dim 64, 1024 tokens); every selection policy under every budget at 50%, 25% and 10%.
const std::string default_configs = [] {
  std::string c =
      "full,window:0.5,window:0.25,window:0.1,random:0.5,random:0.25,random:0.1,"
      "quant:int8,quant:fp8,quant:kivi4,quant:kivi4_token_keys,quant:kivi2,"
      "quant:kivi2_token_keys,window:0.531,random:0.531,window:0.378,random:0.378,window:0.265,"
      "random:0.265";
  for (const char* budget : {"", "pyramid-", "adakv-"}) {
    for (const char* policy : {"streaming", "h2o", "snapkv", "scissorhands", "tova", "knorm"}) {
      for (const char* ratio : {"0.5", "0.25", "0.1"}) c += fmt::format(",{}{}:{}", budget, policy, ratio);
    }
  }
  return c;
}();

std::string default_traces() {
  const std::string dir = KVCACHE_QUALITY_DATA_DIR;
  return dir + "/smollm2-135m-prose-1024.safetensors," + dir +
         "/smollm2-135m-code-1024.safetensors";
}

void usage(std::FILE* to) {
  fmt::print(
      to,
      "usage: kvcache-quality [options]\n"
      "  --trace FILE[,FILE...]  attention traces (default: the fixture under tests/data)\n"
      "  --configs SPEC[,SPEC..] configurations (default: {})\n"
      "                          known: {}\n"
      "  --steps N               replay the last N queries as decode steps (default 64)\n"
      "  --layers L[,L...]       only these model layers (default: all recorded)\n"
      "  --heads                 one row per query head instead of per layer\n"
      "  --summary               one row per configuration, averaged over layers and traces\n"
      "  --json                  machine-readable rows (a JSON array) instead of a table\n",
      default_configs, fmt::join(kq::compression_names(), ", "));
}

struct options {
  std::vector<std::string> traces;
  std::vector<std::string> configs;
  std::int64_t steps = 64;
  std::vector<int> layers;
  bool heads = false;
  bool summary = false;
  bool json = false;
};

std::int64_t parse_int(std::string_view flag, std::string_view text) {
  std::int64_t v = 0;
  const auto* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, v);
  KVCACHE_EXPECTS(ec == std::errc() && ptr == end && !text.empty(), kvcache::errc::invalid_argument,
                  "{}: '{}' is not an integer", flag, text);
  return v;
}

options parse_args(int argc, char** argv) {
  options o;
  std::string traces = default_traces();
  std::string configs = default_configs;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const auto value = [&]() -> std::string_view {
      KVCACHE_EXPECTS(i + 1 < argc, kvcache::errc::invalid_argument, "{} needs a value", a);
      return argv[++i];
    };
    if (a == "--trace") {
      traces = value();
    } else if (a == "--configs") {
      configs = value();
    } else if (a == "--steps") {
      o.steps = parse_int(a, value());
    } else if (a == "--layers") {
      for (const auto& s : kq::split_specs(value()))
        o.layers.push_back(static_cast<int>(parse_int(a, s)));
    } else if (a == "--heads") {
      o.heads = true;
    } else if (a == "--summary") {
      o.summary = true;
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    } else {
      KVCACHE_FAIL(kvcache::errc::invalid_argument, "unknown argument '{}' (try --help)", a);
    }
  }
  o.traces = kq::split_specs(traces);
  o.configs = kq::split_specs(configs);
  KVCACHE_EXPECTS(!o.traces.empty() && !o.configs.empty(), kvcache::errc::invalid_argument,
                  "no trace or no configuration given");
  return o;
}

std::string num(double v) {
  if (std::isnan(v)) return "null";
  return fmt::format("{:.6g}", v);
}

std::string json_row(const std::string& config, const std::string& trace, const std::string& text,
                     const kq::score_row& r) {
  std::string s =
      fmt::format("{{\"config\": {}, \"trace\": {}, \"text\": {}", kq::detail::json_quote(config),
                  kq::detail::json_quote(trace), kq::detail::json_quote(text));
  if (r.layer >= 0) s += fmt::format(", \"layer\": {}", r.layer);
  if (r.q_head >= 0) s += fmt::format(", \"q_head\": {}, \"kv_head\": {}", r.q_head, r.kv_head);
  s += fmt::format(
      ", \"steps\": {}, \"rel_l2\": {}, \"rel_l2_max\": {}, \"cosine\": {}, \"recall\": {}, "
      "\"kv_bytes\": {}, \"full_kv_bytes\": {}, \"kv_ratio\": {}, \"recorded_rel_l2\": {}}}",
      r.steps, num(r.rel_l2), num(r.rel_l2_max), num(r.cosine), num(r.recall), num(r.kv_bytes),
      num(r.full_kv_bytes), num(r.kv_ratio()), num(r.recorded_rel_l2));
  return s;
}

constexpr const char* table_header =
    "{:<24} {:>6} {:>5} {:>9} {:>10} {:>8} {:>8} {:>8} {:>9} {:>9}\n";

void print_row(const std::string& config, const kq::score_row& r) {
  fmt::print("{:<24} {:>6} {:>5} {:>9.5f} {:>10.5f} {:>8.5f} {:>8.5f} {:>8.3f} {:>9.1f} {:>9.2e}\n",
             config, r.layer >= 0 ? std::to_string(r.layer) : "all",
             r.q_head >= 0 ? std::to_string(r.q_head) : "all", r.rel_l2, r.rel_l2_max, r.cosine,
             r.recall, r.kv_ratio(), r.kv_bytes / 1024.0, r.recorded_rel_l2);
}

int run(const options& o) {
  std::vector<std::unique_ptr<kq::compression>> configs;
  std::vector<const kq::compression*> config_ptrs;
  for (const auto& spec : o.configs) {
    configs.push_back(kq::make_compression(spec));
    config_ptrs.push_back(configs.back().get());
  }

  kq::score_options so;
  so.steps = o.steps;
  so.layers = o.layers;

  std::vector<std::string> json_rows;
  // summary[config] = per-trace summaries
  std::vector<std::vector<kq::score_row>> summaries(configs.size());
  for (const auto& path : o.traces) {
    const kq::trace tr = kq::trace::load(path);
    if (!o.json && !o.summary) {
      fmt::print(
          "trace {} (text '{}', {} tokens, layers {}, {} q heads / {} kv heads x {}), "
          "last {} queries\n",
          path, tr.meta("text", "?"), tr.tokens(), tr.meta("layers"), tr.q_heads(), tr.kv_heads(),
          tr.head_dim(), o.steps);
      fmt::print(table_header, "config", "layer", "head", "rel_l2", "rel_l2_max", "cosine",
                 "recall", "kv_ratio", "kv_KiB", "recorded");
    }
    const std::vector<kq::score_result> results = kq::score(tr, config_ptrs, so);
    for (std::size_t c = 0; c < configs.size(); ++c) {
      const kq::score_result& res = results[c];
      summaries[c].push_back(res.summary());
      if (o.summary) continue;
      const std::vector<kq::score_row> rows = o.heads ? res.heads : res.by_layer();
      for (const auto& r : rows) {
        if (o.json) {
          json_rows.push_back(json_row(res.config, path, res.text, r));
        } else {
          print_row(res.config, r);
        }
      }
    }
    if (!o.json && !o.summary) fmt::print("\n");
  }
  if (o.summary) {
    if (!o.json) {
      fmt::print("summary over {} trace(s) ({}), layers averaged, last {} queries\n",
                 o.traces.size(), fmt::join(o.traces, ", "), o.steps);
      fmt::print("{:<24} {:>9} {:>10} {:>8} {:>8} {:>8} {:>9}\n", "config", "rel_l2", "rel_l2_max",
                 "cosine", "recall", "kv_ratio", "recorded");
    }
    for (std::size_t c = 0; c < configs.size(); ++c) {
      const kq::score_row m = kq::mean_of(summaries[c]);
      if (o.json) {
        json_rows.push_back(
            json_row(configs[c]->name(), fmt::format("{}", fmt::join(o.traces, ",")), "", m));
      } else {
        fmt::print("{:<24} {:>9.5f} {:>10.5f} {:>8.5f} {:>8.5f} {:>8.3f} {:>9.2e}\n",
                   configs[c]->name(), m.rel_l2, m.rel_l2_max, m.cosine, m.recall, m.kv_ratio(),
                   m.recorded_rel_l2);
      }
    }
  }
  if (o.json) fmt::print("[\n  {}\n]\n", fmt::join(json_rows, ",\n  "));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const kvcache::error& e) {
    fmt::print(stderr, "kvcache-quality: {}\n", e.what());
    return e.code() == kvcache::errc::invalid_argument ? 2 : 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "kvcache-quality: {}\n", e.what());
    return 1;
  }
}
