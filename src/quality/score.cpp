#include "kvcache/quality/score.hpp"

#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

#include "kvcache/core/error.hpp"

namespace kvcache::quality {

namespace {

/// Softmax attention of one query over `n` rows; fills `probs` (normalized) and `out`.
/// Rows come from `row(i)`, a span of head_dim floats.
template <typename RowFn, typename ValueFn>
void attend(std::span<const float> q, std::size_t n, double scale, RowFn key_row, ValueFn value_row,
            std::vector<double>& probs, std::vector<double>& out) {
  const std::size_t d = q.size();
  probs.resize(n);
  double m = -std::numeric_limits<double>::infinity();
  for (std::size_t i = 0; i < n; ++i) {
    const std::span<const float> k = key_row(i);
    double s = 0;
    for (std::size_t c = 0; c < d; ++c) s += static_cast<double>(q[c]) * static_cast<double>(k[c]);
    probs[i] = s * scale;
    m = std::max(m, probs[i]);
  }
  double z = 0;
  for (std::size_t i = 0; i < n; ++i) {
    probs[i] = std::exp(probs[i] - m);
    z += probs[i];
  }
  out.assign(d, 0.0);
  for (std::size_t i = 0; i < n; ++i) {
    probs[i] /= z;
    const std::span<const float> v = value_row(i);
    for (std::size_t c = 0; c < d; ++c) out[c] += probs[i] * static_cast<double>(v[c]);
  }
}

struct accum {
  double rel_l2 = 0, rel_l2_max = 0, cosine = 0, recall = 0, kv_bytes = 0, full_kv_bytes = 0;
};

double norm(const std::vector<double>& a) {
  double s = 0;
  for (const double x : a) s += x * x;
  return std::sqrt(s);
}

}  // namespace

score_row mean_of(const std::vector<score_row>& rows) {
  score_row m;
  if (rows.empty()) return m;
  m.layer = rows.front().layer;
  m.q_head = rows.front().q_head;
  m.kv_head = rows.front().kv_head;
  m.rel_l2_max = 0;
  std::int64_t recorded_n = 0;
  for (const auto& r : rows) {
    if (r.layer != m.layer) m.layer = -1;
    if (r.q_head != m.q_head) m.q_head = -1;
    if (r.kv_head != m.kv_head) m.kv_head = -1;
    m.rel_l2 += r.rel_l2;
    m.rel_l2_max = std::max(m.rel_l2_max, r.rel_l2_max);
    m.cosine += r.cosine;
    m.recall += r.recall;
    m.kv_bytes += r.kv_bytes;
    m.full_kv_bytes += r.full_kv_bytes;
    if (!std::isnan(r.recorded_rel_l2)) {
      m.recorded_rel_l2 += r.recorded_rel_l2;
      ++recorded_n;
    }
    m.steps = std::max(m.steps, r.steps);
  }
  const auto n = static_cast<double>(rows.size());
  m.rel_l2 /= n;
  m.cosine /= n;
  m.recall /= n;
  m.kv_bytes /= n;
  m.full_kv_bytes /= n;
  m.recorded_rel_l2 = recorded_n > 0 ? m.recorded_rel_l2 / static_cast<double>(recorded_n)
                                     : std::numeric_limits<double>::quiet_NaN();
  return m;
}

std::vector<score_row> score_result::by_layer() const {
  std::vector<score_row> out;
  std::size_t i = 0;
  while (i < heads.size()) {
    std::size_t j = i;
    while (j < heads.size() && heads[j].layer == heads[i].layer) ++j;
    out.push_back(mean_of(std::vector<score_row>(heads.begin() + static_cast<std::ptrdiff_t>(i),
                                                 heads.begin() + static_cast<std::ptrdiff_t>(j))));
    i = j;
  }
  return out;
}

score_row score_result::summary() const { return mean_of(by_layer()); }

score_result score(const trace& tr, const compression& config, const score_options& options) {
  const compression* one[] = {&config};
  return std::move(score(tr, one, options).front());
}

std::vector<score_result> score(const trace& tr, std::span<const compression* const> configs,
                                const score_options& options) {
  const std::int64_t T = tr.tokens();
  const int D = tr.head_dim();
  const int G = tr.group_size();
  const std::int64_t available = T - tr.q_first();
  KVCACHE_EXPECTS(options.steps >= 1 && options.steps <= available, errc::out_of_range,
                  "{}: {} steps requested, the trace has queries for the last {} positions",
                  tr.source(), options.steps, available);
  std::vector<const trace_layer*> layers;
  if (options.layers.empty()) {
    for (const auto& l : tr.layers()) layers.push_back(&l);
  } else {
    for (const int index : options.layers) layers.push_back(&tr.layer(index));
  }
  std::vector<int> kv_heads = options.kv_heads;
  if (kv_heads.empty()) {
    for (int h = 0; h < tr.kv_heads(); ++h) kv_heads.push_back(h);
  }
  for (const int h : kv_heads) {
    KVCACHE_EXPECTS(h >= 0 && h < tr.kv_heads(), errc::out_of_range,
                    "kv head {} requested, the trace has {}", h, tr.kv_heads());
  }

  std::vector<score_result> results(configs.size());
  for (std::size_t c = 0; c < configs.size(); ++c) {
    KVCACHE_EXPECTS(configs[c] != nullptr, errc::invalid_argument, "configuration {} is null", c);
    results[c].config = configs[c]->name();
    results[c].trace = tr.source();
    results[c].text = tr.meta("text");
  }
  const std::int64_t first_step = T - options.steps;
  int model_layers = 0;
  {
    const std::string text = tr.meta("model_layers", "0");
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), model_layers);
    if (ec != std::errc() || ptr != text.data() + text.size()) model_layers = 0;
  }
  const double scale = tr.scale();
  const auto d = static_cast<std::size_t>(D);
  const auto g_count = static_cast<std::size_t>(G);

  std::vector<float> keys, values, queries;
  std::vector<std::vector<double>> p_full(g_count), o_full(g_count);
  std::vector<double> recorded(g_count);
  std::vector<double> p_comp, o_comp;
  std::vector<float> observed;
  std::vector<std::uint32_t> stamp(static_cast<std::size_t>(T), 0);
  std::uint32_t stamp_id = 0;
  kept_cache kept;

  for (const trace_layer* layer : layers) {
    for (const int kvh : kv_heads) {
      // Contiguous per-head copies.
      keys.resize(static_cast<std::size_t>(T) * d);
      values.resize(static_cast<std::size_t>(T) * d);
      for (std::int64_t pos = 0; pos < T; ++pos) {
        std::ranges::copy(tr.key(*layer, pos, kvh), keys.begin() + pos * D);
        std::ranges::copy(tr.value(*layer, pos, kvh), values.begin() + pos * D);
      }
      queries.resize(static_cast<std::size_t>(available * G) * d);
      for (std::int64_t pos = tr.q_first(); pos < T; ++pos) {
        for (int g = 0; g < G; ++g) {
          std::ranges::copy(tr.query(*layer, pos, kvh * G + g),
                            queries.begin() + ((pos - tr.q_first()) * G + g) * D);
        }
      }
      head_view view;
      view.layer = layer->index;
      view.kv_head = kvh;
      view.group_size = G;
      view.head_dim = D;
      view.tokens = T;
      view.keys = keys;
      view.values = values;
      view.q_first = tr.q_first();
      view.queries = queries;
      view.num_layers = model_layers;
      view.source = &tr;
      const auto query = [&](std::int64_t t, int g) {
        return std::span<const float>(queries.data() + ((t - tr.q_first()) * G + g) * D, d);
      };

      std::vector<std::unique_ptr<head_compressor>> comps;
      for (std::size_t c = 0; c < configs.size(); ++c) {
        comps.push_back(configs[c]->start(view, first_step));
        KVCACHE_EXPECTS(comps.back() != nullptr, errc::logic_error,
                        "configuration '{}' returned no compressor", results[c].config);
      }
      std::vector<accum> acc(configs.size() * g_count);
      std::vector<double> rec_sum(g_count, 0.0);
      std::int64_t rec_steps = 0;
      for (std::int64_t t = first_step; t < T; ++t) {
        // The full cache, once per step for all configurations.
        const auto n_full = static_cast<std::size_t>(t + 1);
        for (int g = 0; g < G; ++g) {
          const auto gi = static_cast<std::size_t>(g);
          attend(
              query(t, g), n_full, scale,
              [&](std::size_t i) { return view.key(static_cast<std::int64_t>(i)); },
              [&](std::size_t i) { return view.value(static_cast<std::int64_t>(i)); }, p_full[gi],
              o_full[gi]);
          if (t >= tr.out_first()) {
            const auto rec = tr.output(*layer, t, kvh * G + g);
            double e2 = 0;
            for (std::size_t c = 0; c < d; ++c) {
              const double e = static_cast<double>(rec[c]) - o_full[gi][c];
              e2 += e * e;
            }
            const double nf = norm(o_full[gi]);
            rec_sum[gi] += nf > 0 ? std::sqrt(e2) / nf : std::sqrt(e2);
          }
        }
        if (t >= tr.out_first()) ++rec_steps;
        const double full_bytes = 2.0 * static_cast<double>(t + 1) * D * 2.0;

        for (std::size_t c = 0; c < configs.size(); ++c) {
          const std::string& name = results[c].config;
          kept.clear();
          comps[c]->step(t, kept);
          const std::size_t n = kept.tokens.size();
          // Validate what the configuration returned.
          KVCACHE_EXPECTS(n >= 1, errc::logic_error,
                          "'{}' kept no token at layer {} kv head {} step {}", name, layer->index,
                          kvh, t);
          if (++stamp_id == 0) {
            std::ranges::fill(stamp, 0u);
            stamp_id = 1;
          }
          bool identity = n == n_full;  // all of [0, t] in order: the full cache itself
          for (std::size_t i = 0; i < n; ++i) {
            const std::int64_t pos = kept.tokens[i];
            KVCACHE_EXPECTS(
                pos >= 0 && pos <= t, errc::logic_error,
                "'{}' kept position {} at step {} (layer {} kv head {}): outside [0, {}]", name,
                pos, t, layer->index, kvh, t);
            auto& s = stamp[static_cast<std::size_t>(pos)];
            KVCACHE_EXPECTS(s != stamp_id, errc::logic_error,
                            "'{}' kept position {} twice at step {} (layer {} kv head {})", name,
                            pos, t, layer->index, kvh);
            s = stamp_id;
            identity = identity && pos == static_cast<std::int64_t>(i);
          }
          KVCACHE_EXPECTS(kept.keys.empty() || kept.keys.size() == n * d, errc::logic_error,
                          "'{}' returned {} key floats for {} tokens of dim {}", name,
                          kept.keys.size(), n, D);
          KVCACHE_EXPECTS(kept.values.empty() || kept.values.size() == n * d, errc::logic_error,
                          "'{}' returned {} value floats for {} tokens of dim {}", name,
                          kept.values.size(), n, D);
          identity = identity && kept.keys.empty() && kept.values.empty();
          const double bytes = kept.bytes.value_or(2.0 * static_cast<double>(n) * D * 2.0);

          const auto kept_key = [&](std::size_t i) -> std::span<const float> {
            if (!kept.keys.empty()) return {kept.keys.data() + i * d, d};
            return view.key(kept.tokens[i]);
          };
          const auto kept_value = [&](std::size_t i) -> std::span<const float> {
            if (!kept.values.empty()) return {kept.values.data() + i * d, d};
            return view.value(kept.tokens[i]);
          };
          observed.resize(g_count * n);
          for (int g = 0; g < G; ++g) {
            const auto gi = static_cast<std::size_t>(g);
            const std::vector<double>& of = o_full[gi];
            if (identity) {
              p_comp = p_full[gi];
              o_comp = of;
            } else {
              attend(query(t, g), n, scale, kept_key, kept_value, p_comp, o_comp);
            }
            double diff2 = 0, dot = 0;
            for (std::size_t ch = 0; ch < d; ++ch) {
              diff2 += (o_comp[ch] - of[ch]) * (o_comp[ch] - of[ch]);
              dot += o_comp[ch] * of[ch];
            }
            const double nf = norm(of);
            const double nc = norm(o_comp);
            const double rel = nf > 0 ? std::sqrt(diff2) / nf : std::sqrt(diff2);
            const double cos = (nf > 0 && nc > 0) ? dot / (nf * nc) : (nf == nc ? 1.0 : 0.0);
            double recall = 0;
            for (std::size_t i = 0; i < n; ++i) {
              recall += p_full[gi][static_cast<std::size_t>(kept.tokens[i])];
            }
            auto& a = acc[c * g_count + gi];
            a.rel_l2 += rel;
            a.rel_l2_max = std::max(a.rel_l2_max, rel);
            a.cosine += cos;
            a.recall += recall;
            a.kv_bytes += bytes;
            a.full_kv_bytes += full_bytes;
            for (std::size_t i = 0; i < n; ++i) {
              observed[gi * n + i] = static_cast<float>(p_comp[i]);
            }
          }
          comps[c]->observe(t, observed, kept);
        }
      }
      const auto steps = static_cast<double>(options.steps);
      for (std::size_t c = 0; c < configs.size(); ++c) {
        for (int g = 0; g < G; ++g) {
          const auto gi = static_cast<std::size_t>(g);
          const auto& a = acc[c * g_count + gi];
          score_row r;
          r.layer = layer->index;
          r.q_head = kvh * G + g;
          r.kv_head = kvh;
          r.rel_l2 = a.rel_l2 / steps;
          r.rel_l2_max = a.rel_l2_max;
          r.cosine = a.cosine / steps;
          r.recall = a.recall / steps;
          r.kv_bytes = a.kv_bytes / steps;
          r.full_kv_bytes = a.full_kv_bytes / steps;
          r.recorded_rel_l2 = rec_steps > 0 ? rec_sum[gi] / static_cast<double>(rec_steps)
                                            : std::numeric_limits<double>::quiet_NaN();
          r.steps = options.steps;
          results[c].heads.push_back(r);
        }
      }
    }
  }
  return results;
}

}  // namespace kvcache::quality
