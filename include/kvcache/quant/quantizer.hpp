/**
 * @file quantizer.hpp
 * @brief The `quantizer` concept: how the KV data of one head page is stored in fewer bits.
 *
 * **Unit of work: a head page.** `page_size` tokens x `head_dim` channels of one (layer, kv head),
 * keys and values separately. The full-precision side is f16 rows, token-major: element
 * (token t, channel c) at `rows[t * head_dim + c]`, as `std::uint16_t` bit patterns
 * (`kvcache::float16::bits`). A quantized head page is `key_page_bytes(page_size, head_dim)`
 * (or `value_page_bytes`) bytes: codes first, then metadata (scales, minimums), each region
 * starting at a multiple of 16 bytes, the total a multiple of 16, so that head pages packed
 * back to back stay 16-byte aligned.
 *
 * **Groups and the residual window.** A quantizer quantizes whole groups of `group_size` tokens
 * (1 for per-token schemes; KIVI's keys are quantized per channel over `Group` tokens). The
 * `residual` most recent tokens of a sequence may stay in full precision: of a sequence of L
 * tokens, `residual_tokens(L)` live in an f16 staging area and the first L - residual_tokens(L)
 * in quantized pages (a multiple of `group_size`, so a group never straddles two pages:
 * `validate` requires `page_size % group_size == 0`).
 *
 * ## What a new quantizer must provide (the required expressions)
 * With `rows`: `const std::uint16_t*`, `out`: `std::uint16_t*`, `page`: `std::byte*`, `cpage`:
 * `const std::byte*`, `P`, `D`, `first`, `n`: `std::int32_t`, `flag`: `bool*`, `L`:
 * `std::int64_t`, `layout`: `const kv_layout&`:
 * - `Q::name`: a short name (`std::string_view`), shown in tables and benchmark names;
 * - `Q::key_bits`, `Q::value_bits` (`int`): bits per code (16 for a pass-through);
 * - `Q::group_size` (`std::int32_t` >= 1): tokens quantized together; `Q::residual`
 *   (`std::int32_t` >= 0, a multiple of group_size): the full-precision window;
 * - `Q::key_page_bytes(P, D)`, `Q::value_page_bytes(P, D)` -> `std::size_t`: bytes of a head
 *   page (a multiple of 16), its byte layout documented in the model's header;
 * - `Q::validate(P, D)`: throws `kvcache::error` (`errc::invalid_argument`) naming the bad value
 *   when the model cannot store pages of this shape;
 * - `Q::quantize_keys(rows, page, P, D, first, n)`: quantizes `n` rows (page positions
 *   `[first, first + n)`, both multiples of group_size; a model may accept finer ranges for
 *   values, as KIVI does) into `page`, writing only those tokens'
 *   codes and their groups' metadata (jobs on other positions of the same page may run
 *   concurrently). Throws `errc::invalid_argument` naming the token and channel of a NaN or Inf
 *   input, before writing anything; `errc::out_of_range` / `errc::invalid_argument` for a bad
 *   range;
 * - `Q::quantize_keys(rows, page, P, D, first, n, flag)`: the same, except that non-finite input
 *   is not an error: it is quantized as the model documents (never spreading NaN to other
 *   elements) and `*flag` is set to true (left alone otherwise). This is what the CUDA kernels do;
 * - `Q::dequantize_keys(cpage, out, P, D, first, n)`: f16 rows of page positions
 *   `[first, first + n)` (any range inside the page);
 * - the same three for values: `quantize_values`, `dequantize_values`;
 * - `Q::residual_tokens(L)` -> `std::int64_t`: tokens of an L-token sequence held in full
 *   precision;
 * - `Q::kv_bytes_per_token(layout, L)` -> `double`: the average K + V bytes per token of an
 *   L-token sequence over every layer and kv head of `layout` (codes, metadata and the
 *   full-precision residual included; page fragmentation excluded). f16 is
 *   `2 * layers * kv_heads * head_dim * 2`.
 *
 * Every model header ends with `static_assert(kvcache::quantizer<model>)`. To run on the GPU a
 * model also needs its kernel code in `cuda/quant/` and an explicit instantiation there (see
 * kernels.hpp).
 */
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kvcache/core/kv_layout.hpp"

namespace kvcache {

/**
 * @brief A KV quantization scheme for head pages; see the file comment for the required
 * expressions and their semantics.
 */
template <class Q>
concept quantizer =
    requires(const std::uint16_t* rows, std::uint16_t* out, std::byte* page,
             const std::byte* cpage, std::int32_t n, bool* flag, std::int64_t context,
             const kv_layout& layout) {
      { Q::name } -> std::convertible_to<std::string_view>;
      { Q::key_bits } -> std::convertible_to<int>;
      { Q::value_bits } -> std::convertible_to<int>;
      { Q::group_size } -> std::convertible_to<std::int32_t>;
      { Q::residual } -> std::convertible_to<std::int32_t>;
      { Q::key_page_bytes(n, n) } -> std::same_as<std::size_t>;
      { Q::value_page_bytes(n, n) } -> std::same_as<std::size_t>;
      Q::validate(n, n);
      Q::quantize_keys(rows, page, n, n, n, n);
      Q::quantize_keys(rows, page, n, n, n, n, flag);
      Q::quantize_values(rows, page, n, n, n, n);
      Q::quantize_values(rows, page, n, n, n, n, flag);
      Q::dequantize_keys(cpage, out, n, n, n, n);
      Q::dequantize_values(cpage, out, n, n, n, n);
      { Q::residual_tokens(context) } -> std::same_as<std::int64_t>;
      { Q::kv_bytes_per_token(layout, context) } -> std::same_as<double>;
      requires Q::group_size >= 1;
      requires Q::residual >= 0;
      requires Q::residual % Q::group_size == 0;
      requires Q::key_bits >= 1 && Q::key_bits <= 16;
      requires Q::value_bits >= 1 && Q::value_bits <= 16;
    };

}  // namespace kvcache
