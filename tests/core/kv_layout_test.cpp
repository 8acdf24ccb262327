#include "support/catch.hpp"

#include "kvcache/core/kv_layout.hpp"

using kvcache::dtype;
using kvcache::errc;
using kvcache::kv_layout;

TEST_CASE("kv_layout reports bytes per page", "[core][kv_layout]") {
  // Llama-3-8B: 32 layers, 8 kv heads, 32 query heads, head dim 128, f16, 16-token pages.
  kv_layout l{.layers = 32, .kv_heads = 8, .q_heads = 32, .head_dim = 128, .page_size = 16};
  REQUIRE_NOTHROW(l.validate());
  CHECK(l.group_size() == 4);
  CHECK(l.bytes_per_head_row() == 256);
  CHECK(l.bytes_per_token() == 2u * 32 * 8 * 128 * 2);  // 128 KiB per token
  CHECK(l.bytes_per_page() == 16u * 131072);
  CHECK(l.bytes_per_page_layer_k() == 16u * 8 * 128 * 2);
  l.type = dtype::int2;
  CHECK(l.bytes_per_head_row() == 32);
  CHECK(l.to_string().find("dtype=int2") != std::string::npos);
}

TEST_CASE("kv_layout rejects bad shapes, naming the value", "[core][kv_layout]") {
  const kv_layout good{.layers = 2, .kv_heads = 2, .q_heads = 4, .head_dim = 64, .page_size = 16};
  auto with = [&](auto mutate) {
    kv_layout l = good;
    mutate(l);
    return l;
  };
  KVTEST_REQUIRE_ERROR(with([](kv_layout& l) { l.head_dim = 0; }).validate(),
                       errc::invalid_argument, "head_dim must be >= 1, got 0");
  KVTEST_REQUIRE_ERROR(with([](kv_layout& l) { l.page_size = 24; }).validate(),
                       errc::invalid_argument, "power of two, got 24");
  KVTEST_REQUIRE_ERROR(with([](kv_layout& l) { l.q_heads = 5; }).validate(),
                       errc::invalid_argument, "q_heads (5) must be a multiple of kv_heads (2)");
  KVTEST_REQUIRE_ERROR(with([](kv_layout& l) { l.layers = -1; }).validate(),
                       errc::invalid_argument, "layers must be >= 1, got -1");
  KVTEST_REQUIRE_ERROR(with([](kv_layout& l) { l.page_size = 131072; }).validate(),
                       errc::invalid_argument, "131072");
  KVTEST_REQUIRE_ERROR(with([](kv_layout& l) {
                         l.type = dtype::int2;
                         l.head_dim = 3;
                       }).validate(),
                       errc::invalid_argument, "head_dim 3 of int2");
}
