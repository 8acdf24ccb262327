// Catch2 main for 2.x and 3.x. With KVCACHE_TEST_REQUIRES_GPU, exits with 77 (ctest's
// SKIP_RETURN_CODE) when no CUDA device is present, so GPU tests show as skipped, never passed.
#if __has_include(<catch2/catch_session.hpp>)
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#endif

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#ifdef KVCACHE_TEST_REQUIRES_GPU
#include "kvcache/memory/stream.hpp"
#endif

namespace kvtest {
std::uint64_t seed() {
  static const std::uint64_t value = [] {
    const char* env = std::getenv("KVCACHE_TEST_SEED");
    return env != nullptr ? std::stoull(env) : std::uint64_t{20261123};
  }();
  return value;
}
}  // namespace kvtest

int main(int argc, char** argv) {
#ifdef KVCACHE_TEST_REQUIRES_GPU
  if (kvcache::cuda_device_count() == 0) {
    std::printf("kvcache: no CUDA device present: skipping this GPU test (exit 77)\n");
    return 77;
  }
#endif
  return Catch::Session().run(argc, argv);
}
