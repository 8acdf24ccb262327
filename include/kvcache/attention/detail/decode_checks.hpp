/**
 * @file decode_checks.hpp
 * @brief (internal) The argument checks `paged_decode_host` and `paged_decode_cuda` share,
 * defined in the host library (src/attention/paged_decode_host.cpp) so that the CUDA sources need
 * neither fmt nor error.hpp. Each throws `kvcache::error` naming the offending value; `who`
 * starts the message.
 */
#pragma once

#include <cstdint>

#include "kvcache/attention/paged_decode.hpp"

namespace kvcache::detail {

/// @brief The shape itself (head counts, head dim, dtype, page size). `gpu`: head dims 64 / 128.
void check_decode_shape(const paged_decode_shape& shape, bool gpu, const char* who);
/// @brief The call against its plan: pointers, the tables' page size and count, the mass option.
void check_decode_args(const paged_decode_plan& plan, const paged_decode_args& args,
                       const char* who);
/// @brief An f16 / bf16 pool against the plan's shape and the layer.
void check_decode_pool(const paged_decode_plan& plan, const paged_kv_view& kv,
                       std::int32_t layer, const char* who);
/// @brief A quantized pool (and its residual staging) against the plan and the layer; `gpu`:
/// only the formats the kernels implement.
void check_decode_pool(const paged_decode_plan& plan, const quantized_kv_view& kv,
                       const residual_view& residual, std::int32_t layer, bool gpu,
                       const char* who);
/**
 * @brief Reads the tables (host-readable): indptr non-decreasing, page ids below `num_pages`,
 * last_page_len in 1..page_size, lengths within the mass score rows; with `residual` (non-null
 * arrays), quantized token counts (multiples of 32, <= length), windows within the staging page
 * size and staging page ids in the staging pool. O(tables + pages).
 */
void check_decode_tables(const paged_decode_plan& plan, const paged_decode_args& args,
                         std::int32_t num_pages, const residual_view* residual, const char* who);

/// @brief Number of CSR tables a shape addresses.
[[nodiscard]] std::int64_t decode_tables_needed(const paged_decode_shape& shape) noexcept;
/// @brief Query heads one GPU block handles: the largest of 4, 2, 1 dividing the group.
[[nodiscard]] std::int32_t decode_heads_per_block(const paged_decode_shape& shape) noexcept;

}  // namespace kvcache::detail
