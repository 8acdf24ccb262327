// Token selection policies and budgets for the quality harness (registered by
// make_compression's table). Spec grammar: [pyramid-|adakv-]POLICY:RATIO, POLICY one of
// streaming, h2o, snapkv, scissorhands, tova, knorm; RATIO the keep ratio in (0, 1].
//
// Replay protocol (docs/selection.md): positions [0, first_step) are the prompt. At start each
// simulated head's policy gets the prompt (with key norms) and, at prefill, the attention of
// the last prefill_queries() prompt queries the trace has (the fixture records queries only for
// its last 256 positions, so with the default 64 steps at most 192 prompt queries exist; SnapKV
// uses its 32, Scissorhands its history, TOVA 1, H2O all 192). At step t the token t is
// appended, the budget is computed (per head: ceil(RATIO (t + 1)); pyramid: PyramidKV's layer
// schedule over the model's layers of that mean; adakv: the layer's kv heads share
// heads x that, by AdaKV), each head selects and evicts (evicted tokens never return), and the
// head's held tokens are the kept cache. observe(t) feeds the step's attention back. AdaKV
// couples the heads of a layer, so its compressor simulates every kv head of the layer (their
// keys and queries read from the trace) and returns its own head's tokens.
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "kvcache/core/error.hpp"
#include "kvcache/quality/trace.hpp"
#include "kvcache/select/budget.hpp"
#include "kvcache/select/h2o.hpp"
#include "kvcache/select/key_norm.hpp"
#include "kvcache/select/scissorhands.hpp"
#include "kvcache/select/snapkv.hpp"
#include "kvcache/select/streaming_llm.hpp"
#include "kvcache/select/tova.hpp"
#include "registry.hpp"

namespace kvcache::quality::detail {

namespace {

enum class budget_kind { uniform, pyramid, adaptive };

/// One simulated kv head: its keys [T, D] and the group's queries [T - q_first, G, D].
struct head_data {
  std::span<const float> keys;
  std::span<const float> queries;
  std::vector<float> own_keys, own_queries;  // storage for heads read from the trace
};

template <selection_policy P>
class selection_compressor final : public head_compressor {
 public:
  selection_compressor(const head_view& view, std::int64_t first_step, double ratio,
                       budget_kind kind)
      : ratio_(ratio),
        kind_(kind),
        layer_(view.layer),
        num_layers_(view.num_layers),
        G_(view.group_size),
        D_(view.head_dim),
        T_(view.tokens),
        q_first_(view.q_first),
        scale_(1.0 / std::sqrt(static_cast<double>(view.head_dim))) {
    if (kind == budget_kind::pyramid) {
      KVCACHE_EXPECTS(num_layers_ > layer_, errc::invalid_argument,
                      "pyramid budgets need the model's layer count (head_view::num_layers = {}, "
                      "layer {})",
                      num_layers_, layer_);
    }
    if (kind == budget_kind::adaptive) {
      KVCACHE_EXPECTS(view.source != nullptr, errc::invalid_argument,
                      "adakv budgets need the trace (head_view::source) to see the layer's heads");
      const trace& tr = *view.source;
      const trace_layer& l = tr.layer(view.layer);
      heads_.resize(static_cast<std::size_t>(tr.kv_heads()));
      for (int h = 0; h < tr.kv_heads(); ++h) {
        auto& hd = heads_[static_cast<std::size_t>(h)];
        if (h == view.kv_head) {
          hd.keys = view.keys;
          hd.queries = view.queries;
          continue;
        }
        hd.own_keys.resize(static_cast<std::size_t>(T_ * D_));
        for (std::int64_t p = 0; p < T_; ++p) {
          std::ranges::copy(tr.key(l, p, h), hd.own_keys.begin() + p * D_);
        }
        hd.own_queries.resize(static_cast<std::size_t>((T_ - q_first_) * G_ * D_));
        for (std::int64_t p = q_first_; p < T_; ++p) {
          for (int g = 0; g < G_; ++g) {
            std::ranges::copy(tr.query(l, p, h * G_ + g),
                              hd.own_queries.begin() + ((p - q_first_) * G_ + g) * D_);
          }
        }
        hd.keys = hd.own_keys;
        hd.queries = hd.own_queries;
      }
      own_ = static_cast<std::size_t>(view.kv_head);
    } else {
      heads_.resize(1);
      heads_[0].keys = view.keys;
      heads_[0].queries = view.queries;
      own_ = 0;
    }
    policies_.resize(heads_.size());
    adaptive_.reserve(T_ * static_cast<std::int64_t>(heads_.size()));
    for (std::size_t h = 0; h < heads_.size(); ++h) prefill(h, first_step);
    budgets_.resize(heads_.size());
    if (kind == budget_kind::pyramid) layer_budgets_.resize(static_cast<std::size_t>(num_layers_));
  }

  void step(std::int64_t t, kept_cache& out) override {
    for (std::size_t h = 0; h < heads_.size(); ++h) {
      const float norm = key_norm_at(h, t);
      policies_[h].append(1, std::span<const float>(&norm, 1));
    }
    const std::int64_t per_head = budget_of(ratio_, t + 1);
    switch (kind_) {
      case budget_kind::uniform:
        budgets_.assign(heads_.size(), per_head);
        break;
      case budget_kind::pyramid:
        pyramid_.layer_budgets(per_head * num_layers_, t + 1, layer_budgets_);
        budgets_.assign(heads_.size(), layer_budgets_[static_cast<std::size_t>(layer_)]);
        break;
      case budget_kind::adaptive:
        head_budgets_of(adaptive_, std::span<P>(policies_),
                        per_head * static_cast<std::int64_t>(heads_.size()), budgets_, sizes_,
                        scores_);
        break;
    }
    for (std::size_t h = 0; h < heads_.size(); ++h) {
      auto& p = policies_[h];
      keep_.resize(static_cast<std::size_t>(p.size()));
      // Never an empty cache: the harness needs one token to attend to.
      const std::int64_t k = p.select(std::max<std::int64_t>(1, budgets_[h]), keep_);
      p.retain(std::span<const std::int64_t>(keep_).first(static_cast<std::size_t>(k)));
    }
    const auto pos = policies_[own_].positions();
    out.tokens.assign(pos.begin(), pos.end());
  }

  void observe(std::int64_t t, std::span<const float> probs, const kept_cache& kept) override {
    (void)kept;  // in the order of positions(), as step returned them
    for (std::size_t h = 0; h < heads_.size(); ++h) {
      if (h == own_) {
        policies_[h].observe(probs, G_);
        continue;
      }
      const auto pos = policies_[h].positions();
      probs_.resize(static_cast<std::size_t>(G_) * pos.size());
      for (int g = 0; g < G_; ++g) {
        attend(h, t, g, pos, std::span<float>(probs_).subspan(static_cast<std::size_t>(g) * pos.size(), pos.size()));
      }
      policies_[h].observe(probs_, G_);
    }
  }

 private:
  float key_norm_at(std::size_t h, std::int64_t p) const {
    double s = 0;
    for (int c = 0; c < D_; ++c) {
      const double x = heads_[h].keys[static_cast<std::size_t>(p * D_ + c)];
      s += x * x;
    }
    return static_cast<float>(std::sqrt(s));
  }
  /// Softmax of query (t, g) of head h over the keys at `pos` (all <= t), into `out`.
  void attend(std::size_t h, std::int64_t t, int g, std::span<const std::int64_t> pos,
              std::span<float> out) {
    const float* q = heads_[h].queries.data() + ((t - q_first_) * G_ + g) * D_;
    logits_.resize(pos.size());
    double m = -std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i < pos.size(); ++i) {
      const float* k = heads_[h].keys.data() + pos[i] * D_;
      double s = 0;
      for (int c = 0; c < D_; ++c) s += static_cast<double>(q[c]) * static_cast<double>(k[c]);
      logits_[i] = s * scale_;
      m = std::max(m, logits_[i]);
    }
    double z = 0;
    for (auto& l : logits_) {
      l = std::exp(l - m);
      z += l;
    }
    for (std::size_t i = 0; i < pos.size(); ++i) out[i] = static_cast<float>(logits_[i] / z);
  }
  /// The prompt [0, first_step) and the attention of its last recorded queries.
  void prefill(std::size_t h, std::int64_t first_step) {
    P& p = policies_[h];
    p.reset(T_);
    norms_.resize(static_cast<std::size_t>(first_step));
    for (std::int64_t i = 0; i < first_step; ++i) norms_[static_cast<std::size_t>(i)] = key_norm_at(h, i);
    p.append(first_step, norms_);
    const std::int64_t available = std::max<std::int64_t>(0, first_step - q_first_);
    const std::int64_t nq = std::min(p.prefill_queries(), available);
    if (nq == 0) return;
    const auto pos = p.positions();
    const auto n = static_cast<std::size_t>(first_step);
    probs_.assign(static_cast<std::size_t>(nq * G_) * n, 0.0f);
    for (std::int64_t q = 0; q < nq; ++q) {
      const std::int64_t at = first_step - nq + q;  // the query's position; causal
      for (int g = 0; g < G_; ++g) {
        attend(h, at, g, pos.first(static_cast<std::size_t>(at + 1)),
               std::span<float>(probs_).subspan(static_cast<std::size_t>(q * G_ + g) * n,
                                                static_cast<std::size_t>(at + 1)));
      }
    }
    p.observe_prefill(probs_, static_cast<std::int32_t>(nq), G_);
  }

  double ratio_;
  budget_kind kind_;
  int layer_, num_layers_, G_, D_;
  std::int64_t T_, q_first_;
  double scale_;
  std::vector<head_data> heads_;
  std::size_t own_ = 0;
  std::vector<P> policies_;
  pyramid_budget pyramid_;
  adaptive_heads adaptive_;
  std::vector<std::int64_t> budgets_, layer_budgets_, sizes_, keep_;
  std::vector<float> scores_, probs_, norms_;
  std::vector<double> logits_;
};

template <selection_policy P>
class selection_config final : public compression {
 public:
  selection_config(std::string name, double ratio, budget_kind kind)
      : name_(std::move(name)), ratio_(ratio), kind_(kind) {}
  [[nodiscard]] std::string name() const override { return name_; }
  [[nodiscard]] std::unique_ptr<head_compressor> start(const head_view& head,
                                                       std::int64_t first_step) const override {
    return std::make_unique<selection_compressor<P>>(head, first_step, ratio_, kind_);
  }

 private:
  std::string name_;
  double ratio_;
  budget_kind kind_;
};

template <selection_policy P>
void add(registry_table& table, const std::string& policy) {
  const std::pair<const char*, budget_kind> budgets[] = {
      {"", budget_kind::uniform}, {"pyramid-", budget_kind::pyramid}, {"adakv-", budget_kind::adaptive}};
  for (const auto& [prefix, kind] : budgets) {
    const std::string name = prefix + policy;
    table[name] = [name, kind](std::span<const std::string_view> args) -> std::unique_ptr<compression> {
      KVCACHE_EXPECTS(args.size() == 1, errc::invalid_argument,
                      "'{}' takes one argument, the keep ratio ({}:0.25), got {}", name, name,
                      args.size());
      const double ratio = parse_ratio(args[0], name);
      return std::make_unique<selection_config<P>>(fmt::format("{}:{:g}", name, ratio), ratio, kind);
    };
  }
}

}  // namespace

void register_selection_compressions(registry_table& table) {
  add<streaming_llm>(table, "streaming");
  add<h2o>(table, "h2o");
  add<snapkv>(table, "snapkv");
  add<scissorhands>(table, "scissorhands");
  add<tova>(table, "tova");
  add<key_norm>(table, "knorm");
}

}  // namespace kvcache::quality::detail
