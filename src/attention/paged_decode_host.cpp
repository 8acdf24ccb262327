// paged_decode: the plan (split-KV chunking, workspace layout), the argument checks shared with
// the CUDA launchers, and the host reference (exact softmax, fp32 accumulation).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "kvcache/attention/detail/decode_checks.hpp"
#include "kvcache/attention/paged_decode.hpp"
#include "kvcache/core/error.hpp"
#include "kvcache/core/numeric.hpp"
#include "kvcache/quant/detail/host_impl.hpp"

namespace kvcache {
namespace detail {

std::int64_t decode_tables_needed(const paged_decode_shape& shape) noexcept {
  if (shape.batch == 0) return 0;
  if (shape.table_head_stride == 0) return shape.batch;
  return static_cast<std::int64_t>(shape.num_kv_heads - 1) * shape.table_head_stride + shape.batch;
}

std::int32_t decode_heads_per_block(const paged_decode_shape& shape) noexcept {
  const std::int32_t group = shape.num_kv_heads > 0 ? shape.num_qo_heads / shape.num_kv_heads : 1;
  for (std::int32_t g : {4, 2}) {
    if (group % g == 0) return g;
  }
  return 1;
}

void check_decode_shape(const paged_decode_shape& s, bool gpu, const char* who) {
  KVCACHE_EXPECTS(s.batch >= 0 && s.batch <= 65535, errc::invalid_argument,
                  "{}: batch must be in [0, 65535], got {}", who, s.batch);
  KVCACHE_EXPECTS(s.num_kv_heads >= 1 && s.num_qo_heads >= 1, errc::invalid_argument,
                  "{}: head counts must be >= 1, got {} query heads and {} kv heads", who,
                  s.num_qo_heads, s.num_kv_heads);
  KVCACHE_EXPECTS(s.num_qo_heads % s.num_kv_heads == 0, errc::shape_mismatch,
                  "{}: num_qo_heads {} is not a multiple of num_kv_heads {}", who, s.num_qo_heads,
                  s.num_kv_heads);
  if (gpu) {
    KVCACHE_EXPECTS(s.head_dim == 64 || s.head_dim == 128, errc::not_supported,
                    "{}: head_dim {} is not supported on the GPU (64 or 128)", who, s.head_dim);
  } else {
    KVCACHE_EXPECTS(s.head_dim >= 8 && s.head_dim <= 256 && s.head_dim % 8 == 0,
                    errc::not_supported,
                    "{}: head_dim must be a multiple of 8 in [8, 256], got {}", who, s.head_dim);
  }
  KVCACHE_EXPECTS(s.q_type == dtype::f16 || s.q_type == dtype::bf16, errc::not_supported,
                  "{}: query dtype {} is not supported (f16 or bf16)", who, name_of(s.q_type));
  KVCACHE_EXPECTS(s.page_size >= 1, errc::invalid_argument, "{}: page_size must be >= 1, got {}",
                  who, s.page_size);
  KVCACHE_EXPECTS(s.table_head_stride >= 0, errc::invalid_argument,
                  "{}: table_head_stride must be >= 0, got {}", who, s.table_head_stride);
  KVCACHE_EXPECTS(s.table_head_stride == 0 || s.table_head_stride >= s.batch,
                  errc::invalid_argument,
                  "{}: table_head_stride {} is smaller than the batch {}: heads' tables overlap",
                  who, s.table_head_stride, s.batch);
  KVCACHE_EXPECTS(s.num_kv_heads <= 65535 / std::max(1, s.num_qo_heads / s.num_kv_heads / decode_heads_per_block(s)),
                  errc::invalid_argument, "{}: too many kv heads ({})", who, s.num_kv_heads);
}

void check_decode_args(const paged_decode_plan& plan, const paged_decode_args& a,
                       const char* who) {
  const paged_decode_shape& s = plan.shape;
  KVCACHE_EXPECTS(a.tables.page_size == s.page_size, errc::shape_mismatch,
                  "{}: the tables' page_size {} is not the plan's {}", who, a.tables.page_size,
                  s.page_size);
  KVCACHE_EXPECTS(a.tables.num_tables >= plan.num_tables, errc::shape_mismatch,
                  "{}: the plan was made for {} tables (batch {}, table_head_stride {}); the call "
                  "has {}",
                  who, plan.num_tables, s.batch, s.table_head_stride, a.tables.num_tables);
  KVCACHE_EXPECTS(std::isfinite(a.sm_scale) && a.sm_scale >= 0.0f, errc::invalid_argument,
                  "{}: sm_scale must be finite and >= 0, got {}", who, a.sm_scale);
  KVCACHE_EXPECTS(a.layer >= 0, errc::out_of_range, "{}: layer {} is negative", who, a.layer);
  if (s.batch == 0) return;
  KVCACHE_EXPECTS(a.q != nullptr && a.out != nullptr, errc::invalid_argument,
                  "{}: null query ({}) or output ({})", who, a.q, a.out);
  KVCACHE_EXPECTS(a.tables.indptr != nullptr && a.tables.last_page_len != nullptr &&
                      (a.tables.indices != nullptr || plan.max_tokens == 0),
                  errc::invalid_argument, "{}: null page-table arrays", who);
  if (a.mass.data != nullptr) {
    KVCACHE_EXPECTS(plan.attention_mass, errc::invalid_argument,
                    "{}: attention mass requested but the plan was made without "
                    "paged_decode_options::attention_mass",
                    who);
    KVCACHE_EXPECTS(a.mass.seq_stride >= 0 && a.mass.head_stride >= 0, errc::invalid_argument,
                    "{}: negative attention-mass strides ({}, {})", who, a.mass.seq_stride,
                    a.mass.head_stride);
  }
}

namespace {
/// What every pool (f16 or quantized) must agree on with the plan.
void check_pool_shape(const paged_decode_shape& s, std::int32_t head_dim, std::int32_t page_size,
                      std::int32_t heads_per_page, std::int32_t layers, std::int32_t layer,
                      const char* who) {
  KVCACHE_EXPECTS(head_dim == s.head_dim, errc::shape_mismatch,
                  "{}: the pool's head_dim {} is not the plan's {}", who, head_dim, s.head_dim);
  KVCACHE_EXPECTS(page_size == s.page_size, errc::shape_mismatch,
                  "{}: the pool's page_size {} is not the plan's {}", who, page_size, s.page_size);
  const std::int32_t hpp = s.table_head_stride == 0 ? s.num_kv_heads : 1;
  KVCACHE_EXPECTS(heads_per_page == hpp, errc::shape_mismatch,
                  "{}: the pool's pages hold {} heads; {} kv heads with table_head_stride {} need "
                  "{}",
                  who, heads_per_page, s.num_kv_heads, s.table_head_stride, hpp);
  KVCACHE_EXPECTS(layer < layers, errc::out_of_range, "{}: layer {} is outside the pool's {}",
                  who, layer, layers);
}
}  // namespace

void check_decode_pool(const paged_decode_plan& plan, const paged_kv_view& kv, std::int32_t layer,
                       const char* who) {
  const paged_decode_shape& s = plan.shape;
  KVCACHE_EXPECTS(kv.data != nullptr && kv.num_pages >= 1, errc::invalid_argument,
                  "{}: empty pool ({} pages)", who, kv.num_pages);
  KVCACHE_EXPECTS((kv.type == dtype::f16 || kv.type == dtype::bf16) && kv.elem_bytes == 2,
                  errc::dtype_mismatch, "{}: pages of {} ({} bytes): f16 or bf16 pages needed", who,
                  name_of(kv.type), kv.elem_bytes);
  check_pool_shape(s, kv.head_dim, kv.page_size, kv.heads_per_page, kv.layers, layer, who);
}

namespace {
bool gpu_format_ok(const quant_format& f) {
  const auto& k = f.key;
  const auto& v = f.value;
  if (k.scheme == quant_scheme::int8_token && v.scheme == quant_scheme::int8_token) return true;
  if (k.scheme == quant_scheme::fp8_e4m3_token && v.scheme == quant_scheme::fp8_e4m3_token)
    return true;
  if (k.scheme == quant_scheme::kivi_channel && v.scheme == quant_scheme::kivi_token &&
      k.bits == v.bits && (k.bits == 2 || k.bits == 4) &&
      (k.group == 32 || k.group == 64 || k.group == 128) && v.group == 32)
    return true;
  return false;
}
}  // namespace

void check_decode_pool(const paged_decode_plan& plan, const quantized_kv_view& kv,
                       const residual_view& residual, std::int32_t layer, bool gpu,
                       const char* who) {
  const paged_decode_shape& s = plan.shape;
  KVCACHE_EXPECTS(kv.data != nullptr && kv.num_pages >= 1, errc::invalid_argument,
                  "{}: empty quantized pool ({} pages)", who, kv.num_pages);
  check_pool_shape(s, kv.head_dim, kv.page_size, kv.heads_per_page, kv.layers, layer, who);
  const std::int32_t hpp = kv.heads_per_page;  // checked above
  if (gpu) {
    KVCACHE_EXPECTS(gpu_format_ok(kv.format), errc::not_supported,
                    "{}: the kernels do not read keys {} ({} bits, group {}) with values {} ({} "
                    "bits, group {})",
                    who, name_of(kv.format.key.scheme), kv.format.key.bits, kv.format.key.group,
                    name_of(kv.format.value.scheme), kv.format.value.bits, kv.format.value.group);
    KVCACHE_EXPECTS(kv.format.key.scheme != quant_scheme::kivi_channel || s.page_size % 32 == 0,
                    errc::not_supported,
                    "{}: KIVI pages of {} tokens: the kernels need page_size % 32 == 0", who,
                    s.page_size);
    KVCACHE_EXPECTS(kv.format.key.scheme == quant_scheme::kivi_channel ||
                        residual.quantized_tokens == nullptr,
                    errc::not_supported,
                    "{}: a residual window is only read with KIVI pages (format {})", who,
                    name_of(kv.format.key.scheme));
  }
  if (residual.quantized_tokens != nullptr || residual.staging_page != nullptr) {
    KVCACHE_EXPECTS(residual.quantized_tokens != nullptr && residual.staging_page != nullptr,
                    errc::invalid_argument,
                    "{}: residual_view needs both staging_page and quantized_tokens", who);
    const paged_kv_view& st = residual.staging;
    KVCACHE_EXPECTS(st.data != nullptr && st.num_pages >= 1, errc::invalid_argument,
                    "{}: empty staging pool ({} pages)", who, st.num_pages);
    KVCACHE_EXPECTS(st.type == dtype::f16 && st.elem_bytes == 2, errc::dtype_mismatch,
                    "{}: the staging pool must be f16, got {}", who, name_of(st.type));
    KVCACHE_EXPECTS(st.head_dim == s.head_dim && st.heads_per_page == hpp,
                    errc::shape_mismatch,
                    "{}: the staging pool has head_dim {} and {} heads per page; {} and {} needed",
                    who, st.head_dim, st.heads_per_page, s.head_dim, hpp);
    KVCACHE_EXPECTS(layer < st.layers, errc::out_of_range,
                    "{}: layer {} is outside the staging pool's {}", who, layer, st.layers);
  }
}

void check_decode_tables(const paged_decode_plan& plan, const paged_decode_args& a,
                         std::int32_t num_pages, const residual_view* r, const char* who) {
  const page_table_view& t = a.tables;
  const std::int32_t n = plan.num_tables;
  if (n == 0) return;
  KVCACHE_EXPECTS(t.indptr[0] >= 0, errc::invalid_argument, "{}: indptr[0] is {}", who,
                  t.indptr[0]);
  const bool res = r != nullptr && r->quantized_tokens != nullptr;
  for (std::int32_t i = 0; i < n; ++i) {
    const std::int32_t p0 = t.indptr[i], p1 = t.indptr[i + 1];
    KVCACHE_EXPECTS(p1 >= p0, errc::invalid_argument, "{}: indptr decreases at table {} ({} -> {})",
                    who, i, p0, p1);
    if (p1 > p0) {
      KVCACHE_EXPECTS(t.last_page_len[i] >= 1 && t.last_page_len[i] <= t.page_size,
                      errc::out_of_range, "{}: table {}: last_page_len {} is not in 1..{}", who, i,
                      t.last_page_len[i], t.page_size);
    }
    for (std::int32_t k = p0; k < p1; ++k) {
      KVCACHE_EXPECTS(t.indices[k] >= 0 && t.indices[k] < num_pages, errc::out_of_range,
                      "{}: table {}: page id {} (entry {}) is outside the pool of {} pages", who,
                      i, t.indices[k], k, num_pages);
    }
    const std::int64_t len = t.tokens(i);
    if (a.mass.data != nullptr) {
      KVCACHE_EXPECTS(len <= plan.score_stride, errc::out_of_range,
                      "{}: table {} holds {} tokens, more than the plan's {} (re-plan)", who, i,
                      len, plan.score_stride);
    }
    if (res) {
      const std::int32_t q = r->quantized_tokens[i];
      KVCACHE_EXPECTS(q >= 0 && q <= len && (q == len || q % 32 == 0), errc::out_of_range,
                      "{}: table {}: {} quantized tokens of {} (at most the length; a multiple of 32 "
                      "when a residual window follows)",
                      who, i, q, len);
      KVCACHE_EXPECTS(len - q <= r->staging.page_size, errc::out_of_range,
                      "{}: table {}: a residual window of {} tokens exceeds the staging page of {}",
                      who, i, len - q, r->staging.page_size);
      if (len > q) {
        KVCACHE_EXPECTS(r->staging_page[i] >= 0 && r->staging_page[i] < r->staging.num_pages,
                        errc::out_of_range,
                        "{}: table {}: staging page {} is outside the staging pool of {} pages",
                        who, i, r->staging_page[i], r->staging.num_pages);
      }
    }
  }
}

}  // namespace detail

paged_decode_plan plan_paged_decode(const paged_decode_shape& shape,
                                    const page_table_view& t,
                                    const paged_decode_options& o) {
  constexpr const char* who = "plan_paged_decode";
  detail::check_decode_shape(shape, false, who);
  KVCACHE_EXPECTS(t.page_size == shape.page_size, errc::shape_mismatch,
                  "{}: the tables' page_size {} is not the shape's {}", who, t.page_size,
                  shape.page_size);
  KVCACHE_EXPECTS(o.sm_count >= 1 && o.ctas_per_sm >= 1, errc::invalid_argument,
                  "{}: sm_count {} and ctas_per_sm {} must be >= 1", who, o.sm_count,
                  o.ctas_per_sm);
  KVCACHE_EXPECTS(o.min_chunk_tokens >= 32 && o.min_chunk_tokens % 32 == 0,
                  errc::invalid_argument, "{}: min_chunk_tokens {} must be a multiple of 32 >= 32",
                  who, o.min_chunk_tokens);
  KVCACHE_EXPECTS(o.min_waves >= 1, errc::invalid_argument, "{}: min_waves {} must be >= 1", who,
                  o.min_waves);
  KVCACHE_EXPECTS(o.wave_chunk_tokens >= 32 && o.wave_chunk_tokens % 32 == 0,
                  errc::invalid_argument, "{}: wave_chunk_tokens {} must be a multiple of 32 >= 32",
                  who, o.wave_chunk_tokens);
  KVCACHE_EXPECTS(o.force_chunk_tokens >= 0 && o.force_chunk_tokens % 32 == 0,
                  errc::invalid_argument, "{}: force_chunk_tokens {} must be a multiple of 32",
                  who, o.force_chunk_tokens);
  paged_decode_plan p;
  p.shape = shape;
  const std::int64_t needed = detail::decode_tables_needed(shape);
  KVCACHE_EXPECTS(t.num_tables >= needed, errc::shape_mismatch,
                  "{}: {} tables needed (batch {}, table_head_stride {}, {} kv heads), the view "
                  "has {}",
                  who, needed, shape.batch, shape.table_head_stride, shape.num_kv_heads,
                  t.num_tables);
  p.num_tables = static_cast<std::int32_t>(needed);
  p.attention_mass = o.attention_mass;
  if (needed > 0) {
    KVCACHE_EXPECTS(t.indptr != nullptr && t.last_page_len != nullptr, errc::invalid_argument,
                    "{}: null indptr or last_page_len", who);
  }
  // Lengths of the tables the blocks read: per (b, h) (a table per head) or per b.
  const std::int32_t tables_per_b = shape.table_head_stride == 0 ? 1 : shape.num_kv_heads;
  const std::int32_t blocks_per_table =
      (shape.table_head_stride == 0 ? shape.num_kv_heads : 1) *
      (shape.num_qo_heads / shape.num_kv_heads / detail::decode_heads_per_block(shape));
  std::vector<std::int64_t> lens;
  lens.reserve(static_cast<std::size_t>(shape.batch) * tables_per_b);
  for (std::int32_t h = 0; h < tables_per_b; ++h) {
    for (std::int32_t b = 0; b < shape.batch; ++b) {
      const std::int32_t i = h * shape.table_head_stride + b;
      KVCACHE_EXPECTS(t.indptr[i + 1] >= t.indptr[i], errc::invalid_argument,
                      "{}: indptr decreases at table {} ({} -> {})", who, i, t.indptr[i],
                      t.indptr[i + 1]);
      const std::int64_t len = t.tokens(i);
      lens.push_back(len);
      p.max_tokens = std::max(p.max_tokens, len);
    }
  }
  auto work = [&](std::int64_t chunk) {
    std::int64_t w = 0;
    for (std::int64_t len : lens) w += (len + chunk - 1) / chunk;
    return w * blocks_per_table;
  };
  const std::int64_t longest = std::max<std::int64_t>(32, (p.max_tokens + 31) / 32 * 32);
  std::int64_t chunk = longest;
  if (o.force_chunk_tokens > 0) {
    chunk = std::min<std::int64_t>(o.force_chunk_tokens, longest);
  } else {
    const std::int64_t target = static_cast<std::int64_t>(o.sm_count) * o.ctas_per_sm;
    if (work(longest) < target) {
      // the smallest chunk (multiple of 32, >= min_chunk_tokens) whose work fits `waves` waves
      auto fitting = [&](std::int64_t waves) {
        std::int64_t lo = std::min<std::int64_t>(o.min_chunk_tokens, longest) / 32;
        std::int64_t hi = longest / 32;
        while (lo < hi) {
          const std::int64_t mid = (lo + hi) / 2;
          if (work(mid * 32) <= target * waves) hi = mid; else lo = mid + 1;
        }
        return lo * 32;
      };
      chunk = fitting(1);
      if (o.min_waves > 1) {  // more waves, in chunks no shorter than wave_chunk_tokens
        chunk = std::max(fitting(o.min_waves), std::min<std::int64_t>(o.wave_chunk_tokens, chunk));
      }
    } else {
      // more than a wave: the split into c <= 16 chunks (none below min_chunk_tokens) with the
      // least waves x chunk, the time a block-bound wave schedule takes (e.g. 512 blocks on 396
      // slots: 2 waves of whole tables, or 3 chunks each in 4 waves of a third: 1.33 against 2)
      auto cost = [&](std::int64_t ch) {
        return (work(ch) + target - 1) / target * ch;
      };
      std::int64_t best = cost(longest);
      for (std::int64_t c = 2; c <= 16; ++c) {
        const std::int64_t ch = (longest + 32 * c - 1) / (32 * c) * 32;
        if (ch < o.min_chunk_tokens) break;
        const std::int64_t v = cost(ch);
        if (v * 100 < best * 97) {  // a split must gain 3% (it costs a merge)
          best = v;
          chunk = ch;
        }
      }
    }
  }
  KVCACHE_EXPECTS(chunk <= (std::int64_t{1} << 30), errc::out_of_range,
                  "{}: a table of {} tokens is too long", who, p.max_tokens);
  p.chunk_tokens = static_cast<std::int32_t>(chunk);
  p.max_chunks = static_cast<std::int32_t>(std::max<std::int64_t>(1, (p.max_tokens + chunk - 1) / chunk));

  // workspace
  auto align = [](std::size_t x) { return (x + 255) / 256 * 256; };
  const auto rows = static_cast<std::size_t>(shape.batch) * static_cast<std::size_t>(shape.num_qo_heads);
  std::size_t off = 0;
  p.final_lse_offset = off;
  off = align(off + 4 * rows);
  if (p.split()) {
    p.partial_o_offset = off;
    off = align(off + 4 * rows * static_cast<std::size_t>(p.max_chunks) *
                          static_cast<std::size_t>(shape.head_dim));
    p.partial_lse_offset = off;
    off = align(off + 4 * rows * static_cast<std::size_t>(p.max_chunks));
  }
  if (p.attention_mass) {
    p.score_stride = (p.max_tokens + 31) / 32 * 32;
    p.scores_offset = off;
    off = align(off + 4 * rows * static_cast<std::size_t>(p.score_stride));
  }
  p.workspace_bytes = off;
  return p;
}

namespace {

/// Exact softmax attention of `group` query heads (f32 rows, already scaled) over dense K / V
/// rows of one (b, kv head); writes out rows, lse and the mass.
void dense_attention(const paged_decode_plan& plan, const paged_decode_args& a, std::int32_t b,
                     std::int32_t h, const std::vector<float>& K, const std::vector<float>& V,
                     std::int64_t len) {
  const paged_decode_shape& s = plan.shape;
  const std::int32_t D = s.head_dim;
  const std::int32_t group = s.num_qo_heads / s.num_kv_heads;
  const float scale = a.sm_scale > 0.0f ? a.sm_scale : 1.0f / std::sqrt(static_cast<float>(D));
  std::vector<float> q(static_cast<std::size_t>(D)), sc(static_cast<std::size_t>(len)),
      o(static_cast<std::size_t>(D));
  std::vector<float> mass(static_cast<std::size_t>(len), 0.0f);
  for (std::int32_t g = 0; g < group; ++g) {
    const std::int32_t qh = h * group + g;
    const std::size_t row = (static_cast<std::size_t>(b) * s.num_qo_heads + qh) * D;
    const auto* qbits = static_cast<const std::uint16_t*>(a.q) + row;
    for (std::int32_t d = 0; d < D; ++d) {
      q[d] = s.q_type == dtype::f16 ? to_float(float16{qbits[d]}) : to_float(bfloat16{qbits[d]});
    }
    float m = -std::numeric_limits<float>::infinity();
    for (std::int64_t t = 0; t < len; ++t) {
      float acc = 0.0f;
      const float* k = K.data() + t * D;
      for (std::int32_t d = 0; d < D; ++d) acc += q[d] * k[d];
      sc[t] = acc * scale;
      m = std::max(m, sc[t]);
    }
    float l = 0.0f;
    std::fill(o.begin(), o.end(), 0.0f);
    for (std::int64_t t = 0; t < len; ++t) {
      const float p = std::exp(sc[t] - m);
      sc[t] = p;
      l += p;
      const float* v = V.data() + t * D;
      for (std::int32_t d = 0; d < D; ++d) o[d] += p * v[d];
    }
    auto* out = static_cast<std::uint16_t*>(a.out) + row;
    for (std::int32_t d = 0; d < D; ++d) {
      const float y = len > 0 ? o[d] / l : 0.0f;
      out[d] = s.q_type == dtype::f16 ? to_float16(y).bits : to_bfloat16(y).bits;
    }
    if (a.lse != nullptr) {
      a.lse[static_cast<std::size_t>(b) * s.num_qo_heads + qh] =
          len > 0 ? m + std::log(l) : -std::numeric_limits<float>::infinity();
    }
    for (std::int64_t t = 0; t < len; ++t) mass[t] += sc[t] / l;
  }
  if (a.mass.data != nullptr) {
    float* dst = a.mass.data + b * a.mass.seq_stride + h * a.mass.head_stride;
    for (std::int64_t t = 0; t < len; ++t) dst[t] += mass[t];
  }
}

template <class RowsOf>
void run_host(const paged_decode_plan& plan, const paged_decode_args& a, RowsOf&& rows_of) {
  const paged_decode_shape& s = plan.shape;
  const std::int32_t D = s.head_dim;
  std::vector<float> K, V;
  for (std::int32_t b = 0; b < s.batch; ++b) {
    for (std::int32_t h = 0; h < s.num_kv_heads; ++h) {
      const std::int32_t table = h * s.table_head_stride + b;
      const std::int64_t len = a.tables.tokens(table);
      K.assign(static_cast<std::size_t>(len) * D, 0.0f);
      V.assign(static_cast<std::size_t>(len) * D, 0.0f);
      rows_of(table, s.table_head_stride == 0 ? h : 0, len, K.data(), V.data());
      dense_attention(plan, a, b, h, K, V, len);
    }
  }
}

}  // namespace

void paged_decode_host(const paged_decode_plan& plan, const paged_kv_view& kv,
                       const paged_decode_args& a) {
  constexpr const char* who = "paged_decode_host";
  detail::check_decode_shape(plan.shape, false, who);
  detail::check_decode_args(plan, a, who);
  detail::check_decode_pool(plan, kv, a.layer, who);
  detail::check_decode_tables(plan, a, kv.num_pages, nullptr, who);
  const std::int32_t D = plan.shape.head_dim;
  const bool bf = kv.type == dtype::bf16;
  run_host(plan, a, [&](std::int32_t table, std::int32_t head, std::int64_t len, float* K,
                        float* V) {
    const std::int32_t P = a.tables.page_size;
    for (std::int64_t t = 0; t < len; ++t) {
      const std::int32_t page = a.tables.indices[a.tables.indptr[table] + t / P];
      const std::int64_t off = kv.k_row_offset(a.layer, page, static_cast<std::int32_t>(t % P), head);
      const auto* k = reinterpret_cast<const std::uint16_t*>(kv.data + off);
      const auto* v = reinterpret_cast<const std::uint16_t*>(kv.data + off + kv.v_offset_bytes);
      for (std::int32_t d = 0; d < D; ++d) {
        K[t * D + d] = bf ? to_float(bfloat16{k[d]}) : to_float(float16{k[d]});
        V[t * D + d] = bf ? to_float(bfloat16{v[d]}) : to_float(float16{v[d]});
      }
    }
  });
}

void paged_decode_host(const paged_decode_plan& plan, const quantized_kv_view& kv,
                       const residual_view& r, const paged_decode_args& a) {
  constexpr const char* who = "paged_decode_host";
  detail::check_decode_shape(plan.shape, false, who);
  detail::check_decode_args(plan, a, who);
  detail::check_decode_pool(plan, kv, r, a.layer, false, who);
  detail::check_decode_tables(plan, a, kv.num_pages, &r, who);
  const std::int32_t D = plan.shape.head_dim;
  const std::int32_t P = kv.page_size;
  std::vector<std::uint16_t> rows(static_cast<std::size_t>(P) * D);
  run_host(plan, a, [&](std::int32_t table, std::int32_t head, std::int64_t len, float* K,
                        float* V) {
    const std::int64_t q = r.quantized_tokens != nullptr ? r.quantized_tokens[table] : len;
    for (std::int64_t t0 = 0; t0 < q; t0 += P) {
      const std::int32_t page = a.tables.indices[a.tables.indptr[table] + t0 / P];
      const auto n = static_cast<std::int32_t>(std::min<std::int64_t>(P, q - t0));
      for (kv_side side : {kv_side::key, kv_side::value}) {
        const quant_side_format& f = kv.format.side(side);
        const std::byte* hp = kv.head_page(side, a.layer, page, head);
        float* dst = (side == kv_side::key ? K : V) + t0 * D;
        if (f.scheme == quant_scheme::int8_token || f.scheme == quant_scheme::fp8_e4m3_token) {
          detail::dequantize_side_f32_host(f, hp, dst, P, D, 0, n);  // code x scale in f32
          continue;
        }
        detail::dequantize_side_host(f, hp, rows.data(), P, D, 0, n);  // KIVI: its f16 values
        for (std::size_t i = 0; i < static_cast<std::size_t>(n) * D; ++i) {
          dst[i] = to_float(float16{rows[i]});
        }
      }
    }
    for (std::int64_t t = q; t < len; ++t) {
      const paged_kv_view& st = r.staging;
      const std::int64_t off =
          st.k_row_offset(a.layer, r.staging_page[table], static_cast<std::int32_t>(t - q), head);
      const auto* k = reinterpret_cast<const std::uint16_t*>(st.data + off);
      const auto* v = reinterpret_cast<const std::uint16_t*>(st.data + off + st.v_offset_bytes);
      for (std::int32_t d = 0; d < D; ++d) {
        K[t * D + d] = to_float(float16{k[d]});
        V[t * D + d] = to_float(float16{v[d]});
      }
    }
  });
}

}  // namespace kvcache
