// The GPU selection path against its host twins: select_top_k_cuda vs select_top_k_host on random
// scores (few distinct values: many ties, +inf, +0 and -0, protected recent rows, budgets 0..rows+,
// strided and padded tables, one table of 100k rows), retain_attention_mass_cuda vs the host, and
// compact_kv_segments_cuda vs compact_kv_host (per_head / per_layer / span_layers, both orders,
// dtypes of 2 and 4 bytes, try_compact's moves without sharing), outputs poisoned first.
#include <cuda_runtime_api.h>

#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kvcache/memory/buffer.hpp"
#include "kvcache/memory/copy.hpp"
#include "kvcache/memory/stream.hpp"
#include "kvcache/paging/paged_kv_store.hpp"
#include "kvcache/select/attention_mass.hpp"
#include "kvcache/select/compact_segments.hpp"
#include "kvcache/select/top_k.hpp"
#include "support/catch.hpp"

using namespace kvcache;

namespace {

template <class T>
buffer<T, cuda_space> upload(const std::vector<T>& v, stream& s) {
  buffer<T, cuda_space> d(v.size());
  copy(d.view(), buffer_view<const T, host_space>(v.data(), v.size()), s.view());
  return d;
}
template <class T>
std::vector<T> download(const buffer<T, cuda_space>& d, stream& s) {
  std::vector<T> v(d.size());
  copy(buffer_view<T, host_space>(v.data(), v.size()), d.view(), s.view());
  synchronize(s.view());
  return v;
}

float random_score(std::mt19937_64& rng, int levels) {
  const int r = std::uniform_int_distribution<int>(0, levels + 2)(rng);
  if (r == levels) return std::numeric_limits<float>::infinity();
  if (r == levels + 1) return -0.0f;
  if (r == levels + 2) return 0.0f;
  // mixed signs and magnitudes, few distinct values
  return (r % 2 ? -1.0f : 1.0f) * std::ldexp(1.0f + static_cast<float>(r % 7) / 8.0f, r % 13 - 6);
}

}  // namespace

TEST_CASE("select_top_k_cuda equals select_top_k_host", "[select][gpu]") {
  std::mt19937_64 rng(kvtest::seed());
  stream s;
  for (int round = 0; round < 6; ++round) {
    const int tables = round == 5 ? 3 : std::uniform_int_distribution<int>(1, 300)(rng);
    std::vector<top_k_segment> seg(static_cast<std::size_t>(tables));
    std::int64_t score_end = 0, keep_end = 0;
    for (auto& g : seg) {
      const std::int64_t rows = round == 5 ? 100000 : std::uniform_int_distribution<std::int64_t>(0, 9000)(rng);
      g.scores = score_end + std::uniform_int_distribution<std::int64_t>(0, 5)(rng);  // padding
      g.rows = rows;
      const int kind = std::uniform_int_distribution<int>(0, 5)(rng);
      g.budget = kind == 0 ? 0 : kind == 1 ? rows + 3 : std::uniform_int_distribution<std::int64_t>(0, rows)(rng);
      g.protect_recent = kind == 2 ? std::uniform_int_distribution<std::int64_t>(0, rows + 1)(rng) : 0;
      g.keep = keep_end;
      score_end = g.scores + rows;
      keep_end += kept_rows(g) + 1;  // a gap that must stay poisoned
    }
    std::vector<float> sc(static_cast<std::size_t>(score_end));
    const int levels = round % 2 == 0 ? 4 : 4000;
    for (auto& x : sc) x = random_score(rng, levels);
    std::vector<std::int64_t> want(static_cast<std::size_t>(keep_end), -7);
    select_top_k_host(sc.data(), seg.data(), tables, want.data());
    auto dsc = upload(sc, s);
    auto dseg = upload(seg, s);
    auto dkeep = upload(std::vector<std::int64_t>(static_cast<std::size_t>(keep_end), -7), s);
    select_top_k_cuda(dsc.data(), dseg.data(), tables, dkeep.data(), s.view());
    const auto got = download(dkeep, s);
    INFO("round " << round << ", " << tables << " tables, " << levels << " levels");
    REQUIRE(got == want);
    // host-readable segments are checked
    if (round == 0) {
      std::vector<top_k_segment> bad = seg;
      bad[0].rows = -2;
      KVTEST_REQUIRE_ERROR(select_top_k_cuda(dsc.data(), bad.data(), tables, dkeep.data(), s.view()),
                           errc::invalid_argument, "segment 0");
    }
    // retain on the device equals the host
    std::vector<float> mass(sc.size());
    for (std::size_t i = 0; i < mass.size(); ++i) mass[i] = static_cast<float>(i % 1000) + 0.5f;
    auto dmass = upload(mass, s);
    retain_attention_mass_cuda(dmass.data(), dseg.data(), tables, dkeep.data(), s.view());
    retain_attention_mass_host(mass.data(), seg.data(), tables, want.data());
    REQUIRE(download(dmass, s) == mass);
  }
}

namespace {

template <class Geometry>
void compact_case(kv_order order, dtype type, std::int32_t head_dim, std::uint64_t seed) {
  store_config cfg;
  cfg.layout = kv_layout{.layers = 3, .kv_heads = 2, .q_heads = 4, .head_dim = head_dim,
                         .page_size = 16, .order = order, .type = type};
  const std::int32_t T = Geometry::tables_per_sequence(cfg.layout);
  cfg.num_pages = 80 * T;
  cfg.max_sequences = 4;
  paged_kv_store<host_space, Geometry> store(cfg);
  std::mt19937_64 rng(seed);
  const paged_kv_view v = store.pool().copy_view();
  const auto bytes = static_cast<std::size_t>(2 * (v.layer_stride_bytes != 0 ? v.layers : 1) *
                                              v.num_pages * v.page_bytes);
  for (std::size_t i = 0; i < bytes; ++i) v.data[i] = static_cast<std::byte>(rng());
  std::vector<seq_id> ids;
  for (int q = 0; q < 3; ++q) {
    ids.push_back(store.create());
    REQUIRE(store.try_append(ids.back(), 200 + 150 * q));
  }
  std::vector<slot_move> moves;
  std::vector<std::int64_t> off{0}, keep;
  for (const seq_id id : ids) {
    for (std::int32_t t = 0; t < T; ++t) {
      keep.clear();
      const int every = std::uniform_int_distribution<int>(1, 6)(rng);
      for (std::int64_t i = 0; i < store.table_tokens(id, t); ++i)
        if (std::uniform_int_distribution<int>(0, every)(rng) == 0) keep.push_back(i);
      REQUIRE(store.try_compact(id, t, keep, moves));
      off.push_back(static_cast<std::int64_t>(moves.size()));
    }
  }
  const auto segments = static_cast<std::int32_t>(off.size() - 1);
  REQUIRE(compact_segments_independent(moves.data(), off.data(), segments));
  stream s;
  buffer<std::byte, cuda_space> dpool(bytes);
  copy(dpool.view(), buffer_view<const std::byte, host_space>(v.data, bytes), s.view());
  auto dmoves = upload(moves, s);
  auto doff = upload(off, s);
  paged_kv_view dv = v;
  dv.data = dpool.data();
  const auto n = static_cast<std::int64_t>(moves.size());
  compact_kv_segments_cuda(dv, dmoves.data(), n, doff.data(), segments, s.view());
  // host-readable moves and offsets take the checked path
  compact_kv_host(v, moves.data(), n);
  std::vector<std::byte> back(bytes);
  copy(buffer_view<std::byte, host_space>(back.data(), bytes), dpool.view(), s.view());
  synchronize(s.view());
  REQUIRE(std::memcmp(back.data(), v.data, bytes) == 0);
  std::vector<std::int64_t> bad_off = off;
  bad_off.back() = n + 1;
  KVTEST_REQUIRE_ERROR(compact_kv_segments_cuda(dv, dmoves.data(), n, bad_off.data(), segments, s.view()),
                       errc::invalid_argument, "segment offsets");
}

}  // namespace

TEST_CASE("compact_kv_segments_cuda equals compact_kv_host", "[select][gpu]") {
  const std::uint64_t seed = kvtest::seed();
  for (const kv_order o : {kv_order::nhd, kv_order::hnd}) {
    for (const std::int32_t d : {128, 64, 3}) {
      compact_case<per_head>(o, dtype::f16, d, seed);
      compact_case<per_layer>(o, dtype::bf16, d, seed + 1);
      compact_case<span_layers>(o, dtype::f32, d, seed + 2);
    }
  }
}
