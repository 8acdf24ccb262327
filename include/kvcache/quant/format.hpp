/**
 * @file format.hpp
 * @brief `quant_format`: the byte layout of quantized head pages, as plain data that kernels
 * (the library's and an engine's attention kernel) read; the batch job descriptions
 * (`quantize_job`, `dequantize_job`) and the kernels' `quant_status`.
 *
 * A head page holds `page_size` (P) tokens x `head_dim` (D) channels of one (layer, kv head),
 * keys or values. Its bytes: the codes at offset 0, the metadata at `metadata_offset` (a multiple
 * of 16), the whole `page_bytes` (a multiple of 16). Codes are token-major rows of
 * `code_row_bytes` bytes; packed codes (2 and 4 bits) are stored lowest bits first: channel c of
 * a row is in byte c * bits / 8 at bit (c % (8 / bits)) * bits. Byte b of token t's row is at
 * `code_byte_offset(t, b)`: t * code_row_bytes + b, except for 2-bit `kivi_token` codes with rows
 * of a multiple of 16 bytes (KIVI-2 values, head_dim a multiple of 64), whose rows are
 * interleaved per token pair: the 2 R bytes of tokens 2i, 2i + 1 (R = code_row_bytes) are R / 2
 * words, word 8 s + x (x < 8) = {byte 16 s + x of token 2i, byte 16 s + x + 8 of token 2i, the
 * same two bytes of token 2i + 1} (odd P: the last pair's second halves are padding). A decoder
 * of the values as tensor-core operands, which pair two tokens per 32-bit register, then masks
 * the codes of both tokens out of one word (the paged decode attention: 5% of its KIVI-2 time).
 *
 * | scheme           | codes (row of token t)           | metadata                                      |
 * | ---------------- | -------------------------------- | --------------------------------------------- |
 * | `f16`            | D f16 (raw 16-bit words)         | none                                          |
 * | `int8_token`     | D int8                           | [P] f32 scale (of token t at 4 t)             |
 * | `fp8_e4m3_token` | D fp8 E4M3 bytes                 | [P] f32 scale                                 |
 * | `kivi_channel`   | D codes of `bits` bits, packed   | [P / group] records of 4 D bytes: D f16 mins, |
 * |                  |                                  | then D f16 scales, each in pair order         |
 * |                  |                                  | (`kivi_channel_min_offset`)                   |
 * | `kivi_token`     | D codes of `bits` bits, packed   | [P / 2][2][D / group][2] f16: token pairs     |
 * |                  |                                  | (2i, 2i + 1) share a record of 8 D / group    |
 * |                  |                                  | bytes, the groups' mins as f16 pairs {token   |
 * |                  |                                  | 2i, 2i + 1}, then their scales likewise       |
 * |                  |                                  | (`kivi_token_min_offset`; odd P: the last     |
 * |                  |                                  | record's second halves are padding)           |
 *
 * kivi_token's pair records put the values of two consecutive tokens in one 32-bit word: what a
 * tensor-core decode kernel multiplies or accumulates per token pair (its MMA operands pair
 * tokens), with no byte permutes per word (the library's paged decode attention: 3% of its
 * KIVI-2 time).
 *
 * kivi_channel's pair order likewise puts in one 32-bit word the mins (scales) of the two
 * channels whose codes share the bit offset in the low and high 16 bits of one 32-bit code word:
 * in each whole code word of w = 32 / bits channels, channel j (< w) is at position 2 (j % (w /
 * 2)) + j / (w / 2) of the word's w positions (2 bits: channels 0, 8, 1, 9, ..., 7, 15); channels
 * of a trailing partial word (D % w != 0) keep their order. A decoder that unpacks a code word
 * into f16 pairs (code j, code j + w / 2) by one mask finds that pair's {min, min} and {scale,
 * scale} as words (the paged decode attention: 2-5% of its KIVI-2 time).
 *
 * Everything here is plain data and `KVCACHE_HOST_DEVICE` arithmetic (no exceptions), so CUDA
 * code includes it.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kvcache/core/config.hpp"

namespace kvcache {

/// @brief Which half of the KV cache a head page holds.
enum class kv_side : std::uint8_t {
  key,    ///< a key head page
  value,  ///< a value head page
};

/// @brief "key" or "value".
[[nodiscard]] constexpr const char* name_of(kv_side s) noexcept {
  return s == kv_side::key ? "key" : "value";
}

/// @brief How one side (keys or values) of a head page is encoded; see the file comment.
enum class quant_scheme : std::uint8_t {
  f16,             ///< the f16 rows as they are (identity)
  int8_token,      ///< symmetric int8, one f32 scale per token
  fp8_e4m3_token,  ///< fp8 E4M3 (saturating), one f32 scale per token
  kivi_channel,    ///< asymmetric `bits`-bit codes, {min, scale} per channel per `group` tokens
  kivi_token,      ///< asymmetric `bits`-bit codes, {min, scale} per token per `group` channels
};

/// @brief Short name of a scheme, e.g. "kivi_channel".
[[nodiscard]] constexpr const char* name_of(quant_scheme s) noexcept {
  switch (s) {
    case quant_scheme::f16: return "f16";
    case quant_scheme::int8_token: return "int8_token";
    case quant_scheme::fp8_e4m3_token: return "fp8_e4m3_token";
    case quant_scheme::kivi_channel: return "kivi_channel";
    case quant_scheme::kivi_token: return "kivi_token";
  }
  return "unknown";
}

/// @brief The encoding of one side of a head page. Trivially copyable.
struct quant_side_format {
  quant_scheme scheme = quant_scheme::f16;
  std::int32_t bits = 16;  ///< bits per code: 16 (f16), 8 (int8, fp8), 2 or 4 (KIVI)
  /// kivi_channel: tokens per group; kivi_token: channels per group; 1 otherwise.
  std::int32_t group = 1;

  /// @brief Bytes of one token's row of codes (head_dim a multiple of 8).
  [[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::size_t code_row_bytes(
      std::int32_t head_dim) const noexcept {
    return static_cast<std::size_t>(head_dim) * static_cast<std::size_t>(bits) / 8;
  }
  /// @brief Whether code rows are interleaved per token pair (2-bit kivi_token, rows of a
  /// multiple of 16 bytes; see the file comment).
  [[nodiscard]] KVCACHE_HOST_DEVICE constexpr bool paired_code_rows(
      std::int32_t head_dim) const noexcept {
    return scheme == quant_scheme::kivi_token && bits == 2 && code_row_bytes(head_dim) % 16 == 0;
  }
  /// @brief Byte offset in a head page of byte b of token t's code row (see the file comment).
  [[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::size_t code_byte_offset(
      std::int32_t t, std::int32_t b, std::int32_t head_dim) const noexcept {
    const std::size_t r = code_row_bytes(head_dim);
    if (!paired_code_rows(head_dim)) return static_cast<std::size_t>(t) * r + static_cast<std::size_t>(b);
    return static_cast<std::size_t>(t / 2) * 2 * r + 4 * static_cast<std::size_t>(8 * (b / 16) + b % 8) +
           static_cast<std::size_t>((b % 16) / 8) + 2 * static_cast<std::size_t>(t % 2);
  }
  /// @brief Byte offset of the metadata in a head page: the codes, rounded up to 16 bytes.
  [[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::size_t metadata_offset(
      std::int32_t page_size, std::int32_t head_dim) const noexcept {
    const std::int32_t rows = paired_code_rows(head_dim) ? (page_size + 1) / 2 * 2 : page_size;
    return (static_cast<std::size_t>(rows) * code_row_bytes(head_dim) + 15) / 16 * 16;
  }
  /// @brief Bytes of metadata of a head page (no padding).
  [[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::size_t metadata_bytes(
      std::int32_t page_size, std::int32_t head_dim) const noexcept {
    const auto p = static_cast<std::size_t>(page_size);
    const auto d = static_cast<std::size_t>(head_dim);
    const auto g = static_cast<std::size_t>(group);
    switch (scheme) {
      case quant_scheme::f16: return 0;
      case quant_scheme::int8_token:
      case quant_scheme::fp8_e4m3_token: return 4 * p;
      case quant_scheme::kivi_channel: return 4 * (p / g) * d;
      case quant_scheme::kivi_token: return 8 * ((p + 1) / 2) * (d / g);
    }
    return 0;
  }
  /// @brief kivi_channel: position of channel c in its record's mins (and scales), see the file
  /// comment.
  [[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::int32_t kivi_pair_position(
      std::int32_t c, std::int32_t head_dim) const noexcept {
    const std::int32_t w = 32 / bits;
    const std::int32_t base = c - c % w;
    if (base + w > head_dim) return c;
    const std::int32_t j = c % w;
    return base + 2 * (j % (w / 2)) + j / (w / 2);
  }
  /// @brief kivi_channel: byte offset inside the metadata of the f16 min of channel c of token
  /// group g (its scale: `kivi_channel_scale_offset`).
  [[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::size_t kivi_channel_min_offset(
      std::int32_t g, std::int32_t c, std::int32_t head_dim) const noexcept {
    return 4 * static_cast<std::size_t>(g) * static_cast<std::size_t>(head_dim) +
           2 * static_cast<std::size_t>(kivi_pair_position(c, head_dim));
  }
  /// @brief kivi_channel: byte offset inside the metadata of the f16 scale of channel c of token
  /// group g.
  [[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::size_t kivi_channel_scale_offset(
      std::int32_t g, std::int32_t c, std::int32_t head_dim) const noexcept {
    return kivi_channel_min_offset(g, c, head_dim) + 2 * static_cast<std::size_t>(head_dim);
  }
  /// @brief kivi_token: byte offset inside the metadata of the f16 min of channel group j of page
  /// position t (its scale: `kivi_token_scale_offset`). See the file comment.
  [[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::size_t kivi_token_min_offset(
      std::int32_t t, std::int32_t j, std::int32_t head_dim) const noexcept {
    const auto groups = static_cast<std::size_t>(head_dim / group);
    return 8 * groups * static_cast<std::size_t>(t / 2) + 4 * static_cast<std::size_t>(j) +
           2 * static_cast<std::size_t>(t % 2);
  }
  /// @brief kivi_token: byte offset inside the metadata of the f16 scale of channel group j of
  /// page position t.
  [[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::size_t kivi_token_scale_offset(
      std::int32_t t, std::int32_t j, std::int32_t head_dim) const noexcept {
    return kivi_token_min_offset(t, j, head_dim) + 4 * static_cast<std::size_t>(head_dim / group);
  }
  /// @brief Bytes of a head page: codes, metadata, each 16-byte aligned; a multiple of 16.
  [[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::size_t page_bytes(
      std::int32_t page_size, std::int32_t head_dim) const noexcept {
    return (metadata_offset(page_size, head_dim) + metadata_bytes(page_size, head_dim) + 15) / 16 *
           16;
  }
  /// @brief Tokens that must be quantized together (kivi_channel: group; otherwise 1).
  [[nodiscard]] KVCACHE_HOST_DEVICE constexpr std::int32_t token_group() const noexcept {
    return scheme == quant_scheme::kivi_channel ? group : 1;
  }
  friend constexpr bool operator==(const quant_side_format&, const quant_side_format&) = default;
};
static_assert(std::is_trivially_copyable_v<quant_side_format>);

/// @brief The encoding of key and value head pages of a quantizer (`Q::format`).
struct quant_format {
  quant_side_format key;
  quant_side_format value;

  [[nodiscard]] KVCACHE_HOST_DEVICE constexpr const quant_side_format& side(
      kv_side s) const noexcept {
    return s == kv_side::key ? key : value;
  }
  friend constexpr bool operator==(const quant_format&, const quant_format&) = default;
};
static_assert(std::is_trivially_copyable_v<quant_format>);

/**
 * @brief One quantize job of a batch: f16 rows of page positions [first_token, first_token +
 * tokens) of one head page (`side` says keys or values) into that page.
 * `rows` holds `tokens` rows of head_dim f16 (row i = page position first_token + i); `rows` and
 * `page` are 16-byte aligned; first_token and tokens are multiples of the side's token group.
 */
struct quantize_job {
  const std::uint16_t* rows = nullptr;  ///< [tokens][head_dim] f16 bits
  std::byte* page = nullptr;            ///< the head page (K or V of one layer and kv head)
  std::int32_t first_token = 0;         ///< page position of rows[0]
  std::int32_t tokens = 0;              ///< rows to quantize
  kv_side side = kv_side::key;          ///< which format applies
};
static_assert(std::is_trivially_copyable_v<quantize_job>);

/// @brief One dequantize job: page positions [first_token, first_token + tokens) of a head page
/// to f16 rows (row i = page position first_token + i); `page` and `rows` 16-byte aligned.
struct dequantize_job {
  const std::byte* page = nullptr;  ///< the head page
  std::uint16_t* rows = nullptr;    ///< [tokens][head_dim] f16 bits
  std::int32_t first_token = 0;     ///< page position of rows[0]
  std::int32_t tokens = 0;          ///< rows to write
  kv_side side = kv_side::key;      ///< which format applies
};
static_assert(std::is_trivially_copyable_v<dequantize_job>);

/**
 * @brief What a batch call found, written by the CUDA kernels in device memory (and by the host
 * twins when asked for it). Zero-initialized by the launcher before the kernel runs.
 */
struct quant_status {
  /// 0 when every input was finite; otherwise 1 + the largest index of a job whose rows held a
  /// NaN or an Inf (that job was still quantized, as the model documents for non-finite input).
  std::int32_t non_finite_job = 0;
  /// 0 when every job was well formed; otherwise 1 + the largest index of a job that was
  /// skipped (range outside the page, misaligned range or pointer, null pointer). Kernels only:
  /// the host twins throw instead.
  std::int32_t bad_job = 0;
  friend constexpr bool operator==(const quant_status&, const quant_status&) = default;
};
static_assert(std::is_trivially_copyable_v<quant_status>);

}  // namespace kvcache
