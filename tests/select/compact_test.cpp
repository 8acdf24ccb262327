// Dense compaction: after random appends, forks, evictions (try_compact + compact_kv_host) and
// releases, every kept row's K and V are bit-identical to what was written, evicted rows are
// gone, each table holds ceil(rows / page_size) pages and the pages freed are the pages no longer
// needed; and a 32k-token sequence with head-wise budgets at a 20% keep ratio really shrinks.
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kvcache/paging/paged_kv_store.hpp"
#include "kvcache/select/budget.hpp"
#include "kvcache/select/h2o.hpp"
#include "support/catch.hpp"

using namespace kvcache;

namespace {

/// The 16-bit pattern of K (kv = 0) or V (kv = 1) of token `tag` in table t, array a, head h,
/// channel c.
std::uint16_t pattern(std::uint64_t tag, std::int32_t t, std::int32_t a, std::int32_t h,
                      std::int32_t c, int kv) {
  std::uint64_t x = tag * 0x9E3779B97F4A7C15ull ^ (static_cast<std::uint64_t>(t) << 40) ^
                    (static_cast<std::uint64_t>(a) << 32) ^ (static_cast<std::uint64_t>(h) << 24) ^
                    (static_cast<std::uint64_t>(c) << 8) ^ static_cast<std::uint64_t>(kv);
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 32;
  return static_cast<std::uint16_t>(x);
}

template <class Geometry>
struct harness {
  using store_t = paged_kv_store<host_space, Geometry>;
  store_t store;
  std::int32_t T;
  struct seq {
    seq_id id;
    std::vector<std::vector<std::uint64_t>> rows;  // [table] tags of the rows held
    std::vector<std::int64_t> compacted_at = {};   // [table] sequence length at its last compaction
  };
  std::vector<seq> live;
  std::uint64_t next_tag = 1;
  std::vector<std::int64_t> slots;
  std::vector<slot_move> moves;

  explicit harness(const store_config& c) : store(c), T(Geometry::tables_per_sequence(c.layout)) {}

  std::int32_t arrays() {
    return store.pool().copy_view().layer_stride_bytes != 0 ? store.layout().layers : 1;
  }
  std::uint16_t* row(std::int64_t slot, std::int32_t a, std::int32_t h, int kv) {
    const paged_kv_view v = store.pool().copy_view();
    const auto page = static_cast<std::int32_t>(slot / v.page_size);
    const auto tok = static_cast<std::int32_t>(slot % v.page_size);
    return reinterpret_cast<std::uint16_t*>(v.data + v.k_row_offset(a, page, tok, h) +
                                            (kv ? v.v_offset_bytes : 0));
  }
  void write(std::int64_t slot, std::int32_t t, std::uint64_t tag) {
    const paged_kv_view v = store.pool().copy_view();
    for (std::int32_t a = 0; a < arrays(); ++a)
      for (std::int32_t h = 0; h < v.heads_per_page; ++h)
        for (int kv = 0; kv < 2; ++kv) {
          std::uint16_t* r = row(slot, a, h, kv);
          for (std::int32_t c = 0; c < v.head_dim; ++c) r[c] = pattern(tag, t, a, h, c, kv);
        }
  }
  bool append(seq& s, std::int64_t n) {
    slots.assign(static_cast<std::size_t>(n * T), 0);
    if (!store.try_append(s.id, n, slots)) return false;
    store.apply_pending_copies();
    for (std::int32_t t = 0; t < T; ++t)
      for (std::int64_t i = 0; i < n; ++i) {
        const std::uint64_t tag = next_tag + static_cast<std::uint64_t>(i);
        write(slots[static_cast<std::size_t>(t * n + i)], t, tag);
        s.rows[static_cast<std::size_t>(t)].push_back(tag);
      }
    next_tag += static_cast<std::uint64_t>(n);
    return true;
  }
  void verify() {
    store.check_invariants();
    const paged_kv_view v = store.pool().copy_view();
    for (auto& s : live) {
      for (std::int32_t t = 0; t < T; ++t) {
        const auto& rows = s.rows[static_cast<std::size_t>(t)];
        REQUIRE(store.table_tokens(s.id, t) == static_cast<std::int64_t>(rows.size()));
        REQUIRE(store.table_pages(s.id, t) ==
                (static_cast<std::int64_t>(rows.size()) + v.page_size - 1) / v.page_size);
        slots.assign(rows.size(), 0);
        store.slots(s.id, t, 0, static_cast<std::int64_t>(rows.size()), slots);
        for (std::size_t i = 0; i < rows.size(); ++i)
          for (std::int32_t a = 0; a < arrays(); ++a)
            for (std::int32_t h = 0; h < v.heads_per_page; ++h)
              for (int kv = 0; kv < 2; ++kv) {
                const std::uint16_t* r = row(slots[i], a, h, kv);
                for (std::int32_t c = 0; c < v.head_dim; ++c) {
                  if (r[c] != pattern(rows[i], t, a, h, c, kv)) {
                    FAIL("table " << t << " row " << i << " tag " << rows[i] << " array " << a
                                  << " head " << h << " kv " << kv << " channel " << c);
                  }
                }
              }
      }
    }
  }
};

template <class Geometry>
void run_random(std::uint64_t seed, std::int64_t ops) {
  store_config cfg;
  cfg.layout = kv_layout{.layers = 2, .kv_heads = 2, .q_heads = 4, .head_dim = 4,
                         .page_size = 4, .order = kv_order::nhd, .type = dtype::f16};
  const std::int32_t T = Geometry::tables_per_sequence(cfg.layout);
  cfg.num_pages = 96 * T;
  cfg.max_sequences = 12;
  harness<Geometry> H(cfg);
  std::mt19937_64 rng(seed);
  auto ival = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  std::int64_t compactions = 0, cow_pages = 0, freed_checked = 0;
  std::vector<std::int64_t> keep;
  for (std::int64_t op = 0; op < ops; ++op) {
    const auto r = ival(0, 99);
    if (H.live.empty() || (r < 10 && H.live.size() < 10)) {
      typename harness<Geometry>::seq s{H.store.create(), {}};
      s.rows.resize(static_cast<std::size_t>(T));
      s.compacted_at.assign(static_cast<std::size_t>(T), 0);
      H.live.push_back(s);
    } else if (r < 45) {
      auto& s = H.live[static_cast<std::size_t>(ival(0, static_cast<std::int64_t>(H.live.size()) - 1))];
      (void)H.append(s, ival(1, 9));
    } else if (r < 55 && H.live.size() < 10) {
      const auto& p = H.live[static_cast<std::size_t>(ival(0, static_cast<std::int64_t>(H.live.size()) - 1))];
      typename harness<Geometry>::seq c{H.store.fork(p.id), p.rows, p.compacted_at};
      H.live.push_back(c);
    } else if (r < 90) {
      auto& s = H.live[static_cast<std::size_t>(ival(0, static_cast<std::int64_t>(H.live.size()) - 1))];
      const auto t = static_cast<std::int32_t>(ival(0, T - 1));
      auto& rows = s.rows[static_cast<std::size_t>(t)];
      keep.clear();
      const auto mode = ival(0, 3);
      for (std::int64_t i = 0; i < static_cast<std::int64_t>(rows.size()); ++i) {
        // random subsets, and now and then a kept prefix (leading pages stay shared)
        if (mode == 0 ? i < static_cast<std::int64_t>(rows.size()) / 2 : ival(0, 2) > 0) keep.push_back(i);
      }
      // Are all of the table's pages private? Then exactly the pages past the new end are freed.
      bool all_private = true;
      H.store.for_each_page(s.id, t, [&](page_id p) { all_private = all_private && H.store.allocator().ref_count(p) == 1; });
      const std::int32_t pages_before = H.store.table_pages(s.id, t);
      const std::int32_t free_before = H.store.allocator().free_count();
      const std::int64_t cow_before = static_cast<std::int64_t>(H.store.allocator().free_count());
      (void)cow_before;
      H.moves.clear();
      if (!H.store.try_compact(s.id, t, keep, H.moves)) continue;
      compact_kv_host(H.store.pool().copy_view(), H.moves.data(), static_cast<std::int64_t>(H.moves.size()));
      ++compactions;
      const std::int32_t pages_after = H.store.table_pages(s.id, t);
      if (all_private) {
        REQUIRE(H.store.allocator().free_count() - free_before == pages_before - pages_after);
        ++freed_checked;
      } else {
        cow_pages += std::max(0, free_before - H.store.allocator().free_count());
      }
      std::vector<std::uint64_t> kept;
      for (auto i : keep) kept.push_back(rows[static_cast<std::size_t>(i)]);
      rows = kept;
      s.compacted_at[static_cast<std::size_t>(t)] = H.store.length(s.id);
    } else if (r < 97) {
      const auto i = static_cast<std::size_t>(ival(0, static_cast<std::int64_t>(H.live.size()) - 1));
      H.store.release(H.live[i].id);
      H.live.erase(H.live.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      auto& s = H.live[static_cast<std::size_t>(ival(0, static_cast<std::int64_t>(H.live.size()) - 1))];
      // roll back: each table drops the rows of the positions past `to` (its last rows); below
      // a table's last compaction that is refused, with nothing changed
      const std::int64_t len = H.store.length(s.id);
      std::int64_t floor = 0;
      for (auto c : s.compacted_at) floor = std::max(floor, c);
      const auto to = ival(0, len);
      if (to < floor) {
        KVTEST_REQUIRE_ERROR(H.store.truncate(s.id, to), errc::invalid_argument, "was compacted at length");
        REQUIRE(H.store.length(s.id) == len);
      } else {
        H.store.truncate(s.id, to);
        for (auto& rows : s.rows) rows.resize(rows.size() - static_cast<std::size_t>(len - to));
      }
    }
    H.verify();
  }
  INFO("compactions " << compactions);
  CHECK(compactions > ops / 10);
  CHECK(freed_checked > 0);
  for (auto& s : H.live) H.store.release(s.id);
  H.store.check_invariants();
  REQUIRE(H.store.allocator().free_count() == cfg.num_pages);
}

}  // namespace

TEST_CASE("compaction keeps K/V bit-identical through appends, forks, evictions", "[select][compact]") {
  const std::uint64_t seed = kvtest::seed();
  INFO("seed " << seed);
  run_random<span_layers>(seed, 3000);
  run_random<per_layer>(seed + 1, 3000);
  run_random<per_head>(seed + 2, 3000);
}

TEST_CASE("compaction never writes a shared page", "[select][compact]") {
  store_config cfg;
  cfg.layout = kv_layout{.layers = 1, .kv_heads = 1, .q_heads = 1, .head_dim = 4,
                         .page_size = 4, .order = kv_order::nhd, .type = dtype::f16};
  cfg.num_pages = 16;
  cfg.max_sequences = 4;
  harness<span_layers> H(cfg);
  typename harness<span_layers>::seq a{H.store.create(), {{}}};
  H.live.push_back(a);
  REQUIRE(H.append(H.live[0], 12));
  typename harness<span_layers>::seq b{H.store.fork(H.live[0].id), H.live[0].rows};
  H.live.push_back(b);
  // b drops row 1: page 0 changes (copy-on-write), pages 1 and 2 shift (copies too)
  std::vector<std::int64_t> keep{0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  const std::int32_t free_before = H.store.allocator().free_count();
  REQUIRE(H.store.try_compact(H.live[1].id, 0, keep, H.moves));
  compact_kv_host(H.store.pool().copy_view(), H.moves.data(), static_cast<std::int64_t>(H.moves.size()));
  REQUIRE(free_before - H.store.allocator().free_count() == 3);  // three private pages
  REQUIRE(H.moves.size() == 11);
  std::vector<std::uint64_t> kept;
  for (auto i : keep) kept.push_back(H.live[1].rows[0][static_cast<std::size_t>(i)]);
  H.live[1].rows[0] = kept;
  H.verify();  // a's rows untouched
  // keeping a prefix moves nothing and shares the leading pages
  H.moves.clear();
  REQUIRE(H.store.try_compact(H.live[0].id, 0, std::vector<std::int64_t>{0, 1, 2, 3, 4}, H.moves));
  REQUIRE(H.moves.empty());
  H.live[0].rows[0].resize(5);
  H.verify();
  KVTEST_REQUIRE_ERROR((void)H.store.try_compact(H.live[0].id, 0, std::vector<std::int64_t>{2, 1}, H.moves),
                       errc::invalid_argument, "not ascending");
  KVTEST_REQUIRE_ERROR((void)H.store.try_compact(H.live[0].id, 0, std::vector<std::int64_t>{5}, H.moves),
                       errc::invalid_argument, "outside");
}

TEST_CASE("32k tokens, head-wise budgets at 20%: pages really freed", "[select][compact]") {
  // per_head geometry, 8 layers x 4 kv heads (32 tables), 32768 tokens, page size 16; AdaKV
  // budgets over H2O scores from synthetic attention of varied flatness per head.
  store_config cfg;
  cfg.layout = kv_layout{.layers = 8, .kv_heads = 4, .q_heads = 8, .head_dim = 8,
                         .page_size = 16, .order = kv_order::nhd, .type = dtype::f16};
  const std::int64_t n = 32768;
  const std::int32_t T = per_head::tables_per_sequence(cfg.layout);
  const std::int64_t full_pages = T * (n / cfg.layout.page_size);
  cfg.num_pages = static_cast<std::int32_t>(full_pages + 64);
  cfg.max_sequences = 2;
  paged_kv_store<host_space, per_head> store(cfg);
  const seq_id id = store.create();
  REQUIRE(store.try_append(id, n));
  REQUIRE(store.stats().pages_used == full_pages);

  std::mt19937_64 rng(kvtest::seed());
  std::vector<h2o> heads(static_cast<std::size_t>(T));
  std::vector<float> probs(static_cast<std::size_t>(n));
  for (std::int32_t t = 0; t < T; ++t) {
    auto& p = heads[static_cast<std::size_t>(t)];
    p.reset(n);
    p.append(n);
    // head t's attention: exponent t/8 makes some heads peaked, some flat
    const double sharp = 1.0 + static_cast<double>(t % 8);
    std::uniform_real_distribution<double> u(0, 1);
    for (auto& x : probs) x = static_cast<float>(std::pow(u(rng), sharp * 4));
    p.observe(probs, 1);
  }
  adaptive_heads ada;
  ada.reserve(n * cfg.layout.kv_heads);
  uniform_budget layers;
  const std::int64_t total = (n * T) / 5;  // 20%
  std::vector<std::int64_t> layer_b(8), head_b(4), sizes, keep(static_cast<std::size_t>(n));
  std::vector<float> scores;
  layers.layer_budgets(total, n * cfg.layout.kv_heads, layer_b);
  std::vector<slot_move> moves;
  moves.reserve(static_cast<std::size_t>(n));
  std::int64_t kept_total = 0, min_b = n, max_b = 0;
  for (std::int32_t l = 0; l < 8; ++l) {
    std::span<h2o> layer(heads.data() + l * 4, 4);
    head_budgets_of(ada, layer, layer_b[static_cast<std::size_t>(l)], head_b, sizes, scores);
    for (std::int32_t h = 0; h < 4; ++h) {
      auto& p = layer[static_cast<std::size_t>(h)];
      const std::int64_t k = p.select(head_b[static_cast<std::size_t>(h)], keep);
      const std::span<const std::int64_t> kk(keep.data(), static_cast<std::size_t>(k));
      moves.clear();
      REQUIRE(store.try_compact(id, store.table_of(l, h), kk, moves));
      compact_kv_host(store.pool().copy_view(), moves.data(), static_cast<std::int64_t>(moves.size()));
      p.retain(kk);
      kept_total += k;
      min_b = std::min(min_b, k);
      max_b = std::max(max_b, k);
    }
  }
  store.check_invariants();
  REQUIRE(kept_total == total);
  const std::int64_t used = store.stats().pages_used;
  const double fraction = static_cast<double>(used) / static_cast<double>(full_pages);
  const std::int64_t ideal = (total + cfg.layout.page_size - 1) / cfg.layout.page_size;
  std::printf(
      "32k per_head compaction at 20%%: %lld of %lld pages in use (%.4f of uncompressed); dense "
      "minimum %lld + at most %d partial pages; head budgets %lld..%lld tokens\n",
      static_cast<long long>(used), static_cast<long long>(full_pages), fraction,
      static_cast<long long>(ideal), T, static_cast<long long>(min_b), static_cast<long long>(max_b));
  REQUIRE(used <= ideal + T);
  REQUIRE(static_cast<double>(used - T) <= 0.22 * static_cast<double>(full_pages));
  REQUIRE(max_b > min_b);  // head-wise budgets really differ
}

TEST_CASE("positional_rows: the leading rows a prefix index may still take", "[select][compact]") {
  store_config cfg;
  cfg.layout = kv_layout{.layers = 2, .kv_heads = 1, .q_heads = 1, .head_dim = 8, .page_size = 16};
  cfg.num_pages = 64;
  cfg.max_sequences = 4;
  paged_kv_store<host_space, per_layer> store(cfg);
  const seq_id id = store.create();
  REQUIRE(store.try_append(id, 100));
  CHECK(store.positional_rows(id, 0) == 100);
  CHECK(store.positional_pages(id, 0) == 6);
  std::vector<std::int64_t> keep;
  for (std::int64_t i = 0; i < 40; ++i) keep.push_back(i);  // rows 0..39 stay in place
  for (std::int64_t i = 50; i < 100; i += 5) keep.push_back(i);
  std::vector<slot_move> moves;
  REQUIRE(store.try_compact(id, 0, keep, moves));
  CHECK(store.positional_rows(id, 0) == 40);
  CHECK(store.positional_pages(id, 0) == 2);
  CHECK(store.positional_rows(id, 1) == 100);  // the other layer's table was not compacted
  // a second compaction that moves row 20 lowers it; appends never raise it
  keep.clear();
  for (std::int64_t i = 0; i < 20; ++i) keep.push_back(i);
  for (std::int64_t i = 21; i < 50; ++i) keep.push_back(i);
  REQUIRE(store.try_compact(id, 0, keep, moves));
  REQUIRE(store.try_append(id, 30));
  CHECK(store.positional_rows(id, 0) == 20);
  CHECK(store.positional_pages(id, 0) == 1);
  // a fork inherits it; a released slot starts over
  const seq_id f = store.fork(id);
  CHECK(store.positional_rows(f, 0) == 20);
  store.release(id);
  store.release(f);
  const seq_id n = store.create();
  REQUIRE(store.try_append(n, 10));
  CHECK(store.positional_rows(n, 0) == 10);
}
