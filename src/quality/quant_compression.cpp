// Quantizers for the quality harness: "quant:NAME" (NAME from quant/quantizers.hpp: int8, fp8,
// kivi2, kivi4, kivi2_token_keys, kivi4_token_keys, none).
//
// What the compressed cache holds at a decode step, exactly as quantized_kv_store keeps it: of
// the L = t + 1 cached tokens, the first q are quantized (q = L rounded down to the residual
// window for KIVI, q = L without a window), the rest are f16. A token is quantized with the window
// it was flushed in (windows start at multiples of `residual`, so its groups do not depend on the
// step), through the quantizer's own host functions on f16 rows (the trace's f32 rows rounded to
// f16 first). Bytes: `Q::kv_bytes_per_token(layout, L) * L` for one (layer, kv head) at page
// size 32, metadata and the f16 residual included.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvcache/core/error.hpp"
#include "kvcache/core/numeric.hpp"
#include "kvcache/quant/quantizers.hpp"
#include "registry.hpp"

namespace kvcache::quality::detail {

namespace {

constexpr std::int32_t kHarnessPage = 32;

template <class Q>
class quant_head final : public head_compressor {
 public:
  explicit quant_head(const head_view& h) : dim_(h.head_dim) {
    const auto n = static_cast<std::size_t>(h.tokens) * static_cast<std::size_t>(dim_);
    k_.resize(n);
    v_.resize(n);
    std::vector<std::uint16_t> kr(n), vr(n), out(n);
    for (std::size_t i = 0; i < n; ++i) {
      kr[i] = to_float16(h.keys[i]).bits;
      vr[i] = to_float16(h.values[i]).bits;
    }
    // f16 everywhere first, then the quantized windows on top
    for (std::size_t i = 0; i < n; ++i) {
      k_[i] = to_float(float16{kr[i]});
      v_[i] = to_float(float16{vr[i]});
    }
    const std::int64_t win = Q::residual > 0 ? Q::residual : 1;
    const std::int64_t windows = h.tokens / win;
    const auto quantized = static_cast<std::int32_t>(windows * win);
    if (quantized == 0) return;
    // every window quantized on its own (page of `win` tokens), as the store flushes them
    std::vector<std::byte> page(std::max(Q::key_page_bytes(static_cast<std::int32_t>(win), dim_),
                                         Q::value_page_bytes(static_cast<std::int32_t>(win), dim_)));
    const auto w = static_cast<std::int32_t>(win);
    for (std::int64_t k = 0; k < windows; ++k) {
      const std::size_t off = static_cast<std::size_t>(k * win) * static_cast<std::size_t>(dim_);
      Q::quantize_keys(kr.data() + off, page.data(), w, dim_, 0, w);
      Q::dequantize_keys(page.data(), out.data() + off, w, dim_, 0, w);
      Q::quantize_values(vr.data() + off, page.data(), w, dim_, 0, w);
      for (std::size_t i = off; i < off + static_cast<std::size_t>(w * dim_); ++i) {
        k_[i] = to_float(float16{out[i]});
      }
      Q::dequantize_values(page.data(), out.data() + off, w, dim_, 0, w);
      for (std::size_t i = off; i < off + static_cast<std::size_t>(w * dim_); ++i) {
        v_[i] = to_float(float16{out[i]});
      }
    }
    // rows of quantized positions: k_/v_ hold their dequantized values; the f16 rows of the same
    // positions (used while they are still in the window) are kept apart
    kf_.resize(static_cast<std::size_t>(quantized) * static_cast<std::size_t>(dim_));
    vf_.resize(kf_.size());
    for (std::size_t i = 0; i < kf_.size(); ++i) {
      kf_[i] = to_float(float16{kr[i]});
      vf_[i] = to_float(float16{vr[i]});
    }
    quantized_ = quantized;
  }

  void step(std::int64_t t, kept_cache& out) override {
    const std::int64_t len = t + 1;
    const std::int64_t q = Q::residual > 0 ? len / Q::residual * Q::residual : len;
    const auto d = static_cast<std::size_t>(dim_);
    out.tokens.resize(static_cast<std::size_t>(len));
    for (std::int64_t i = 0; i < len; ++i) out.tokens[static_cast<std::size_t>(i)] = i;
    out.keys.assign(k_.begin(), k_.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(len) * d));
    out.values.assign(v_.begin(), v_.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(len) * d));
    // positions [q, min(len, quantized_)) are still in the f16 window at this step
    for (std::int64_t i = q; i < std::min<std::int64_t>(len, quantized_); ++i) {
      const std::size_t o = static_cast<std::size_t>(i) * d;
      std::copy_n(kf_.begin() + static_cast<std::ptrdiff_t>(o), d, out.keys.begin() + static_cast<std::ptrdiff_t>(o));
      std::copy_n(vf_.begin() + static_cast<std::ptrdiff_t>(o), d, out.values.begin() + static_cast<std::ptrdiff_t>(o));
    }
    const kv_layout one{.layers = 1, .kv_heads = 1, .q_heads = 1, .head_dim = dim_,
                        .page_size = kHarnessPage, .order = kv_order::nhd, .type = dtype::f16};
    out.bytes = Q::kv_bytes_per_token(one, len) * static_cast<double>(len);
  }

 private:
  std::int32_t dim_;
  std::int64_t quantized_ = 0;
  std::vector<float> k_, v_, kf_, vf_;
};

template <class Q>
class quant_compression final : public compression {
 public:
  explicit quant_compression(std::string spec) : spec_(std::move(spec)) {}
  [[nodiscard]] std::string name() const override { return spec_; }
  [[nodiscard]] std::unique_ptr<head_compressor> start(const head_view& head,
                                                       std::int64_t) const override {
    try {
      Q::validate(kHarnessPage, head.head_dim);
      return std::make_unique<quant_head<Q>>(head);
    } catch (const error& e) {
      throw error(e.code(), fmt::format("'{}' on layer {}, kv head {} (head_dim {}): {}", spec_,
                                        head.layer, head.kv_head, head.head_dim, e.what()));
    }
  }

 private:
  std::string spec_;
};

}  // namespace

void register_quant_compressions(registry_table& table) {
  table["quant"] = [](std::span<const std::string_view> args) -> std::unique_ptr<compression> {
    KVCACHE_EXPECTS(args.size() == 1, errc::invalid_argument,
                    "'quant' takes one argument, the quantizer (quant:kivi2; one of none, int8, "
                    "fp8, kivi2, kivi4, kivi2_token_keys, kivi4_token_keys), got {}",
                    args.size());
    const std::string spec = fmt::format("quant:{}", args[0]);
    return visit_quantizer(args[0], [&](auto tag) -> std::unique_ptr<compression> {
      return std::make_unique<quant_compression<typename decltype(tag)::type>>(spec);
    });
  };
}

}  // namespace kvcache::quality::detail
