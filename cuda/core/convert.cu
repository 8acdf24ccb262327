// Conversion kernels between f32 and f16 / bf16 / fp8, and their launchers (status-returning;
// the checked API is in convert.cpp). Device code calls numeric.hpp, or CUDA's intrinsics.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "core/convert_kernels.hpp"
#include "kvcache/core/numeric.hpp"

namespace kvcache::detail {
namespace {

constexpr int block_size = 256;
constexpr std::size_t max_blocks = std::size_t{1} << 16;  // grid-stride beyond

/// @brief dst[i] = op(src[i]) for i < n, grid-stride.
template <class Src, class Dst, class Op>
__global__ void __launch_bounds__(block_size)
    map_kernel(const Src* __restrict__ src, Dst* __restrict__ dst, std::size_t n, Op op) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    dst[i] = op(src[i]);
  }
}

template <class Src, class Dst, class Op>
cudaError_t launch_map(const void* src, void* dst, std::size_t n, Op op, cudaStream_t stream) {
  std::size_t blocks = (n + block_size - 1) / block_size;
  if (blocks > max_blocks) blocks = max_blocks;
  map_kernel<Src, Dst, Op><<<static_cast<unsigned>(blocks), block_size, 0, stream>>>(
      static_cast<const Src*>(src), static_cast<Dst*>(dst), n, op);
  return cudaGetLastError();
}

// ---- decoders (storage bits -> float) ------------------------------------------------------
struct copy_f32 {
  __device__ std::uint32_t operator()(std::uint32_t x) const { return x; }
};
struct decode_f16 {
  __device__ float operator()(std::uint16_t b) const { return to_float(float16{b}); }
};
struct decode_bf16 {
  __device__ float operator()(std::uint16_t b) const { return to_float(bfloat16{b}); }
};
struct decode_e4m3 {
  __device__ float operator()(std::uint8_t b) const { return to_float(float8_e4m3{b}); }
};
struct decode_e5m2 {
  __device__ float operator()(std::uint8_t b) const { return to_float(float8_e5m2{b}); }
};

// ---- encoders (float -> storage bits), numeric.hpp ------------------------------------------
struct encode_f16 {
  __device__ std::uint16_t operator()(float x) const { return to_float16(x).bits; }
};
struct encode_bf16 {
  __device__ std::uint16_t operator()(float x) const { return to_bfloat16(x).bits; }
};
struct encode_e4m3 {
  fp8_saturation sat;
  __device__ std::uint8_t operator()(float x) const { return to_float8_e4m3(x, sat).bits; }
};
struct encode_e5m2 {
  fp8_saturation sat;
  __device__ std::uint8_t operator()(float x) const { return to_float8_e5m2(x, sat).bits; }
};

// ---- encoders, CUDA intrinsics --------------------------------------------------------------
struct cuda_encode_f16 {
  __device__ std::uint16_t operator()(float x) const {
    return __half_as_ushort(__float2half_rn(x));
  }
};
struct cuda_encode_bf16 {
  __device__ std::uint16_t operator()(float x) const {
    return __bfloat16_as_ushort(__float2bfloat16_rn(x));
  }
};
struct cuda_encode_fp8 {
  __nv_saturation_t sat;
  __nv_fp8_interpretation_t interpretation;
  __device__ std::uint8_t operator()(float x) const {
    return static_cast<std::uint8_t>(__nv_cvt_float_to_fp8(x, sat, interpretation));
  }
};

}  // namespace

cudaError_t launch_convert_to_f32(dtype src_type, const void* src, float* dst, std::size_t n,
                                  cudaStream_t stream) noexcept {
  switch (src_type) {
    case dtype::f32:
      return launch_map<std::uint32_t, std::uint32_t>(src, dst, n, copy_f32{}, stream);
    case dtype::f16:
      return launch_map<std::uint16_t, float>(src, dst, n, decode_f16{}, stream);
    case dtype::bf16:
      return launch_map<std::uint16_t, float>(src, dst, n, decode_bf16{}, stream);
    case dtype::fp8_e4m3:
      return launch_map<std::uint8_t, float>(src, dst, n, decode_e4m3{}, stream);
    case dtype::fp8_e5m2:
      return launch_map<std::uint8_t, float>(src, dst, n, decode_e5m2{}, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t launch_convert_from_f32(dtype dst_type, const float* src, void* dst, std::size_t n,
                                    fp8_saturation sat, bool use_cuda_intrinsics,
                                    cudaStream_t stream) noexcept {
  const __nv_saturation_t cuda_sat = sat == fp8_saturation::finite ? __NV_SATFINITE : __NV_NOSAT;
  switch (dst_type) {
    case dtype::f32:
      return launch_map<std::uint32_t, std::uint32_t>(src, dst, n, copy_f32{}, stream);
    case dtype::f16:
      return use_cuda_intrinsics
                 ? launch_map<float, std::uint16_t>(src, dst, n, cuda_encode_f16{}, stream)
                 : launch_map<float, std::uint16_t>(src, dst, n, encode_f16{}, stream);
    case dtype::bf16:
      return use_cuda_intrinsics
                 ? launch_map<float, std::uint16_t>(src, dst, n, cuda_encode_bf16{}, stream)
                 : launch_map<float, std::uint16_t>(src, dst, n, encode_bf16{}, stream);
    case dtype::fp8_e4m3:
      return use_cuda_intrinsics
                 ? launch_map<float, std::uint8_t>(src, dst, n,
                                                   cuda_encode_fp8{cuda_sat, __NV_E4M3}, stream)
                 : launch_map<float, std::uint8_t>(src, dst, n, encode_e4m3{sat}, stream);
    case dtype::fp8_e5m2:
      return use_cuda_intrinsics
                 ? launch_map<float, std::uint8_t>(src, dst, n,
                                                   cuda_encode_fp8{cuda_sat, __NV_E5M2}, stream)
                 : launch_map<float, std::uint8_t>(src, dst, n, encode_e5m2{sat}, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace kvcache::detail
