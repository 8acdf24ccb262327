#include <cstdlib>

#include "paging/shadow_model.hpp"

using namespace kvcache;

namespace {
template <class G>
void run(kv_order order, std::int32_t page_size) {
  kvtest::shadow_options opt;
  const char* e = std::getenv("KVCACHE_SHADOW_OPS");
  opt.ops = e != nullptr ? std::atoll(e) : 100000;
  opt.order = order;
  opt.page_size = page_size;
  const auto r = kvtest::run_shadow<cuda_space, G>(opt, kvtest::seed() + 1);
  CHECK(r.exhausted > opt.ops / 100);
  CHECK(r.cow > opt.ops / 100);
  std::printf("gpu shadow %s %s page_size %d: %lld ops, %lld appends, %lld exhausted, %lld forks, "
              "%lld cow copies, %lld tokens verified\n",
              G::name, name_of(order), page_size, static_cast<long long>(opt.ops),
              static_cast<long long>(r.appends), static_cast<long long>(r.exhausted),
              static_cast<long long>(r.forks), static_cast<long long>(r.cow),
              static_cast<long long>(r.verified_tokens));
}
}  // namespace

TEST_CASE("GPU shadow model, span_layers, NHD", "[paging][shadow][gpu]") { run<span_layers>(kv_order::nhd, 4); }
TEST_CASE("GPU shadow model, per_layer, HND", "[paging][shadow][gpu]") { run<per_layer>(kv_order::hnd, 4); }
TEST_CASE("GPU shadow model, per_head, NHD", "[paging][shadow][gpu]") { run<per_head>(kv_order::nhd, 2); }
