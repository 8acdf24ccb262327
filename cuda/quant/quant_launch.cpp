// Host side of the quantize / dequantize launchers: argument checks with kvcache::error, the
// status reset, and CUDA error handling around cuda/quant/quant_kernels.cu.
#include <cuda_runtime_api.h>

#include <string_view>

#include "kvcache/core/cuda_error.hpp"
#include "kvcache/core/error.hpp"
#include "kvcache/quant/kernels.hpp"
#include "quant/quant_kernels.cuh"

namespace kvcache::detail {

namespace {
void check_launch_args(std::string_view name, const char* op, const quant_format& f,
                       const void* jobs, std::int32_t n) {
  KVCACHE_EXPECTS(n >= 0 && (n == 0 || jobs != nullptr), errc::invalid_argument,
                  "{}: {}: {} jobs at {}", name, op, n, jobs);
  KVCACHE_EXPECTS(quant_format_supported_cuda(f), errc::not_supported,
                  "{}: {}: the CUDA kernels do not implement keys {} ({} bits, group {}) with "
                  "values {} ({} bits, group {})",
                  name, op, name_of(f.key.scheme), f.key.bits, f.key.group,
                  name_of(f.value.scheme), f.value.bits, f.value.group);
}
}  // namespace

void quantize_pages_cuda(std::string_view name, const quant_format& format,
                         const quantize_job* jobs, std::int32_t n, std::int32_t page_size,
                         std::int32_t head_dim, quant_status* status, stream_view s) {
  check_launch_args(name, "quantize_pages_cuda", format, jobs, n);
  auto stream = static_cast<cudaStream_t>(s.handle());
  if (status != nullptr) {
    KVCACHE_CUDA_TRY(cudaMemsetAsync(status, 0, sizeof(quant_status), stream));
  }
  if (n == 0) return;
  KVCACHE_CUDA_TRY(
      launch_quantize_pages(format, jobs, n, page_size, head_dim, status, stream));
}

void dequantize_pages_cuda(std::string_view name, const quant_format& format,
                           const dequantize_job* jobs, std::int32_t n, std::int32_t page_size,
                           std::int32_t head_dim, quant_status* status, stream_view s) {
  check_launch_args(name, "dequantize_pages_cuda", format, jobs, n);
  auto stream = static_cast<cudaStream_t>(s.handle());
  if (status != nullptr) {
    KVCACHE_CUDA_TRY(cudaMemsetAsync(status, 0, sizeof(quant_status), stream));
  }
  if (n == 0) return;
  KVCACHE_CUDA_TRY(
      launch_dequantize_pages(format, jobs, n, page_size, head_dim, status, stream));
}

}  // namespace kvcache::detail
