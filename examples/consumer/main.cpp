// Built out of tree against an installed kvcache (see tests/packaging).
#include <kvcache/kvcache.hpp>

#include <cstdio>

int main() {
  using namespace kvcache;
  const kv_layout layout{.layers = 2, .kv_heads = 2, .q_heads = 4, .head_dim = 64, .page_size = 16};
  layout.validate();
  buffer<float> host(256);
  for (std::size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(i);
  buffer<float> back(host.size());
  copy(back, host);
  if (back[255] != 255.0f) return 1;
#ifdef KVCACHE_HAS_CUDA
  if (cuda_device_count() > 0) {
    buffer<float, cuda_space> device(host.size());
    copy(device.view(), host.view());
    copy(back.view(), device.view());
    synchronize(stream_view{});
    if (back[255] != 255.0f) return 2;
    std::printf("consumer: kvcache with CUDA, round trip through the GPU ok\n");
  } else {
    std::printf("consumer: kvcache with CUDA, no GPU present\n");
  }
#else
  std::printf("consumer: kvcache host library ok\n");
#endif
  std::printf("consumer: %zu bytes per page\n", layout.bytes_per_page());
  return 0;
}
