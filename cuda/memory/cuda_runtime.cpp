// CUDA runtime wrappers of the memory layer: resources, streams, events, copies.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <utility>

#include "kvcache/core/cuda_error.hpp"
#include "kvcache/memory/copy.hpp"
#include "kvcache/memory/cuda_async_pool_resource.hpp"
#include "kvcache/memory/cuda_resource.hpp"
#include "kvcache/memory/pinned_host_resource.hpp"
#include "kvcache/memory/stream.hpp"

namespace kvcache {

namespace {
cudaStream_t to_cuda(stream_view s) { return static_cast<cudaStream_t>(s.handle()); }
}  // namespace

// ---- cuda_resource -------------------------------------------------------------------------
void* cuda_resource::allocate(std::size_t bytes, std::size_t alignment) {
  detail::check_allocation(bytes, alignment, "cuda_resource");
  KVCACHE_EXPECTS(alignment <= 256, errc::not_supported,
                  "cuda_resource: alignment {} is over cudaMalloc's 256 bytes", alignment);
  void* p = nullptr;
  const cudaError_t status = cudaMalloc(&p, bytes);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    KVCACHE_FAIL(status == cudaErrorMemoryAllocation ? errc::out_of_memory : errc::cuda_error,
                 "cuda_resource: cudaMalloc of {} bytes failed: {}", bytes,
                 cudaGetErrorString(status));
  }
  return p;
}

void cuda_resource::deallocate(void* p, std::size_t, std::size_t) noexcept {
  KVCACHE_CUDA_ASSERT_NOTHROW(cudaFree(p));
}

// ---- pinned_host_resource ------------------------------------------------------------------
void* pinned_host_resource::allocate(std::size_t bytes, std::size_t alignment) {
  detail::check_allocation(bytes, alignment, "pinned_host_resource");
  KVCACHE_EXPECTS(alignment <= 4096, errc::not_supported,
                  "pinned_host_resource: alignment {} is over the 4096-byte page", alignment);
  void* p = nullptr;
  const cudaError_t status =
      cudaHostAlloc(&p, bytes, cudaHostAllocPortable | cudaHostAllocMapped);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    KVCACHE_FAIL(status == cudaErrorMemoryAllocation ? errc::out_of_memory : errc::cuda_error,
                 "pinned_host_resource: cudaHostAlloc of {} bytes failed: {}", bytes,
                 cudaGetErrorString(status));
  }
  return p;
}

void pinned_host_resource::deallocate(void* p, std::size_t, std::size_t) noexcept {
  KVCACHE_CUDA_ASSERT_NOTHROW(cudaFreeHost(p));
}

// ---- cuda_async_pool_resource --------------------------------------------------------------
cuda_async_pool_resource::cuda_async_pool_resource(std::size_t initial_pool_bytes,
                                                   std::size_t release_threshold) {
  int device = 0;
  KVCACHE_CUDA_TRY(cudaGetDevice(&device));
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.handleTypes = cudaMemHandleTypeNone;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  cudaMemPool_t pool = nullptr;
  KVCACHE_CUDA_TRY(cudaMemPoolCreate(&pool, &props));
  pool_ = pool;
  std::uint64_t threshold = release_threshold;
  KVCACHE_CUDA_TRY(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  if (initial_pool_bytes > 0) {  // grow the pool once, keep it
    void* p = allocate_async(initial_pool_bytes, default_alignment, stream_view{});
    deallocate_async(p, initial_pool_bytes, default_alignment, stream_view{});
    KVCACHE_CUDA_TRY(cudaStreamSynchronize(nullptr));
  }
}

cuda_async_pool_resource::~cuda_async_pool_resource() {
  if (pool_ != nullptr) {
    KVCACHE_CUDA_ASSERT_NOTHROW(cudaDeviceSynchronize());
    KVCACHE_CUDA_ASSERT_NOTHROW(cudaMemPoolDestroy(static_cast<cudaMemPool_t>(pool_)));
  }
}

void* cuda_async_pool_resource::allocate_async(std::size_t bytes, std::size_t alignment,
                                               stream_view s) {
  detail::check_allocation(bytes, alignment, "cuda_async_pool_resource");
  KVCACHE_EXPECTS(alignment <= 256, errc::not_supported,
                  "cuda_async_pool_resource: alignment {} is over the pool's 256 bytes",
                  alignment);
  void* p = nullptr;
  const cudaError_t status =
      cudaMallocFromPoolAsync(&p, bytes, static_cast<cudaMemPool_t>(pool_), to_cuda(s));
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    KVCACHE_FAIL(status == cudaErrorMemoryAllocation ? errc::out_of_memory : errc::cuda_error,
                 "cuda_async_pool_resource: cudaMallocFromPoolAsync of {} bytes failed: {}", bytes,
                 cudaGetErrorString(status));
  }
  return p;
}

void cuda_async_pool_resource::deallocate_async(void* p, std::size_t, std::size_t,
                                                stream_view s) noexcept {
  KVCACHE_CUDA_ASSERT_NOTHROW(cudaFreeAsync(p, to_cuda(s)));
}

void* cuda_async_pool_resource::allocate(std::size_t bytes, std::size_t alignment) {
  void* p = allocate_async(bytes, alignment, stream_view{});
  KVCACHE_CUDA_TRY(cudaStreamSynchronize(nullptr));
  return p;
}

void cuda_async_pool_resource::deallocate(void* p, std::size_t bytes,
                                          std::size_t alignment) noexcept {
  deallocate_async(p, bytes, alignment, stream_view{});
}

// ---- default resources ---------------------------------------------------------------------
template <>
resource_ref<cuda_space> default_resource<cuda_space>() {
  static cuda_resource resource;
  return resource_ref<cuda_space>{resource};
}

template <>
resource_ref<pinned_host_space> default_resource<pinned_host_space>() {
  static pinned_host_resource resource;
  return resource_ref<pinned_host_space>{resource};
}

// ---- streams, events, copies ---------------------------------------------------------------
void synchronize(stream_view s) { KVCACHE_CUDA_TRY(cudaStreamSynchronize(to_cuda(s))); }

stream::stream() {
  cudaStream_t s = nullptr;
  KVCACHE_CUDA_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  handle_ = s;
}
stream::~stream() {
  if (handle_ != nullptr) KVCACHE_CUDA_ASSERT_NOTHROW(cudaStreamDestroy(to_cuda(view())));
}
stream& stream::operator=(stream&& other) noexcept {
  if (this != &other) {
    if (handle_ != nullptr) KVCACHE_CUDA_ASSERT_NOTHROW(cudaStreamDestroy(to_cuda(view())));
    handle_ = std::exchange(other.handle_, nullptr);
  }
  return *this;
}
void stream::synchronize() const { kvcache::synchronize(view()); }

event::event() {
  cudaEvent_t e = nullptr;
  KVCACHE_CUDA_TRY(cudaEventCreate(&e));
  handle_ = e;
}
event::~event() {
  if (handle_ != nullptr) KVCACHE_CUDA_ASSERT_NOTHROW(cudaEventDestroy(static_cast<cudaEvent_t>(handle_)));
}
event& event::operator=(event&& other) noexcept {
  if (this != &other) {
    if (handle_ != nullptr)
      KVCACHE_CUDA_ASSERT_NOTHROW(cudaEventDestroy(static_cast<cudaEvent_t>(handle_)));
    handle_ = std::exchange(other.handle_, nullptr);
  }
  return *this;
}
void event::record(stream_view s) {
  KVCACHE_CUDA_TRY(cudaEventRecord(static_cast<cudaEvent_t>(handle_), to_cuda(s)));
}
void event::synchronize() const {
  KVCACHE_CUDA_TRY(cudaEventSynchronize(static_cast<cudaEvent_t>(handle_)));
}
void event::wait(stream_view s) const {
  KVCACHE_CUDA_TRY(cudaStreamWaitEvent(to_cuda(s), static_cast<cudaEvent_t>(handle_), 0));
}
float event::elapsed_ms(const event& start, const event& stop) {
  float ms = 0.0f;
  KVCACHE_CUDA_TRY(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start.handle_),
                                        static_cast<cudaEvent_t>(stop.handle_)));
  return ms;
}

int cuda_device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

namespace detail {
void cuda_copy_async(void* dst, const void* src, std::size_t bytes, stream_view s) {
  KVCACHE_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, to_cuda(s)));
}
}  // namespace detail

}  // namespace kvcache
