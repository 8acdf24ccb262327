// Quantize / dequantize kernels for head pages (see include/kvcache/quant/kernels.hpp).
//
// Work split: one warp per unit, grid-stride over (job, unit) pairs in job-major order (the
// grid's warps sweep memory together), the grid sized from the SM count and the kernel's
// occupancy. Units move about the same bytes whatever the format, so the warps stay balanced:
// - row formats (f16, int8, fp8, KIVI per token): unit u = page rows [8u, 8u + 8) of the job's
//   range; lane l holds 4-channel chunks l, l + 32, ... (Iters of them);
//   all loads of a unit are issued before any store (memory-level parallelism); Iters = 1 for
//   head_dim <= 128, 2 up to 256;
// - KIVI keys per channel (quantize): unit = one token group x 32 channels, the group's rows
//   split over 4 lane parts (see quantize_channel_unit).
// Each unit checks its rows for NaN / Inf first (a few integer ops per pair): a finite unit takes
// the fast path (f16x2 min / max, parameters once per group), one with NaN / Inf the general path
// (integer keys of the finite elements, codec.hpp's non-finite rules); both give the host's bits.
// Every value is computed by the same KVCACHE_HOST_DEVICE functions as on the host
// (kvcache/quant/detail/codec.hpp: explicit f32 rounding, round half to even, one division per
// group), and the reductions are exact (min / max / max |x| taken on order-preserving integer keys
// of the f16 bits, -0 made +0 afterwards), so the results are the host's bit for bit. Conversions
// use the hardware (f16 <-> f32 paired, e4m3) wherever it gives numeric.hpp's result.
// Per element on the fast paths: one conversion in, a subtract and a multiply, a round (an add of
// 1.5 * 2^23, not a conversion instruction), a pack; no divisions and no clamps (they cannot
// bind for finite input, see kivi_code_finite). The general path keeps codec.hpp's functions.
// KIVI with groups of 32 at head_dim 128 (kivi2, kivi4 and their per-token-key variants: the shape
// the models run at) has its own quantize kernel, quantize_kivi_fast_kernel: the same units and
// results, with everything generic fixed at compile time (16-byte loads, no per-row bounds, one
// group's parameters per lane after a reduce-scatter, the NaN / Inf check folded into the
// min / max, codes packed by adds), about half the instructions per unit of the generic kernel,
// which was bound by instruction issue for these formats (0.66-0.74 of the copy bandwidth on an
// H100; 0.85-0.97 with the fast kernel).
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kvcache/quant/detail/codec.hpp"
#include "kvcache/quant/format.hpp"
#include "quant/quant_kernels.cuh"

namespace kvcache::detail {
namespace {

constexpr int kWarps = 8;     // warps per block
constexpr int kTileRows = 8;  // rows per unit of the row formats
constexpr unsigned kFull = 0xFFFFFFFFu;
constexpr float kInf = __builtin_huge_valf();

// ---- device formats ---------------------------------------------------------------------------
struct f16_fmt {
  static constexpr int token_group = 1;
};
template <bool Int8>
struct row_fmt {
  static constexpr int token_group = 1;
};
template <int Bits, int G>
struct kivi_token_fmt {
  static constexpr int bits = Bits;
  static constexpr int group = G;  // channels per group
  static constexpr int token_group = 1;
};
template <int Bits, int G>
struct kivi_channel_fmt {
  static constexpr int bits = Bits;
  static constexpr int group = G;  // tokens per group
  static constexpr int token_group = G;
};

template <class F>
struct is_kivi_channel : std::false_type {};
template <int B, int G>
struct is_kivi_channel<kivi_channel_fmt<B, G>> : std::true_type {};

// ---- helpers ------------------------------------------------------------------------------------
__device__ __forceinline__ std::uint16_t half_of(const uint2& v, int e) {
  const unsigned w = e < 2 ? v.x : v.y;
  return static_cast<std::uint16_t>((e & 1) != 0 ? (w >> 16) : (w & 0xFFFFu));
}

/// The value of f16 bits by the hardware conversion: numeric.hpp's value for every input but
/// NaN, whose payload may differ; used only where a NaN's payload cannot matter (codes).
__device__ __forceinline__ float code_input(std::uint16_t h) {
  return __half2float(__ushort_as_half(h));
}

/// f16 bits of two floats, packed low first: the paired hardware conversion (round to nearest
/// even, exactly numeric.hpp's) unless one of them is NaN.
__device__ __forceinline__ unsigned f16x2_bits(float lo, float hi) {
  if (lo != lo || hi != hi) [[unlikely]] {
    return static_cast<unsigned>(f16_bits(lo)) | (static_cast<unsigned>(f16_bits(hi)) << 16);
  }
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const unsigned*>(&h);
}

/// A key whose unsigned order is the order of finite f16 values (-0 just below +0); finite keys
/// lie in [0x0400, 0xFBFF].
__device__ __forceinline__ unsigned order_key(std::uint16_t h) {
  return (h & 0x8000u) != 0 ? (~static_cast<unsigned>(h) & 0xFFFFu) : (h | 0x8000u);
}
__device__ __forceinline__ std::uint16_t key_bits(unsigned k) {
  return static_cast<std::uint16_t>((k & 0x8000u) != 0 ? (k & 0x7FFFu) : (~k & 0xFFFFu));
}

/// {min, scale} of a metadata word as floats (numeric.hpp's values: the paired hardware
/// conversion unless a half is NaN or Inf).
__device__ __forceinline__ float2 meta_values(unsigned w) {
  if (((w & 0x7C007C00u) + 0x04000400u) & 0x80008000u) [[unlikely]] {
    return make_float2(f16_value(static_cast<std::uint16_t>(w & 0xFFFFu)),
                       f16_value(static_cast<std::uint16_t>(w >> 16)));
  }
  return __half22float2(*reinterpret_cast<const __half2*>(&w));
}

/// kivi_token metadata of page position r, channel group j (format.hpp's token-pair records: the
/// f16 min and scale of a token are the halves of two words shared with its pair's other token).
__device__ __forceinline__ void store_token_meta(std::byte* meta, const quant_side_format& f, int r,
                                                 int j, int head_dim, std::uint16_t mn,
                                                 std::uint16_t sc) {
  *reinterpret_cast<std::uint16_t*>(meta + f.kivi_token_min_offset(r, j, head_dim)) = mn;
  *reinterpret_cast<std::uint16_t*>(meta + f.kivi_token_scale_offset(r, j, head_dim)) = sc;
}

/// min and max as floats of the keys (min > max when the group had no finite element).
__device__ __forceinline__ void key_range(unsigned kmin, unsigned kmax, float& mn, float& mx) {
  if (kmin > kmax) {
    mn = kInf;
    mx = -kInf;
  } else {
    mn = f16_value(key_bits(kmin));
    mx = f16_value(key_bits(kmax));
  }
}

__device__ __forceinline__ bool misaligned(const void* p) {
  return (reinterpret_cast<std::uintptr_t>(p) & 15u) != 0;
}

/// True when a job breaks the contract (it is then skipped and reported).
template <class Job>
__device__ __forceinline__ bool bad_job(const Job& job, int page_size, int group) {
  if (job.first_token < 0 || job.tokens < 0 || job.first_token > page_size ||
      job.tokens > page_size - job.first_token) {
    return true;
  }
  if (job.first_token % group != 0 || job.tokens % group != 0) return true;
  if (job.tokens == 0) return false;
  return job.rows == nullptr || job.page == nullptr || misaligned(job.rows) ||
         misaligned(job.page);
}

// ---- quantize: row formats ----------------------------------------------------------------------
/// The general path (any input, NaN and Inf included): the reductions on integer keys of the
/// finite elements, codes through codec.hpp's functions.
template <class F, int Iters>
__device__ __forceinline__ void quantize_rows_general(const quantize_job& job,
                                                      const uint2 (&v)[kTileRows][Iters], int r0,
                                                      int r1, int page_size, int head_dim,
                                                      int lane, bool& nf) {
  const int chunks = head_dim >> 2;
#pragma unroll
  for (int t = 0; t < kTileRows; ++t) {
    const int r = r0 + t;
    if (r >= r1) break;  // warp-uniform
    if constexpr (std::is_same_v<F, row_fmt<true>> || std::is_same_v<F, row_fmt<false>>) {
      constexpr bool is_int8 = std::is_same_v<F, row_fmt<true>>;
      // max |x| over the finite elements, on the bits (their order is the order of magnitudes)
      unsigned amax = 0;
#pragma unroll
      for (int i = 0; i < Iters; ++i) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const std::uint16_t h = half_of(v[t][i], e);
          if (f16_bits_finite(h)) {
            amax = max(amax, static_cast<unsigned>(h & 0x7FFFu));
          } else {
            nf = true;  // chunks past head_dim hold zeros: finite
          }
        }
      }
      amax = __reduce_max_sync(kFull, amax);
      const float s = is_int8 ? int8_scale(f16_value(static_cast<std::uint16_t>(amax)))
                              : fp8_scale(f16_value(static_cast<std::uint16_t>(amax)));
      const float inv = inverse_scale(s);
      auto* codes = reinterpret_cast<unsigned*>(job.page);
#pragma unroll
      for (int i = 0; i < Iters; ++i) {
        const int k = lane + 32 * i;
        if (k < chunks) {
          unsigned word = 0;
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float x = code_input(half_of(v[t][i], e));
            const unsigned c = is_int8 ? static_cast<std::uint8_t>(int8_code(x, inv))
                                       : static_cast<unsigned>(fp8_code(x, inv));
            word |= c << (8 * e);
          }
          codes[static_cast<std::size_t>(r) * chunks + k] = word;
        }
      }
      if (lane == 0) {  // int8 and fp8 pages share their layout
        auto* meta = reinterpret_cast<float*>(
            job.page + quant_side_format{quant_scheme::int8_token, 8, 1}.metadata_offset(
                           page_size, head_dim));
        meta[r] = s;
      }
    } else {  // kivi_token_fmt<Bits, G>
      constexpr int bits = F::bits;
      constexpr int group = F::group;
      constexpr int lanes = group / 4;  // lanes per channel group
      constexpr std::uint32_t max_code = (1u << bits) - 1u;
#pragma unroll
      for (int i = 0; i < Iters; ++i) {
        const int k = lane + 32 * i;
        const bool valid = k < chunks;
        // {max key, ~min key} in the two halves of a word: one max per reduction step
        unsigned packed = 0;
        if (valid) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const std::uint16_t h = half_of(v[t][i], e);
            if (f16_bits_finite(h)) {
              const unsigned key = order_key(h);
              packed = __vmaxu2(packed, (key << 16) | (~key & 0xFFFFu));
            } else {
              nf = true;
            }
          }
        }
#pragma unroll
        for (int off = lanes / 2; off >= 1; off >>= 1) {
          packed = __vmaxu2(packed, __shfl_xor_sync(kFull, packed, off));
        }
        if (valid) {
          float mn, mx;
          key_range(~packed & 0xFFFFu, packed >> 16, mn, mx);
          const kivi_params p = kivi_make_params(mn, mx, bits);
          unsigned codes = 0;
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            codes |= kivi_code(code_input(half_of(v[t][i], e)), p, max_code) << (bits * e);
          }
          const std::size_t index = static_cast<std::size_t>(r) * chunks + k;
          if constexpr (bits == 2) {  // byte k of row r (token-pair rows: format.hpp)
            const quant_side_format f{quant_scheme::kivi_token, bits, group};
            reinterpret_cast<std::uint8_t*>(job.page)[f.code_byte_offset(r, k, head_dim)] =
                static_cast<std::uint8_t>(codes);
          } else {
            reinterpret_cast<std::uint16_t*>(job.page)[index] = static_cast<std::uint16_t>(codes);
          }
          if (lane % lanes == 0) {
            const quant_side_format f{quant_scheme::kivi_token, bits, group};
            store_token_meta(job.page + f.metadata_offset(page_size, head_dim), f, r,
                             (4 * k) / group, head_dim, p.min_bits, p.scale_bits);
          }
        }
      }
    }
  }
}

/// For a word of two f16: bit 15 or 31 set when that half is NaN or Inf (exponent all ones: the
/// add carries into the top bit of its half, and never across halves). OR these together and
/// test with kNonFinite: two integer ops per pair (__vcmpeq2 is emulated with many more).
__device__ __forceinline__ unsigned non_finite2(unsigned w) {
  return (w & 0x7C007C00u) + 0x04000400u;
}
constexpr unsigned kNonFinite = 0x80008000u;
__device__ __forceinline__ __half2 as_half2(unsigned w) {
  return *reinterpret_cast<const __half2*>(&w);
}
__device__ __forceinline__ unsigned as_u32(__half2 h) {
  return *reinterpret_cast<const unsigned*>(&h);
}
/// 1.5 * 2^23: for |x| <= 2^22, x + kMagic rounds x to an integer, to nearest even (as rintf),
/// and leaves it in the low mantissa bits (two's complement when negative). This replaces the
/// float-to-int conversions, which run at a quarter of the arithmetic rate and bound the kernels.
constexpr float kMagic = 12582912.0f;
/// Bits whose low byte is rintf(x) (as a two's complement byte), for |x| <= 2^22.
__device__ __forceinline__ unsigned rounded_bits(float x) {
  return __float_as_uint(__fadd_rn(x, kMagic));
}
/// The float value of a small unsigned integer q < 2^22, exactly (no conversion instruction).
__device__ __forceinline__ float small_uint_value(unsigned q) {
  return __fsub_rn(__uint_as_float(0x4B400000u | q), kMagic);
}
/// The float value of an int8 code, exactly.
__device__ __forceinline__ float int8_value(unsigned byte) {
  return __fsub_rn(__uint_as_float(0x4B400000u + ((byte & 0xFFu) ^ 0x80u)), kMagic + 128.0f);
}

/**
 * KIVI code of a finite x of its group: codec.hpp's kivi_code, the code in the low bits of the
 * result (garbage above them). Its clamps never bind for such x, so they are left out: x >= min,
 * so t = (x - min) * inv >= 0 (0 when inv is 0, a constant group); and x <= max with scale >=
 * fl(fl(max - min) / (2^bits - 1)) (rounded up to f16) gives t <= (2^bits - 1) (1 + 3 * 2^-24)
 * < 2^bits - 1/2, so round(t) <= 2^bits - 1, which is what the clamp would give.
 */
__device__ __forceinline__ unsigned kivi_code_finite(float x, float mn, float inv) {
  return rounded_bits(__fmul_rn(__fsub_rn(x, mn), inv));
}
/// Packs four codes (low `Bits` bits of each word kept), lowest first.
template <int Bits>
__device__ __forceinline__ unsigned pack4(unsigned c0, unsigned c1, unsigned c2, unsigned c3) {
  constexpr unsigned m = (1u << Bits) - 1u;
  return (c0 & m) | (c1 & m) << Bits | (c2 & m) << (2 * Bits) | (c3 & m) << (3 * Bits);
}

/// The fast path, for tiles with no NaN or Inf (warp-uniform): the reductions on f16 pairs,
/// KIVI's parameters computed once per (row, group) by one lane and shuffled to the others, codes
/// by a multiply, a clamp and a rounding conversion. Results equal the general path's.
template <class F, int Iters>
__device__ __forceinline__ void quantize_rows_finite(const quantize_job& job,
                                                     const uint2 (&v)[kTileRows][Iters], int r0,
                                                     int r1, int page_size, int head_dim,
                                                     int lane) {
  const int chunks = head_dim >> 2;
  if constexpr (std::is_same_v<F, row_fmt<true>> || std::is_same_v<F, row_fmt<false>>) {
    constexpr bool is_int8 = std::is_same_v<F, row_fmt<true>>;
    auto* codes = reinterpret_cast<unsigned*>(job.page);
    auto* meta = reinterpret_cast<float*>(
        job.page +
        quant_side_format{quant_scheme::int8_token, 8, 1}.metadata_offset(page_size, head_dim));
    // max |x| of each row on the bits of the magnitudes (two at a time), then lane t computes
    // row t's scale and 1 / scale (the divisions once per row, not once per lane and row)
    unsigned mine = 0;
#pragma unroll
    for (int t = 0; t < kTileRows; ++t) {
      unsigned a2 = 0;
#pragma unroll
      for (int i = 0; i < Iters; ++i) {
        a2 = __vmaxu2(a2, __vmaxu2(v[t][i].x & 0x7FFF7FFFu, v[t][i].y & 0x7FFF7FFFu));
      }
      const unsigned amax = __reduce_max_sync(kFull, max(a2 & 0xFFFFu, a2 >> 16));
      mine = lane == t ? amax : mine;
    }
    const float fmax_abs = f16_value(static_cast<std::uint16_t>(mine));
    const float s = is_int8 ? int8_scale(fmax_abs) : fp8_scale(fmax_abs);
    const float inv = inverse_scale(s);
    if (lane < kTileRows && r0 + lane < r1) meta[r0 + lane] = s;
    // no early exit past r1: rows past it hold zeros and are not stored
#pragma unroll
    for (int t = 0; t < kTileRows; ++t) {
      const int r = r0 + t;
      const float row_inv = __shfl_sync(kFull, inv, t);
#pragma unroll
      for (int i = 0; i < Iters; ++i) {
        const int k = lane + 32 * i;
        if (r < r1 && k < chunks) {
          const float2 a = __half22float2(as_half2(v[t][i].x));
          const float2 b = __half22float2(as_half2(v[t][i].y));
          unsigned word;
          if constexpr (is_int8) {
            // clamp(rint(x * inv), -127, 127) without the clamp, which never binds for finite
            // x: |x| <= max|x| gives |x * inv| <= 127 (1 + 2^-23) < 127.5
            auto code = [&](float x) { return rounded_bits(__fmul_rn(x, row_inv)); };
            word = __byte_perm(__byte_perm(code(a.x), code(a.y), 0x0040),
                               __byte_perm(code(b.x), code(b.y), 0x0040), 0x5410);
          } else {
            const auto lo = static_cast<unsigned>(__nv_cvt_float2_to_fp8x2(
                make_float2(__fmul_rn(a.x, row_inv), __fmul_rn(a.y, row_inv)), __NV_SATFINITE,
                __NV_E4M3));
            const auto hi = static_cast<unsigned>(__nv_cvt_float2_to_fp8x2(
                make_float2(__fmul_rn(b.x, row_inv), __fmul_rn(b.y, row_inv)), __NV_SATFINITE,
                __NV_E4M3));
            word = (lo & 0xFFFFu) | (hi << 16);
          }
          codes[static_cast<std::size_t>(r) * chunks + k] = row_inv > 0.0f ? word : 0u;
        }
      }
    }
  } else {  // kivi_token_fmt<Bits, G>
    constexpr int bits = F::bits;
    constexpr int group = F::group;
    constexpr int lanes = group / 4;  // lanes per channel group (8, 16 or 32 >= kTileRows)
    static_assert(lanes >= kTileRows);
    const int q = lane % lanes;                // lane q of a group computes the parameters of row q
    const int base = lane - q;                 // the group's first lane
    const quant_side_format f{quant_scheme::kivi_token, bits, group};
    std::byte* meta = job.page + f.metadata_offset(page_size, head_dim);
#pragma unroll
    for (int i = 0; i < Iters; ++i) {
      const int k = lane + 32 * i;
      // {min, -max} of each row's group, reduced over the group's lanes
      unsigned range[kTileRows];
#pragma unroll
      for (int t = 0; t < kTileRows; ++t) {
        const __half2 lo = __hmin2(as_half2(v[t][i].x), as_half2(v[t][i].y));
        const __half2 hi = __hmax2(as_half2(v[t][i].x), as_half2(v[t][i].y));
        __half2 r = __halves2half2(__hmin(__low2half(lo), __high2half(lo)),
                                   __hneg(__hmax(__low2half(hi), __high2half(hi))));
#pragma unroll
        for (int off = lanes / 2; off >= 1; off >>= 1) {
          r = __hmin2(r, as_half2(__shfl_xor_sync(kFull, as_u32(r), off)));
        }
        range[t] = as_u32(r);
      }
      unsigned mine = range[0];
#pragma unroll
      for (int t = 1; t < kTileRows; ++t) mine = q == t ? range[t] : mine;
      const float mn = f16_value(static_cast<std::uint16_t>(mine & 0xFFFFu));
      const float mx = -f16_value(static_cast<std::uint16_t>(mine >> 16));
      const kivi_params p = kivi_make_params(mn, mx, bits);
      if (q < kTileRows && r0 + q < r1 && k < chunks) {
        store_token_meta(meta, f, r0 + q, (4 * k) / group, head_dim, p.min_bits, p.scale_bits);
      }
#pragma unroll
      for (int t = 0; t < kTileRows; ++t) {
        const int r = r0 + t;
        const float row_min = __shfl_sync(kFull, p.min, base + t);
        const float row_inv = __shfl_sync(kFull, p.inv_scale, base + t);
        if (r < r1 && k < chunks) {
          const float2 a = __half22float2(as_half2(v[t][i].x));
          const float2 b = __half22float2(as_half2(v[t][i].y));
          const unsigned codes = pack4<bits>(kivi_code_finite(a.x, row_min, row_inv),
                                             kivi_code_finite(a.y, row_min, row_inv),
                                             kivi_code_finite(b.x, row_min, row_inv),
                                             kivi_code_finite(b.y, row_min, row_inv));
          const std::size_t index = static_cast<std::size_t>(r) * chunks + k;
          if constexpr (bits == 2) {  // byte k of row r (token-pair rows: format.hpp)
            reinterpret_cast<std::uint8_t*>(job.page)[f.code_byte_offset(r, k, head_dim)] =
                static_cast<std::uint8_t>(codes);
          } else {
            reinterpret_cast<std::uint16_t*>(job.page)[index] = static_cast<std::uint16_t>(codes);
          }
        }
      }
    }
  }
}

template <class F, int Iters>
__device__ __forceinline__ void quantize_rows(const quantize_job& job, int r0, int r1,
                                              int page_size, int head_dim, int lane, bool& nf) {
  const int chunks = head_dim >> 2;
  const auto* src = reinterpret_cast<const uint2*>(job.rows);
  uint2 v[kTileRows][Iters];
#pragma unroll
  for (int t = 0; t < kTileRows; ++t) {
#pragma unroll
    for (int i = 0; i < Iters; ++i) {
      const int k = lane + 32 * i;
      const int r = r0 + t;
      v[t][i] = make_uint2(0u, 0u);
      if (r < r1 && k < chunks) {
        v[t][i] = src[static_cast<std::size_t>(r - job.first_token) * chunks + k];
      }
    }
  }
  if constexpr (std::is_same_v<F, f16_fmt>) {
    auto* dst = reinterpret_cast<uint2*>(job.page);
#pragma unroll
    for (int t = 0; t < kTileRows; ++t) {
#pragma unroll
      for (int i = 0; i < Iters; ++i) {
        const int k = lane + 32 * i;
        if (r0 + t < r1 && k < chunks) dst[static_cast<std::size_t>(r0 + t) * chunks + k] = v[t][i];
      }
    }
  } else {
    unsigned bad = 0;
#pragma unroll
    for (int t = 0; t < kTileRows; ++t) {
#pragma unroll
      for (int i = 0; i < Iters; ++i) bad |= non_finite2(v[t][i].x) | non_finite2(v[t][i].y);
    }
    bad &= kNonFinite;
    if (__any_sync(kFull, bad != 0)) {
      quantize_rows_general<F, Iters>(job, v, r0, r1, page_size, head_dim, lane, nf);
    } else {
      quantize_rows_finite<F, Iters>(job, v, r0, r1, page_size, head_dim, lane);
    }
  }
}

// ---- quantize: KIVI keys per channel ---------------------------------------------------------------
// A unit is one token group (G rows) x 32 channels: lane = 8 * part + c holds chunk c (4
// channels) of the unit's 8 chunks over rows [part * G / 4, (part + 1) * G / 4) of the group, so
// a unit moves as many bytes as a row unit (8 rows x 128 channels at head_dim 128, group 32) and
// the warps share the work evenly. The 4 parts' min / max meet through two xor shuffles; lane
// `part` computes the parameters of channel `part` of its chunk, which the others then read.
constexpr int kChannelParts = 4;

/// Units of a job's key side: (page_size / G) groups x (head_dim / 32) column blocks.
__host__ __device__ constexpr int channel_units(int page_size, int head_dim, int group) {
  return page_size / group * (head_dim / 32);
}

template <int Bits, int G, bool Finite>
__device__ __forceinline__ void quantize_channel_unit(const quantize_job& job, int g, int block,
                                                      const uint2 (&v)[G / kChannelParts],
                                                      int page_size, int head_dim, int lane) {
  constexpr int rows = G / kChannelParts;
  constexpr std::uint32_t max_code = (1u << Bits) - 1u;
  const int chunks = head_dim >> 2;
  const int part = lane >> 3;
  const int k = block * 8 + (lane & 7);
  // per channel e of the chunk: {max key, ~min key} (general) or {min, -max} as f16 (finite)
  unsigned range[4];
  if constexpr (Finite) {
    __half2 lo01 = as_half2(v[0].x), lo23 = as_half2(v[0].y);
    __half2 hi01 = lo01, hi23 = lo23;
#pragma unroll
    for (int t = 1; t < rows; ++t) {
      lo01 = __hmin2(lo01, as_half2(v[t].x));
      hi01 = __hmax2(hi01, as_half2(v[t].x));
      lo23 = __hmin2(lo23, as_half2(v[t].y));
      hi23 = __hmax2(hi23, as_half2(v[t].y));
    }
    hi01 = __hneg2(hi01);
    hi23 = __hneg2(hi23);
    range[0] = as_u32(__halves2half2(__low2half(lo01), __low2half(hi01)));
    range[1] = as_u32(__halves2half2(__high2half(lo01), __high2half(hi01)));
    range[2] = as_u32(__halves2half2(__low2half(lo23), __low2half(hi23)));
    range[3] = as_u32(__halves2half2(__high2half(lo23), __high2half(hi23)));
#pragma unroll
    for (int off = 8; off <= 16; off <<= 1) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        range[e] = as_u32(__hmin2(as_half2(range[e]), as_half2(__shfl_xor_sync(kFull, range[e], off))));
      }
    }
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) range[e] = 0;
#pragma unroll
    for (int t = 0; t < rows; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const std::uint16_t h = half_of(v[t], e);
        if (f16_bits_finite(h)) {
          const unsigned key = order_key(h);
          range[e] = __vmaxu2(range[e], (key << 16) | (~key & 0xFFFFu));
        }
      }
    }
#pragma unroll
    for (int off = 8; off <= 16; off <<= 1) {
#pragma unroll
      for (int e = 0; e < 4; ++e) range[e] = __vmaxu2(range[e], __shfl_xor_sync(kFull, range[e], off));
    }
  }
  // lane `part` computes channel `part`'s parameters
  unsigned mine = range[0];
#pragma unroll
  for (int e = 1; e < 4; ++e) mine = part == e ? range[e] : mine;
  float mn, mx;
  if constexpr (Finite) {
    mn = f16_value(static_cast<std::uint16_t>(mine & 0xFFFFu));
    mx = -f16_value(static_cast<std::uint16_t>(mine >> 16));
  } else {
    key_range(~mine & 0xFFFFu, mine >> 16, mn, mx);
  }
  const kivi_params p = kivi_make_params(mn, mx, Bits);
  const quant_side_format f{quant_scheme::kivi_channel, Bits, G};
  if (k < chunks) {  // pair order (format.hpp)
    std::byte* meta = job.page + f.metadata_offset(page_size, head_dim);
    const int c = 4 * k + part;
    *reinterpret_cast<std::uint16_t*>(meta + f.kivi_channel_min_offset(g, c, head_dim)) = p.min_bits;
    *reinterpret_cast<std::uint16_t*>(meta + f.kivi_channel_scale_offset(g, c, head_dim)) = p.scale_bits;
  }
  float cmin[4], cinv[4];
  kivi_params cp[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int src = e * 8 + (lane & 7);
    cmin[e] = __shfl_sync(kFull, p.min, src);
    cinv[e] = __shfl_sync(kFull, p.inv_scale, src);
    cp[e] = kivi_params{cmin[e], 0.0f, cinv[e], 0, 0};
  }
  if (k >= chunks) return;
  const int row0 = g * G + part * rows;  // page row of this lane's first row
#pragma unroll
  for (int t = 0; t < rows; ++t) {
    unsigned codes = 0;
    if constexpr (Finite) {
      const float2 a = __half22float2(as_half2(v[t].x));
      const float2 b = __half22float2(as_half2(v[t].y));
      codes = pack4<Bits>(kivi_code_finite(a.x, cmin[0], cinv[0]),
                          kivi_code_finite(a.y, cmin[1], cinv[1]),
                          kivi_code_finite(b.x, cmin[2], cinv[2]),
                          kivi_code_finite(b.y, cmin[3], cinv[3]));
    } else {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        codes |= kivi_code(code_input(half_of(v[t], e)), cp[e], max_code) << (Bits * e);
      }
    }
    const std::size_t index = static_cast<std::size_t>(row0 + t) * chunks + k;
    if constexpr (Bits == 2) {
      reinterpret_cast<std::uint8_t*>(job.page)[index] = static_cast<std::uint8_t>(codes);
    } else {
      reinterpret_cast<std::uint16_t*>(job.page)[index] = static_cast<std::uint16_t>(codes);
    }
  }
}

template <int Bits, int G>
__device__ __forceinline__ void quantize_channel(const quantize_job& job, int u, int page_size,
                                                 int head_dim, int lane, bool& nf) {
  constexpr int rows = G / kChannelParts;
  const int blocks = head_dim / 32;
  const int g = u / blocks;
  const int block = u - g * blocks;
  const int row0 = g * G;
  if (row0 >= page_size || row0 < job.first_token || row0 >= job.first_token + job.tokens) return;
  const int chunks = head_dim >> 2;
  const int k = block * 8 + (lane & 7);
  const int part = lane >> 3;
  const auto* src = reinterpret_cast<const uint2*>(job.rows) +
                    static_cast<std::size_t>(row0 + part * rows - job.first_token) * chunks + k;
  uint2 v[rows];
  unsigned bad = 0;
#pragma unroll
  for (int t = 0; t < rows; ++t) {
    v[t] = k < chunks ? src[static_cast<std::size_t>(t) * chunks] : make_uint2(0u, 0u);
  }
#pragma unroll
  for (int t = 0; t < rows; ++t) bad |= non_finite2(v[t].x) | non_finite2(v[t].y);
  bad &= kNonFinite;
  if (__any_sync(kFull, bad != 0)) {
    nf = nf || bad != 0;
    quantize_channel_unit<Bits, G, false>(job, g, block, v, page_size, head_dim, lane);
  } else {
    quantize_channel_unit<Bits, G, true>(job, g, block, v, page_size, head_dim, lane);
  }
}

template <class F, int Iters>
__device__ __forceinline__ void quantize_unit(const quantize_job& job, int u, int page_size,
                                              int head_dim, int lane, bool& nf) {
  if constexpr (is_kivi_channel<F>::value) {
    quantize_channel<F::bits, F::group>(job, u, page_size, head_dim, lane, nf);
  } else {
    const int r0 = max(u * kTileRows, job.first_token);
    const int r1 = min((u + 1) * kTileRows, job.first_token + job.tokens);
    if (r0 >= r1) return;
    quantize_rows<F, Iters>(job, r0, r1, page_size, head_dim, lane, nf);
  }
}

// ---- quantize: KIVI with groups of 32 at head_dim 128 (the fast kernel's units) ------------------
// The same units as above (8 rows x 128 channels for per-token groups, 32 tokens x 32 channels
// for per-channel key groups), for the shape the KIVI models run at, with everything that is
// generic above fixed at compile time: 16-byte loads (4 per lane, all issued before any use), no
// per-row bounds, one group's parameters per lane from a reduce-scatter of the {min, -max} words
// (the shuffles halve the words at each step instead of reducing all of them), the NaN / Inf
// check folded into the reductions (max propagates NaN, so a group holds a NaN or an Inf exactly
// when its reduced min or max is not finite), and codes packed by shifts and adds on the
// rounding's bit patterns. A unit that is not whole (a partial tile of a job) or holds a NaN or
// an Inf returns false before storing anything, and the kernel runs the generic unit on it.
constexpr int kFastD = 128;  // head_dim of the fast kernel

template <class F>
struct is_kivi32 : std::false_type {};
template <int B>
struct is_kivi32<kivi_token_fmt<B, 32>> : std::true_type {};
template <int B>
struct is_kivi32<kivi_channel_fmt<B, 32>> : std::true_type {};

/// The fast kernel covers KIVI with 32-channel value groups and 32-token (per-channel) or
/// 32-channel (per-token) key groups.
template <class KF, class VF>
constexpr bool fast_kivi_formats() {
  if constexpr (is_kivi32<KF>::value && is_kivi32<VF>::value && !is_kivi_channel<VF>::value) {
    return KF::bits == VF::bits;
  }
  return false;
}

/// The sign bits of two f16: x ^ kSigns negates both halves (NaN stays NaN), one integer op.
constexpr unsigned kSigns = 0x80008000u;

/// {min, -max} of the 8 channels of a 16-byte chunk, as f16 in the low / high half; NaN
/// propagates into the high half (and Inf shows in one of them).
__device__ __forceinline__ unsigned range8(const uint4& v) {
  const __half2 a = as_half2(v.x), b = as_half2(v.y), c = as_half2(v.z), d = as_half2(v.w);
  const unsigned lo = as_u32(__hmin2(__hmin2(a, b), __hmin2(c, d)));
  const unsigned nh = as_u32(__hmax2_nan(__hmax2_nan(a, b), __hmax2_nan(c, d))) ^ kSigns;
  return as_u32(__hmin2_nan(as_half2(__byte_perm(lo, nh, 0x5410)), as_half2(__byte_perm(lo, nh, 0x7632))));
}

__device__ __forceinline__ unsigned hmin_nan(unsigned a, unsigned b) {
  return as_u32(__hmin2_nan(as_half2(a), as_half2(b)));
}

/// One group's stored parameters from its reduced {min, -max} word (finite halves):
/// codec.hpp's kivi_make_params with the conversions that are exact for finite values.
struct kivi_fast_params {
  float min;      ///< the group's min, -0 made +0
  float inv;      ///< 1 / scale in f32 (0 for a constant group)
  unsigned meta;  ///< {min, scale} f16 bits (stored as two halves: format.hpp's layouts)
};
template <int Bits>
__device__ __forceinline__ kivi_fast_params kivi_params_finite(unsigned w) {
  const float mn = canonical_zero(__half2float(__ushort_as_half(static_cast<unsigned short>(w & 0xFFFFu))));
  const float mx = canonical_zero(-__half2float(__ushort_as_half(static_cast<unsigned short>(w >> 16))));
  const float s = __fdiv_rn(__fsub_rn(mx, mn), static_cast<float>((1 << Bits) - 1));
  // f16_round_up(s): s is finite, in [0, 131008 / 3]
  unsigned sb = __half_as_ushort(__float2half_rn(s));
  if (__half2float(__ushort_as_half(static_cast<unsigned short>(sb))) < s) ++sb;
  const float scale = __half2float(__ushort_as_half(static_cast<unsigned short>(sb)));
  const float inv = scale > 0.0f ? __fdiv_rn(1.0f, scale) : 0.0f;
  const unsigned mb = __half_as_ushort(__float2half_rn(mn));  // exact: mn is an f16 value
  return {mn, inv, mb | (sb << 16)};
}

/// The bits kivi_code_finite leaves above a code (1.5 * 2^23's), summed over the 8 codes of a
/// 4-bit pack: subtracted once instead of masking each code.
constexpr unsigned pack_bias4() {
  unsigned b = 0;
  for (int k = 0; k < 8; ++k) b += 0x4B400000u << (4 * k);
  return b;
}

/// Packs the 8 codes of a 16-byte chunk (kivi_code_finite's results: 0x4B400000 + code), lowest
/// channel in the lowest bits: 16 bits for 2-bit codes (the other bits are garbage, above bit
/// 21), 32 for 4-bit codes.
template <int Bits>
__device__ __forceinline__ unsigned pack8(const unsigned (&c)[8]) {
  unsigned acc = c[7];
#pragma unroll
  for (int k = 6; k >= 0; --k) acc = (acc << Bits) + c[k];
  if constexpr (Bits == 4) acc -= pack_bias4();
  return acc;
}

/// Plain (weak, write-back) global stores: the pages are device memory (the intrinsics' cache
/// hints compile to stronger stores).
__device__ __forceinline__ void st_global(unsigned char* p, unsigned char v) {
  asm volatile("st.global.u8 [%0], %1;" ::"l"(p), "r"(static_cast<unsigned>(v)) : "memory");
}
__device__ __forceinline__ void st_global(unsigned short* p, unsigned short v) {
  asm volatile("st.global.u16 [%0], %1;" ::"l"(p), "h"(v) : "memory");
}
__device__ __forceinline__ void st_global(unsigned* p, unsigned v) {
  asm volatile("st.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

/// Stores the packed codes of one 16-byte chunk (8 channels) at byte `offset` of the page.
template <int Bits>
__device__ __forceinline__ void store_codes8(std::byte* page, std::size_t offset, unsigned packed) {
  if constexpr (Bits == 2) {
    st_global(reinterpret_cast<unsigned short*>(page + offset), static_cast<unsigned short>(packed));
  } else {
    st_global(reinterpret_cast<unsigned*>(page + offset), packed);
  }
}

/// Codes of the 8 channels of `v` with one group's parameters.
template <int Bits>
__device__ __forceinline__ unsigned codes8(const uint4& v, float mn, float inv) {
  const unsigned w[4] = {v.x, v.y, v.z, v.w};
  unsigned c[8];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 f = __half22float2(as_half2(w[k]));
    c[2 * k] = kivi_code_finite(f.x, mn, inv);
    c[2 * k + 1] = kivi_code_finite(f.y, mn, inv);
  }
  return pack8<Bits>(c);
}

/// Codes of the 8 channels of `v`, each with its channel's parameters.
template <int Bits>
__device__ __forceinline__ unsigned codes8(const uint4& v, const float (&mn)[8], const float (&inv)[8]) {
  const unsigned w[4] = {v.x, v.y, v.z, v.w};
  unsigned c[8];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 f = __half22float2(as_half2(w[k]));
    c[2 * k] = kivi_code_finite(f.x, mn[2 * k], inv[2 * k]);
    c[2 * k + 1] = kivi_code_finite(f.y, mn[2 * k + 1], inv[2 * k + 1]);
  }
  return pack8<Bits>(c);
}

/**
 * Per-token groups of 32 channels (KIVI values, and keys of the per-token variant), unit u = page
 * rows [8u, 8u + 8): lane = 16 h + c loads chunk c (channels 8c..8c+7) of rows 8u + 2i + h, i <
 * 4 (each load instruction reads two whole rows). The 4 lanes of a channel group (c / 4) meet in
 * a reduce-scatter that leaves lane q = c % 4 with row i = q's {min, -max}; it computes that
 * row's parameters, and the group's lanes read them back by shuffles.
 */
template <int Bits>
__device__ __forceinline__ bool quantize_token_unit_fast(const quantize_job& job, int u,
                                                         int page_size, int lane) {
  constexpr int row_bytes = kFastD * Bits / 8;
  const int r0 = u * kTileRows;
  if (r0 < job.first_token || r0 + kTileRows > job.first_token + job.tokens) return false;
  const int h = lane >> 4;
  const int c = lane & 15;
  const int q = lane & 3;
  const uint4* src = reinterpret_cast<const uint4*>(
                         job.rows + static_cast<std::size_t>(r0 - job.first_token + h) * kFastD) + c;
  uint4 v[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = __ldcs(src + i * (2 * kFastD / 8));
  unsigned r[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) r[i] = range8(v[i]);
  // reduce-scatter over lanes q = 0..3 (xor 1, then xor 2): lane q keeps row q
  const bool a = (q & 1) != 0;
  const bool b = (q & 2) != 0;
  const unsigned k0 = hmin_nan(a ? r[1] : r[0], __shfl_xor_sync(kFull, a ? r[0] : r[1], 1));  // row a
  const unsigned k1 = hmin_nan(a ? r[3] : r[2], __shfl_xor_sync(kFull, a ? r[2] : r[3], 1));  // row 2 + a
  const unsigned mine = hmin_nan(b ? k1 : k0, __shfl_xor_sync(kFull, b ? k0 : k1, 2));        // row q
  if (__any_sync(kFull, (non_finite2(mine) & kNonFinite) != 0)) return false;
  const kivi_fast_params p = kivi_params_finite<Bits>(mine);
  const std::size_t meta_offset =
      quant_side_format{quant_scheme::kivi_token, Bits, 32}.metadata_offset(page_size, kFastD);
  // token-pair records (format.hpp): rows 2q (lane h = 0) and 2q + 1 (h = 1, lane + 16) meet; h = 0
  // stores the pair's {min, min} word of group c / 4, h = 1 its {scale, scale} word
  const unsigned other = __shfl_xor_sync(kFull, p.meta, 16);
  const unsigned lo = h ? other : p.meta, hi = h ? p.meta : other;
  st_global(reinterpret_cast<unsigned*>(job.page + meta_offset) + (r0 / 2 + q) * (2 * kFastD / 32) +
                h * (kFastD / 32) + (c >> 2),
            __byte_perm(lo, hi, h ? 0x7632u : 0x5410u));
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int from = (lane & ~3) | i;
    const float mn = __shfl_sync(kFull, p.min, from);
    const float inv = __shfl_sync(kFull, p.inv, from);
    const unsigned packed = codes8<Bits>(v[i], mn, inv);
    if constexpr (Bits == 2) {  // token-pair rows (format.hpp): bytes 2c, 2c + 1 of the row
      const quant_side_format f{quant_scheme::kivi_token, 2, 32};
      const int row = r0 + 2 * i + h;
      st_global(reinterpret_cast<unsigned char*>(job.page + f.code_byte_offset(row, 2 * c, kFastD)),
                static_cast<unsigned char>(packed & 0xFFu));
      st_global(reinterpret_cast<unsigned char*>(job.page + f.code_byte_offset(row, 2 * c + 1, kFastD)),
                static_cast<unsigned char>(packed >> 8));
    } else {
      store_codes8<Bits>(job.page, static_cast<std::size_t>(r0 + 2 * i + h) * row_bytes + c * Bits,
                         packed);
    }
  }
  return true;
}

/**
 * Per-channel key groups of 32 tokens, unit u = (group g = u / 4, column block u % 4 of 32
 * channels): lane = 4 part + c loads chunk c (8 channels) of the group's rows part + 8i, i < 4
 * (each load instruction reads 8 rows x 64 bytes). After the lane's own min / max over its 4
 * rows, a 3-step reduce-scatter over the parts (xor 4, 8, 16) leaves each lane with the {min,
 * -max} word of one channel of its chunk (channel 4 b0 + 2 b1 + b2 for part = b0 + 2 b1 + 4 b2),
 * whose parameters it computes and stores; each lane then reads its 8 channels' back.
 */
template <int Bits>
__device__ __forceinline__ bool quantize_channel_unit_fast(const quantize_job& job, int u,
                                                           int page_size, int lane) {
  constexpr int G = 32;
  constexpr int row_bytes = kFastD * Bits / 8;
  const int g = u >> 2;
  const int block = u & 3;
  const int row0 = g * G;
  if (row0 >= page_size || row0 < job.first_token || row0 >= job.first_token + job.tokens) {
    return true;  // no group of this job here
  }
  // The 4 warps of this quad of the block hold the group's 4 column blocks (4 divides the units
  // per job and the stride, so a quad's warps always share the job and the group, and reach this
  // barrier together): they issue their loads together, so that the 64-byte pieces of each row
  // reach DRAM close in time (0.87 -> 0.93 of the copy bandwidth for KIVI-2 on an H100).
  if ((threadIdx.x & 128u) != 0) {
    asm volatile("bar.sync 2, 128;" ::: "memory");
  } else {
    asm volatile("bar.sync 1, 128;" ::: "memory");
  }
  const int c = lane & 3;
  const int part = lane >> 2;
  const uint4* src =
      reinterpret_cast<const uint4*>(job.rows + static_cast<std::size_t>(row0 - job.first_token + part) * kFastD +
                                     block * 32) + c;
  uint4 v[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = __ldcs(src + i * (8 * kFastD / 8));
  // per word k (channels 2k, 2k + 1 of the chunk): min and -max over the lane's 4 rows
  unsigned lo[4], nh[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const unsigned w0 = k == 0 ? v[0].x : k == 1 ? v[0].y : k == 2 ? v[0].z : v[0].w;
    const unsigned w1 = k == 0 ? v[1].x : k == 1 ? v[1].y : k == 2 ? v[1].z : v[1].w;
    const unsigned w2 = k == 0 ? v[2].x : k == 1 ? v[2].y : k == 2 ? v[2].z : v[2].w;
    const unsigned w3 = k == 0 ? v[3].x : k == 1 ? v[3].y : k == 2 ? v[3].z : v[3].w;
    lo[k] = as_u32(__hmin2(__hmin2(as_half2(w0), as_half2(w1)), __hmin2(as_half2(w2), as_half2(w3))));
    nh[k] = as_u32(__hmax2_nan(__hmax2_nan(as_half2(w0), as_half2(w1)),
                               __hmax2_nan(as_half2(w2), as_half2(w3)))) ^ kSigns;
  }
  // reduce-scatter over the parts: xor 4 (b0) keeps words 2 b0, 2 b0 + 1; xor 8 (b1) keeps word
  // 2 b0 + b1; xor 16 (b2) keeps its half b2, as a {min, -max} word
  const bool b0 = (lane & 4) != 0;
  const bool b1 = (lane & 8) != 0;
  const unsigned b2 = (lane >> 4) & 1u;
  auto step = [](bool bit, unsigned x, unsigned y, int off) {  // keep y if bit, else x
    return hmin_nan(bit ? y : x, __shfl_xor_sync(kFull, bit ? x : y, off));
  };
  const unsigned l0 = step(b0, lo[0], lo[2], 4);
  const unsigned l1 = step(b0, lo[1], lo[3], 4);
  const unsigned n0 = step(b0, nh[0], nh[2], 4);
  const unsigned n1 = step(b0, nh[1], nh[3], 4);
  const unsigned l = step(b1, l0, l1, 8);
  const unsigned nn = step(b1, n0, n1, 8);
  const unsigned keep_sel = 0x5410u + b2 * 0x2222u;  // b2 ? {l.hi, nn.hi} : {l.lo, nn.lo}
  const unsigned send_sel = 0x7632u - b2 * 0x2222u;
  const unsigned mine = hmin_nan(__byte_perm(l, nn, keep_sel),
                                 __shfl_xor_sync(kFull, __byte_perm(l, nn, send_sel), 16));
  if (__any_sync(kFull, (non_finite2(mine) & kNonFinite) != 0)) return false;
  const kivi_fast_params p = kivi_params_finite<Bits>(mine);
  const int channel = block * 32 + 8 * c + 4 * static_cast<int>(b0) + 2 * static_cast<int>(b1) +
                      static_cast<int>(b2);
  {  // pair order (format.hpp): the channel's f16 min, and its scale 2 kFastD bytes further
    const quant_side_format f{quant_scheme::kivi_channel, Bits, 32};
    std::byte* m = job.page + f.metadata_offset(page_size, kFastD) + f.kivi_channel_min_offset(g, channel, kFastD);
    st_global(reinterpret_cast<unsigned short*>(m), static_cast<unsigned short>(p.meta & 0xFFFFu));
    st_global(reinterpret_cast<unsigned short*>(m + 2 * kFastD), static_cast<unsigned short>(p.meta >> 16));
  }
  // channel e of the chunk lives in lane c + 4 part(e), part(e) = e>>2 | (e>>1 & 1) << 1 | (e & 1) << 2
  float mn[8], inv[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const int from = c + 4 * ((e >> 2) | (((e >> 1) & 1) << 1) | ((e & 1) << 2));
    mn[e] = __shfl_sync(kFull, p.min, from);
    inv[e] = __shfl_sync(kFull, p.inv, from);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    store_codes8<Bits>(job.page,
                       static_cast<std::size_t>(row0 + part + 8 * i) * row_bytes + block * (32 * Bits / 8) +
                           c * Bits,
                       codes8<Bits>(v[i], mn, inv));
  }
  return true;
}

/// The fast unit of format F (false: run the generic unit instead; nothing was stored).
template <class F>
__device__ __forceinline__ bool quantize_unit_fast(const quantize_job& job, int u, int page_size,
                                                   int lane) {
  if constexpr (is_kivi_channel<F>::value) {
    return quantize_channel_unit_fast<F::bits>(job, u, page_size, lane);
  } else {
    return quantize_token_unit_fast<F::bits>(job, u, page_size, lane);
  }
}

// ---- dequantize (every format: tiles of 8 rows) ---------------------------------------------------
template <class F, int Iters>
__device__ __forceinline__ void dequantize_rows(const dequantize_job& job, int r0, int r1,
                                                int page_size, int head_dim, int lane) {
  const int chunks = head_dim >> 2;
  auto* dst = reinterpret_cast<uint2*>(job.rows);
  if constexpr (std::is_same_v<F, f16_fmt>) {
    const auto* src = reinterpret_cast<const uint2*>(job.page);
    uint2 v[kTileRows][Iters];
#pragma unroll
    for (int t = 0; t < kTileRows; ++t) {
#pragma unroll
      for (int i = 0; i < Iters; ++i) {
        const int k = lane + 32 * i;
        if (r0 + t < r1 && k < chunks) v[t][i] = src[static_cast<std::size_t>(r0 + t) * chunks + k];
      }
    }
#pragma unroll
    for (int t = 0; t < kTileRows; ++t) {
#pragma unroll
      for (int i = 0; i < Iters; ++i) {
        const int k = lane + 32 * i;
        if (r0 + t < r1 && k < chunks) {
          dst[static_cast<std::size_t>(r0 + t - job.first_token) * chunks + k] = v[t][i];
        }
      }
    }
  } else if constexpr (std::is_same_v<F, row_fmt<true>> || std::is_same_v<F, row_fmt<false>>) {
    constexpr bool is_int8 = std::is_same_v<F, row_fmt<true>>;
    const auto* codes = reinterpret_cast<const unsigned*>(job.page);
    const auto* meta = reinterpret_cast<const float*>(
        job.page +
        quant_side_format{quant_scheme::int8_token, 8, 1}.metadata_offset(page_size, head_dim));
    unsigned c[kTileRows][Iters];
    float s[kTileRows];
#pragma unroll
    for (int t = 0; t < kTileRows; ++t) {
      s[t] = r0 + t < r1 ? meta[r0 + t] : 0.0f;
#pragma unroll
      for (int i = 0; i < Iters; ++i) {
        const int k = lane + 32 * i;
        c[t][i] = 0;
        if (r0 + t < r1 && k < chunks) c[t][i] = codes[static_cast<std::size_t>(r0 + t) * chunks + k];
      }
    }
#pragma unroll
    for (int t = 0; t < kTileRows; ++t) {
#pragma unroll
      for (int i = 0; i < Iters; ++i) {
        const int k = lane + 32 * i;
        if (r0 + t < r1 && k < chunks) {
          // codec.hpp's int8_decode_value / fp8_decode_value, with the conversions done without
          // the (quarter-rate) conversion instructions or two at a time
          float y[4];
          if constexpr (is_int8) {
#pragma unroll
            for (int e = 0; e < 4; ++e) y[e] = __fmul_rn(int8_value(c[t][i] >> (8 * e)), s[t]);
          } else {
            const float2 lo = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(
                static_cast<__nv_fp8x2_storage_t>(c[t][i] & 0xFFFFu), __NV_E4M3)));
            const float2 hi = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(
                static_cast<__nv_fp8x2_storage_t>(c[t][i] >> 16), __NV_E4M3)));
            y[0] = __fmul_rn(lo.x, s[t]);
            y[1] = __fmul_rn(lo.y, s[t]);
            y[2] = __fmul_rn(hi.x, s[t]);
            y[3] = __fmul_rn(hi.y, s[t]);
          }
          dst[static_cast<std::size_t>(r0 + t - job.first_token) * chunks + k] =
              make_uint2(f16x2_bits(y[0], y[1]), f16x2_bits(y[2], y[3]));
        }
      }
    }
  } else {  // KIVI, per token or per channel metadata
    constexpr int bits = F::bits;
    constexpr int group = F::group;
    constexpr bool per_channel = is_kivi_channel<F>::value;
    constexpr quant_scheme scheme = per_channel ? quant_scheme::kivi_channel : quant_scheme::kivi_token;
    const std::byte* meta_base =
        job.page + quant_side_format{scheme, bits, group}.metadata_offset(page_size, head_dim);
    unsigned c[kTileRows][Iters];
    unsigned m[kTileRows][Iters];  // per token: {min, scale} of the chunk's group
    uint4 mc[Iters];               // per channel: {min, scale} of the chunk's 4 channels
#pragma unroll
    for (int i = 0; i < Iters; ++i) {
      const int k = lane + 32 * i;
      if constexpr (per_channel) {
        // a tile of 8 rows lies in one token group (group >= 8, tiles start at multiples of 8)
        // pair order (format.hpp): channels 4k .. 4k + 3 are 4 consecutive words' low (or high)
        // halves in the mins and in the scales, rebuilt here as {min, scale} words
        mc[i] = make_uint4(0u, 0u, 0u, 0u);
        if (k < chunks) {
          constexpr int w = 32 / bits;
          const int c0 = 4 * k;
          const int base = c0 - c0 % w;
          const std::byte* rec = meta_base + static_cast<std::size_t>(r0 / group) * 4 * head_dim;
          if (base + w <= head_dim) {
            const int j0 = c0 % w;
            const int at = base + 2 * (j0 % (w / 2));  // first position (a multiple of 8)
            const uint4 mn = *reinterpret_cast<const uint4*>(rec + 2 * at);
            const uint4 sc = *reinterpret_cast<const uint4*>(rec + 2 * head_dim + 2 * at);
            const unsigned sel = j0 < w / 2 ? 0x5410u : 0x7632u;
            mc[i] = make_uint4(__byte_perm(mn.x, sc.x, sel), __byte_perm(mn.y, sc.y, sel),
                               __byte_perm(mn.z, sc.z, sel), __byte_perm(mn.w, sc.w, sel));
          } else {  // a trailing partial code word: natural order
            const auto* mh = reinterpret_cast<const std::uint16_t*>(rec);
            unsigned x[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              x[e] = static_cast<unsigned>(mh[c0 + e]) | (static_cast<unsigned>(mh[head_dim + c0 + e]) << 16);
            }
            mc[i] = make_uint4(x[0], x[1], x[2], x[3]);
          }
        }
      }
      // 2-bit values in token-pair rows (format.hpp, head_dim % 64 == 0): byte k of both rows of a
      // pair are bytes 0 and 2 (or 1 and 3) of one word (a start at an odd position takes the
      // per-row path)
      const quant_side_format fc{scheme, bits, group};
      const bool pair_words = fc.paired_code_rows(head_dim) && (r0 & 1) == 0;
      if (pair_words) {
        const auto* pw = reinterpret_cast<const unsigned char*>(job.page) +
                         static_cast<std::size_t>(r0 / 2) * (2 * chunks) + 4 * (8 * (k / 16) + k % 8);
        const int sh = 8 * ((k / 8) & 1);
#pragma unroll
        for (int t = 0; t < kTileRows; t += 2) {
          c[t][i] = c[t + 1][i] = 0;
          m[t][i] = m[t + 1][i] = 0;
          if (r0 + t < r1 && k < chunks) {
            // (two byte loads: 0.79 / 0.78 of the copy rate; one word load and shifts: 0.73)
            const unsigned char* q = pw + static_cast<std::size_t>(t / 2) * (2 * chunks) + sh / 8;
            c[t][i] = q[0];
            c[t + 1][i] = q[2];
          }
        }
      } else {
#pragma unroll
        for (int t = 0; t < kTileRows; ++t) {
          c[t][i] = 0;
          m[t][i] = 0;
          if (r0 + t < r1 && k < chunks) {
            const std::size_t index = static_cast<std::size_t>(r0 + t) * chunks + k;
            if constexpr (bits == 2) {  // byte k of the row (token-pair rows for values: format.hpp)
              c[t][i] = reinterpret_cast<const std::uint8_t*>(job.page)[fc.code_byte_offset(r0 + t, k, head_dim)];
            } else {
              c[t][i] = reinterpret_cast<const std::uint16_t*>(job.page)[index];
            }
          }
        }
      }
      if constexpr (!per_channel) {
        // token-pair records (format.hpp): the {min, min} and {scale, scale} words of a pair give
        // both rows' {min, scale} (r0 is even but where a job starts at an odd position)
        const auto* mw = reinterpret_cast<const unsigned*>(meta_base) + (4 * k) / group;
        const std::size_t rec = 2 * (head_dim / group);  // words per record
        if ((r0 & 1) == 0) {
#pragma unroll
          for (int t = 0; t < kTileRows; t += 2) {
            if (r0 + t < r1 && k < chunks) {
              const unsigned* w = mw + static_cast<std::size_t>((r0 + t) / 2) * rec;
              const unsigned mn = w[0], sc = w[head_dim / group];
              m[t][i] = __byte_perm(mn, sc, 0x5410u);
              m[t + 1][i] = __byte_perm(mn, sc, 0x7632u);
            }
          }
        } else {
#pragma unroll
          for (int t = 0; t < kTileRows; ++t) {
            if (r0 + t < r1 && k < chunks) {
              const unsigned* w = mw + static_cast<std::size_t>((r0 + t) / 2) * rec;
              m[t][i] = __byte_perm(w[0], w[head_dim / group], ((r0 + t) & 1) ? 0x7632u : 0x5410u);
            }
          }
        }
      }
    }
    constexpr unsigned mask = (1u << bits) - 1u;
#pragma unroll
    for (int i = 0; i < Iters; ++i) {
      const int k = lane + 32 * i;
      float cmin[4], cscale[4];  // per channel: decoded once per tile
      if constexpr (per_channel) {
        const unsigned w[4] = {mc[i].x, mc[i].y, mc[i].z, mc[i].w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 ms = meta_values(w[e]);
          cmin[e] = ms.x;
          cscale[e] = ms.y;
        }
      }
#pragma unroll
      for (int t = 0; t < kTileRows; ++t) {
        if (r0 + t < r1 && k < chunks) {
          float y[4];
          if constexpr (per_channel) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              y[e] = min_f(__fadd_rn(cmin[e], __fmul_rn(small_uint_value((c[t][i] >> (bits * e)) & mask),
                                                        cscale[e])),
                           65504.0f);  // codec.hpp's kivi_decode_value
            }
          } else {
            const float2 ms = meta_values(m[t][i]);
            const float mn = ms.x;
            const float sc = ms.y;
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              y[e] = min_f(__fadd_rn(mn, __fmul_rn(small_uint_value((c[t][i] >> (bits * e)) & mask), sc)),
                           65504.0f);  // codec.hpp's kivi_decode_value
            }
          }
          dst[static_cast<std::size_t>(r0 + t - job.first_token) * chunks + k] =
              make_uint2(f16x2_bits(y[0], y[1]), f16x2_bits(y[2], y[3]));
        }
      }
    }
  }
}

// ---- kernels --------------------------------------------------------------------------------------
/// Blocks per SM the quantize kernel is compiled for: 4 (<= 64 registers, 32 warps per SM: the
/// kernels wait on memory and arithmetic latency, so occupancy pays) where that does not spill;
/// 2 for head_dim > 128 and 128-token key groups, which hold more rows in registers.
template <class KF, int Iters>
constexpr int quantize_min_blocks() {
  if constexpr (is_kivi_channel<KF>::value) {
    if (KF::group > 64) return 2;
  }
  return Iters == 1 ? 4 : 2;
}

template <class KF, class VF, int Iters>
__global__ void __launch_bounds__(kWarps * 32, (quantize_min_blocks<KF, Iters>()))
    quantize_pages_kernel(const quantize_job* __restrict__ jobs, int n, int page_size,
                          int head_dim, int units_per_job, quant_status* status) {
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const long long total = static_cast<long long>(n) * units_per_job;
  const long long stride = static_cast<long long>(gridDim.x) * kWarps;
  // job-major grid stride: the warps of the grid sweep memory together, in order
  for (long long w = static_cast<long long>(blockIdx.x) * kWarps + (threadIdx.x >> 5); w < total;
       w += stride) {
    const int j = static_cast<int>(w / units_per_job);
    const int u = static_cast<int>(w - static_cast<long long>(j) * units_per_job);
    const quantize_job job = jobs[j];
    const bool key = job.side == kv_side::key;
    if (bad_job(job, page_size, key ? KF::token_group : VF::token_group)) {
      if (u == 0 && lane == 0 && status != nullptr) atomicMax(&status->bad_job, j + 1);
      continue;
    }
    bool nf = false;
    if (key) {
      quantize_unit<KF, Iters>(job, u, page_size, head_dim, lane, nf);
    } else {
      quantize_unit<VF, Iters>(job, u, page_size, head_dim, lane, nf);
    }
    if (__any_sync(kFull, nf) && lane == 0 && status != nullptr) {
      atomicMax(&status->non_finite_job, j + 1);
    }
  }
}

/// The quantize kernel for KIVI at head_dim 128 (fast_kivi_formats): the same work split and
/// results as quantize_pages_kernel, with the fast units (falling back to the generic ones for
/// partial tiles and non-finite input) and the (job, unit) pair advanced without divisions.
template <class KF, class VF>
__global__ void __launch_bounds__(kWarps * 32, 4)
    quantize_kivi_fast_kernel(const quantize_job* __restrict__ jobs, int n, int page_size,
                              int units_per_job, quant_status* status) {
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const long long first = static_cast<long long>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const long long stride = static_cast<long long>(gridDim.x) * kWarps;
  long long j = first / units_per_job;
  int u = static_cast<int>(first - j * units_per_job);
  const long long step_j = stride / units_per_job;
  const int step_u = static_cast<int>(stride - step_j * units_per_job);
  // job-major grid stride, as quantize_pages_kernel
  for (; j < n;) {
    const quantize_job job = jobs[j];
    const bool key = job.side == kv_side::key;
    const bool bad = key ? bad_job(job, page_size, KF::token_group) : bad_job(job, page_size, VF::token_group);
    if (bad) {
      if (u == 0 && lane == 0 && status != nullptr) atomicMax(&status->bad_job, static_cast<int>(j) + 1);
    } else if (!(key ? quantize_unit_fast<KF>(job, u, page_size, lane)
                     : quantize_unit_fast<VF>(job, u, page_size, lane))) {
      bool nf = false;
      if (key) {
        quantize_unit<KF, 1>(job, u, page_size, kFastD, lane, nf);
      } else {
        quantize_unit<VF, 1>(job, u, page_size, kFastD, lane, nf);
      }
      if (__any_sync(kFull, nf) && lane == 0 && status != nullptr) {
        atomicMax(&status->non_finite_job, static_cast<int>(j) + 1);
      }
    }
    u += step_u;
    j += step_j;
    if (u >= units_per_job) {
      u -= units_per_job;
      ++j;
    }
  }
}

template <class KF, class VF, int Iters>
__global__ void __launch_bounds__(kWarps * 32)
    dequantize_pages_kernel(const dequantize_job* __restrict__ jobs, int n, int page_size,
                            int head_dim, int units_per_job, quant_status* status) {
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const long long total = static_cast<long long>(n) * units_per_job;
  const long long stride = static_cast<long long>(gridDim.x) * kWarps;
  // job-major grid stride: the warps of the grid sweep memory together, in order
  for (long long w = static_cast<long long>(blockIdx.x) * kWarps + (threadIdx.x >> 5); w < total;
       w += stride) {
    const int j = static_cast<int>(w / units_per_job);
    const int u = static_cast<int>(w - static_cast<long long>(j) * units_per_job);
    const dequantize_job job = jobs[j];
    if (bad_job(job, page_size, 1)) {
      if (u == 0 && lane == 0 && status != nullptr) atomicMax(&status->bad_job, j + 1);
      continue;
    }
    const int r0 = max(u * kTileRows, job.first_token);
    const int r1 = min((u + 1) * kTileRows, job.first_token + job.tokens);
    if (r0 >= r1) continue;
    if (job.side == kv_side::key) {
      dequantize_rows<KF, Iters>(job, r0, r1, page_size, head_dim, lane);
    } else {
      dequantize_rows<VF, Iters>(job, r0, r1, page_size, head_dim, lane);
    }
  }
}

// ---- launch -----------------------------------------------------------------------------------------
template <class Kernel>
int blocks_per_sm(Kernel kernel) {
  int blocks = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kWarps * 32, 0) !=
          cudaSuccess ||
      blocks < 1) {
    (void)cudaGetLastError();
    blocks = 1;
  }
  return blocks;
}

cudaError_t grid_size(long long units, int occupancy, int& grid) {
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return e;
  int sms = 0;
  e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess) return e;
  const long long wanted = (units + kWarps - 1) / kWarps;
  const long long resident = static_cast<long long>(sms) * occupancy;
  grid = static_cast<int>(wanted < resident ? wanted : resident);
  if (grid < 1) grid = 1;
  return cudaSuccess;
}

template <class KF, class VF, int Iters>
cudaError_t launch_quantize(const quantize_job* jobs, int n, int page_size, int head_dim,
                            quant_status* status, cudaStream_t stream) {
  static const int occupancy = blocks_per_sm(quantize_pages_kernel<KF, VF, Iters>);
  int units = (page_size + kTileRows - 1) / kTileRows;
  if constexpr (is_kivi_channel<KF>::value) {
    units = max(units, channel_units(page_size, head_dim, KF::group));
  }
  int grid = 0;
  if (const cudaError_t e = grid_size(static_cast<long long>(n) * units, occupancy, grid);
      e != cudaSuccess) {
    return e;
  }
  quantize_pages_kernel<KF, VF, Iters>
      <<<grid, kWarps * 32, 0, stream>>>(jobs, n, page_size, head_dim, units, status);
  return cudaGetLastError();
}

template <class KF, class VF>
cudaError_t launch_quantize_kivi_fast(const quantize_job* jobs, int n, int page_size,
                                      quant_status* status, cudaStream_t stream) {
  static const int occupancy = blocks_per_sm(quantize_kivi_fast_kernel<KF, VF>);
  // page_size % 32 == 0 (launch_quantize_pages takes the generic kernel otherwise): 8-row tiles
  // and (group, 32-channel block) units are as many
  const int units = page_size / kTileRows;
  int grid = 0;
  if (const cudaError_t e = grid_size(static_cast<long long>(n) * units, occupancy, grid);
      e != cudaSuccess) {
    return e;
  }
  // Keys (per-channel groups) and values take different paths of different cost. When the grid
  // is full and its warps advance by an even number of jobs, a batch of alternating key and value
  // jobs (what the store flushes: K and V of each layer and head) keeps every warp on one side
  // for the whole batch, and the warps on the key side finish last.
  // A block fewer makes the stride an odd number of jobs, or not a whole number, so that each
  // warp takes both sides. (With fewer units per job than warps per block, each block holds
  // both sides anyway.)
  const long long wanted = (static_cast<long long>(n) * units + kWarps - 1) / kWarps;
  for (int k = 0; k < 2 && units >= kWarps && grid > 1 && wanted > grid; ++k) {
    const long long stride = static_cast<long long>(grid) * kWarps;
    if (stride % units != 0 || (stride / units) % 2 != 0) break;
    --grid;
  }
  quantize_kivi_fast_kernel<KF, VF>
      <<<grid, kWarps * 32, 0, stream>>>(jobs, n, page_size, units, status);
  return cudaGetLastError();
}

template <class KF, class VF, int Iters>
cudaError_t launch_dequantize(const dequantize_job* jobs, int n, int page_size, int head_dim,
                              quant_status* status, cudaStream_t stream) {
  static const int occupancy = blocks_per_sm(dequantize_pages_kernel<KF, VF, Iters>);
  const int units = (page_size + kTileRows - 1) / kTileRows;
  int grid = 0;
  if (const cudaError_t e = grid_size(static_cast<long long>(n) * units, occupancy, grid);
      e != cudaSuccess) {
    return e;
  }
  dequantize_pages_kernel<KF, VF, Iters>
      <<<grid, kWarps * 32, 0, stream>>>(jobs, n, page_size, head_dim, units, status);
  return cudaGetLastError();
}

/// Calls f(KF{}, VF{}) for the device formats of `f`; returns false when not implemented.
template <class Fn>
bool dispatch_format(const quant_format& f, Fn&& fn) {
  const quant_side_format& k = f.key;
  const quant_side_format& v = f.value;
  if (k.scheme == quant_scheme::f16 && v.scheme == quant_scheme::f16) {
    fn(f16_fmt{}, f16_fmt{});
    return true;
  }
  if (k.scheme == quant_scheme::int8_token && v.scheme == quant_scheme::int8_token) {
    fn(row_fmt<true>{}, row_fmt<true>{});
    return true;
  }
  if (k.scheme == quant_scheme::fp8_e4m3_token && v.scheme == quant_scheme::fp8_e4m3_token) {
    fn(row_fmt<false>{}, row_fmt<false>{});
    return true;
  }
  if (v.scheme != quant_scheme::kivi_token || k.bits != v.bits || k.group != v.group) return false;
  auto kivi = [&]<int Bits>() {
    if (k.scheme == quant_scheme::kivi_token && k.group == 32) {
      fn(kivi_token_fmt<Bits, 32>{}, kivi_token_fmt<Bits, 32>{});
      return true;
    }
    if (k.scheme != quant_scheme::kivi_channel) return false;
    switch (k.group) {
      case 32: fn(kivi_channel_fmt<Bits, 32>{}, kivi_token_fmt<Bits, 32>{}); return true;
      case 64: fn(kivi_channel_fmt<Bits, 64>{}, kivi_token_fmt<Bits, 64>{}); return true;
      case 128: fn(kivi_channel_fmt<Bits, 128>{}, kivi_token_fmt<Bits, 128>{}); return true;
      default: return false;
    }
  };
  if (k.bits == 2) return kivi.template operator()<2>();
  if (k.bits == 4) return kivi.template operator()<4>();
  return false;
}

}  // namespace

bool quant_format_supported_cuda(const quant_format& f) noexcept {
  return dispatch_format(f, [](auto, auto) {});
}

cudaError_t launch_quantize_pages(const quant_format& f, const quantize_job* jobs, std::int32_t n,
                                  std::int32_t page_size, std::int32_t head_dim,
                                  quant_status* status, cudaStream_t stream) {
  cudaError_t result = cudaErrorNotSupported;
  dispatch_format(f, [&]<class KF, class VF>(KF, VF) {
    if constexpr (fast_kivi_formats<KF, VF>()) {
      if (head_dim == kFastD && page_size % 32 == 0) {  // (its 8-row tiles and 32-token units)
        result = launch_quantize_kivi_fast<KF, VF>(jobs, n, page_size, status, stream);
        return;
      }
    }
    if (head_dim <= 128) {
      result = launch_quantize<KF, VF, 1>(jobs, n, page_size, head_dim, status, stream);
    } else {  // head_dim <= 256 (validated)
      result = launch_quantize<KF, VF, 2>(jobs, n, page_size, head_dim, status, stream);
    }
  });
  return result;
}

cudaError_t launch_dequantize_pages(const quant_format& f, const dequantize_job* jobs,
                                    std::int32_t n, std::int32_t page_size, std::int32_t head_dim,
                                    quant_status* status, cudaStream_t stream) {
  cudaError_t result = cudaErrorNotSupported;
  dispatch_format(f, [&]<class KF, class VF>(KF, VF) {
    if (head_dim <= 128) {
      result = launch_dequantize<KF, VF, 1>(jobs, n, page_size, head_dim, status, stream);
    } else {  // head_dim <= 256 (validated)
      result = launch_dequantize<KF, VF, 2>(jobs, n, page_size, head_dim, status, stream);
    }
  });
  return result;
}

}  // namespace kvcache::detail
