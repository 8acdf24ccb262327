// The checked public API of convert.hpp over the status-returning launchers of convert.cu.
#include "kvcache/core/convert.hpp"

#include <cuda_runtime_api.h>

#include "core/convert_kernels.hpp"
#include "kvcache/core/cuda_error.hpp"
#include "kvcache/core/error.hpp"

namespace kvcache {

namespace {
void check_arguments(const char* what, dtype t, const void* src, const void* dst, std::size_t n) {
  KVCACHE_EXPECTS(is_floating(t), errc::not_supported,
                  "{}: dtype {} is not a floating-point type (f32, f16, bf16, fp8_e4m3, fp8_e5m2)",
                  what, name_of(t));
  KVCACHE_EXPECTS(n == 0 || (src != nullptr && dst != nullptr), errc::invalid_argument,
                  "{}: null pointer (src {}, dst {}) for {} elements", what, src, dst, n);
}
}  // namespace

void convert_to_f32_async(dtype src_type, const void* src, float* dst, std::size_t n,
                          void* cuda_stream) {
  check_arguments("convert_to_f32_async", src_type, src, dst, n);
  if (n == 0) return;
  KVCACHE_CUDA_TRY(
      detail::launch_convert_to_f32(src_type, src, dst, n, static_cast<cudaStream_t>(cuda_stream)));
}

void convert_from_f32_async(dtype dst_type, const float* src, void* dst, std::size_t n,
                            fp8_saturation sat, bool use_cuda_intrinsics, void* cuda_stream) {
  check_arguments("convert_from_f32_async", dst_type, src, dst, n);
  if (n == 0) return;
  KVCACHE_CUDA_TRY(detail::launch_convert_from_f32(dst_type, src, dst, n, sat, use_cuda_intrinsics,
                                                   static_cast<cudaStream_t>(cuda_stream)));
}

}  // namespace kvcache
