/**
 * @file kernels.hpp
 * @brief Batch quantize and dequantize of head pages: `quantize_pages` (the store's
 * "quantize-on-append when a group completes" step) and `dequantize_pages` (pages to f16 rows,
 * for gather_kv and for engines without a fused kernel).
 *
 * Each has a host implementation (`*_host`, header-only, synchronous) and a CUDA one (`*_cuda`,
 * in kvcache::cuda, asynchronous on the given stream) with the same contract; they produce the
 * same bits (the tests compare them on random pages with poisoned outputs). A batch is an array
 * of jobs, each one head page (K or V of one layer and kv head) and a token range of it; jobs
 * may mix keys and values, and several jobs may write disjoint token ranges of one page
 * (each writes only its tokens' codes and their groups' metadata).
 *
 * Contract of a job (`quantize_job` / `dequantize_job`, format.hpp): `rows` and `page` 16-byte
 * aligned and not null (unless tokens == 0); 0 <= first_token, first_token + tokens <=
 * page_size; for quantize, first_token and tokens multiples of the side's token group
 * (`Q::format.side(s).token_group()`: KIVI's per-channel key group, 1 otherwise).
 * Non-finite input, host: throws errc::invalid_argument naming the job, token and channel
 * unless a `quant_status` is given, in which case the job is quantized as the model documents
 * for non-finite input (never spreading NaN to other elements) and `non_finite_job` records it,
 * exactly as the kernel does. A malformed job: the host twin throws (naming the job); the
 * kernel skips it and records it in `bad_job` (it cannot throw).
 */
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kvcache/core/error.hpp"
#include "kvcache/memory/stream.hpp"
#include "kvcache/quant/format.hpp"
#include "kvcache/quant/quantizer.hpp"

namespace kvcache {

/**
 * @brief A quantizer whose pages follow a `quant_format` (`Q::format`), which is what the CUDA
 * kernels read and write. All of kvcache's models are.
 */
template <class Q>
concept formatted_quantizer = quantizer<Q> && requires {
  { Q::format } -> std::convertible_to<quant_format>;
};

namespace detail {

[[nodiscard]] inline bool misaligned16(const void* p) noexcept {
  return (reinterpret_cast<std::uintptr_t>(p) & 15u) != 0;
}

/// @brief Throws naming job j unless it satisfies the job contract (see the file comment).
inline void check_job(std::string_view name, const char* op, std::int32_t j, const void* rows,
                      const void* page, std::int32_t first, std::int32_t tokens,
                      std::int32_t page_size, std::int32_t group) {
  KVCACHE_EXPECTS(first >= 0 && tokens >= 0 && first <= page_size && tokens <= page_size - first,
                  errc::out_of_range, "{}: {}: job {}: tokens [{}, {}) are not inside a page of {} tokens",
                  name, op, j, first, static_cast<std::int64_t>(first) + tokens, page_size);
  KVCACHE_EXPECTS(first % group == 0 && tokens % group == 0, errc::invalid_argument,
                  "{}: {}: job {}: first token {} and token count {} must be multiples of the "
                  "group size {}",
                  name, op, j, first, tokens, group);
  if (tokens == 0) return;
  KVCACHE_EXPECTS(rows != nullptr && page != nullptr, errc::invalid_argument,
                  "{}: {}: job {}: null rows or page", name, op, j);
  KVCACHE_EXPECTS(!misaligned16(rows) && !misaligned16(page), errc::invalid_argument,
                  "{}: {}: job {}: rows {} and page {} must be 16-byte aligned", name, op, j, rows,
                  page);
}

/// @brief Launchers of kvcache::cuda (cuda/quant/): validate, then enqueue on `s`.
void quantize_pages_cuda(std::string_view name, const quant_format& format,
                         const quantize_job* jobs, std::int32_t n, std::int32_t page_size,
                         std::int32_t head_dim, quant_status* status, stream_view s);
void dequantize_pages_cuda(std::string_view name, const quant_format& format,
                           const dequantize_job* jobs, std::int32_t n, std::int32_t page_size,
                           std::int32_t head_dim, quant_status* status, stream_view s);
}  // namespace detail

/**
 * @brief Throws errc::invalid_argument if `status` (copied back from a `*_cuda` call) reports a
 * non-finite input or a skipped job, naming the job and `what` (e.g. "quantize_pages").
 */
inline void throw_if_failed(const quant_status& status, std::string_view what) {
  KVCACHE_EXPECTS(status.bad_job == 0, errc::invalid_argument,
                  "{}: job {} was malformed and skipped (range outside the page, not a multiple "
                  "of the group, misaligned or null pointer)",
                  what, status.bad_job - 1);
  KVCACHE_EXPECTS(status.non_finite_job == 0, errc::invalid_argument,
                  "{}: job {} held a NaN or Inf input (quantized as documented, but not a "
                  "faithful copy)",
                  what, status.non_finite_job - 1);
}

// ---- quantize_pages -------------------------------------------------------------------------
/**
 * @brief Quantizes each job's f16 rows into its head page (host, synchronous).
 * @param status null: non-finite input throws. Otherwise non-finite input is quantized as the
 * model documents and `status->non_finite_job` records the largest such job (`*status` is reset
 * first), as the kernel does.
 * @throws kvcache::error invalid_argument (bad page shape, malformed job, non-finite input
 * without `status`), out_of_range (a job's range outside the page), naming the job. Jobs before
 * the failing one have been written.
 * @note O(total tokens x head_dim).
 */
template <formatted_quantizer Q>
void quantize_pages_host(const quantize_job* jobs, std::int32_t n, std::int32_t page_size,
                         std::int32_t head_dim, quant_status* status = nullptr) {
  Q::validate(page_size, head_dim);
  KVCACHE_EXPECTS(n >= 0 && (n == 0 || jobs != nullptr), errc::invalid_argument,
                  "{}: quantize_pages_host: {} jobs at {}", Q::name, n, static_cast<const void*>(jobs));
  if (status != nullptr) *status = quant_status{};
  for (std::int32_t j = 0; j < n; ++j) {
    const quantize_job& job = jobs[j];
    const std::int32_t group = Q::format.side(job.side).token_group();
    detail::check_job(Q::name, "quantize_pages_host", j, job.rows, job.page, job.first_token,
                      job.tokens, page_size, group);
    bool non_finite = false;
    try {
      if (job.side == kv_side::key) {
        Q::quantize_keys(job.rows, job.page, page_size, head_dim, job.first_token, job.tokens,
                         status != nullptr ? &non_finite : nullptr);
      } else {
        Q::quantize_values(job.rows, job.page, page_size, head_dim, job.first_token, job.tokens,
                           status != nullptr ? &non_finite : nullptr);
      }
    } catch (const error& e) {
      throw error(e.code(), fmt::format("quantize_pages_host: job {}: {}", j, e.what()));
    }
    if (non_finite) status->non_finite_job = std::max(status->non_finite_job, j + 1);
  }
}

/**
 * @brief `quantize_pages_host`'s contract on the GPU, asynchronous on `s`.
 * @param jobs device-accessible array of `n` jobs (device or pinned memory), rows and pages in
 * device-accessible memory.
 * @param status device-accessible `quant_status` (or null): zeroed on `s`, then written by the
 * kernel; copy it back after synchronizing and pass it to `throw_if_failed`.
 * @throws kvcache::error invalid_argument (page shape, n < 0), not_supported (a format the
 * kernels do not implement, naming it), cuda_error. Job contents are checked by the kernel.
 * @note Needs kvcache::cuda. Implements every kvcache model (KIVI with key groups of 32, 64 or
 * 128 tokens, or 32 channels per token). On an H100, 0.91 (KIVI-4) to 0.97 of the device copy
 * bandwidth on batches of 256 MiB and more (docs/quantization.md).
 */
template <formatted_quantizer Q>
void quantize_pages_cuda(const quantize_job* jobs, std::int32_t n, std::int32_t page_size,
                         std::int32_t head_dim, quant_status* status, stream_view s) {
  Q::validate(page_size, head_dim);
  detail::quantize_pages_cuda(Q::name, Q::format, jobs, n, page_size, head_dim, status, s);
}

// ---- dequantize_pages -----------------------------------------------------------------------
/**
 * @brief Decodes each job's token range of its head page into f16 rows (host, synchronous).
 * @throws kvcache::error invalid_argument, out_of_range naming the job.
 * @note O(total tokens x head_dim).
 */
template <formatted_quantizer Q>
void dequantize_pages_host(const dequantize_job* jobs, std::int32_t n, std::int32_t page_size,
                           std::int32_t head_dim) {
  Q::validate(page_size, head_dim);
  KVCACHE_EXPECTS(n >= 0 && (n == 0 || jobs != nullptr), errc::invalid_argument,
                  "{}: dequantize_pages_host: {} jobs at {}", Q::name, n,
                  static_cast<const void*>(jobs));
  for (std::int32_t j = 0; j < n; ++j) {
    const dequantize_job& job = jobs[j];
    detail::check_job(Q::name, "dequantize_pages_host", j, job.rows, job.page, job.first_token,
                      job.tokens, page_size, 1);
    if (job.side == kv_side::key) {
      Q::dequantize_keys(job.page, job.rows, page_size, head_dim, job.first_token, job.tokens);
    } else {
      Q::dequantize_values(job.page, job.rows, page_size, head_dim, job.first_token, job.tokens);
    }
  }
}

/**
 * @brief `dequantize_pages_host`'s contract on the GPU, asynchronous on `s`; `status` (device
 * accessible, or null) records skipped jobs in `bad_job`.
 * @note Needs kvcache::cuda. On an H100, 0.75 (KIVI-2) to 0.94 (identity) of the device copy
 * bandwidth on batches of 256 MiB and more.
 */
template <formatted_quantizer Q>
void dequantize_pages_cuda(const dequantize_job* jobs, std::int32_t n, std::int32_t page_size,
                           std::int32_t head_dim, quant_status* status, stream_view s) {
  Q::validate(page_size, head_dim);
  detail::dequantize_pages_cuda(Q::name, Q::format, jobs, n, page_size, head_dim, status, s);
}

}  // namespace kvcache
