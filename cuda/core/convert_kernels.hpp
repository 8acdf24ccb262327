// Launchers of the conversion kernels (cuda/core/convert.cu). They return the launch status and
// never throw: the .cu cannot include fmt (and so error.hpp) under nvcc's C++20 mode; the
// checked public API is in convert.cpp.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "kvcache/core/dtype.hpp"
#include "kvcache/core/numeric.hpp"

namespace kvcache::detail {

/// @brief Enqueues dst[i] = to_float(src[i]); `src_type` must be floating, n > 0.
cudaError_t launch_convert_to_f32(dtype src_type, const void* src, float* dst, std::size_t n,
                                  cudaStream_t stream) noexcept;

/// @brief Enqueues dst[i] = encode(src[i]); `dst_type` must be floating, n > 0.
cudaError_t launch_convert_from_f32(dtype dst_type, const float* src, void* dst, std::size_t n,
                                    fp8_saturation sat, bool use_cuda_intrinsics,
                                    cudaStream_t stream) noexcept;

}  // namespace kvcache::detail
