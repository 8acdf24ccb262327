#include <memory>
#include <tuple>

#include "kvcache/memory/host_resource.hpp"
#include "kvcache/memory/limiting_adaptor.hpp"
#include "kvcache/memory/resource_ref.hpp"
#include "kvcache/memory/statistics_adaptor.hpp"
#include "memory/resource_contract.hpp"

using namespace kvcache;

static_assert(memory_resource<limiting_adaptor<host_resource>>);
static_assert(memory_resource<statistics_adaptor<host_resource>>);
static_assert(!stream_ordered_resource<limiting_adaptor<host_resource>>);

namespace {
// Each model comes from a factory that owns what it needs (upstreams).
struct host_model {
  host_resource r;
  host_resource& get() { return r; }
};
struct limiting_model {
  host_resource up;
  limiting_adaptor<host_resource> r{up, std::size_t{1} << 40};
  auto& get() { return r; }
};
struct statistics_model {
  host_resource up;
  statistics_adaptor<host_resource> r{up};
  auto& get() { return r; }
};
struct ref_model {
  host_resource up;
  resource_ref<host_space> r{up};
  auto& get() { return r; }
};
struct default_model {
  resource_ref<host_space> r = default_resource<host_space>();
  auto& get() { return r; }
};
using host_models = std::tuple<host_model, limiting_model, statistics_model, ref_model, default_model>;
}  // namespace

TEMPLATE_LIST_TEST_CASE("host resources satisfy the memory_resource contract", "[memory][resource]",
                        host_models) {
  auto model = std::make_unique<TestType>();
  kvtest::check_resource_contract(model->get(), 4096);
}

TEST_CASE("limiting_adaptor refuses to go over its limit", "[memory][limiting]") {
  host_resource up;
  limiting_adaptor<host_resource> r{up, 1000};
  void* a = r.allocate(600, 8);
  CHECK(r.used() == 600);
  KVTEST_REQUIRE_ERROR(r.allocate(500, 8), errc::out_of_memory,
                       "allocating 500 bytes with 600 of 1000 bytes in use");
  CHECK(r.used() == 600);  // the failed call changed nothing
  void* b = r.allocate(400, 8);
  CHECK(r.used() == 1000);
  r.deallocate(a, 600, 8);
  r.deallocate(b, 400, 8);
  CHECK(r.used() == 0);
}

TEST_CASE("statistics_adaptor counts bytes and catches bad frees", "[memory][statistics]") {
  host_resource up;
  statistics_adaptor<host_resource> r{up};
  void* a = r.allocate(100, 16);
  void* b = r.allocate(300, 16);
  auto s = r.statistics();
  CHECK(s.current_bytes == 400);
  CHECK(s.peak_bytes == 400);
  CHECK(s.current_allocations == 2);
  r.deallocate(a, 100, 16);
  s = r.statistics();
  CHECK(s.current_bytes == 300);
  CHECK(s.peak_bytes == 400);
  CHECK(s.allocation_count == 2);
  CHECK(s.deallocation_count == 1);

  SECTION("double free") {
    KVTEST_REQUIRE_ERROR(r.deallocate(a, 100, 16), errc::bad_free, "double free");
  }
  SECTION("a pointer never allocated here") {
    int local = 0;
    KVTEST_REQUIRE_ERROR(r.deallocate(&local, 4, 4), errc::bad_free, "not allocated here");
  }
  SECTION("the wrong size") {
    KVTEST_REQUIRE_ERROR(r.deallocate(b, 200, 16), errc::bad_free,
                         "with 200 bytes, but it was allocated with 300 bytes");
  }
  CHECK(r.statistics().current_bytes == 300);  // bad frees changed nothing
  r.deallocate(b, 300, 16);
  CHECK(r.statistics().current_bytes == 0);
  CHECK(r.statistics().total_bytes == 400);
}

TEST_CASE("adaptors stack", "[memory][limiting][statistics]") {
  host_resource up;
  statistics_adaptor<host_resource> stats{up};
  limiting_adaptor<statistics_adaptor<host_resource>> limit{stats, 4096};
  void* p = limit.allocate(4096, 64);
  KVTEST_REQUIRE_ERROR(limit.allocate(1, 64), errc::out_of_memory, "exceed the limit");
  CHECK(stats.statistics().current_bytes == 4096);
  limit.deallocate(p, 4096, 64);
  CHECK(stats.statistics().current_bytes == 0);
  CHECK(stats.statistics().peak_bytes == 4096);
}
