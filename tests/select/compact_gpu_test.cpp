// compact_kv_cuda against compact_kv_host: stores of every geometry and order, random evictions
// (in-place moves whose sources later moves overwrite, copy-on-write pages of forks), the same
// moves applied to a copy of the pool on the device and on the host, compared byte for byte.
#include <cuda_runtime_api.h>

#include <cstring>
#include <random>
#include <vector>

#include "kvcache/memory/buffer.hpp"
#include "kvcache/memory/copy.hpp"
#include "kvcache/memory/stream.hpp"
#include "kvcache/paging/paged_kv_store.hpp"
#include "support/catch.hpp"

using namespace kvcache;

namespace {

template <class Geometry>
void run(kv_order order, dtype type, std::int32_t head_dim, std::uint64_t seed) {
  store_config cfg;
  cfg.layout = kv_layout{.layers = 3, .kv_heads = 2, .q_heads = 4, .head_dim = head_dim,
                         .page_size = 16, .order = order, .type = type};
  const std::int32_t T = Geometry::tables_per_sequence(cfg.layout);
  cfg.num_pages = 64 * T;
  cfg.max_sequences = 4;
  paged_kv_store<host_space, Geometry> store(cfg);
  std::mt19937_64 rng(seed);
  const paged_kv_view v = store.pool().copy_view();
  const auto bytes = static_cast<std::size_t>(2 * (v.layer_stride_bytes != 0 ? v.layers : 1) *
                                              v.num_pages * v.page_bytes);
  for (std::size_t i = 0; i < bytes; ++i) v.data[i] = static_cast<std::byte>(rng());
  const seq_id a = store.create();
  REQUIRE(store.try_append(a, 300));
  const seq_id b = store.fork(a);
  std::vector<slot_move> moves;
  std::vector<std::int64_t> keep;
  for (const seq_id id : {a, b}) {
    for (std::int32_t t = 0; t < T; ++t) {
      keep.clear();
      for (std::int64_t i = 0; i < store.table_tokens(id, t); ++i)
        if (std::uniform_int_distribution<int>(0, 4)(rng) == 0) keep.push_back(i);
      REQUIRE(store.try_compact(id, t, keep, moves));
    }
  }
  REQUIRE(!moves.empty());
  stream s;
  buffer<std::byte, cuda_space> dpool(bytes);
  copy(dpool.view(), buffer_view<const std::byte, host_space>(v.data, bytes), s.view());
  buffer<slot_move, cuda_space> dmoves(moves.size());
  copy(dmoves.view(), buffer_view<const slot_move, host_space>(moves.data(), moves.size()), s.view());
  buffer<std::byte, cuda_space> scratch(
      static_cast<std::size_t>(compact_kv_scratch_bytes(v, static_cast<std::int64_t>(moves.size()))));
  paged_kv_view dv = v;
  dv.data = dpool.data();
  compact_kv_cuda(dv, dmoves.data(), static_cast<std::int64_t>(moves.size()), scratch.data(), s.view());
  compact_kv_host(v, moves.data(), static_cast<std::int64_t>(moves.size()));
  std::vector<std::byte> back(bytes);
  copy(buffer_view<std::byte, host_space>(back.data(), bytes), dpool.view(), s.view());
  synchronize(s.view());
  REQUIRE(std::memcmp(back.data(), v.data, bytes) == 0);
}

}  // namespace

TEST_CASE("compact_kv_cuda equals compact_kv_host", "[select][gpu]") {
  const std::uint64_t seed = kvtest::seed();
  for (const kv_order o : {kv_order::nhd, kv_order::hnd}) {
    for (const std::int32_t d : {128, 64, 3}) {
      run<span_layers>(o, dtype::f16, d, seed);
      run<per_layer>(o, dtype::bf16, d, seed + 1);
      run<per_head>(o, dtype::f32, d, seed + 2);
    }
  }
}
