#include "paging/shadow_model.hpp"

#include <cstdlib>

using namespace kvcache;

namespace {
std::int64_t ops_from_env() {
  const char* e = std::getenv("KVCACHE_SHADOW_OPS");
  return e != nullptr ? std::atoll(e) : 100000;
}
template <class G>
void run(kv_order order, std::int32_t page_size) {
  kvtest::shadow_options opt;
  opt.ops = ops_from_env();
  opt.order = order;
  opt.page_size = page_size;
  const auto r = kvtest::run_shadow<host_space, G>(opt, kvtest::seed());
  INFO("appends " << r.appends << " exhausted " << r.exhausted << " forks " << r.forks
                  << " truncates " << r.truncates << " releases " << r.releases << " cow "
                  << r.cow << " verified tokens " << r.verified_tokens);
  CHECK(r.appends > opt.ops / 4);
  CHECK(r.exhausted > opt.ops / 100);  // the pool runs out often
  CHECK(r.cow > opt.ops / 100);        // copy-on-write happens often
  CHECK(r.forks > opt.ops / 50);
  std::printf("shadow %s %s page_size %d: %lld ops, %lld appends, %lld exhausted, %lld forks, "
              "%lld truncates, %lld cow copies, %lld tokens verified\n",
              G::name, name_of(order), page_size, static_cast<long long>(opt.ops),
              static_cast<long long>(r.appends), static_cast<long long>(r.exhausted),
              static_cast<long long>(r.forks), static_cast<long long>(r.truncates),
              static_cast<long long>(r.cow), static_cast<long long>(r.verified_tokens));
}
}  // namespace

TEST_CASE("shadow model, span_layers, NHD", "[paging][shadow]") { run<span_layers>(kv_order::nhd, 4); }
TEST_CASE("shadow model, per_layer, HND", "[paging][shadow]") { run<per_layer>(kv_order::hnd, 4); }
TEST_CASE("shadow model, per_head, NHD", "[paging][shadow]") { run<per_head>(kv_order::nhd, 2); }
