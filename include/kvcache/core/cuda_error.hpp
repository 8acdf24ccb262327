/**
 * @file cuda_error.hpp
 * @brief Checked CUDA runtime calls. Include only from code compiled against the CUDA toolkit
 * (kvcache::cuda and its consumers).
 */
#pragma once

#include <cuda_runtime_api.h>

#include <cstdio>

#include "kvcache/core/error.hpp"

namespace kvcache::detail {
/// @brief Throws `errc::cuda_error` naming the call, the CUDA error name and its description.
[[noreturn]] inline void throw_cuda_error(cudaError_t status, const char* call, const char* file,
                                          int line) {
  throw_error(errc::cuda_error, nullptr, file, line,
              fmt::format("{} failed: {} ({})", call, cudaGetErrorName(status),
                          cudaGetErrorString(status)));
}
}  // namespace kvcache::detail

/// @brief Runs a CUDA runtime call and throws `kvcache::error` (errc::cuda_error) if it fails.
#define KVCACHE_CUDA_TRY(call)                                                     \
  do {                                                                             \
    cudaError_t kvcache_status_ = (call);                                          \
    if (kvcache_status_ != cudaSuccess) [[unlikely]] {                             \
      (void)cudaGetLastError();                                                    \
      ::kvcache::detail::throw_cuda_error(kvcache_status_, #call, __FILE__, __LINE__); \
    }                                                                              \
  } while (0)

/// @brief Checks the last kernel launch (configuration errors) and throws if it failed.
#define KVCACHE_CHECK_LAUNCH() KVCACHE_CUDA_TRY(cudaGetLastError())

/// @brief For destructors and other no-throw paths: reports a failed call on stderr, never throws.
#define KVCACHE_CUDA_ASSERT_NOTHROW(call)                                                     \
  do {                                                                                        \
    cudaError_t kvcache_status_ = (call);                                                     \
    if (kvcache_status_ != cudaSuccess) {                                                     \
      std::fprintf(stderr, "kvcache: %s failed in a no-throw path: %s at %s:%d\n", #call,     \
                   cudaGetErrorString(kvcache_status_), __FILE__, __LINE__);                  \
    }                                                                                         \
  } while (0)
