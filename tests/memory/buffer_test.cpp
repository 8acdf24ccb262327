#include <cstdint>
#include <numeric>

#include "kvcache/memory/buffer.hpp"
#include "kvcache/memory/copy.hpp"
#include "kvcache/memory/host_resource.hpp"
#include "kvcache/memory/limiting_adaptor.hpp"
#include "kvcache/memory/statistics_adaptor.hpp"
#include "support/catch.hpp"

using namespace kvcache;

TEST_CASE("buffer owns, moves and frees exactly once", "[memory][buffer]") {
  host_resource up;
  statistics_adaptor<host_resource> stats{up};
  {
    buffer<std::int32_t> a(1000, stats);
    CHECK(a.size() == 1000);
    CHECK(a.size_bytes() == 4000);
    CHECK(reinterpret_cast<std::uintptr_t>(a.data()) % default_alignment == 0);
    std::iota(a.begin(), a.end(), 0);
    buffer<std::int32_t> b = std::move(a);
    CHECK(a.empty());  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
    CHECK(b[999] == 999);
    buffer<std::int32_t> c(10, stats);
    c = std::move(b);
    CHECK(c.size() == 1000);
    CHECK(stats.statistics().current_bytes == 4000);
  }
  const auto s = stats.statistics();
  CHECK(s.current_bytes == 0);
  CHECK(s.allocation_count == 2);
  CHECK(s.deallocation_count == 2);
}

TEST_CASE("a zero-sized buffer allocates nothing", "[memory][buffer]") {
  host_resource up;
  statistics_adaptor<host_resource> stats{up};
  buffer<float> empty(0, stats);
  CHECK(empty.empty());
  CHECK(empty.data() == nullptr);
  CHECK(stats.statistics().allocation_count == 0);
}

TEST_CASE("buffer reports out-of-memory from a limited resource", "[memory][buffer]") {
  host_resource up;
  limiting_adaptor<host_resource> limit{up, 1024};
  buffer<float> ok(256, limit);
  KVTEST_REQUIRE_ERROR(buffer<float>(1, limit), errc::out_of_memory, "1024");
  KVTEST_REQUIRE_ERROR(buffer<double>(std::size_t{1} << 62), errc::invalid_argument,
                       "byte maximum");
}

TEST_CASE("buffer_view subviews are bounds-checked", "[memory][buffer]") {
  buffer<int> a(10);
  std::iota(a.begin(), a.end(), 0);
  auto v = a.view();
  auto s = v.subview(2, 3);
  CHECK(s.size() == 3);
  CHECK(s[0] == 2);
  buffer_view<const int, host_space> cv = s;  // mutable -> const
  CHECK(cv[2] == 4);
  CHECK(v.subview(10, 0).empty());
  KVTEST_REQUIRE_ERROR(v.subview(8, 3), errc::out_of_range, "subview(8, 3) of a view of 10");
}

TEST_CASE("copy between host buffers checks sizes", "[memory][copy]") {
  buffer<float> a(100), b(100), c(99);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i) * 0.5f;
  copy(b, a);
  CHECK(b[99] == 49.5f);
  KVTEST_REQUIRE_ERROR(copy(c.view(), a.view()), errc::shape_mismatch,
                       "destination has 99 elements, source has 100");
}
