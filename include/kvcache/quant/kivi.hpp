/**
 * @file kivi.hpp
 * @brief `kivi<Bits, Group, Residual>`: KIVI's asymmetric 2- and 4-bit quantization (Liu et al.,
 * 2024): keys per channel over groups of `Group` tokens, values per token over groups of
 * `Group` channels, the most recent tokens in full precision until a group completes.
 */
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <utility>

#include "kvcache/quant/detail/format_quantizer.hpp"
#include "kvcache/quant/format.hpp"
#include "kvcache/quant/quantizer.hpp"

namespace kvcache {

/// @brief How KIVI groups keys: per channel over tokens (the paper's choice) or per token over
/// channels like the values (for the comparison the paper makes).
enum class kivi_keys : std::uint8_t {
  per_channel,  ///< a group is `Group` tokens of one channel (scheme `kivi_channel`)
  per_token,    ///< a group is `Group` channels of one token (scheme `kivi_token`)
};

namespace detail {
/// @brief "kivi2", "kivi4" for the paper's configuration (Group 32, Residual 128, keys per
/// channel), else e.g. "kivi2_g64_r128" / "kivi2_g32_r128_token_keys".
template <int Bits, int Group, int Residual, kivi_keys Keys>
struct kivi_name {
  static constexpr auto text = [] {
    std::array<char, 48> s{};
    std::size_t n = 0;
    auto put = [&](const char* t) {
      while (*t != '\0') s[n++] = *t++;
    };
    auto put_int = [&](int v) {
      char d[12];
      int k = 0;
      do {
        d[k++] = static_cast<char>('0' + v % 10);
        v /= 10;
      } while (v > 0);
      while (k > 0) s[n++] = d[--k];
    };
    put("kivi");
    put_int(Bits);
    if (Group != 32 || Residual != 128 || Keys != kivi_keys::per_channel) {
      put("_g");
      put_int(Group);
      put("_r");
      put_int(Residual);
    }
    if (Keys == kivi_keys::per_token) put("_token_keys");
    return std::pair{s, n};
  }();
  static constexpr std::string_view value{text.first.data(), text.second};
};
}  // namespace detail

/**
 * @brief KIVI: asymmetric uniform quantization with `Bits`-bit codes, min and scale per group.
 *
 * **Groups.** Keys: per channel over groups of `Group` consecutive tokens (scheme
 * `kivi_channel`; with `Keys = kivi_keys::per_token`, per token over `Group` channels instead).
 * Values: per token over groups of `Group` consecutive channels (scheme `kivi_token`). Each group
 * stores min and scale as f16: scale = (max - min) / (2^Bits - 1) computed in f32 and rounded
 * *up* to f16 (so it never underflows to 0 and the top code reaches max), code =
 * clamp(round_half_even((x - min) * (1 / scale)), 0, 2^Bits - 1) (1 / scale rounded to f32 once
 * per group), decoded value = f16(min(min + code * scale, 65504)) (computed in f32; the clamp
 * matters only at the edge of the f16 range). min is the group's minimum, an f16 value,
 * stored exactly. A constant group (max = min) stores scale 0 and decodes exactly to min.
 *
 * **Error bound** (per element): |x - x^| <= scale / 2 + ulp16(x^) / 2, up to f32 rounding
 * (2^-15 scale and 2^-23 |x^|), where scale is the stored f16 scale and ulp16(v) the f16 spacing
 * at |v|.
 *
 * **Residual window** (KIVI's reference code's key scheme, applied to keys and values alike):
 * new tokens are appended to a full-precision staging area; when it holds `Residual` tokens
 * (a multiple of `Group`), all of them are quantized into their pages and the staging area is
 * emptied. So an L-token sequence has L mod Residual tokens in f16 and the rest quantized, and
 * quantized tokens always form whole key groups. (The reference code keeps a sliding window of
 * exactly `Residual` f16 values instead; quantizing values with the keys keeps one staging area
 * and one quantize step.)
 *
 * **Pages.** A key group never straddles two pages: `validate` requires page_size % Group == 0
 * (keys per channel) and head_dim % Group == 0 (values, and keys per token). Byte layout (P =
 * page_size, D = head_dim, see format.hpp): codes `[P][D * Bits / 8]` packed lowest bits first
 * (2-bit values with D % 64 == 0: rows interleaved per token pair, `code_byte_offset`), then at
 * `metadata_offset` the metadata: keys `[P / Group]` records of D f16 mins then D f16 scales in
 * pair order (`kivi_channel_min_offset`), values `[P / 2]` token-pair records of {min, min} then
 * {scale, scale} words per channel group (`kivi_token_min_offset`). Bytes per token and head at
 * Group 32:
 * D * Bits / 8 + 4 * D / 32 for each of K and V (KIVI-2, D = 128: 48 + 48 = 96 bytes, 0.1875 of
 * f16's 512).
 *
 * **Non-finite input**: the host functions throw errc::invalid_argument naming token and
 * channel. In the kernels (and with a `non_finite` flag) a group's min and max come from its
 * finite elements (a group with none is all zeros), NaN and -Inf encode to code 0 (the min),
 * +Inf to the top code, and the flag is set: the other elements of the group keep their bound.
 *
 * @tparam Bits 2 or 4.
 * @tparam Group a power of two in [8, 128] (the CUDA kernels take 32, 64 and 128).
 * @tparam Residual tokens kept in f16 at most: a multiple of Group, >= Group.
 * @tparam Keys per_channel (KIVI) or per_token.
 */
template <int Bits, int Group, int Residual, kivi_keys Keys = kivi_keys::per_channel>
struct kivi : detail::format_quantizer<kivi<Bits, Group, Residual, Keys>> {
  static_assert(Bits == 2 || Bits == 4, "kivi: Bits must be 2 or 4.");
  static_assert(Group >= 8 && Group <= 128 && (Group & (Group - 1)) == 0,
                "kivi: Group must be a power of two in [8, 128].");
  static_assert(Residual >= Group && Residual % Group == 0,
                "kivi: Residual must be a positive multiple of Group: the full-precision window "
                "is flushed in whole groups.");

  static constexpr std::string_view name = detail::kivi_name<Bits, Group, Residual, Keys>::value;
  static constexpr int key_bits = Bits;
  static constexpr int value_bits = Bits;
  /// Tokens per key group (1 when keys are grouped per token).
  static constexpr std::int32_t group_size = Keys == kivi_keys::per_channel ? Group : 1;
  static constexpr std::int32_t residual = Residual;
  static constexpr quant_format format{
      {Keys == kivi_keys::per_channel ? quant_scheme::kivi_channel : quant_scheme::kivi_token,
       Bits, Group},
      {quant_scheme::kivi_token, Bits, Group}};
};

/// @brief KIVI-2 as in the paper: 2 bits, groups of 32, residual 128.
using kivi2 = kivi<2, 32, 128>;
/// @brief KIVI-4: 4 bits, groups of 32, residual 128.
using kivi4 = kivi<4, 32, 128>;
/// @brief KIVI-2 with keys grouped per token (the paper's ablation: worse than per channel).
using kivi2_token_keys = kivi<2, 32, 128, kivi_keys::per_token>;
/// @brief KIVI-4 with keys grouped per token.
using kivi4_token_keys = kivi<4, 32, 128, kivi_keys::per_token>;

}  // namespace kvcache

static_assert(kvcache::quantizer<kvcache::kivi2>);
static_assert(kvcache::quantizer<kvcache::kivi4>);
static_assert(kvcache::quantizer<kvcache::kivi2_token_keys>);
static_assert(kvcache::quantizer<kvcache::kivi4_token_keys>);
static_assert(kvcache::quantizer<kvcache::kivi<2, 64, 128>>);
