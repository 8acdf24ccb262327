#include "kvcache/quality/compression.hpp"

#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <numeric>

#include "kvcache/core/error.hpp"
#include "kvcache/quality/baselines.hpp"
#include "registry.hpp"

namespace kvcache::quality {

namespace {

std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::string ratio_text(double r) { return fmt::format("{:g}", r); }

void check_ratio(double ratio) {
  KVCACHE_EXPECTS(ratio > 0.0 && ratio <= 1.0, errc::invalid_argument,
                  "keep ratio {} is outside (0, 1]", ratio);
}

class full_compressor final : public head_compressor {
 public:
  void step(std::int64_t t, kept_cache& out) override {
    out.tokens.resize(static_cast<std::size_t>(t + 1));
    std::iota(out.tokens.begin(), out.tokens.end(), std::int64_t{0});
  }
};

class window_compressor final : public head_compressor {
 public:
  explicit window_compressor(double ratio) : ratio_(ratio) {}
  void step(std::int64_t t, kept_cache& out) override {
    const std::int64_t keep = budget_of(ratio_, t + 1);
    out.tokens.resize(static_cast<std::size_t>(keep));
    std::iota(out.tokens.begin(), out.tokens.end(), t + 1 - keep);
  }

 private:
  double ratio_;
};

class random_compressor final : public head_compressor {
 public:
  random_compressor(double ratio, std::uint64_t seed, const head_view& head) : ratio_(ratio) {
    const std::uint64_t base =
        splitmix64(seed ^ splitmix64((static_cast<std::uint64_t>(head.layer) << 32) ^
                                     static_cast<std::uint64_t>(head.kv_head)));
    priority_.resize(static_cast<std::size_t>(head.tokens));
    for (std::size_t i = 0; i < priority_.size(); ++i) priority_[i] = splitmix64(base + i);
  }
  void step(std::int64_t t, kept_cache& out) override {
    const std::int64_t keep = budget_of(ratio_, t + 1);
    // The earlier positions, best priority first, then the current one.
    scratch_.resize(static_cast<std::size_t>(t));
    std::iota(scratch_.begin(), scratch_.end(), std::int64_t{0});
    const auto by_priority = [this](std::int64_t a, std::int64_t b) {
      return priority_[static_cast<std::size_t>(a)] > priority_[static_cast<std::size_t>(b)];
    };
    const auto others = static_cast<std::ptrdiff_t>(keep - 1);
    std::nth_element(scratch_.begin(), scratch_.begin() + others, scratch_.end(), by_priority);
    out.tokens.assign(scratch_.begin(), scratch_.begin() + others);
    out.tokens.push_back(t);
  }

 private:
  double ratio_;
  std::vector<std::uint64_t> priority_;
  std::vector<std::int64_t> scratch_;
};

std::map<std::string, compression_factory>& registry() {
  static std::map<std::string, compression_factory> table = [] {
    std::map<std::string, compression_factory> m;
    m["full"] = [](std::span<const std::string_view> args) -> std::unique_ptr<compression> {
      KVCACHE_EXPECTS(args.empty(), errc::invalid_argument, "'full' takes no arguments, got {}",
                      args.size());
      return std::make_unique<full_cache>();
    };
    m["window"] = [](std::span<const std::string_view> args) -> std::unique_ptr<compression> {
      KVCACHE_EXPECTS(args.size() == 1, errc::invalid_argument,
                      "'window' takes one argument, the keep ratio (window:0.25), got {}",
                      args.size());
      return std::make_unique<recent_window>(parse_ratio(args[0], "window"));
    };
    m["random"] = [](std::span<const std::string_view> args) -> std::unique_ptr<compression> {
      KVCACHE_EXPECTS(args.size() == 1 || args.size() == 2, errc::invalid_argument,
                      "'random' takes a keep ratio and an optional seed (random:0.25:7), got {} "
                      "arguments",
                      args.size());
      std::uint64_t seed = 1;
      if (args.size() == 2) {
        const auto* end = args[1].data() + args[1].size();
        const auto [ptr, ec] = std::from_chars(args[1].data(), end, seed);
        KVCACHE_EXPECTS(ec == std::errc() && ptr == end && !args[1].empty(), errc::invalid_argument,
                        "random seed '{}' is not an unsigned integer", args[1]);
      }
      return std::make_unique<random_keep>(parse_ratio(args[0], "random"), seed);
    };
    detail::register_quant_compressions(m);
    detail::register_selection_compressions(m);
    return m;
  }();
  return table;
}

}  // namespace

std::int64_t budget_of(double ratio, std::int64_t n) noexcept {
  // A tiny tolerance so that e.g. 0.1 * 1000 is 100, not 101 through rounding of 0.1.
  const auto k = static_cast<std::int64_t>(std::ceil(ratio * static_cast<double>(n) - 1e-9));
  return std::clamp<std::int64_t>(k, 1, n);
}

double parse_ratio(std::string_view text, std::string_view spec) {
  double v = 0;
  const auto* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, v);
  KVCACHE_EXPECTS(ec == std::errc() && ptr == end && !text.empty(), errc::invalid_argument,
                  "'{}': keep ratio '{}' is not a number", spec, text);
  KVCACHE_EXPECTS(v > 0.0 && v <= 1.0, errc::invalid_argument,
                  "'{}': keep ratio {} is outside (0, 1]", spec, text);
  return v;
}

std::vector<std::string> split_specs(std::string_view list) {
  std::vector<std::string> out;
  while (!list.empty()) {
    const auto comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!item.empty()) out.emplace_back(item);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return out;
}

std::unique_ptr<compression> make_compression(std::string_view spec) {
  std::vector<std::string_view> parts;
  std::string_view rest = spec;
  for (;;) {
    const auto colon = rest.find(':');
    parts.push_back(rest.substr(0, colon));
    if (colon == std::string_view::npos) break;
    rest.remove_prefix(colon + 1);
  }
  const auto& table = registry();
  const auto it = table.find(std::string(parts.front()));
  KVCACHE_EXPECTS(it != table.end(), errc::invalid_argument,
                  "unknown compression '{}' in spec '{}' (known: {})", parts.front(), spec,
                  fmt::join(compression_names(), ", "));
  return it->second(std::span<const std::string_view>(parts).subspan(1));
}

void register_compression(std::string name, compression_factory factory) {
  KVCACHE_EXPECTS(!name.empty() && name.find_first_of(":,") == std::string::npos,
                  errc::invalid_argument, "compression name '{}' is empty or holds ':' or ','",
                  name);
  registry()[std::move(name)] = std::move(factory);
}

std::vector<std::string> compression_names() {
  std::vector<std::string> names;
  for (const auto& [name, factory] : registry()) names.push_back(name);
  return names;
}

// ---- baselines -------------------------------------------------------------------------------

std::unique_ptr<head_compressor> full_cache::start(const head_view&, std::int64_t) const {
  return std::make_unique<full_compressor>();
}

recent_window::recent_window(double ratio) : ratio_(ratio) { check_ratio(ratio); }

std::string recent_window::name() const { return "window:" + ratio_text(ratio_); }

std::unique_ptr<head_compressor> recent_window::start(const head_view&, std::int64_t) const {
  return std::make_unique<window_compressor>(ratio_);
}

random_keep::random_keep(double ratio, std::uint64_t seed) : ratio_(ratio), seed_(seed) {
  check_ratio(ratio);
}

std::string random_keep::name() const {
  return seed_ == 1 ? "random:" + ratio_text(ratio_)
                    : fmt::format("random:{}:{}", ratio_text(ratio_), seed_);
}

std::unique_ptr<head_compressor> random_keep::start(const head_view& head, std::int64_t) const {
  return std::make_unique<random_compressor>(ratio_, seed_, head);
}

}  // namespace kvcache::quality
