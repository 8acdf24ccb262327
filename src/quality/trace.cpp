#include "kvcache/quality/trace.hpp"

#include <fmt/ranges.h>

#include <charconv>
#include <cmath>
#include <limits>
#include <string_view>

#include "kvcache/core/error.hpp"
#include "kvcache/quality/safetensors.hpp"

namespace kvcache::quality {

namespace {

constexpr std::string_view trace_format = "kvcache-trace/1";

const std::string& require_meta(const safetensors_file& f, const std::string& key) {
  const auto it = f.metadata().find(key);
  KVCACHE_EXPECTS(it != f.metadata().end(), errc::parse_error,
                  "{}: metadata key '{}' is missing (not a kvcache trace?)", f.source(), key);
  return it->second;
}

std::int64_t parse_int(const safetensors_file& f, const std::string& key, std::string_view text,
                       std::int64_t lo, std::int64_t hi) {
  std::int64_t v = 0;
  const auto* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, v);
  KVCACHE_EXPECTS(ec == std::errc() && ptr == end && !text.empty(), errc::parse_error,
                  "{}: metadata '{}' = '{}' is not an integer", f.source(), key, text);
  KVCACHE_EXPECTS(v >= lo && v <= hi, errc::parse_error,
                  "{}: metadata '{}' = {} is outside [{}, {}]", f.source(), key, v, lo, hi);
  return v;
}

std::int64_t meta_int(const safetensors_file& f, const std::string& key, std::int64_t lo,
                      std::int64_t hi) {
  return parse_int(f, key, require_meta(f, key), lo, hi);
}

std::vector<float> load_tensor(const safetensors_file& f, const std::string& name,
                               const std::vector<std::int64_t>& expected) {
  const tensor_info* t = f.find(name);
  KVCACHE_EXPECTS(t != nullptr, errc::parse_error, "{}: tensor '{}' is missing", f.source(), name);
  KVCACHE_EXPECTS(t->dtype != st_dtype::i32, errc::dtype_mismatch,
                  "{}: tensor '{}' is {}, expected F16, BF16 or F32", f.source(), name,
                  name_of(t->dtype));
  KVCACHE_EXPECTS(t->shape == expected, errc::shape_mismatch,
                  "{}: tensor '{}' has shape {}, expected [{}] from the metadata", f.source(), name,
                  t->shape_string(), fmt::join(expected, ", "));
  return f.to_f32(name);
}

}  // namespace

trace trace::load(const std::filesystem::path& path) { return from(safetensors_file::open(path)); }

trace trace::from(const safetensors_file& f) {
  const std::string format = require_meta(f, "format");
  KVCACHE_EXPECTS(format == trace_format, errc::parse_error,
                  "{}: metadata format is '{}', expected '{}'", f.source(), format, trace_format);
  constexpr std::int64_t max_dim = 1 << 20;
  trace t;
  t.source_ = f.source();
  t.metadata_ = f.metadata();
  t.tokens_ = meta_int(f, "tokens", 1, std::int64_t{1} << 40);
  t.q_heads_ = static_cast<int>(meta_int(f, "q_heads", 1, max_dim));
  t.kv_heads_ = static_cast<int>(meta_int(f, "kv_heads", 1, max_dim));
  t.head_dim_ = static_cast<int>(meta_int(f, "head_dim", 1, max_dim));
  t.q_first_ = meta_int(f, "q_first", 0, t.tokens_ - 1);
  t.out_first_ = meta_int(f, "out_first", 0, t.tokens_);
  KVCACHE_EXPECTS(t.q_heads_ % t.kv_heads_ == 0, errc::shape_mismatch,
                  "{}: {} query heads are not a multiple of {} kv heads", f.source(), t.q_heads_,
                  t.kv_heads_);

  std::vector<int> indices;
  const std::string layers = require_meta(f, "layers");
  std::string_view rest = layers;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    indices.push_back(static_cast<int>(parse_int(f, "layers", item, 0, max_dim)));
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
    KVCACHE_EXPECTS(!rest.empty(), errc::parse_error,
                    "{}: metadata 'layers' = '{}' ends in a comma", f.source(), layers);
  }
  KVCACHE_EXPECTS(!indices.empty(), errc::parse_error, "{}: metadata 'layers' is empty",
                  f.source());
  for (std::size_t i = 0; i < indices.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      KVCACHE_EXPECTS(indices[i] != indices[j], errc::parse_error,
                      "{}: layer {} appears twice in metadata 'layers'", f.source(), indices[i]);
    }
  }

  const std::int64_t T = t.tokens_;
  const std::int64_t hq = t.q_heads_;
  const std::int64_t hkv = t.kv_heads_;
  const std::int64_t d = t.head_dim_;
  for (const int index : indices) {
    trace_layer l;
    l.index = index;
    const std::string p = fmt::format("layer{}.", index);
    l.q = load_tensor(f, p + "q", {T - t.q_first_, hq, d});
    l.k = load_tensor(f, p + "k", {T, hkv, d});
    l.v = load_tensor(f, p + "v", {T, hkv, d});
    l.out = load_tensor(f, p + "out", {T - t.out_first_, hq, d});
    t.layers_.push_back(std::move(l));
  }
  if (const tensor_info* tok = f.find("tokens")) {
    KVCACHE_EXPECTS(tok->shape == std::vector<std::int64_t>{T}, errc::shape_mismatch,
                    "{}: tensor 'tokens' has shape {}, expected [{}]", f.source(),
                    tok->shape_string(), T);
    t.token_ids_ = f.to_i32("tokens");
  }
  return t;
}

double trace::scale() const noexcept { return 1.0 / std::sqrt(static_cast<double>(head_dim_)); }

const trace_layer& trace::layer(int index) const {
  for (const auto& l : layers_) {
    if (l.index == index) return l;
  }
  std::vector<int> have;
  for (const auto& l : layers_) have.push_back(l.index);
  KVCACHE_FAIL(errc::out_of_range, "{}: layer {} is not recorded (have {})", source_, index,
               fmt::join(have, ","));
}

std::string trace::meta(const std::string& key, const std::string& fallback) const {
  const auto it = metadata_.find(key);
  return it == metadata_.end() ? fallback : it->second;
}

std::span<const float> trace::query(const trace_layer& l, std::int64_t pos, int h) const {
  KVCACHE_EXPECTS(pos >= q_first_ && pos < tokens_ && h >= 0 && h < q_heads_, errc::out_of_range,
                  "query of head {} at position {}: recorded are heads [0, {}) at [{}, {})", h, pos,
                  q_heads_, q_first_, tokens_);
  const auto row = static_cast<std::size_t>(((pos - q_first_) * q_heads_ + h) * head_dim_);
  return {l.q.data() + row, static_cast<std::size_t>(head_dim_)};
}

std::span<const float> trace::key(const trace_layer& l, std::int64_t pos, int h) const {
  KVCACHE_EXPECTS(pos >= 0 && pos < tokens_ && h >= 0 && h < kv_heads_, errc::out_of_range,
                  "key of kv head {} at position {}: recorded are heads [0, {}) at [0, {})", h, pos,
                  kv_heads_, tokens_);
  const auto row = static_cast<std::size_t>((pos * kv_heads_ + h) * head_dim_);
  return {l.k.data() + row, static_cast<std::size_t>(head_dim_)};
}

std::span<const float> trace::value(const trace_layer& l, std::int64_t pos, int h) const {
  KVCACHE_EXPECTS(pos >= 0 && pos < tokens_ && h >= 0 && h < kv_heads_, errc::out_of_range,
                  "value of kv head {} at position {}: recorded are heads [0, {}) at [0, {})", h,
                  pos, kv_heads_, tokens_);
  const auto row = static_cast<std::size_t>((pos * kv_heads_ + h) * head_dim_);
  return {l.v.data() + row, static_cast<std::size_t>(head_dim_)};
}

std::span<const float> trace::output(const trace_layer& l, std::int64_t pos, int h) const {
  KVCACHE_EXPECTS(pos >= out_first_ && pos < tokens_ && h >= 0 && h < q_heads_, errc::out_of_range,
                  "output of head {} at position {}: recorded are heads [0, {}) at [{}, {})", h,
                  pos, q_heads_, out_first_, tokens_);
  const auto row = static_cast<std::size_t>(((pos - out_first_) * q_heads_ + h) * head_dim_);
  return {l.out.data() + row, static_cast<std::size_t>(head_dim_)};
}

}  // namespace kvcache::quality
