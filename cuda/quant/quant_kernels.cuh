// Launchers of the quantize / dequantize kernels (cuda/quant/quant_kernels.cu), called by
// cuda/quant/quant_launch.cpp, which validates the arguments and turns errors into
// kvcache::error (the .cu does not include error.hpp: fmt does not compile under nvcc).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kvcache/quant/format.hpp"

namespace kvcache::detail {

/// @brief True when the kernels implement `f`: f16/f16, int8/int8, fp8/fp8, and KIVI (2 or 4
/// bits): keys kivi_channel with groups of 32, 64 or 128 tokens, or kivi_token with groups of
/// 32 channels, values kivi_token with the same group.
[[nodiscard]] bool quant_format_supported_cuda(const quant_format& f) noexcept;

/// @brief Enqueues the quantize kernel (n >= 1, shapes validated, `f` supported). Returns the
/// launch status.
cudaError_t launch_quantize_pages(const quant_format& f, const quantize_job* jobs, std::int32_t n,
                                  std::int32_t page_size, std::int32_t head_dim,
                                  quant_status* status, cudaStream_t stream);

/// @brief Enqueues the dequantize kernel (as launch_quantize_pages).
cudaError_t launch_dequantize_pages(const quant_format& f, const dequantize_job* jobs,
                                    std::int32_t n, std::int32_t page_size, std::int32_t head_dim,
                                    quant_status* status, cudaStream_t stream);

}  // namespace kvcache::detail
