// Quantized pages (int8, fp8 E4M3, KIVI-2/4 + f16 residual) on the tensor cores. Included by
// paged_decode.cu only, inside its anonymous namespace (uses its helpers).
//
// One block (4 warps) per (chunk, sequence, kv head, <= 4 query heads), as the f16 kernel, but
// every warp owns whole 16-token tiles (pairs of tiles 2u, 2u+1 with u = warp + 4k) with its own
// online softmax, so the main loop has no block barrier; the warps' (max, sum, output) are merged
// once at the end. A warp's tile:
//   scores  S^T[token][head] = K[token][dim] . Q^T[dim][head]: mma.sync m16n8k16 (f16 in, f32
//           accumulate), the 16 tokens as M, the <= 4 query heads as N (padded to 8), the head
//           dim as K in D / 16 steps. Lane (g = lane / 4, t = lane % 4) holds the A fragments of
//           tokens g and g + 8 over dims [t D/4, (t+1) D/4): the dims inside a fragment are
//           permuted per format (whatever pairs the decoder produces in one instruction) and
//           the query fragments use the same permutation, so the dot products are unchanged.
//   softmax per head in the accumulator layout (tokens g, g+8 x heads 2t, 2t+1): max over the
//           tile by 3 shuffles, running sums kept per lane and reduced at the end.
//   P V     O^T[dim][head] += V^T[dim][token] . P^T[token][head]: the head dim as M (D / 16
//           tiles), the tile's tokens as K, heads as N. Lane (g, t) holds V^T fragments of dims
//           [g D/8, (g+1) D/8) x tokens 2t, 2t+1, 2t+8, 2t+9 (KIVI-2: the dims of qtraits::vdim);
//           P^T comes from the score accumulators through 4 shuffles.
// The KIVI page formats (quant/format.hpp) store what one 32-bit operand register pairs in one
// word: key mins / scales in pair order (dims k, k + half of a code word), value mins / scales in
// token-pair records, KIVI-2 value codes in token-pair rows.
// Every warp streams its tiles through its own ring of raw stages in shared memory (cp.async,
// qring below; page ids read a unit ahead): f16 and 8-bit stages of one 16-token tile, KIVI
// stages of 32 tokens (one page, one key group, processed as two tiles). The plan's split should
// come from paged_decode_cuda_options (the real blocks per SM of each format).
//
// Decoding:
//   int8 / fp8: the keys' codes are the A fragments as they are (exact f16: fp8 by the hardware
//     conversion, int8 as 1024 + code + 128 - 1152) and the key scale multiplies the f32 dot
//     product, so the scores are those of code x scale in f32 (the host reference's values, no
//     f16 rounding of the keys). Values likewise: codes as A, the value scale x 2^12 folded into
//     the probabilities before their f16 rounding (o is 2^12 x the output until the end) when
//     every value scale of the tile is in [2^-12, 65504 / 2^12]: then p <= p x scale x 2^12 <=
//     65504, no overflow and no more f16 underflow than p itself would have. Other tiles take
//     f16(code x scale) values and probabilities x 2^12.
//   KIVI (keys; KIVI-4 values; KIVI-2 values outside the folded path, see kivi2_values): host
//     f16(min(min + code * scale, 65504)) with f32 arithmetic (code * scale exact). The
//     codes become f16 (1024 + code) pairs with one LOP3 and are taken out exact by one f16 FMA;
//     one more f16 FMA (a single rounding of the exact min + code * scale) gives the host's f16
//     bits except in rare double-rounding cases of the host's f32 sum (one ulp). A stage whose
//     top code would decode above 65504 (checked per stage, one f16x2 FMA per two groups) also
//     clamps as the host does.

constexpr int kQTile = 16;
constexpr float kPScale = 4096.0f;  // int8 / fp8: P V accumulates 2^12 x the output
constexpr float kPScale_inv = 1.0f / 4096.0f;

__device__ __forceinline__ void mma_16816(float (&c)[4], const unsigned (&a)[4], unsigned b0,
                                          unsigned b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_1688(float (&c)[4], unsigned a0, unsigned a1, unsigned b0) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(b0));
}

/// 2^x by the SFU without the subnormal-result fix-up of exp2f (results below 2^-126 are 0: a
/// probability that small is lost in the f32 sums and the f16 rounding of P anyway; exp2(-inf)
/// = 0): 4 instructions fewer per exponential.
__device__ __forceinline__ float ex2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

/// Keeps lane-constant ints in registers across a loop (an empty asm that "changes" them in every
/// iteration): under register pressure ptxas otherwise recomputes them from the thread index in
/// every iteration (the KIVI loop: ~20 instructions per 32-token stage).
template <class... Ts>
__device__ __forceinline__ void keep_in_registers(Ts&... x) {
  ((void)[&] { asm volatile("" : "+r"(x)); }(), ...);
}

/// N bytes (2, 4, 8, 16 or 32) at p into words w (zeros when !ok).
template <int N>
__device__ __forceinline__ void load_words(const std::byte* p, bool ok, unsigned* w) {
  if constexpr (N == 32) {
    uint4 a = make_uint4(0, 0, 0, 0), b = a;
    if (ok) {
      a = __ldg(reinterpret_cast<const uint4*>(p));
      b = __ldg(reinterpret_cast<const uint4*>(p) + 1);
    }
    w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w;
    w[4] = b.x; w[5] = b.y; w[6] = b.z; w[7] = b.w;
  } else if constexpr (N == 16) {
    uint4 a = make_uint4(0, 0, 0, 0);
    if (ok) a = __ldg(reinterpret_cast<const uint4*>(p));
    w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w;
  } else if constexpr (N == 8) {
    uint2 a = make_uint2(0, 0);
    if (ok) a = __ldg(reinterpret_cast<const uint2*>(p));
    w[0] = a.x; w[1] = a.y;
  } else if constexpr (N == 4) {
    unsigned a = 0;
    if (ok) a = __ldg(reinterpret_cast<const unsigned*>(p));
    w[0] = a;
  } else {
    static_assert(N == 2, "load_words: 2, 4, 8, 16 or 32 bytes");
    unsigned short a = 0;
    if (ok) a = __ldg(reinterpret_cast<const unsigned short*>(p));
    w[0] = a;
  }
}

/// N bytes (2, 4, 8 or 16) of shared memory at p into words w.
template <int N>
__device__ __forceinline__ void lds_words(const unsigned char* p, unsigned* w) {
  if constexpr (N == 16) {
    const uint4 a = *reinterpret_cast<const uint4*>(p);
    w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w;
  } else if constexpr (N == 8) {
    const uint2 a = *reinterpret_cast<const uint2*>(p);
    w[0] = a.x; w[1] = a.y;
  } else if constexpr (N == 4) {
    w[0] = *reinterpret_cast<const unsigned*>(p);
  } else {
    static_assert(N == 2, "lds_words: 2, 4, 8 or 16 bytes");
    w[0] = *reinterpret_cast<const unsigned short*>(p);
  }
}

template <int D, int F>
struct qtraits {
  static constexpr bool kivi = F >= 4;
  static constexpr int bits = F == 0 ? 16 : (F == 4 ? 2 : (F == 5 ? 4 : 8));
  static constexpr int KS = D / 16;  // k steps of the scores, m tiles of P V
  static constexpr int KD = D / 4;   // K dims per lane
  static constexpr int VD = D / 8;   // V dims per lane
  static constexpr int kbytes = KD * bits / 8;
  static constexpr int vbytes = VD * bits / 8;
  static constexpr int KW = kbytes / 4;
  static constexpr int VW = vbytes >= 4 ? vbytes / 4 : 1;
  static constexpr int cpw = 32 / bits;   // codes per 32-bit word
  static constexpr int half = cpw / 2;    // KIVI: a word's low and high 16 bits pair codes k, k + half
  static constexpr int code_row = D * bits / 8;
  /// Lane-relative K dim of the low / high element of pair P (pairs 2 ks and 2 ks + 1 feed
  /// k step ks). 8-bit: dims 2P, 2P + 1; KIVI: codes k and k + half of word P / half.
  __device__ static constexpr int pair_lo(int P) {
    return bits >= 8 ? 2 * P : (P / half) * cpw + P % half;
  }
  __device__ static constexpr int pair_hi(int P) { return bits >= 8 ? 2 * P + 1 : pair_lo(P) + half; }
  /// Output dim of the P V accumulators o[i][2 r], o[i][2 r + 1] of lane (g, t) (row g + 8 r of m
  /// tile i). KIVI-2: m tile i = 2 G + h holds dims 32 G + 4 g' + 2 h + r' (g' its row's lane,
  /// r' its half), the 4 dims of byte g' of value group G's codes: every m tile inside one value
  /// group, so that the group's scales can multiply P (fold_values). Others: the lane's block of
  /// VD dims, g VD + 2 i + r.
  __device__ static constexpr int vdim(int g, int i, int r) {
    return F == 4 ? 32 * (i >> 1) + 4 * g + 2 * (i & 1) + r : g * VD + 2 * i + r;
  }
};

/// Whether no KIVI {min, scale} of the N {min, min} words mn and their {scale, scale} words sc
/// (f16 bits; the metadata layouts of format.hpp) decodes its top code above the f16 maximum, so
/// that kivi_pair needs no clamp: the f16 FMA of the top code (one rounding of the exact value)
/// is <= 65504 exactly when the host's f32 sum clamped to 65504 rounds to the same f16 (an exact
/// value in (65504, 65520) rounds to 65504 both ways; from 65520 the FMA gives inf); NaN fails
/// the test too. One f16x2 FMA per word pair.
template <int Bits, int N>
__device__ __forceinline__ bool kivi_tops_ok_split(const unsigned (&mn)[N], const unsigned (&sc)[N]) {
  const __half2 top = __float2half2_rn(static_cast<float>((1 << Bits) - 1));
  const __half2 lim = __float2half2_rn(65504.0f);
  bool ok = true;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const __half2 v = __hfma2(*reinterpret_cast<const __half2*>(&sc[i]), top,
                              *reinterpret_cast<const __half2*>(&mn[i]));
    ok = ok & __hble2(v, lim);  // no branch
  }
  return ok;
}

/// f16 pair (c_lo, c_hi), exact, of the codes at bits [s, s + bits) and [16 + s, ...) of w. The
/// codes are masked in place into the mantissa of 1024 (c 2^k + 1024 with k = s, or s - 8 after
/// one shift of the word by 8 shared by the codes above bit 8: no per-code shift), and one f16
/// FMA (x 2^-k - 2^(10 - k)) takes them out.
template <int Bits>
__device__ __forceinline__ unsigned code_pair(unsigned w, int s) {
  const unsigned x = s >= 8 ? w >> 8 : w;
  const int k = s >= 8 ? s - 8 : s;  // c 2^k < 1024
  const unsigned mask = (((1u << Bits) - 1u) << k) * 0x00010001u;
  unsigned r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(x), "r"(mask), "r"(0x64006400u));
  const auto hs = __ushort_as_half(static_cast<unsigned short>((15 - k) << 10));
  const auto hb = __ushort_as_half(static_cast<unsigned short>(0x8000u | ((25 - k) << 10)));
  const __half2 c = __hfma2(*reinterpret_cast<const __half2*>(&r), __halves2half2(hs, hs),
                            __halves2half2(hb, hb));
  return *reinterpret_cast<const unsigned*>(&c);
}

__device__ __forceinline__ __half2 u32_as_half2(unsigned x) {
  return *reinterpret_cast<const __half2*>(&x);
}
__device__ __forceinline__ unsigned half2_as_u32(__half2 x) {
  return *reinterpret_cast<const unsigned*>(&x);
}

/// Whether every KIVI value scale of the N {scale, scale} words sc (f16 bits) is in [2^-12,
/// 15.75]: then P x 2^12 x scale stays in f16 range with no more underflow than P (folded values,
/// see kivi2_values). NaN fails.
template <int N>
__device__ __forceinline__ bool kivi_fold_ok(const unsigned (&sc)[N]) {
  const __half2 lo = u32_as_half2(0x0C000C00u), hi = u32_as_half2(0x4BE04BE0u);  // 2^-12, 15.75
  bool ok = true;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    ok = ok & __hbge2(u32_as_half2(sc[i]), lo) & __hble2(u32_as_half2(sc[i]), hi);
  }
  return ok;
}

/// KIVI decode of a code pair (see code_pair) with f16x2 {scale} and {min}: one f16 FMA (a single
/// rounding of the exact min + code * scale); Clamp: then min(., 65504) as the host does.
template <bool Clamp>
__device__ __forceinline__ unsigned kivi_pair(unsigned codes, unsigned scale2, unsigned min2) {
  __half2 r = __hfma2(*reinterpret_cast<const __half2*>(&codes),
                      *reinterpret_cast<const __half2*>(&scale2),
                      *reinterpret_cast<const __half2*>(&min2));
  if constexpr (Clamp) {
    r = __hmin2(r, __halves2half2(__ushort_as_half(0x7BFF), __ushort_as_half(0x7BFF)));
  }
  return *reinterpret_cast<const unsigned*>(&r);
}

/// 8-bit decode of bytes 2j, 2j + 1 of w with the f32 scale s: f16 bits of the two values.
template <int F>
__device__ __forceinline__ float2 byte_pair(unsigned w, int j, float s) {
  float2 v;
  if constexpr (F == 3) {
    const __half2_raw hr = __nv_cvt_fp8x2_to_halfraw2(
        static_cast<__nv_fp8x2_storage_t>((w >> (16 * j)) & 0xFFFFu), __NV_E4M3);
    v = __half22float2(*reinterpret_cast<const __half2*>(&hr));
  } else {
    const unsigned x = w ^ 0x80808080u;  // code + 128, unsigned
    v.x = __uint_as_float(__byte_perm(x, 0x4B000000u, 0x7540u + 2 * j)) - 8388736.0f;
    v.y = __uint_as_float(__byte_perm(x, 0x4B000000u, 0x7540u + 2 * j + 1)) - 8388736.0f;
  }
  v.x = __fmul_rn(v.x, s);
  v.y = __fmul_rn(v.y, s);
  return v;
}

/// 8-bit codes 2j, 2j + 1 of w as an exact f16 pair: fp8 E4M3 by the hardware conversion, int8
/// as 1024 + (code + 128) (the byte in the mantissa of 1024) minus 1152.
template <int F>
__device__ __forceinline__ unsigned code_pair_f16(unsigned w, int j) {
  if constexpr (F == 3) {
    const __half2_raw hr = __nv_cvt_fp8x2_to_halfraw2(
        static_cast<__nv_fp8x2_storage_t>((w >> (16 * j)) & 0xFFFFu), __NV_E4M3);
    return *reinterpret_cast<const unsigned*>(&hr);
  } else {
    const unsigned x = __byte_perm(w ^ 0x80808080u, 0x64646464u, j == 0 ? 0x4140u : 0x4342u);
    const __half2 c = __hsub2(*reinterpret_cast<const __half2*>(&x),
                              __float2half2_rn(1152.0f));
    return *reinterpret_cast<const unsigned*>(&c);
  }
}

template <int D, int F>
struct qraw;
template <int D, int F>
  requires(F == 2 || F == 3)
struct qraw<D, F> {
  using T = qtraits<D, F>;
  unsigned k[2][T::KW];
  float ks[2];
  unsigned v[4][T::VW];
  float vs[4];  // V scales of the V fragment rows 2t + (j & 1) + 8 (j >> 1)
  float vg[2];  // V scales of tokens g, g + 8 (the rows of the lane's probabilities)
};
template <int D, int F>
  requires(F == 4 || F == 5)
struct qraw<D, F> {
  using T = qtraits<D, F>;
  unsigned k[2][T::KW];
  unsigned v[4][T::VW];
  unsigned vm[4];
};

/// Each warp streams its tiles through its own ring of raw stages in shared memory (cp.async), so
/// that no raw tile waits in registers and enough bytes are in flight.
/// 8-bit formats, a stage = one 16-token tile: K codes [16][D], V codes [16][D] (16-byte chunk c of
/// row r at position c ^ (r % CH): conflict-free fragment reads), then the 16 K and the 16 V f32
/// scales.
/// KIVI, a stage = 32 tokens (two tiles) of one page and one key group: K codes [32][CR] (row r in
/// slot kslot(r), chunks permuted by kchunk: conflict-free fragment reads), V codes likewise
/// (KIVI-4) or as the page's token-pair rows with vpos's chunk order (KIVI-2), the group's key
/// mins and scales in pair order (16-byte chunk c at byte kmeta_byte(c)), the value {min, min} /
/// {scale, scale} records of the 16 token pairs (format.hpp).
#ifndef KVCACHE_F16_MMA_STAGES
#define KVCACHE_F16_MMA_STAGES 3  // f16 pages on the tensor cores: stages per warp
#endif
#ifndef KVCACHE_Q8_DECODE_STAGES
#define KVCACHE_Q8_DECODE_STAGES 4  // int8 / fp8 stages per warp (3: 4 blocks per SM, but 0.79
                                    // of the copy rate at (16, 32k) instead of 0.88 on the H100)
#endif
#ifndef KVCACHE_KIVI2_MIN_BLOCKS
#define KVCACHE_KIVI2_MIN_BLOCKS 3  // 4 caps the registers at 128: the KIVI-2 kernel then spills
#endif
template <int D, int F>
struct qring {
  static constexpr bool kivi = F >= 4;
  static constexpr int bits = F == 0 ? 16 : (F == 4 ? 2 : (F == 5 ? 4 : 8));
  static constexpr int CH = D / 16;  // 16-byte chunks per 8-bit code row
  static constexpr int CR = D * bits / 8;  // bytes per code row
  static constexpr int tokens = kivi ? 2 * kQTile : kQTile;  // tokens per stage
  static constexpr int codes = tokens * CR;
  static constexpr bool kpad = F == 4;  // KIVI-2: padded key metadata blocks (kmeta_byte)
  static constexpr int kmeta = kivi ? 4 * D + (kpad ? 64 : 0) : (F == 0 ? 0 : 4 * kQTile);
  static constexpr int vmeta = kivi ? tokens * (D / 32) * 4 : (F == 0 ? 0 : 4 * kQTile);
  static constexpr int stage = 2 * codes + kmeta + vmeta;
  static constexpr int stages =
      F == 0 ? KVCACHE_F16_MMA_STAGES : (F == 5 ? 3 : (F == 4 ? 4 : KVCACHE_Q8_DECODE_STAGES));
  static constexpr int warp_bytes = stages * stage;
  static constexpr int red_bytes = (kThreads / 32) * kMaxSub * (D + 2) * 4;
  static constexpr int ring_bytes = (kThreads / 32) * warp_bytes;
  static constexpr int smem_bytes = ring_bytes > red_bytes ? ring_bytes : red_bytes;
  /// 8-bit: as many blocks as the shared memory holds (4 at most)
  static constexpr int q8_blocks =
      (227 * 1024) / (smem_bytes + 1024) < 4 ? (227 * 1024) / (smem_bytes + 1024) : 4;
  static constexpr int min_blocks =
      F == 0 ? (stages > 2 ? 2 : 3) : (F == 5 ? 3 : (F == 4 ? KVCACHE_KIVI2_MIN_BLOCKS : q8_blocks));
  static_assert(CR % 16 == 0 && stage % 16 == 0, "qring: 16-byte chunks");
  /// KIVI code rows: slot of row r, position of its 16-byte chunk c
  __device__ static constexpr int kslot(int r) {
    return CR == 32 ? r ^ ((r >> 2) & 1) : (CR == 64 ? r ^ ((r >> 1) & 1) : r);
  }
  __device__ static constexpr int kchunk(int c, int r) {
    return CR == 64 ? c ^ (((r >> 2) & 1) << 1) : c;
  }
  /// KIVI-2 values (token-pair rows, format.hpp): position of 16-byte chunk c of the stage's V
  /// codes (pair block c / (CR / 8), chunk c % (CR / 8)); CR = 32: chunks XORed by bit 1 of the
  /// block, so that the lanes' word reads (block t, word 8 s + g) are conflict-free
  __device__ static constexpr int vpos(int c) {
    const int pb = c / (CR / 8), q = c % (CR / 8);
    return pb * 2 * CR + 16 * (CR == 32 ? q ^ (((pb >> 1) & 1) << 1) : q);
  }
  /// byte b of code row r
  __device__ static constexpr int kbyte(int r, int b) {
    return kslot(r) * CR + kchunk(b / 16, r) * 16 + b % 16;
  }
  /// the swizzles only involve the row's low 3 bits: row r + 8 m is 8 m slots after row r (r < 8)
  static constexpr bool kbyte_shift() {
    for (int r = 0; r < 8; ++r)
      for (int m = 0; m < 4; ++m)
        for (int b = 0; b < CR; b += 4)
          if (kbyte(r + 8 * m, b) != kbyte(r, b) + 8 * m * CR) return false;
    return true;
  }
  /// f16 rows (D = 128: 16 chunks): position of 16-byte chunk c of row r, conflict-free for the
  /// cp.async stores, the K fragment reads (rows g, g + 8, chunks 4 t + m) and the V ones (rows
  /// 2 t + e, chunks 2 g + h)
  __device__ static constexpr int hpos(int c, int r) {
    return c ^ (((c >> 3) & 1) << 1) ^ (r & 1) ^ (((r >> 1) & 1) | (((r >> 2) & 1) << 2));
  }
  /// KIVI key metadata (the group's D mins, then its D scales, in pair order: format.hpp): byte of
  /// 16-byte chunk c. Lane t reads its D / 32 chunks of mins and of scales (those of its dims)
  /// with the other lanes t. KIVI-2: lane t's block holds its mins, then its scales, then 16 bytes
  /// of padding, so that the reads are conflict-free with lane-constant addresses (the KIVI-2
  /// loop: ~50 instructions fewer per stage than with the XOR swizzle, 4% faster); KIVI-4
  /// (memory-bound, 1-2% slower padded) keeps an XOR swizzle of the chunks (conflict-free for
  /// chunks 4 t + i of the mins and D / 8 + 4 t + i of the scales).
  __device__ static constexpr int kmeta_byte(int c) {
    if (kpad) {
      const int arr = c / (D / 8), cc = c % (D / 8);
      return (cc / (D / 32)) * (D + 16) + arr * (D / 2) + 16 * (cc % (D / 32));
    }
    return 16 * (c ^ (((c >> 3) * 2) & 7));
  }
};

template <int D, int F>
__global__ void __launch_bounds__(kThreads, (qring<D, F>::min_blocks))
    qdecode_kernel(const decode_params p) {
  using T = qtraits<D, F>;
  using R = qring<D, F>;
  constexpr int KS = T::KS;
  extern __shared__ __align__(16) unsigned char qsm[];
  // after the main loop (the ring is then dead): the warps' outputs, maxima and sums
  using ro_t = float[kMaxSub][D];
  using rm_t = float[kMaxSub];
  ro_t* red_o = reinterpret_cast<ro_t*>(qsm);
  rm_t* red_m = reinterpret_cast<rm_t*>(qsm + (kThreads / 32) * kMaxSub * D * 4);
  rm_t* red_l = red_m + kThreads / 32;

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  block_work w;
  if (!block_work_of<D>(p, w)) return;
  const int chunk = w.chunk, sub = w.sub, table = w.table;
  const int head_in_page = w.head_in_page, pg0 = w.pg0, L = w.L, start = w.start, end = w.end;
  const bool qbf = w.qbf;
  const std::int64_t row0 = w.row0;
  const int qtok = T::kivi && p.quantized_tokens != nullptr ? p.quantized_tokens[table] : L;

  // ---- query fragments (B of the scores): lane (g, t) holds head g, dims of its K fragments.
  // f16 queries are used as they are; bf16 ones are scaled by a power of two into f16 range.
  unsigned qf[KS][2];
  float hf0, hf1;  // score factor (scale_log2 * 2^e) of heads 2t, 2t + 1
  {
    const bool hv = g < sub;
    const std::int64_t qbase = (row0 + (hv ? g : 0)) * D + t * T::KD;
    float amax = 0.0f;
    if (qbf && hv) {
      for (int d = 0; d < T::KD; ++d) amax = fmaxf(amax, fabsf(load_q(p.q, qbase + d, true)));
    }
    amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, 1));
    amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, 2));
    int e = 0;
    if (amax > 16384.0f) e = ilogbf(amax) - 14;
    const float down = exp2f(static_cast<float>(-e));
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int P = 2 * ks + j;
        float lo = 0.0f, hi = 0.0f;
        if (hv) {
          lo = load_q(p.q, qbase + T::pair_lo(P), qbf) * down;
          hi = load_q(p.q, qbase + T::pair_hi(P), qbf) * down;
        }
        qf[ks][j] = pack_f16x2(lo, hi);
      }
    }
    const float f = p.scale_log2 * exp2f(static_cast<float>(e));
    hf0 = __shfl_sync(0xFFFFFFFFu, f, (2 * t) * 4);
    hf1 = __shfl_sync(0xFFFFFFFFu, f, (2 * t + 1) * 4);
  }

  float o[KS][4];
#pragma unroll
  for (int i = 0; i < KS; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[i][e] = 0.0f;
  // KIVI-2 stages with folded values: o[i][2 r + c] holds 2^12 x sum p code scale 4^k 2^-24 (k =
  // 2 (i & 1) + r: the code's place in its byte) and omin[G / 2][2 (G & 1) + c] 2^12 x sum p min
  // of group G (head 2t + c); `folded` says which units o is in (to_exact / to_folded)
  [[maybe_unused]] float omin[D / 64 > 0 ? D / 64 : 1][4] = {};
  [[maybe_unused]] bool folded = true;
  [[maybe_unused]] auto to_exact = [&] {  // o = 2^12 x sum p value; omin into o
#pragma unroll
    for (int i = 0; i < KS; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int G = i >> 1;
        o[i][e] = o[i][e] * static_cast<float>(1 << (24 - 4 * (i & 1) - 2 * (e >> 1))) +
                  omin[G >> 1][2 * (G & 1) + (e & 1)];
      }
#pragma unroll
    for (int i = 0; i < (D / 64 > 0 ? D / 64 : 1); ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) omin[i][e] = 0.0f;
    folded = false;
  };
  [[maybe_unused]] auto to_folded = [&] {
#pragma unroll
    for (int i = 0; i < KS; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        o[i][e] *= 1.0f / static_cast<float>(1 << (24 - 4 * (i & 1) - 2 * (e >> 1)));
      }
    folded = true;
  };
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

  // ---- NT (1 or 2) tiles at t0, t0 + 16 with nv[u] valid tokens each: decK(u, ks, a) /
  // decV(u, i, a) give tile u's A fragments. Two tiles share one max and one rescale and give the
  // scheduler two independent chains.
  // kf(u, j): factor of the scores of tile u's token g + 8 j (the key scale when decK gives codes);
  // pf(u, j): factor of its probabilities in P V (the value scale x 2^12 when decV gives codes)
  auto process = [&](auto nt, int t0, const int* nv, auto&& decK, auto&& decV, auto&& kf,
                     auto&& pf) {
    constexpr int NT = decltype(nt)::value;
    // Raw (KIVI-2: two tiles, kf = 1): one MMA chain per tile (the two tiles are two chains)
    // and the score scale applied where the scores are used (max, exponent, stored scores), not
    // to every score first
    constexpr bool Raw = NT == 2 && F == 4;  // (KIVI-4, memory-bound, measured 4% slower so)
    float c[NT][2][4];
#pragma unroll
    for (int u = 0; u < NT; ++u)
#pragma unroll
      for (int e = 0; e < 4; ++e) c[u][0][e] = c[u][1][e] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
#pragma unroll
      for (int u = 0; u < NT; ++u) {
        unsigned a[4];
        decK(u, ks, a);
        mma_16816(c[u][Raw ? 0 : (ks & 1)], a, qf[ks][0], qf[ks][1]);
      }
    }
    float s[NT][4];
    float x0 = -INFINITY, x1 = -INFINITY;
#pragma unroll
    for (int u = 0; u < NT; ++u) {
      const float f0 = kf(u, 0), f1 = kf(u, 1);
      if constexpr (Raw) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[u][e] = c[u][0][e];
      } else {
        s[u][0] = (c[u][0][0] + c[u][1][0]) * f0 * hf0;
        s[u][1] = (c[u][0][1] + c[u][1][1]) * f0 * hf1;
        s[u][2] = (c[u][0][2] + c[u][1][2]) * f1 * hf0;
        s[u][3] = (c[u][0][3] + c[u][1][3]) * f1 * hf1;
      }
      if (g >= nv[u]) s[u][0] = s[u][1] = -INFINITY;
      if (g + 8 >= nv[u]) s[u][2] = s[u][3] = -INFINITY;
      if (p.scores != nullptr) {
        const int ta = t0 + kQTile * u + g, tb = ta + 8;
        const std::int64_t ra = (row0 + 2 * t) * p.score_stride, rb = ra + p.score_stride;
        const float h0 = Raw ? hf0 : 1.0f, h1 = Raw ? hf1 : 1.0f;
        if (2 * t < sub) {
          if (g < nv[u] && ta < p.score_stride) p.scores[ra + ta] = s[u][0] * h0;
          if (g + 8 < nv[u] && tb < p.score_stride) p.scores[ra + tb] = s[u][2] * h0;
        }
        if (2 * t + 1 < sub) {
          if (g < nv[u] && ta < p.score_stride) p.scores[rb + ta] = s[u][1] * h1;
          if (g + 8 < nv[u] && tb < p.score_stride) p.scores[rb + tb] = s[u][3] * h1;
        }
      }
      x0 = fmaxf(x0, fmaxf(s[u][0], s[u][2]));
      x1 = fmaxf(x1, fmaxf(s[u][1], s[u][3]));
    }
    if constexpr (Raw) {  // the scale is > 0: the maximum of the scaled scores, exactly
      x0 *= hf0;
      x1 *= hf1;
    }
    // the maxima over the lanes (g) only when a lane's scores exceed the running maxima: one vote
    // instead of three dependent shuffle rounds in the common case (same result either way)
    if (__any_sync(0xFFFFFFFFu, x0 > m0 || x1 > m1)) {
#pragma unroll
      for (int msk = 4; msk <= 16; msk <<= 1) {
        x0 = fmaxf(x0, __shfl_xor_sync(0xFFFFFFFFu, x0, msk));
        x1 = fmaxf(x1, __shfl_xor_sync(0xFFFFFFFFu, x1, msk));
      }
      const float n0 = fmaxf(m0, x0), n1 = fmaxf(m1, x1);
      const float a0 = ex2_ftz(m0 - n0), a1 = ex2_ftz(m1 - n1);
      l0 *= a0;
      l1 *= a1;
#pragma unroll
      for (int i = 0; i < KS; ++i) {
        o[i][0] *= a0;
        o[i][1] *= a1;
        o[i][2] *= a0;
        o[i][3] *= a1;
      }
      if constexpr (F == 4) {
#pragma unroll
        for (int i = 0; i < D / 64; ++i) {
          omin[i][0] *= a0;
          omin[i][1] *= a1;
          omin[i][2] *= a0;
          omin[i][3] *= a1;
        }
      }
      m0 = n0;
      m1 = n1;
    }
    // P^T fragment of lane (g, t): P[token 2t, 2t+1, 2t+8, 2t+9][head g], from lanes
    // (2t, g/2) and (2t+1, g/2), which hold those tokens for heads 2(g/2), 2(g/2)+1
    // KIVI-2: probabilities x 2^12 (o and l alike) by the exponent, not a multiply
    constexpr float pe = F == 4 ? 12.0f : 0.0f;
    const float mp0 = m0 - pe, mp1 = m1 - pe;
    const int la = (2 * t) * 4 + (g >> 1), lb = la + 4;
    const unsigned sel = (g & 1) ? 0x7632u : 0x5410u;
    unsigned b[NT][2];
#pragma unroll
    for (int u = 0; u < NT; ++u) {
      // (Raw: the scale in the exponent's FMA)
      // (KIVI-2: the exponent capped at 12, so that p <= 2^12 even where the unrounded FMA or an
      // inexact m - 12 (scores of 2^19 and more) would exceed the rounded maximum: P x scale
      // then stays finite in f16)
      auto ex = [&](float x) { return ex2_ftz(F == 4 ? fminf(x, pe) : x); };
      const float p0 = ex(Raw ? fmaf(s[u][0], hf0, -mp0) : s[u][0] - mp0);
      const float p1 = ex(Raw ? fmaf(s[u][1], hf1, -mp1) : s[u][1] - mp1);
      const float p2 = ex(Raw ? fmaf(s[u][2], hf0, -mp0) : s[u][2] - mp0);
      const float p3 = ex(Raw ? fmaf(s[u][3], hf1, -mp1) : s[u][3] - mp1);
      l0 += p0 + p2;
      l1 += p1 + p3;
      const float f0 = pf(u, 0), f1 = pf(u, 1);
      const unsigned ulo = pack_f16x2(p0 * f0, p1 * f0), uhi = pack_f16x2(p2 * f1, p3 * f1);
      const unsigned xa = __shfl_sync(0xFFFFFFFFu, ulo, la), xb = __shfl_sync(0xFFFFFFFFu, ulo, lb);
      const unsigned ya = __shfl_sync(0xFFFFFFFFu, uhi, la), yb = __shfl_sync(0xFFFFFFFFu, uhi, lb);
      b[u][0] = __byte_perm(xa, xb, sel);
      b[u][1] = __byte_perm(ya, yb, sel);
    }
    if constexpr (std::is_invocable_v<decltype(decV)&, int, int, unsigned (&)[4]>) {
#pragma unroll
      for (int i = 0; i < KS; ++i) {
#pragma unroll
        for (int u = 0; u < NT; ++u) {
          unsigned a[4];
          decV(u, i, a);
          mma_16816(o[i], a, b[u][0], b[u][1]);
        }
      }
    } else {
      decV(b);  // the whole P V (KIVI-2 folded values)
    }
  };
  auto unit_kf = [](int, int) { return 1.0f; };  // decK / decV give the values
  using one_tile = std::integral_constant<int, 1>;
  using two_tiles = std::integral_constant<int, 2>;

  // ---- quantized tiles --------------------------------------------------------------------------
  const int qend = min(end, qtok);
  const int nqt = qend > start ? (qend - start + kQTile - 1) / kQTile : 0;
  const std::byte* layer_base =
      F == 0 ? nullptr : p.qdata + p.layer * p.q_layer_stride + head_in_page * p.q_head_page_bytes;
  const bool one_page = p.page_size % kQTile == 0;
  // head page (K side) of token tok and its position; ok cleared for a page outside the pool
  auto page_index = [&](int tok) {  // tok / page_size (tokens < 2^31)
    return static_cast<int>(p.page_div.div(static_cast<unsigned>(tok)));
  };
  auto page_of = [&](int tok, bool& ok, int& pos) -> const std::byte* {
    int page = 0;
    const int pi = page_index(tok);
    if (ok) page = p.indices[pg0 + pi];
    ok = ok && page >= 0 && page < p.q_num_pages;
    pos = tok - pi * p.page_size;
    return layer_base + static_cast<std::int64_t>(ok ? page : 0) * p.q_page_bytes;
  };
  unsigned char* ring = qsm + warp * R::warp_bytes;
  // The warp's ring: its units j = 0, 1, ... (unit(j): index of U-token units from start, warp-
  // interleaved) are issued R::stages - 1 ahead (issue(t0, page, stage); the page id, when one
  // page holds the unit, read one more unit ahead so its latency hides behind a unit's work),
  // and consume(stage bytes, t0) runs once the unit's copies have landed. With a peek callable
  // (KIVI-2), unit j + 1 has landed too when unit j is consumed: consume(stage, t0, stage of unit
  // j + 1) may look at its bytes ahead (e.g. its decode checks, so that they are ready at j + 1);
  // peek(stage of unit 0) runs once before the loop.
  auto ring_loop = [&](int U, int nunits, auto&& unit, auto&& issue, auto&& consume,
                       auto&& peek) {
    constexpr bool Peek = !std::is_same_v<std::decay_t<decltype(peek)>, std::false_type>;
    static_assert(!Peek || R::stages >= 3, "ring_loop: a unit ahead needs 3 stages");
    auto unit_page = [&](int j) {
      const int u = unit(j);
      return one_page && u < nunits ? p.indices[pg0 + page_index(start + U * u)] : 0;
    };
#pragma unroll
    for (int s = 0; s < R::stages - 1; ++s) {
      if (unit(s) < nunits) issue(start + U * unit(s), unit_page(s), s);
      cp_async_commit();
    }
    int next_page = unit_page(R::stages - 1);
    if constexpr (Peek) {
      if (unit(0) < nunits) {
        cp_async_wait<R::stages - 2>();
        __syncwarp();
        peek(ring);
      }
    }
    for (int j = 0; unit(j) < nunits; ++j) {
      const int jn = j + R::stages - 1;
      __syncwarp();  // every lane is done with the stage read at j - 1
      if (unit(jn) < nunits) issue(start + U * unit(jn), next_page, jn % R::stages);
      cp_async_commit();
      next_page = unit_page(jn + 1);
      cp_async_wait<Peek ? R::stages - 2 : R::stages - 1>();
      __syncwarp();  // the other lanes' copies of unit j (and j + 1) are visible
      if constexpr (Peek) {
        consume(ring + (j % R::stages) * R::stage, start + U * unit(j),
                ring + ((j + 1) % R::stages) * R::stage);
      } else {
        consume(ring + (j % R::stages) * R::stage, start + U * unit(j));
      }
    }
    cp_async_wait<0>();
  };
  using no_peek = std::false_type;
  // 16-token tiles: warp w takes tiles 2u, 2u + 1 with u = w + 4k
  [[maybe_unused]] auto tile_of = [&](int j) { return 8 * (j >> 1) + 2 * warp + (j & 1); };

  // int8 / fp8: one tile r at t0
  [[maybe_unused]] auto consume8 = [&](const auto& r, int t0) {  // generic: 8-bit only
    const int nv[1] = {min(kQTile, qend - t0)};
    // keys: the codes as f16 (exact), the key scale applied to the f32 dot product (kf)
    auto decK = [&](int, int ks, unsigned (&a)[4]) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {  // token g + 8 j: word ks = dims 4 ks .. 4 ks + 3
        a[j] = code_pair_f16<F>(r.k[j][ks], 0);
        a[2 + j] = code_pair_f16<F>(r.k[j][ks], 1);
      }
    };
    // values: when every V scale of the tile is in [2^-12, 65504 / 2^12] (p <= p x scale x 2^12
    // <= 65504: neither overflow nor more f16 underflow than p alone), the codes as f16 (exact)
    // with the probabilities scaled by scale x 2^12; otherwise (also negative or NaN scales) the
    // values f16(code x scale) with the probabilities x 2^12. Either way o is 2^12 x the output.
    auto decV = [&](int, int i, unsigned (&a)[4]) {  // dims 2i, 2i+1 of tokens (A,B), (C,D)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const float2 x = byte_pair<F>(r.v[2 * j][i / 2], i & 1, r.vs[2 * j]);
        const float2 y = byte_pair<F>(r.v[2 * j + 1][i / 2], i & 1, r.vs[2 * j + 1]);
        a[2 * j] = pack_f16x2(x.x, y.x);
        a[2 * j + 1] = pack_f16x2(x.y, y.y);
      }
    };
    auto decVc = [&](int, int i, unsigned (&a)[4]) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {  // bytes (dim of token A, of token B) for dims 2i, 2i + 1
        const unsigned c = __byte_perm(r.v[2 * j][i / 2], r.v[2 * j + 1][i / 2],
                                       (i & 1) ? 0x7362u : 0x5140u);
        a[2 * j] = code_pair_f16<F>(c, 0);
        a[2 * j + 1] = code_pair_f16<F>(c, 1);
      }
    };
    bool small = true;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      small = small & (r.vs[j] >= kPScale_inv) & (r.vs[j] <= 65504.0f * kPScale_inv);
    }
    auto kf = [&](int, int j) { return r.ks[j]; };
    if (__all_sync(0xFFFFFFFFu, small)) {
      process(one_tile{}, t0, nv, decK, decVc, kf, [&](int, int j) { return r.vg[j] * kPScale; });
    } else {
      process(one_tile{}, t0, nv, decK, decV, kf, [](int, int) { return kPScale; });
    }
  };
  // KIVI: key fragments of the two tiles r[0], r[1] of a stage with the key pairs kmin2 / ksc2
  // (Clamp: the stage has a top code above the f16 maximum)
  [[maybe_unused]] auto kivi_decK = [](const auto& r, const unsigned* kmin2, const unsigned* ksc2,
                                       auto cl) {
    constexpr bool C = decltype(cl)::value;
    return [&r, kmin2, ksc2](int u, int ks, unsigned (&a)[4]) {
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) {
        const int P = 2 * ks + jj;
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const unsigned c = code_pair<T::bits>(r[u].k[j][P / T::half], T::bits * (P % T::half));
          a[2 * jj + j] = kivi_pair<C>(c, ksc2[P], kmin2[P]);
        }
      }
    };
  };
  // KIVI-4: the two tiles r[0], r[1] of a stage at t0 (values decoded like the keys)
  [[maybe_unused]] auto consume_kivi = [&](const auto& r, int t0, const unsigned* kmin2,
                                           const unsigned* ksc2, auto cl) {
    constexpr bool C = decltype(cl)::value;
    const int nv[2] = {min(kQTile, qend - t0), min(kQTile, qend - t0 - kQTile)};
    auto decK = kivi_decK(r, kmin2, ksc2, cl);
    auto decV = [&](int u, int i, unsigned (&a)[4]) {
      const int d = 2 * i;  // dims 2i, 2i + 1 share word and half
      const int wi = d / T::cpw;
      const unsigned sel = ((d % T::cpw) / T::half) ? 0x7632u : 0x5410u;
#pragma unroll
      for (int j = 0; j < 2; ++j) {  // token pairs (2t, 2t+1), (2t+8, 2t+9): {min}, {scale}
        const unsigned vmin2 = r[u].vm[2 * j], vsc2 = r[u].vm[2 * j + 1];
        const unsigned comb = __byte_perm(r[u].v[2 * j][wi], r[u].v[2 * j + 1][wi], sel);
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const unsigned c = code_pair<T::bits>(comb, T::bits * ((d + e) % T::half));
          a[2 * j + e] = kivi_pair<C>(c, vsc2, vmin2);
        }
      }
    };
    process(two_tiles{}, t0, nv, decK, decV, unit_kf, unit_kf);
  };

  if constexpr (F == 0) {
    // ---- f16 pages (D = 128): a stage per 16-token tile, rows as they are -----------------------
    static_assert(D == 128, "the tensor-core f16 path takes head_dim 128");
    constexpr int RB = D * 2;   // row bytes
    constexpr int CPR = RB / 16;  // chunks per row
    constexpr int RP = 32 / CPR;  // rows per pass of the warp
    auto issue = [&](int t0, int page, int st) {
      unsigned char* dst = ring + st * R::stage;
      const int nvalid = min(kQTile, qend - t0);
      const int c = lane % CPR;
#pragma unroll
      for (int i = 0; i < kQTile / RP; ++i) {
        const int rr = lane / CPR + RP * i;
        int pg = page;
        if (!one_page) pg = rr < nvalid ? p.indices[pg0 + (t0 + rr) / p.page_size] : 0;
        const bool ok = rr < nvalid && pg >= 0 && pg < p.kv.num_pages;
        const std::int64_t off =
            ok ? p.kv.k_row_offset(p.layer, pg, (t0 + rr) % p.page_size, head_in_page) : 0;
        const std::byte* src = p.kv.data + off + c * 16;
        const int d = rr * RB + R::hpos(c, rr) * 16;
        cp_async16(dst + d, src, ok);
        cp_async16(dst + R::codes + d, src + p.kv.v_offset_bytes, ok);
      }
    };
    auto consume16 = [&](const unsigned char* src, int t0) {
      const int nv[1] = {min(kQTile, qend - t0)};
      // K: pairs 2 ks, 2 ks + 1 of the lane's dims [32 t, 32 t + 32) = words 16 t + 2 ks, + 1
      auto decK = [&](int, int ks, unsigned (&a)[4]) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int rr = g + 8 * j;
          const uint4 x =
              *reinterpret_cast<const uint4*>(src + rr * RB + R::hpos(4 * t + ks / 2, rr) * 16);
          a[j] = (ks & 1) ? x.z : x.x;
          a[2 + j] = (ks & 1) ? x.w : x.y;
        }
      };
      // V: dims 2 i, 2 i + 1 of the lane's [16 g, 16 g + 16) = word 8 g + i of tokens (A, B)
      auto decV = [&](int, int i, unsigned (&a)[4]) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int ra = 2 * t + 8 * j;
          const unsigned char* pa = src + R::codes + ra * RB + R::hpos(2 * g + i / 4, ra) * 16;
          const unsigned char* pb = src + R::codes + (ra + 1) * RB + R::hpos(2 * g + i / 4, ra + 1) * 16;
          const uint4 xa = *reinterpret_cast<const uint4*>(pa);
          const uint4 xb = *reinterpret_cast<const uint4*>(pb);
          const unsigned wa = (i & 3) == 0 ? xa.x : ((i & 3) == 1 ? xa.y : ((i & 3) == 2 ? xa.z : xa.w));
          const unsigned wb = (i & 3) == 0 ? xb.x : ((i & 3) == 1 ? xb.y : ((i & 3) == 2 ? xb.z : xb.w));
          a[2 * j] = __byte_perm(wa, wb, 0x5410u);
          a[2 * j + 1] = __byte_perm(wa, wb, 0x7632u);
        }
      };
      process(one_tile{}, t0, nv, decK, decV, unit_kf, unit_kf);
    };
    ring_loop(kQTile, nqt, tile_of, issue, consume16, no_peek{});
  } else if constexpr (!T::kivi) {
    // ---- int8 / fp8: a stage per 16-token tile ------------------------------------------------
    constexpr int CH = R::CH;
    constexpr int RPI = 32 / CH;  // code rows one pass of the warp copies
    // tile at t0 (on page `page` when one_page) into stage st: lane copies chunk lane % CH of rows
    // lane / CH + RPI i (K and V) and one scale (lanes 0-15: K of token lane, 16-31: V of token
    // lane - 16); rows past the tile or on a page outside the pool are zero-filled
    // lane-constant parts: chunk c of rows lane / CH + RPI i at shared position dpos[i], the
    // scale of token lane % 16 (K for lanes 0-15, V for 16-31)
    const int c8 = lane % CH;
    int dpos[kQTile / RPI];
#pragma unroll
    for (int i = 0; i < kQTile / RPI; ++i) {
      const int rr = lane / CH + RPI * i;
      dpos[i] = (rr * CH + (c8 ^ (rr % CH))) * 16;
    }
    const std::int64_t meta_off =
        lane < 16 ? p.q_key_meta_offset : p.q_v_offset + p.q_value_meta_offset;
    auto issue = [&](int t0, int page, int st) {
      unsigned char* dst = ring + st * R::stage;
      const int nvalid = min(kQTile, qend - t0);
      if (one_page) {  // the tile lies in page `page`, rows pos0 ..
        const bool page_ok = page >= 0 && page < p.q_num_pages;
        const int pos0 = t0 - page_index(t0) * p.page_size;
        const std::byte* hp =
            layer_base + static_cast<std::int64_t>(page_ok ? page : 0) * p.q_page_bytes;
        const std::byte* src = hp + static_cast<std::int64_t>(pos0 + lane / CH) * D + c8 * 16;
#pragma unroll
        for (int i = 0; i < kQTile / RPI; ++i) {
          const bool ok = page_ok && lane / CH + RPI * i < nvalid;
          cp_async16(dst + dpos[i], src + RPI * i * D, ok);
          cp_async16(dst + R::codes + dpos[i], src + RPI * i * D + p.q_v_offset, ok);
        }
        cp_async4(dst + 2 * R::codes + lane * 4, hp + meta_off + static_cast<std::int64_t>(pos0 + (lane & 15)) * 4,
                  page_ok && (lane & 15) < nvalid);
        return;
      }
#pragma unroll
      for (int i = 0; i < kQTile / RPI; ++i) {
        const int rr = lane / CH + RPI * i;
        bool ok = rr < nvalid;
        int pos;
        const std::byte* hp = page_of(t0 + rr, ok, pos);
        const std::byte* src = hp + static_cast<std::int64_t>(pos) * D + c8 * 16;
        cp_async16(dst + dpos[i], src, ok);
        cp_async16(dst + R::codes + dpos[i], src + p.q_v_offset, ok);
      }
      {
        bool ok = (lane & 15) < nvalid;
        int pos;
        const std::byte* hp = page_of(t0 + (lane & 15), ok, pos);
        cp_async4(dst + 2 * R::codes + lane * 4, hp + meta_off + static_cast<std::int64_t>(pos) * 4, ok);
      }
    };
    // the lane's fragments of the stage at src
    auto gather = [&](qraw<D, F>& r, const unsigned char* src) {
      constexpr int kc = T::kbytes / 16;  // K chunks per lane and row
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int rr = g + 8 * j;
#pragma unroll
        for (int h = 0; h < kc; ++h) {
          const int c = t * kc + h;
          const uint4 x = *reinterpret_cast<const uint4*>(src + (rr * CH + (c ^ (rr % CH))) * 16);
          r.k[j][4 * h] = x.x;
          r.k[j][4 * h + 1] = x.y;
          r.k[j][4 * h + 2] = x.z;
          r.k[j][4 * h + 3] = x.w;
        }
        r.ks[j] = *reinterpret_cast<const float*>(src + 2 * R::codes + rr * 4);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int rr = 2 * t + (j & 1) + 8 * (j >> 1);
        const int byte = g * T::vbytes;  // 16 (D = 128) or 8 (D = 64) bytes
        const int c = byte / 16;
        const unsigned char* v = src + R::codes + (rr * CH + (c ^ (rr % CH))) * 16 + byte % 16;
        lds_words<T::vbytes>(v, r.v[j]);
        r.vs[j] = *reinterpret_cast<const float*>(src + 2 * R::codes + (kQTile + rr) * 4);
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        r.vg[j] = *reinterpret_cast<const float*>(src + 2 * R::codes + (kQTile + g + 8 * j) * 4);
      }
    };
    ring_loop(kQTile, nqt, tile_of, issue, [&](const unsigned char* src, int t0) {
      qraw<D, F> r;
      gather(r, src);
      consume8(r, t0);
    }, no_peek{});
  } else {
    // ---- KIVI: a stage per 32 tokens (one page, one key group); warp w takes u = w + 4k ----------
    constexpr int CR = R::CR;
    constexpr int CPR = CR / 16;  // chunks per code row
    const int nqp = qend > start ? (qend - start + 2 * kQTile - 1) / (2 * kQTile) : 0;
    auto pair_of = [&](int j) { return 4 * j + warp; };
    // lane-constant parts: code chunk lane + 32 i (row / CPR, chunk % CPR) at shared kpos[i] (and
    // the KIVI-2 V chunk at vpos[i]), key metadata chunk lane (< D / 4), value metadata chunk lane
    // (< D / 4: token-pair record 64 lane / D)
    int kpos[(2 * kQTile * CPR) / 32];
    [[maybe_unused]] int vpos[(2 * kQTile * CPR) / 32];  // KIVI-2: the V codes' (token-pair rows)
#pragma unroll
    for (int i = 0; i < (2 * kQTile * CPR) / 32; ++i) {
      const int idx = lane + 32 * i;
      kpos[i] = R::kslot(idx / CPR) * CR + R::kchunk(idx % CPR, idx / CPR) * 16;
      vpos[i] = R::vpos(idx);
    }
    // offsets inside a head page fit 32 bits (a head page is a few KB; checked at launch)
    const int kmeta_off = static_cast<int>(p.q_key_meta_offset);
    const int vmeta_off = static_cast<int>(p.q_value_meta_offset);
    int kmeta_dst = 2 * R::codes + R::kmeta_byte(lane);  // key metadata chunk lane
    int lane16 = 16 * lane;
    [[maybe_unused]] unsigned ring_s = static_cast<unsigned>(__cvta_generic_to_shared(ring));
    auto issue = [&](int t0, int page, int st) {
      unsigned char* dst = ring + st * R::stage;
      const int nvalid = min(2 * kQTile, qend - t0);
      const bool pok = page >= 0 && page < p.q_num_pages;
      const int pos0 = t0 - page_index(t0) * p.page_size;  // a multiple of 32: one page
      // offsets inside a head page as unsigned (zero-extended: no sign arithmetic per address)
      const std::byte* hp =
          layer_base + static_cast<std::uint64_t>(static_cast<unsigned>(pok ? page : 0)) *
                           static_cast<std::uint64_t>(p.q_page_bytes);
      const std::byte* hv = hp + p.q_v_offset;  // the value head page
      const unsigned kin = static_cast<unsigned>(pos0 * CR + lane16);
      const std::byte* km =
          hp + static_cast<unsigned>(kmeta_off + (pos0 >> p.key_group_shift) * D * 4 + lane16);
      const std::byte* vm = hv + static_cast<unsigned>(vmeta_off + pos0 * (D / 8) + lane16);
      if constexpr (F == 4) {
        if (nvalid == 2 * kQTile && pok) {  // a whole stage (KIVI-2, issue-bound): no predicates,
                                            // shared-window addresses kept from before the loop
          const unsigned sd = ring_s + st * R::stage;
#pragma unroll
          for (int i = 0; i < (2 * kQTile * CPR) / 32; ++i) {
            cp_async16_s(sd + kpos[i], hp + kin + 32 * 16 * i);
            cp_async16_s(sd + R::codes + vpos[i], hv + kin + 32 * 16 * i);
          }
          if (lane < D / 4) {
            cp_async16_s(sd + kmeta_dst, km);
            cp_async16_s(sd + 2 * R::codes + R::kmeta + lane16, vm);
          }
          return;
        }
      }
#pragma unroll
      for (int i = 0; i < (2 * kQTile * CPR) / 32; ++i) {
        const bool ok = pok && (lane + 32 * i) / CPR < nvalid;
        cp_async16(dst + kpos[i], hp + kin + 32 * 16 * i, ok);
        if constexpr (F == 4) {  // a pair block with its first token valid is copied whole
          const bool okv = pok && 2 * ((lane + 32 * i) / (2 * CPR)) < nvalid;
          cp_async16(dst + R::codes + vpos[i], hv + kin + 32 * 16 * i, okv);
        } else {
          cp_async16(dst + R::codes + kpos[i], hv + kin + 32 * 16 * i, ok);
        }
      }
      static_assert(D / 4 <= 32, "KIVI key metadata: a chunk per lane");
      if (lane < D / 4) cp_async16(dst + kmeta_dst, km, pok);
      // value metadata: records of token pairs (format.hpp), D / 4 bytes each (D = 128: two chunks
      // per record; 64: one). A record with a valid first token is copied whole; the halves of an
      // invalid second token are zeroed before the stage is used (zero_odd_vmeta).
      if (lane < D / 4) {
        const int nb = pok && 2 * ((lane * 64) / D) < nvalid ? 16 : 0;  // the record's first token
        cp_async16n(dst + 2 * R::codes + R::kmeta + lane16, vm, nb);
      }
    };
    // A stage that ends inside a token pair (an odd number of valid tokens) has the pair record of
    // its last valid token copied whole: the other token's halves (its {min} and {scale} of every
    // group) are zeroed before the stage is used, so that no stale or poisoned metadata meets the
    // zero probabilities of that token (0 x NaN). Lane l < 2 D / 32 clears half l of the record.
    auto zero_odd_vmeta = [&](const unsigned char* src, int t0) {
      const int nvalid = min(2 * kQTile, qend - t0);
      if (nvalid & 1) {
        if (lane < D / 16) {
          *reinterpret_cast<unsigned short*>(const_cast<unsigned char*>(src) + 2 * R::codes +
                                             R::kmeta + (nvalid >> 1) * (D / 4) + 4 * lane + 2) = 0;
        }
        __syncwarp();
      }
    };
    // key {min, scale} pairs of the stage, as f16x2 per pair of the lane's K fragments; whether
    // every top code of the stage (keys and values) decodes below the f16 maximum. Lane-constant
    // offsets: lane t's block of key metadata, the lane's first key word of the overflow check.
    static_assert(!R::kpad || (R::kmeta_byte(D / 32) == D + 16 && R::kmeta_byte(D / 8) == D / 2),
                  "KIVI-2 key metadata blocks: lane t's mins at t (D + 16), its scales D / 2 further");
    // (the key words x of a lane: its D / 64 {min, min} words (D / 8 per lane block t'), at
    // kchk_off, and their {scale, scale} words D / 2 bytes further)
    int kmt_off = 2 * R::codes + t * (D + 16);
    int kchk_off = 2 * R::codes + (((D / 64) * lane) / (D / 8)) * (D + 16) + 4 * (((D / 64) * lane) % (D / 8));
    unsigned kmin2[T::KD / 2], ksc2[T::KD / 2];
    auto stage_meta = [&](const unsigned char* src) -> int {
      const unsigned char* km = src + 2 * R::codes;
      constexpr int VW = D / 64;
      unsigned kmn[VW], ksc[VW], vmn[VW], vsc[VW];
      if constexpr (F == 4) {
        // the overflow check, spread over the lanes: D / 64 key {min, min} words with their
        // {scale, scale} words and D / 64 value {min, min} words with their {scale, scale} words
        // (value token-pair records, format.hpp) each: record lane / 2, groups (lane % 2) D / 64 ..
        lds_words<4 * VW>(src + kchk_off, kmn);
        lds_words<4 * VW>(src + kchk_off + D / 2, ksc);
        const unsigned char* vr = km + R::kmeta + (lane >> 1) * (D / 4) + (lane & 1) * (D / 16);
        lds_words<4 * VW>(vr, vmn);
        lds_words<4 * VW>(vr + D / 8, vsc);
        return kivi_tops_ok_split<T::bits, VW>(kmn, ksc) && kivi_tops_ok_split<T::bits, VW>(vmn, vsc) &&
                       kivi_fold_ok<VW>(vsc)
                   ? 2
                   : 1;
      } else {
        // KIVI-4: the key {min, min} / {scale, scale} words of the stage, per pair of the lane's
        // K fragments (pair order, format.hpp: pair P is word P of the lane's mins and scales)
#pragma unroll
        for (int c = 0; c < D / 32; ++c) {  // lane t's chunks t D / 32 + c of the mins and scales
          const uint4 x = *reinterpret_cast<const uint4*>(km + R::kmeta_byte(t * (D / 32) + c));
          const uint4 y = *reinterpret_cast<const uint4*>(km + R::kmeta_byte(D / 8 + t * (D / 32) + c));
          kmin2[4 * c] = x.x;
          kmin2[4 * c + 1] = x.y;
          kmin2[4 * c + 2] = x.z;
          kmin2[4 * c + 3] = x.w;
          ksc2[4 * c] = y.x;
          ksc2[4 * c + 1] = y.y;
          ksc2[4 * c + 2] = y.z;
          ksc2[4 * c + 3] = y.w;
        }
#pragma unroll
        for (int i = 0; i < VW; ++i) {  // key word y = lane + 32 i of the mins / scales
          const int y = lane + 32 * i;
          kmn[i] = *reinterpret_cast<const unsigned*>(km + R::kmeta_byte(y / 4) + (y % 4) * 4);
          ksc[i] = *reinterpret_cast<const unsigned*>(km + R::kmeta_byte(D / 8 + y / 4) + (y % 4) * 4);
        }
#pragma unroll
        for (int i = 0; i < VW; ++i) {  // value {min, min} word y = lane + 32 i: record y / (D / 32)
          const int y = lane + 32 * i;
          const unsigned char* vr = km + R::kmeta + (y / (D / 32)) * (D / 4) + 4 * (y % (D / 32));
          vmn[i] = *reinterpret_cast<const unsigned*>(vr);
          vsc[i] = *reinterpret_cast<const unsigned*>(vr + D / 8);
        }
        // KIVI-4's mode, voted: 0 plain, 1 clamped (a top code above the f16 maximum); KIVI-2
        // (above): this lane's part of fold_check, 2 when its words allow the folded path
        return __all_sync(0xFFFFFFFFu, kivi_tops_ok_split<T::bits, VW>(kmn, ksc) &&
                                           kivi_tops_ok_split<T::bits, VW>(vmn, vsc))
                   ? 0
                   : 1;
      }
    };
    // KIVI-2: this lane's part of whether a stage can take the folded path (no top code above the
    // f16 maximum, every value scale in the window of kivi_fold_ok); the warp's vote decides
    [[maybe_unused]] auto fold_check = [&](const unsigned char* src) { return stage_meta(src) == 2; };
    // lane-constant shared offsets of the fragments: K row g, V rows 2t, 2t + 1 (row r + 8 m is
    // 8 m rows further: R::kbyte_shift), the V metadata of row 2t
    static_assert(R::kbyte_shift(), "KIVI gather: the offsets assume kbyte_shift");
    // KIVI-2: V codes in token-pair rows (format.hpp): word 8 s + g of pair block t (rows 2t, 2t +
    // 1) holds byte g of value groups 2 s and 2 s + 1 (bytes 0 / 2: group 2 s of rows 2t / 2t + 1;
    // 1 / 3: group 2 s + 1), the lane's dims (vdim): voff0 (s = 0), voff1 (s = 1; D = 128) with
    // vpos's chunk XOR; KIVI-4: rows 2t, 2t + 1 at the lane's bytes. The {min, scale} records of
    // rows 2t, 2t + 1
    constexpr int vxor = CR == 32 ? 2 : 0;
    int koff = R::kbyte(g, t * T::kbytes);
    int voff0 = R::codes + (F == 4 ? t * 2 * CR + 16 * ((g >> 2) ^ (vxor * ((t >> 1) & 1))) + 4 * (g & 3)
                                   : R::kbyte(2 * t, g * T::vbytes));
    int voff1 =
        R::codes + (F == 4 ? t * 2 * CR + 16 * ((2 + (g >> 2)) ^ (vxor * ((t >> 1) & 1))) + 4 * (g & 3)
                           : R::kbyte(2 * t + 1, g * T::vbytes));
    int vmoff = 2 * R::codes + R::kmeta +
                (2 * t * (D / 32) + (F == 4 ? 0 : (g * T::VD) / 32)) * 4;
    auto gather = [&](qraw<D, F>& r, const unsigned char* src, int half) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        lds_words<T::kbytes>(src + koff + (kQTile * half + 8 * j) * CR, r.k[j]);
      }
#pragma unroll
      for (int j = 0; j < (F == 4 ? 0 : 4); ++j) {  // KIVI-2 values: kivi2_values / kivi2_exact
        const int m8 = kQTile * half + 8 * (j >> 1);  // row 2t + (j & 1) + m8
        lds_words<(T::vbytes < 2 ? 2 : T::vbytes)>(src + ((j & 1) ? voff1 : voff0) + m8 * CR, r.v[j]);
        // rows 2t + m8, 2t + 1 + m8 (one token-pair record): {min, min} (j even), {scale, scale}
        r.vm[j] = *reinterpret_cast<const unsigned*>(src + vmoff + ((j & 1) + m8) * (D / 32) * 4);
      }
    };
    // KIVI-2 values of tile u (tokens 16 u ..) of the stage at src: the words of group G of the
    // token-pair records of rows 2t, 2t + 1 (j = 0: {min, min}, 1: {scale, scale}) and of rows 2t +
    // 8, 2t + 9 (j = 2, 3) in m[j][G]; the code word holding the lane's byte of group G of rows 2t +
    // (j & 1) + 8 (j >> 1) in w[j] (v2_codes)
    [[maybe_unused]] auto v2_meta = [&](const unsigned char* src, int u, unsigned (&m)[4][D / 32]) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        lds_words<4 * (D / 32)>(src + vmoff + (16 * u + (j & 1) + 8 * (j >> 1)) * (D / 32) * 4, m[j]);
      }
    };
    // KIVI-2: the V code word of group G for rows 2t + 16 u + 8 j, 2t + 1 + 16 u + 8 j, with the
    // group's bytes of both rows in bits 0-7 and 16-23 (a shift by 8 for odd G)
    [[maybe_unused]] auto v2_word = [&](const unsigned char* src, int u, int j, int G) {
      const unsigned w = *reinterpret_cast<const unsigned*>(src + ((G >> 1) ? voff1 : voff0) +
                                                            (8 * u + 4 * j) * 2 * CR);
      return (G & 1) ? w >> 8 : w;
    };
    // KIVI-2 key fragments with the key pairs of k step ks read from the stage when needed (not
    // held for the whole stage: registers)
    [[maybe_unused]] auto kivi2_decK = [&](const auto& r, const unsigned char* src, auto cl) {
      constexpr bool C = decltype(cl)::value;
      return [&r, src, kmt = kmt_off](int u, int ks, unsigned (&a)[4]) {
        // pairs 2 ks, 2 ks + 1: words 2 ks, 2 ks + 1 of the lane's mins and scales (pair order)
        unsigned mw[2], sw[2];
        lds_words<8>(src + kmt + 8 * ks, mw);
        lds_words<8>(src + kmt + D / 2 + 8 * ks, sw);
#pragma unroll
        for (int jj = 0; jj < 2; ++jj) {
          const int P = 2 * ks + jj;
          const unsigned mn = mw[jj], sc = sw[jj];
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            const unsigned c = code_pair<T::bits>(r[u].k[j][P / T::half], T::bits * (P % T::half));
            a[2 * jj + j] = kivi_pair<C>(c, sc, mn);
          }
        }
      };
    };
    // folded values (mode 2): P V with the codes themselves as the A fragments (masked in place:
    // exact f16 subnormals code 4^k 2^-24, k = 2 (i & 1) + r the code's place in the lane's byte)
    // and each group's value scales multiplying P (p 2^12 scale <= 65504: every scale of the stage
    // in [2^-12, 15.75], kivi_fold_ok); the mins by MMAs of P against the groups' min rows (omin)
    [[maybe_unused]] auto kivi2_values = [&](const unsigned char* src) {
      return [&, src](const auto& b) {
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          unsigned m[4][D / 32];
          v2_meta(src, u, m);
#pragma unroll
          for (int mm = 0; mm < D / 64; ++mm) {  // groups 2 mm (rows 0-7), 2 mm + 1 (rows 8-15)
            // (two k8 steps: each one's A pair is two adjacent words of a record, no moves)
            mma_1688(omin[mm], m[0][2 * mm], m[0][2 * mm + 1], b[u][0]);
            mma_1688(omin[mm], m[2][2 * mm], m[2][2 * mm + 1], b[u][1]);
          }
#pragma unroll
          for (int G = 0; G < D / 32; ++G) {
            const __half2 s0 = u32_as_half2(m[1][G]), s1 = u32_as_half2(m[3][G]);
            const unsigned b0 = half2_as_u32(__hmul2(u32_as_half2(b[u][0]), s0));
            const unsigned b1 = half2_as_u32(__hmul2(u32_as_half2(b[u][1]), s1));
            const unsigned c0 = v2_word(src, u, 0, G), c1 = v2_word(src, u, 1, G);
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const unsigned k0 = 0x00030003u << (4 * h), k1 = 0x00030003u << (4 * h + 2);
              const unsigned a[4] = {c0 & k0, c0 & k1, c1 & k0, c1 & k1};
              mma_16816(o[2 * G + h], a, b0, b1);
            }
          }
        }
      };
    };
    // the other stages of KIVI-2: values decoded (f16(code x scale + min), clamped) in the same
    // dims, P x 2^12 like the folded ones
    [[maybe_unused]] auto kivi2_exact = [&](const unsigned char* src) {
      return [&, src](int u, int i, unsigned (&a)[4]) {
        const int G = i >> 1, h = i & 1;
#pragma unroll
        for (int j = 0; j < 2; ++j) {  // token pairs (2t, 2t+1), (2t+8, 2t+9)
          const unsigned char* pm = src + vmoff + (16 * u + 8 * j) * (D / 32) * 4 + 4 * G;
          const unsigned vmin2 = *reinterpret_cast<const unsigned*>(pm);
          const unsigned vsc2 = *reinterpret_cast<const unsigned*>(pm + (D / 32) * 4);
          const unsigned comb = v2_word(src, u, j, G);
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            a[2 * j + e] = kivi_pair<true>(code_pair<2>(comb, 2 * (2 * h + e)), vsc2, vmin2);
          }
        }
      };
    };
    if constexpr (F == 4) {
      // KIVI-2: whether a stage can take the folded path is checked a stage ahead (this lane's
      // part, fold_check, of unit j + 1 while unit j is consumed; the vote at j + 1): off the
      // stage's critical path (checked first thing in the stage, it cost ~9%)
      bool next_ok = true;
      ring_loop(2 * kQTile, nqp, pair_of, issue, [&](const unsigned char* src, int t0,
                                                     const unsigned char* src_next) {
        // KIVI-2 is issue-bound; KIVI-4 is 1-2% slower with these
        keep_in_registers(koff, voff0, voff1, vmoff, kmt_off, kchk_off, kmeta_dst, lane16, ring_s);
#pragma unroll
        for (int i = 0; i < (2 * kQTile * CPR) / 32; ++i) keep_in_registers(kpos[i], vpos[i]);
        zero_odd_vmeta(src, t0);
        const bool fold = __all_sync(0xFFFFFFFFu, next_ok);
        qraw<D, F> r[2];
        gather(r[0], src, 0);
        gather(r[1], src, 1);
        const int nv[2] = {min(kQTile, qend - t0), min(kQTile, qend - t0 - kQTile)};
        // (past the last unit, src_next holds an old stage: its check is not used)
        if (fold) {
          if (!folded) to_folded();
          next_ok = fold_check(src_next);
          process(two_tiles{}, t0, nv, kivi2_decK(r, src, std::false_type{}), kivi2_values(src),
                  unit_kf, unit_kf);
        } else {
          if (folded) to_exact();
          next_ok = fold_check(src_next);
          process(two_tiles{}, t0, nv, kivi2_decK(r, src, std::true_type{}), kivi2_exact(src),
                  unit_kf, unit_kf);
        }
      }, [&](const unsigned char* src) { next_ok = fold_check(src); });  // the first unit's
      if (folded) to_exact();
    } else {
      ring_loop(2 * kQTile, nqp, pair_of, issue, [&](const unsigned char* src, int t0) {
        zero_odd_vmeta(src, t0);
        const int mode = stage_meta(src);
        qraw<D, F> r[2];
        gather(r[0], src, 0);
        gather(r[1], src, 1);
        if (mode != 0) {
          consume_kivi(r, t0, kmin2, ksc2, std::true_type{});
        } else {
          consume_kivi(r, t0, kmin2, ksc2, std::false_type{});
        }
      }, no_peek{});
    }
  }

  // ---- KIVI residual window: f16 rows of the staging page ----------------------------------------
  if constexpr (T::kivi) {
    const int rs = max(start, qtok);
    const int nrt = end > rs ? (end - rs + kQTile - 1) / kQTile : 0;
    const int spage = nrt > 0 ? p.staging_page[table] : 0;
    const bool sok = spage >= 0 && spage < p.staging.num_pages;
    for (int ti = warp; ti < nrt; ti += kThreads / 32) {
      const int t0 = rs + kQTile * ti;
      const int nvalid = min(kQTile, end - t0);
      unsigned kw[2][T::KD / 2];
      unsigned vw[4][T::VD / 2];
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int rr = g + 8 * j;
        const bool ok = sok && rr < nvalid;
        const std::int64_t off =
            ok ? p.staging.k_row_offset(p.layer, spage, t0 + rr - qtok, head_in_page) : 0;
#pragma unroll
        for (int c = 0; c < T::KD / 8; ++c) {
          load_words<16>(p.staging.data + off + t * T::KD * 2 + 16 * c, ok, kw[j] + 4 * c);
        }
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int rr = 2 * t + (j & 1) + 8 * (j >> 1);
        const bool ok = sok && rr < nvalid;
        const std::int64_t off =
            ok ? p.staging.k_row_offset(p.layer, spage, t0 + rr - qtok, head_in_page) +
                     p.staging.v_offset_bytes
               : 0;
        if constexpr (F == 4) {  // dims 32 G + 4 g .. + 3 (vdim)
#pragma unroll
          for (int G = 0; G < D / 32; ++G) {
            load_words<8>(p.staging.data + off + (32 * G + 4 * g) * 2, ok, vw[j] + 2 * G);
          }
        } else {
#pragma unroll
          for (int c = 0; c < T::VD / 8; ++c) {
            load_words<16>(p.staging.data + off + g * T::VD * 2 + 16 * c, ok, vw[j] + 4 * c);
          }
        }
      }
      auto decK = [&](int, int ks, unsigned (&a)[4]) {
#pragma unroll
        for (int jj = 0; jj < 2; ++jj) {
          const int P = 2 * ks + jj;
          const int lo = T::pair_lo(P), hi = T::pair_hi(P);
          const unsigned sel = (lo & 1) ? 0x7632u : 0x5410u;
#pragma unroll
          for (int j = 0; j < 2; ++j) a[2 * jj + j] = __byte_perm(kw[j][lo / 2], kw[j][hi / 2], sel);
        }
      };
      auto decV = [&](int, int i, unsigned (&a)[4]) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          a[2 * j] = __byte_perm(vw[2 * j][i], vw[2 * j + 1][i], 0x5410u);
          a[2 * j + 1] = __byte_perm(vw[2 * j][i], vw[2 * j + 1][i], 0x7632u);
        }
      };
      const int nv[1] = {nvalid};
      // (KIVI-2: the probabilities are x 2^12 here too, process)
      process(one_tile{}, t0, nv, decK, decV, unit_kf, unit_kf);
    }
  }

  if constexpr (F == 2 || F == 3) {  // o holds 2^12 x the output (consume8)
#pragma unroll
    for (int i = 0; i < KS; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[i][e] *= kPScale_inv;
  }

  // ---- merge of the warps ------------------------------------------------------------------------
#pragma unroll
  for (int msk = 4; msk <= 16; msk <<= 1) {
    l0 += __shfl_xor_sync(0xFFFFFFFFu, l0, msk);
    l1 += __shfl_xor_sync(0xFFFFFFFFu, l1, msk);
  }
  __syncthreads();  // the ring becomes the reduction buffers
  if (t < 2) {
    if (g == 0) {
      red_m[warp][2 * t] = m0;
      red_m[warp][2 * t + 1] = m1;
      red_l[warp][2 * t] = l0;
      red_l[warp][2 * t + 1] = l1;
    }
#pragma unroll
    for (int i = 0; i < KS; ++i) {
      const int d0 = T::vdim(g, i, 0), d1 = T::vdim(g, i, 1);
      red_o[warp][2 * t][d0] = o[i][0];
      red_o[warp][2 * t + 1][d0] = o[i][1];
      red_o[warp][2 * t][d1] = o[i][2];
      red_o[warp][2 * t + 1][d1] = o[i][3];
    }
  }
  __syncthreads();
  for (int idx = tid; idx < sub * D; idx += kThreads) {
    const int hh = idx / D;
    const int d = idx % D;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) M = fmaxf(M, red_m[w][hh]);
    float Ls = 0.0f, O = 0.0f;
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) {
      const float wt = exp2f(red_m[w][hh] - M);
      Ls += wt * red_l[w][hh];
      O += wt * red_o[w][hh][d];
    }
    const float ov = O / Ls;
    if (p.split) {
      p.part_o[((static_cast<std::int64_t>(chunk) * p.batch * p.qo_heads) + row0 + hh) * D + d] = ov;
    } else {
      store_o(p.out, (row0 + hh) * D + d, ov, qbf);
    }
    if (d == 0) {
      const float lse2 = M + __log2f(Ls) - (F == 4 ? 12.0f : 0.0f);  // KIVI-2: l x 2^12
      if (p.split) {
        p.part_lse[(static_cast<std::int64_t>(chunk) * p.batch * p.qo_heads) + row0 + hh] = lse2;
      } else {
        p.final_lse[row0 + hh] = lse2;
        if (p.lse_out != nullptr) p.lse_out[row0 + hh] = lse2 * 0.69314718055994531f;
      }
    }
  }
}
