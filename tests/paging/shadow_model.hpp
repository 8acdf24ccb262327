// The paging shadow-model test, written once and run over the host backend (label paging) and
// the CUDA backend (label gpu): random operations against a plain model of every sequence's K/V,
// with the store's invariants and a bit-exact read-back of every live sequence (through
// gather_kv) checked after every operation.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kvcache/memory/buffer.hpp"
#include "kvcache/memory/copy.hpp"
#include "kvcache/paging/batch_builder.hpp"
#include "kvcache/paging/paged_kv_store.hpp"
#include "support/catch.hpp"

namespace kvtest {

struct shadow_options {
  std::int64_t ops = 100000;
  std::int32_t max_live = 64;
  std::int32_t pages = 160;  // per table-per-sequence: multiplied by tables_per_sequence
  std::int32_t page_size = 4;
  kvcache::kv_order order = kvcache::kv_order::nhd;
  std::int64_t max_len = 48;
};

struct shadow_result {
  std::int64_t appends = 0, exhausted = 0, forks = 0, truncates = 0, releases = 0, creates = 0;
  std::int64_t cow = 0, verified_tokens = 0;
};

template <class Space, class Geometry>
shadow_result run_shadow(const shadow_options& opt, std::uint64_t seed) {
  using namespace kvcache;
  constexpr bool on_device = !Space::host_accessible;
  using u16 = std::uint16_t;
  store_config cfg;
  cfg.layout = kv_layout{.layers = 2, .kv_heads = 2, .q_heads = 4, .head_dim = 4,
                         .page_size = opt.page_size, .order = opt.order, .type = dtype::f16};
  const std::int32_t T = Geometry::tables_per_sequence(cfg.layout);
  cfg.num_pages = opt.pages * T;
  cfg.max_sequences = opt.max_live;
  const kv_layout& L = cfg.layout;
  const std::int64_t tok_elems = std::int64_t{L.layers} * L.kv_heads * L.head_dim;

  paged_kv_store<Space, Geometry> store(cfg);
  batch_builder<paged_kv_store<Space, Geometry>> builder(store);
  struct seq_shadow {
    seq_id id;
    std::vector<u16> k, v;  // [token][layer][head][dim]
  };
  std::vector<seq_shadow> live;
  std::mt19937_64 rng(seed);
  auto uniform = [&](std::int64_t lo, std::int64_t hi) {  // inclusive
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  shadow_result res;
  stream_view s{};

  // device scratch, grown on demand
  buffer<u16, Space> d_in_k, d_in_v, d_out_k, d_out_v;
  buffer<std::int32_t, Space> d_indptr, d_indices, d_last;
  buffer<std::int64_t, Space> d_offsets;
  auto ensure = [](auto& b, std::size_t n) {
    using B = std::remove_reference_t<decltype(b)>;
    if (b.size() < n) b = B(std::max<std::size_t>(n, 2 * b.size()));
  };
  auto upload = [&](auto& dst, const auto& src_vec) {
    using T0 = typename std::remove_reference_t<decltype(dst)>::element_type;
    if (src_vec.empty()) return;
    ensure(dst, src_vec.size());
    copy(dst.view().subview(0, src_vec.size()),
         buffer_view<const T0, host_space>(src_vec.data(), src_vec.size()), s);
  };

  // Reads every live sequence back and compares it with the shadow, bit for bit.
  std::vector<std::int32_t> indptr, indices, last;
  std::vector<std::int64_t> offsets;
  std::vector<u16> out_k, out_v;
  auto verify_all = [&]() {
    store.check_invariants();
    const std::int32_t hpp = Geometry::heads_per_page(L);
    const std::int64_t row = std::int64_t{hpp} * L.head_dim;
    // One CSR with every table of every live sequence (table-major as the builder does).
    indptr.assign(1, 0);
    indices.clear();
    last.clear();
    offsets.clear();
    std::int64_t rows = 0;
    for (std::int32_t t = 0; t < T; ++t) {
      for (auto& q : live) {
        store.for_each_page(q.id, t, [&](page_id p) { indices.push_back(p); });
        indptr.push_back(static_cast<std::int32_t>(indices.size()));
        const std::int64_t toks = store.table_tokens(q.id, t);
        last.push_back(toks == 0 ? 0 : static_cast<std::int32_t>((toks - 1) % L.page_size + 1));
        offsets.push_back(rows);
        rows += toks;
      }
    }
    if (rows == 0) return;
    const page_table_view host_tables{indptr.data(), indices.data(), last.data(),
                                      static_cast<std::int32_t>(last.size()), L.page_size};
    const std::int32_t gathers = std::is_same_v<Geometry, span_layers> ? L.layers : 1;
    for (std::int32_t layer = 0; layer < gathers; ++layer) {
      out_k.assign(static_cast<std::size_t>(rows * row), 0xFFFF);
      out_v.assign(static_cast<std::size_t>(rows * row), 0xFFFF);
      if constexpr (on_device) {
        upload(d_indptr, indptr);
        upload(d_indices, indices);
        upload(d_last, last);
        upload(d_offsets, offsets);
        upload(d_out_k, out_k);  // NaN-poisoned outputs
        upload(d_out_v, out_v);
        const page_table_view dt{d_indptr.data(), d_indices.data(), d_last.data(),
                                 host_tables.num_tables, L.page_size};
        gather_kv_cuda(store.pool().view(), layer, dt, d_offsets.data(),
                       reinterpret_cast<std::byte*>(d_out_k.data()),
                       reinterpret_cast<std::byte*>(d_out_v.data()), s);
        copy(buffer_view<u16, host_space>(out_k.data(), out_k.size()),
             buffer_view<const u16, Space>(d_out_k.data(), out_k.size()), s);
        copy(buffer_view<u16, host_space>(out_v.data(), out_v.size()),
             buffer_view<const u16, Space>(d_out_v.data(), out_v.size()), s);
        synchronize(s);
      } else {
        gather_kv_host(store.pool().view(), layer, host_tables, offsets.data(),
                       reinterpret_cast<std::byte*>(out_k.data()),
                       reinterpret_cast<std::byte*>(out_v.data()));
      }
      std::size_t e = 0;
      bool same = true;
      for (std::int32_t t = 0; t < T && same; ++t) {
        for (auto& q : live) {
          const std::int64_t toks = store.table_tokens(q.id, t);
          const std::int64_t len = static_cast<std::int64_t>(q.k.size()) / tok_elems;
          if (toks != len) {
            FAIL_CHECK("table " << t << " of sequence " << q.id.index << " holds " << toks
                                << " tokens, the shadow " << len);
            same = false;
            break;
          }
          const std::int64_t off = offsets[e++] * row;
          for (std::int64_t j = 0; j < toks && same; ++j) {
            for (std::int32_t hh = 0; hh < hpp; ++hh) {
              const std::int32_t lay = std::is_same_v<Geometry, span_layers> ? layer
                                       : std::is_same_v<Geometry, per_layer> ? t
                                                                              : t / L.kv_heads;
              const std::int32_t head = std::is_same_v<Geometry, per_head> ? t % L.kv_heads : hh;
              const std::int64_t src = ((j * L.layers + lay) * L.kv_heads + head) * L.head_dim;
              const std::int64_t dst = off + (j * hpp + hh) * L.head_dim;
              if (std::memcmp(&q.k[static_cast<std::size_t>(src)],
                              &out_k[static_cast<std::size_t>(dst)], 2 * L.head_dim) != 0 ||
                  std::memcmp(&q.v[static_cast<std::size_t>(src)],
                              &out_v[static_cast<std::size_t>(dst)], 2 * L.head_dim) != 0) {
                FAIL_CHECK("sequence " << q.id.index << " table " << t << " token " << j
                                       << " head " << hh << " differs from the shadow");
                same = false;
                break;
              }
            }
          }
          res.verified_tokens += toks;
        }
      }
      REQUIRE(same);
    }
  };

  std::vector<u16> in_k, in_v;
  auto append = [&](std::size_t qi, std::int64_t n) {
    auto& q = live[qi];
    // input [n_layers][n][kv_heads][dim]; shadow [token][layer][head][dim]
    in_k.resize(static_cast<std::size_t>(n * tok_elems));
    in_v.resize(in_k.size());
    for (auto& x : in_k) x = static_cast<u16>(rng() & 0x7BFF);  // finite f16 patterns
    for (auto& x : in_v) x = static_cast<u16>(rng() & 0x7BFF);
    builder.clear();
    if (!builder.try_add(q.id, n)) {
      ++res.exhausted;
      return false;
    }
    const batch_view& bv = builder.finalize(s);
    res.cow += bv.copies_applied;
    kv_input_view in{};
    in.first_layer = 0;
    in.n_layers = L.layers;
    in.num_tokens = static_cast<std::int32_t>(n);
    in.kv_heads = L.kv_heads;
    if constexpr (on_device) {
      upload(d_in_k, in_k);
      upload(d_in_v, in_v);
      in.k = reinterpret_cast<const std::byte*>(d_in_k.data());
      in.v = reinterpret_cast<const std::byte*>(d_in_v.data());
      append_kv_cuda(store.pool().view(), in, bv.slots, s);
    } else {
      in.k = reinterpret_cast<const std::byte*>(in_k.data());
      in.v = reinterpret_cast<const std::byte*>(in_v.data());
      append_kv_host(store.pool().view(), in, bv.slots);
    }
    const std::size_t old = q.k.size();
    q.k.resize(old + in_k.size());
    q.v.resize(old + in_v.size());
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int32_t l = 0; l < L.layers; ++l)
        for (std::int32_t h = 0; h < L.kv_heads; ++h) {
          const std::int64_t src = ((l * n + j) * L.kv_heads + h) * L.head_dim;
          const std::int64_t dst = static_cast<std::int64_t>(old) +
                                   ((j * L.layers + l) * L.kv_heads + h) * L.head_dim;
          std::memcpy(&q.k[static_cast<std::size_t>(dst)], &in_k[static_cast<std::size_t>(src)],
                      2 * L.head_dim);
          std::memcpy(&q.v[static_cast<std::size_t>(dst)], &in_v[static_cast<std::size_t>(src)],
                      2 * L.head_dim);
        }
    ++res.appends;
    return true;
  };

  for (std::int64_t op = 0; op < opt.ops; ++op) {
    const auto r = uniform(0, 99);
    if (live.empty() || (r < 8 && static_cast<std::int32_t>(live.size()) < opt.max_live)) {
      live.push_back({store.create(), {}, {}});
      ++res.creates;
    } else if (r < 60) {
      const auto qi = static_cast<std::size_t>(uniform(0, static_cast<std::int64_t>(live.size()) - 1));
      const std::int64_t len = static_cast<std::int64_t>(live[qi].k.size()) / tok_elems;
      const std::int64_t room = opt.max_len - len;
      if (room > 0) {
        const std::int64_t n = uniform(0, 9) < 7 ? uniform(1, 3) : uniform(1, 24);
        if (!append(qi, std::min(n, room)) && uniform(0, 1) == 0) {
          // preempt a random sequence, as a scheduler would
          const auto vi = static_cast<std::size_t>(uniform(0, static_cast<std::int64_t>(live.size()) - 1));
          store.release(live[vi].id);
          live.erase(live.begin() + static_cast<std::ptrdiff_t>(vi));
          ++res.releases;
        }
      }
    } else if (r < 72) {
      if (static_cast<std::int32_t>(live.size()) < opt.max_live) {
        const auto qi = static_cast<std::size_t>(uniform(0, static_cast<std::int64_t>(live.size()) - 1));
        const seq_id child = store.fork(live[qi].id);
        live.push_back({child, live[qi].k, live[qi].v});
        ++res.forks;
      }
    } else if (r < 86) {
      const auto qi = static_cast<std::size_t>(uniform(0, static_cast<std::int64_t>(live.size()) - 1));
      const std::int64_t len = static_cast<std::int64_t>(live[qi].k.size()) / tok_elems;
      const std::int64_t to = uniform(0, len);
      store.truncate(live[qi].id, to);
      live[qi].k.resize(static_cast<std::size_t>(to * tok_elems));
      live[qi].v.resize(static_cast<std::size_t>(to * tok_elems));
      ++res.truncates;
    } else {
      const auto qi = static_cast<std::size_t>(uniform(0, static_cast<std::int64_t>(live.size()) - 1));
      store.release(live[qi].id);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(qi));
      ++res.releases;
    }
    verify_all();
  }
  for (auto& q : live) store.release(q.id);
  store.check_invariants();
  REQUIRE(store.stats().pages_free == store.stats().pages_total);
  return res;
}

}  // namespace kvtest
