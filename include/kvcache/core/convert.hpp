/**
 * @file convert.hpp
 * @brief Element-wise conversion of device arrays between f32 and the floating-point dtypes
 * (f16, bf16, fp8_e4m3, fp8_e5m2), on a CUDA stream. Defined in kvcache::cuda.
 *
 * The kernels use the conversions of numeric.hpp compiled for the device, so a device result is
 * bit for bit the host's (rounding, saturation and NaN rules are documented there). The
 * encoder can use CUDA's intrinsics instead (`__float2half_rn`, `__float2bfloat16_rn`,
 * `__nv_cvt_float_to_fp8`), for comparison and speed; they differ from numeric.hpp only in the
 * NaN patterns they produce for f16 and bf16 (CUDA: 0x7FFF for every NaN).
 *
 * The stream is a `cudaStream_t` passed as `void*` (nullptr = the legacy default stream): the
 * core layer does not depend on the memory layer's `stream_view` (pass `s.handle()`).
 */
#pragma once

#include <cstddef>

#include "kvcache/core/dtype.hpp"
#include "kvcache/core/numeric.hpp"

namespace kvcache {

/**
 * @brief dst[i] = to_float(src[i]) for i < n, src holding n elements of `src_type` (f32, f16,
 * bf16, fp8_e4m3 or fp8_e5m2; f32 is copied bit for bit). Both arrays in device-accessible
 * memory. Exact.
 * @param cuda_stream a `cudaStream_t` (nullptr: the default stream).
 * @throws kvcache::error errc::not_supported naming a non-floating `src_type`;
 * errc::invalid_argument for a null pointer with n > 0; errc::cuda_error if the launch fails.
 * @note Asynchronous: enqueues one kernel on the stream and returns. O(n) work; n = 0 launches
 * nothing. Needs kvcache::cuda.
 */
void convert_to_f32_async(dtype src_type, const void* src, float* dst, std::size_t n,
                          void* cuda_stream);

/**
 * @brief dst[i] = src[i] rounded to `dst_type` (to nearest, ties to even; fp8 out of range and
 * infinities per `sat`) for i < n. f32 is copied bit for bit.
 * @param use_cuda_intrinsics encode with CUDA's own conversions instead of numeric.hpp's.
 * @param cuda_stream a `cudaStream_t` (nullptr: the default stream).
 * @throws kvcache::error errc::not_supported naming a non-floating `dst_type`;
 * errc::invalid_argument for a null pointer with n > 0; errc::cuda_error if the launch fails.
 * @note Asynchronous: enqueues one kernel on the stream and returns. O(n) work; n = 0 launches
 * nothing. Needs kvcache::cuda.
 */
void convert_from_f32_async(dtype dst_type, const float* src, void* dst, std::size_t n,
                            fp8_saturation sat, bool use_cuda_intrinsics, void* cuda_stream);

}  // namespace kvcache
