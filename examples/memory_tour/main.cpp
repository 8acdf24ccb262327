// A walk through kvcache's memory layer: size a KV cache from its layout, allocate it through a
// limited, counted resource, move data between spaces, and print what was allocated.
#include <fmt/format.h>

#include <cstdio>
#include <numeric>

#include "kvcache/kvcache.hpp"

namespace {
template <class Stats>
void print_statistics(const char* name, const Stats& s) {
  const auto st = s.statistics();
  fmt::print("  {:<14} current {:>12} B  peak {:>12} B  allocations {} (live {})\n", name,
             st.current_bytes, st.peak_bytes, st.allocation_count, st.current_allocations);
}
}  // namespace

int main() {
  using namespace kvcache;
  // Llama-3-8B's KV cache in 16-token pages of f16.
  const kv_layout layout{.layers = 32, .kv_heads = 8, .q_heads = 32, .head_dim = 128,
                         .page_size = 16, .order = kv_order::nhd, .type = dtype::f16};
  layout.validate();
  fmt::print("layout: {}\n", layout.to_string());
  fmt::print("  bytes per token: {} ({} KiB), bytes per page: {} ({} KiB)\n",
             layout.bytes_per_token(), layout.bytes_per_token() / 1024, layout.bytes_per_page(),
             layout.bytes_per_page() / 1024);

  // A 64 MiB budget on the host, counted.
  host_resource host;
  statistics_adaptor<host_resource> counted{host};
  limiting_adaptor<statistics_adaptor<host_resource>> budget{counted, std::size_t{64} << 20};
  const std::size_t pages = budget.limit() / layout.bytes_per_page();
  fmt::print("a 64 MiB host budget holds {} pages = {} tokens\n", pages, pages * layout.page_size);
  buffer<std::byte> pool(pages * layout.bytes_per_page(), budget);
  try {
    buffer<std::byte> one_more(layout.bytes_per_page(), budget);
  } catch (const kvcache::error& e) {
    fmt::print("one page more is refused:\n  {}\n", e.what());
  }
  buffer<float> staging(1 << 16);
  std::iota(staging.begin(), staging.end(), 0.0f);
  buffer<float> back(staging.size());
  copy(back, staging);
  fmt::print("host copy of {} floats: last = {}\n", back.size(), back[back.size() - 1]);

#ifdef KVCACHE_HAS_CUDA
  if (cuda_device_count() > 0) {
    cuda_async_pool_resource pool_resource;
    statistics_adaptor<cuda_async_pool_resource> device_counted{pool_resource};
    stream s;
    buffer<float, cuda_space> device(staging.size(), device_counted);
    buffer<float, pinned_host_space> pinned(staging.size());
    copy(device.view(), staging.view(), s);
    copy(pinned.view(), device.view(), s);
    s.synchronize();
    fmt::print("round trip host -> GPU -> pinned: last = {}\n", pinned[pinned.size() - 1]);
    print_statistics("GPU pool", device_counted);
  } else {
    fmt::print("built with CUDA, but no GPU is present: skipping the device part\n");
  }
#else
  fmt::print("built without CUDA: host part only\n");
#endif
  fmt::print("allocated through the counted host resource:\n");
  print_statistics("host", counted);
  return 0;
}
