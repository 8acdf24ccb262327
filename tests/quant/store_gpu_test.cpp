// The quantized store on the GPU (cuda_space: the CUDA kernels do its data work) against the same
// store on the host, driven by the same random appends, forks, truncations and releases: every
// read must be byte-identical. Both pools start poisoned (0xFF bytes: NaN in f16), so a row the
// device path forgets to write shows up.
#include <cstdint>
#include <map>
#include <random>
#include <tuple>
#include <vector>

#include "kvcache/memory/buffer.hpp"
#include "kvcache/memory/copy.hpp"
#include "kvcache/memory/stream.hpp"
#include "kvcache/quant/quantized_kv_store.hpp"
#include "quant/quant_support.hpp"
#include "support/catch.hpp"

namespace {

using namespace kvcache;

template <class Q, class G>
struct config {
  using quantizer = Q;
  using geometry = G;
};
using gpu_configs =
    std::tuple<config<kivi2, span_layers>, config<kivi4, per_head>, config<int8_quantizer, span_layers>,
               config<fp8_e4m3_quantizer, per_layer>, config<kivi2_token_keys, per_layer>,
               config<identity_quantizer, span_layers>>;

constexpr std::int32_t kLayers = 2, kHeads = 2, kDim = 64, kPage = 32;

template <class Space>
void poison(buffer_view<std::byte, Space> bytes) {
  std::vector<std::byte> ff(bytes.size(), std::byte{0xFF});
  copy(bytes, buffer_view<const std::byte, host_space>(ff.data(), ff.size()));
  synchronize(stream_view{});
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("quantized store on the GPU equals the host store", "[quant][store][gpu]",
                        gpu_configs) {
  using Q = typename TestType::quantizer;
  using G = typename TestType::geometry;
  quantized_store_config cfg;
  cfg.layout = kv_layout{.layers = kLayers, .kv_heads = kHeads, .q_heads = kHeads, .head_dim = kDim,
                         .page_size = kPage, .order = kv_order::nhd, .type = dtype::f16};
  cfg.num_pages = 96 * (std::is_same_v<G, span_layers> ? 1 : G::tables_per_sequence(cfg.layout));
  cfg.max_sequences = 6;
  cfg.staging_pages = 4 * G::tables_per_sequence(cfg.layout);
  quantized_kv_store<host_space, G, Q> host(cfg);
  quantized_kv_store<cuda_space, G, Q> dev(cfg);
  poison(host.pool().bytes());
  poison(dev.pool().bytes());
  if (host.staging_pool() != nullptr) {
    poison(host.staging_pool()->bytes());
    poison(dev.staging_pool()->bytes());
  }
  std::mt19937_64 rng(kvtest::seed());
  std::map<std::uint32_t, std::pair<seq_id, seq_id>> live;  // host id, device id
  const std::int64_t sizes[] = {1, 1, 1, 2, 31, 64, 127, 128, 129, 300};
  std::int64_t compared = 0;

  auto compare = [&](seq_id h, seq_id d) {
    const std::int64_t len = host.length(h);
    REQUIRE(dev.length(d) == len);
    const auto n = static_cast<std::size_t>(kLayers * kHeads * len * kDim);
    if (n == 0) return;
    std::vector<std::uint16_t> hk(n), hv(n), dk(n, 0x7777), dv(n, 0x7777);
    host.read(h, hk.data(), hv.data());
    buffer<std::uint16_t, cuda_space> bk(n), bv(n);
    dev.read(d, bk.data(), bv.data());
    copy(buffer_view<std::uint16_t, host_space>(dk.data(), n), bk.view());
    copy(buffer_view<std::uint16_t, host_space>(dv.data(), n), bv.view());
    synchronize(stream_view{});
    for (std::size_t i = 0; i < n; ++i) {
      if (hk[i] != dk[i] || hv[i] != dv[i]) {
        FAIL(Q::name << " / " << G::name << ": element " << i << " of " << n << ": host K "
                     << hk[i] << " V " << hv[i] << ", device K " << dk[i] << " V " << dv[i]);
      }
    }
    compared += static_cast<std::int64_t>(n);
  };

  for (int op = 0; op < 160; ++op) {
    const int kind = static_cast<int>(rng() % 10);
    if (live.empty() || (kind == 0 && live.size() < 4)) {
      const seq_id h = host.create(), d = dev.create();
      live[h.index] = {h, d};
      continue;
    }
    auto it = live.begin();
    std::advance(it, static_cast<long>(rng() % live.size()));
    const auto [h, d] = it->second;
    if (kind <= 5) {
      const std::int64_t n = sizes[rng() % std::size(sizes)];
      std::vector<std::uint16_t> k, v;
      for (int lh = 0; lh < kLayers * kHeads; ++lh) {
        const auto a = kvtest::random_rows(rng, static_cast<std::int32_t>(n), kDim);
        const auto b = kvtest::random_rows(rng, static_cast<std::int32_t>(n), kDim, 0.1f);
        k.insert(k.end(), a.begin(), a.end());
        v.insert(v.end(), b.begin(), b.end());
      }
      buffer<std::uint16_t, cuda_space> dk(k.size()), dv(v.size());
      copy(dk.view(), buffer_view<const std::uint16_t, host_space>(k.data(), k.size()));
      copy(dv.view(), buffer_view<const std::uint16_t, host_space>(v.data(), v.size()));
      synchronize(stream_view{});
      const auto rh = host.try_append(h, n, k.data(), v.data());
      const auto rd = dev.try_append(d, n, dk.data(), dv.data());
      REQUIRE(rh.has_value() == rd.has_value());
    } else if (kind == 6 && live.size() < 4) {
      const seq_id ch = host.fork(h), cd = dev.fork(d);
      live[ch.index] = {ch, cd};
    } else if (kind == 7) {
      const std::int64_t len = host.length(h);
      const std::int64_t cut = rng() % 3 == 0 ? static_cast<std::int64_t>(rng() % (len + 1))
                                              : std::max<std::int64_t>(0, len - static_cast<std::int64_t>(rng() % 8));
      bool host_ok = true, dev_ok = true;
      try { host.truncate(h, cut); } catch (const kvcache::error&) { host_ok = false; }
      try { dev.truncate(d, cut); } catch (const kvcache::error&) { dev_ok = false; }
      REQUIRE(host_ok == dev_ok);
    } else if (kind == 8) {
      host.release(h);
      dev.release(d);
      live.erase(it);
      continue;
    }
    dev.check_invariants();
    compare(h, d);
  }
  for (auto& [i, p] : live) compare(p.first, p.second);
  WARN(Q::name << " / " << G::name << ": " << compared << " elements compared, GPU == host");
  CHECK(compared > 0);
}
