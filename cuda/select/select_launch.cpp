// Host side of select_top_k_cuda, retain_attention_mass_cuda and compact_kv_segments_cuda:
// argument checks with kvcache::error (host-readable arrays are validated as the host twins do),
// then the launches of cuda/select/select_kernels.cu.
#include <cuda_runtime_api.h>

#include "kvcache/core/cuda_error.hpp"
#include "kvcache/core/error.hpp"
#include "kvcache/paging/detail/kernel_checks.hpp"
#include "kvcache/select/attention_mass.hpp"
#include "kvcache/select/compact_segments.hpp"
#include "kvcache/select/top_k.hpp"
#include "select/select_kernels.cuh"

namespace kvcache {

namespace {

/// Where `p` lives: whether the host can read it (pinned or pageable host memory) and whether the
/// device can (device, managed, pinned; pageable only with pageable memory access).
struct access {
  bool host = false;
  bool device = true;
};
access where(const void* p) {
  cudaPointerAttributes a{};
  KVCACHE_CUDA_TRY(cudaPointerGetAttributes(&a, p));
  switch (a.type) {
    case cudaMemoryTypeDevice:
    case cudaMemoryTypeManaged:
      return {false, true};
    case cudaMemoryTypeHost:
      return {true, true};
    default: {
      int dev = 0, pageable = 0;
      KVCACHE_CUDA_TRY(cudaGetDevice(&dev));
      KVCACHE_CUDA_TRY(cudaDeviceGetAttribute(&pageable, cudaDevAttrPageableMemoryAccess, dev));
      return {true, pageable != 0};
    }
  }
}

void require_device(const access& a, const void* p, const char* who, const char* what) {
  if (!a.device) detail::throw_not_device_accessible(who, what, p);
}
void require_device_accessible(const void* p, const char* who, const char* what) {
  require_device(where(p), p, who, what);
}

}  // namespace

void select_top_k_cuda(const float* scores, const top_k_segment* segments, std::int32_t tables,
                       std::int64_t* keep, stream_view s) {
  constexpr const char* who = "select_top_k_cuda";
  KVCACHE_EXPECTS(tables >= 0 && (tables == 0 || (segments != nullptr && scores != nullptr &&
                                                   keep != nullptr)),
                  errc::invalid_argument, "{}: {} tables, scores {}, segments {}, keep {}", who,
                  tables, static_cast<const void*>(scores), static_cast<const void*>(segments),
                  static_cast<const void*>(keep));
  if (tables == 0) return;
  require_device_accessible(scores, who, "the scores");
  require_device_accessible(keep, who, "the kept indices");
  const access sa = where(segments);
  if (sa.host) {
    for (std::int32_t t = 0; t < tables; ++t) detail::check_top_k_segment(segments[t], t, who);
  }
  require_device(sa, segments, who, "the segments");
  KVCACHE_CUDA_TRY(detail::launch_select_top_k(scores, segments, tables, keep,
                                               static_cast<cudaStream_t>(s.handle())));
}

void retain_attention_mass_cuda(float* mass, const top_k_segment* segments, std::int32_t tables,
                                const std::int64_t* keep, stream_view s) {
  constexpr const char* who = "retain_attention_mass_cuda";
  KVCACHE_EXPECTS(tables >= 0 && (tables == 0 || (segments != nullptr && mass != nullptr &&
                                                   keep != nullptr)),
                  errc::invalid_argument, "{}: {} tables, mass {}, segments {}, keep {}", who,
                  tables, static_cast<const void*>(mass), static_cast<const void*>(segments),
                  static_cast<const void*>(keep));
  if (tables == 0) return;
  require_device_accessible(mass, who, "the mass buffer");
  const access sa = where(segments), ka = where(keep);
  const bool keep_host = ka.host;
  if (sa.host) {
    for (std::int32_t t = 0; t < tables; ++t) {
      const top_k_segment& sg = segments[t];
      KVCACHE_EXPECTS(sg.scores >= 0 && sg.rows >= 0 && sg.keep >= 0, errc::invalid_argument,
                      "{}: segment {} has scores at {}, {} rows, keep at {}", who, t, sg.scores,
                      sg.rows, sg.keep);
      if (!keep_host) continue;
      for (std::int64_t j = 0; j < kept_rows(sg); ++j) {
        const std::int64_t r = keep[sg.keep + j];
        KVCACHE_EXPECTS(r >= j && r < sg.rows && (j == 0 || r > keep[sg.keep + j - 1]),
                        errc::invalid_argument,
                        "{}: segment {} keep[{}] = {} is outside [0, {}) or not ascending", who,
                        t, j, r, sg.rows);
      }
    }
  }
  require_device(sa, segments, who, "the segments");
  require_device(ka, keep, who, "the kept indices");
  KVCACHE_CUDA_TRY(detail::launch_retain_rows(mass, segments, tables, keep,
                                              static_cast<cudaStream_t>(s.handle())));
}

void compact_kv_segments_cuda(const paged_kv_view& pool, const slot_move* moves, std::int64_t n,
                              const std::int64_t* seg_off, std::int32_t segments, stream_view s) {
  constexpr const char* who = "compact_kv_segments_cuda";
  detail::check_pool_view(pool, who);
  KVCACHE_EXPECTS(n >= 0 && segments >= 0 && seg_off != nullptr &&
                      (n == 0 || moves != nullptr),
                  errc::invalid_argument, "{}: {} moves at {} in {} segments at {}", who, n,
                  static_cast<const void*>(moves), segments, static_cast<const void*>(seg_off));
  if (n == 0 || segments == 0) return;
  require_device_accessible(pool.data, who, "the pool");
  const std::int64_t slots = static_cast<std::int64_t>(pool.num_pages) * pool.page_size;
  const access ma = where(moves), oa = where(seg_off);
  if (ma.host) {
    for (std::int64_t i = 0; i < n; ++i) {
      KVCACHE_EXPECTS(moves[i].src >= 0 && moves[i].src < slots && moves[i].dst >= 0 &&
                          moves[i].dst < slots,
                      errc::out_of_range,
                      "{}: move {} ({} -> {}) names a slot outside the {} slots", who, i,
                      moves[i].src, moves[i].dst, slots);
    }
  }
  if (oa.host) {
    KVCACHE_EXPECTS(seg_off[0] == 0 && seg_off[segments] == n, errc::invalid_argument,
                    "{}: segment offsets run from {} to {}, not from 0 to {} moves", who,
                    seg_off[0], seg_off[segments], n);
    for (std::int32_t g = 0; g < segments; ++g) {
      KVCACHE_EXPECTS(seg_off[g + 1] >= seg_off[g], errc::invalid_argument,
                      "{}: segment offset {} ({}) is below offset {} ({})", who, g + 1,
                      seg_off[g + 1], g, seg_off[g]);
    }
  }
  require_device(ma, moves, who, "the moves");
  require_device(oa, seg_off, who, "the segment offsets");
  const std::int32_t arrays = pool.layer_stride_bytes != 0 ? pool.layers : 1;
  KVCACHE_EXPECTS(std::int64_t{arrays} * pool.heads_per_page * 2 * pool.row_bytes() < (std::int64_t{1} << 32),
                  errc::invalid_argument, "{}: {} bytes per moved slot exceed 4 GiB", who,
                  std::int64_t{arrays} * pool.heads_per_page * 2 * pool.row_bytes());
  detail::compact_params p = detail::compact_params_of(pool);
  p.moves = moves;
  p.n = n;
  KVCACHE_CUDA_TRY(detail::launch_compact_kv_segments(p, seg_off, segments,
                                                      static_cast<cudaStream_t>(s.handle())));
}

}  // namespace kvcache
