// Test support for paged_decode: host pools (f16 / bf16 and quantized) poisoned with NaN, random
// CSR tables, random rows, and a naive double-precision attention.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kvcache/attention/paged_decode.hpp"
#include "kvcache/core/numeric.hpp"
#include "kvcache/quant/kernels.hpp"
#include "kvcache/quality/trace.hpp"

namespace kvtest {

using namespace kvcache;

/// 256-byte aligned host bytes.
struct aligned_bytes {
  std::vector<std::uint64_t> words;
  std::size_t size = 0;
  std::byte* base = nullptr;
  explicit aligned_bytes(std::size_t n = 0) { resize(n); }
  void resize(std::size_t n) {
    size = n;
    words.assign(n / 8 + 64, 0);
    auto p = reinterpret_cast<std::uintptr_t>(words.data());
    base = reinterpret_cast<std::byte*>((p + 255) / 256 * 256);
  }
  std::byte* data() const { return base; }
};

/// CSR tables (host) for `lens` (one per table), pages drawn without replacement from `num_pages`.
struct tables_host {
  std::vector<std::int32_t> indptr{0}, indices, last;
  std::int32_t page_size = 0;
  page_table_view view() const {
    return {indptr.data(), indices.data(), last.data(),
            static_cast<std::int32_t>(last.size()), page_size};
  }
  std::int64_t tokens(std::size_t t) const { return view().tokens(static_cast<std::int32_t>(t)); }
};

inline std::int32_t pages_for(const std::vector<std::int64_t>& lens, std::int32_t page_size) {
  std::int64_t n = 0;
  for (auto l : lens) n += (l + page_size - 1) / page_size;
  return static_cast<std::int32_t>(n);
}

inline tables_host make_tables(const std::vector<std::int64_t>& lens, std::int32_t page_size,
                               std::int32_t num_pages, std::mt19937_64& rng) {
  tables_host t;
  t.page_size = page_size;
  std::vector<std::int32_t> ids(static_cast<std::size_t>(num_pages));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::size_t k = 0;
  for (auto l : lens) {
    const std::int64_t pages = (l + page_size - 1) / page_size;
    for (std::int64_t i = 0; i < pages; ++i) t.indices.push_back(ids.at(k++));
    t.indptr.push_back(static_cast<std::int32_t>(t.indices.size()));
    t.last.push_back(l == 0 ? 0 : static_cast<std::int32_t>((l - 1) % page_size + 1));
  }
  return t;
}

inline std::uint16_t bits_of(float x, dtype t) {
  return t == dtype::bf16 ? to_bfloat16(x).bits : to_float16(x).bits;
}
inline float value_of(std::uint16_t b, dtype t) {
  return t == dtype::bf16 ? to_float(bfloat16{b}) : to_float(float16{b});
}

/// A 16-bit pool: every element NaN until written.
struct pool16 {
  aligned_bytes bytes;
  paged_kv_view view;
  pool16(std::int32_t layers, std::int32_t num_pages, std::int32_t page_size,
         std::int32_t heads_per_page, std::int32_t head_dim, kv_order order, dtype type) {
    view.layers = layers;
    view.num_pages = num_pages;
    view.page_size = page_size;
    view.heads_per_page = heads_per_page;
    view.head_dim = head_dim;
    view.order = order;
    view.type = type;
    view.elem_bytes = 2;
    view.page_bytes = static_cast<std::int64_t>(page_size) * heads_per_page * head_dim * 2;
    view.v_offset_bytes = view.page_bytes * num_pages;
    view.layer_stride_bytes = layers > 1 ? 2 * view.v_offset_bytes : 0;
    const std::size_t n = static_cast<std::size_t>(2 * view.v_offset_bytes * layers);
    bytes.resize(n);
    view.data = bytes.data();
    const std::uint16_t nan = type == dtype::bf16 ? 0x7FC0 : 0x7E00;
    auto* w = reinterpret_cast<std::uint16_t*>(bytes.data());
    std::fill(w, w + n / 2, nan);
  }
  std::uint16_t* row(bool value, std::int32_t layer, std::int32_t page, std::int32_t tok,
                     std::int32_t head) const {
    return reinterpret_cast<std::uint16_t*>(view.data + view.k_row_offset(layer, page, tok, head) +
                                            (value ? view.v_offset_bytes : 0));
  }
};

/// Random value: mostly N(0, 1), sometimes larger (outlier channels make keys peaky).
inline float rand_value(std::mt19937_64& rng, float scale = 1.0f) {
  std::normal_distribution<float> n(0.0f, scale);
  return n(rng);
}

/// Writes random rows for tokens [0, len) of every table of `tables` (layer `layer`, head
/// `head` of table (b, h) as the decode shape says).
inline void fill_tables(pool16& pool, const tables_host& t, const paged_decode_shape& s,
                        std::int32_t layer, std::mt19937_64& rng) {
  const std::int32_t tables_per_b = s.table_head_stride == 0 ? 1 : s.num_kv_heads;
  const std::int32_t heads = s.table_head_stride == 0 ? s.num_kv_heads : 1;
  for (std::int32_t hb = 0; hb < tables_per_b; ++hb) {
    for (std::int32_t b = 0; b < s.batch; ++b) {
      const std::int32_t table = hb * s.table_head_stride + b;
      const std::int64_t len = t.tokens(static_cast<std::size_t>(table));
      for (std::int64_t tok = 0; tok < len; ++tok) {
        const std::int32_t page = t.indices[t.indptr[table] + tok / t.page_size];
        for (std::int32_t h = 0; h < heads; ++h) {
          for (bool v : {false, true}) {
            std::uint16_t* r = pool.row(v, layer, page, static_cast<std::int32_t>(tok % t.page_size), h);
            for (std::int32_t d = 0; d < s.head_dim; ++d) {
              const float scale = (!v && d % 17 == 3) ? 4.0f : 1.0f;
              r[d] = bits_of(rand_value(rng, scale), pool.view.type);
            }
          }
        }
      }
    }
  }
}

inline std::vector<std::uint16_t> random_q(const paged_decode_shape& s, std::mt19937_64& rng) {
  std::vector<std::uint16_t> q(static_cast<std::size_t>(s.batch) * s.num_qo_heads * s.head_dim);
  for (auto& x : q) x = bits_of(rand_value(rng), s.q_type);
  return q;
}

/// Naive attention in double straight from the pool: out [batch][qo][D] floats, mass
/// [batch][kv][max_len] (sum over the group of softmax probabilities).
struct naive_result {
  std::vector<double> out, lse, mass;
  std::int64_t mass_stride = 0;
};
inline naive_result naive_decode(const paged_decode_shape& s, const paged_kv_view& kv,
                                 const page_table_view& t, const std::uint16_t* q,
                                 std::int32_t layer, std::int64_t mass_stride) {
  naive_result r;
  const std::int32_t D = s.head_dim;
  const std::int32_t group = s.num_qo_heads / s.num_kv_heads;
  r.out.assign(static_cast<std::size_t>(s.batch) * s.num_qo_heads * D, 0.0);
  r.lse.assign(static_cast<std::size_t>(s.batch) * s.num_qo_heads, -INFINITY);
  r.mass.assign(static_cast<std::size_t>(s.batch) * s.num_kv_heads * mass_stride, 0.0);
  r.mass_stride = mass_stride;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (std::int32_t b = 0; b < s.batch; ++b) {
    for (std::int32_t qh = 0; qh < s.num_qo_heads; ++qh) {
      const std::int32_t h = qh / group;
      const std::int32_t table = h * s.table_head_stride + b;
      const std::int64_t len = t.tokens(table);
      const std::int32_t head = s.table_head_stride == 0 ? h : 0;
      std::vector<double> sc(static_cast<std::size_t>(len));
      double m = -INFINITY;
      auto rowp = [&](std::int64_t tok, bool v) {
        const std::int32_t page = t.indices[t.indptr[table] + tok / t.page_size];
        return reinterpret_cast<const std::uint16_t*>(
            kv.data + kv.k_row_offset(layer, page, static_cast<std::int32_t>(tok % t.page_size), head) +
            (v ? kv.v_offset_bytes : 0));
      };
      const std::uint16_t* qr = q + (static_cast<std::size_t>(b) * s.num_qo_heads + qh) * D;
      for (std::int64_t tok = 0; tok < len; ++tok) {
        const std::uint16_t* k = rowp(tok, false);
        double a = 0;
        for (std::int32_t d = 0; d < D; ++d) a += double(value_of(qr[d], s.q_type)) * value_of(k[d], kv.type);
        sc[tok] = a * scale;
        m = std::max(m, sc[tok]);
      }
      double l = 0;
      for (auto& x : sc) {
        x = std::exp(x - m);
        l += x;
      }
      double* o = r.out.data() + (static_cast<std::size_t>(b) * s.num_qo_heads + qh) * D;
      for (std::int64_t tok = 0; tok < len; ++tok) {
        const std::uint16_t* v = rowp(tok, true);
        for (std::int32_t d = 0; d < D; ++d) o[d] += sc[tok] / l * value_of(v[d], kv.type);
        r.mass[(static_cast<std::size_t>(b) * s.num_kv_heads + h) * mass_stride + tok] += sc[tok] / l;
      }
      if (len > 0) r.lse[static_cast<std::size_t>(b) * s.num_qo_heads + qh] = m + std::log(l);
    }
  }
  return r;
}

/// A quantized pool for Q (head pages 0xFF-poisoned), the f16 pool of its dequantized pages
/// (NaN-poisoned), and the KIVI staging pool, filled for `tables` with random rows: tokens below
/// q = L - Q::residual_tokens(L) are quantized, the others go to the staging page of the table.
template <class Q>
struct quant_fixture {
  aligned_bytes qbytes;
  quantized_kv_view qview;
  pool16 deq;      // dequantized pages + residual rows at their positions (the reference's input)
  pool16 staging;  // one staging page per table
  std::vector<std::int32_t> staging_page, quantized_tokens;
  /// value rows written by fill: 0 standard normal; 1 every third 16-token tile with standard
  /// deviation 6000 (int8 / fp8 scales above 65504 / 2^12 = 16: the kernel's exact-value tiles
  /// mixed with code tiles in one accumulator); 2 all with standard deviation 1e-4 (scales below
  /// 2^-12); 3 the first row of every third tile holds +65504 and -65504 in dims 0 and 1 (KIVI's
  /// clamped stages)
  int values_mode = 0;
  /// every token quantized, no residual window (the kernel then runs without a residual view):
  /// KIVI pages quantize whole key groups whose tokens past the length are then poisoned again
  /// (codes and value metadata NaN bits), so that a last stage ends inside a token pair
  bool whole_groups = false;

  quant_fixture(std::int32_t layers, std::int32_t num_pages, const paged_decode_shape& s,
                std::int32_t num_tables)
      : deq(layers, num_pages, s.page_size, s.table_head_stride == 0 ? s.num_kv_heads : 1,
            s.head_dim, kv_order::hnd, dtype::f16),
        staging(layers, std::max(1, num_tables), std::max<std::int32_t>(Q::residual, 1),
                s.table_head_stride == 0 ? s.num_kv_heads : 1, s.head_dim, kv_order::hnd,
                dtype::f16) {
    const std::int32_t hpp = s.table_head_stride == 0 ? s.num_kv_heads : 1;
    qview.head_page_bytes = static_cast<std::int64_t>(
        std::max(Q::key_page_bytes(s.page_size, s.head_dim), Q::value_page_bytes(s.page_size, s.head_dim)));
    qview.page_bytes = qview.head_page_bytes * hpp;
    qview.v_offset_bytes = qview.page_bytes * num_pages;
    qview.layer_stride_bytes = layers > 1 ? 2 * qview.v_offset_bytes : 0;
    qview.num_pages = num_pages;
    qview.layers = layers;
    qview.page_size = s.page_size;
    qview.heads_per_page = hpp;
    qview.head_dim = s.head_dim;
    qview.format = Q::format;
    qbytes.resize(static_cast<std::size_t>(2 * qview.v_offset_bytes * layers));
    std::memset(qbytes.data(), 0xFF, qbytes.size);
    qview.data = qbytes.data();
  }

  residual_view residual() const {
    residual_view r;
    r.staging_page = staging_page.data();
    r.quantized_tokens = quantized_tokens.data();
    r.staging = staging.view;
    return r;
  }

  void fill(const tables_host& t, const paged_decode_shape& s, std::int32_t layer,
            std::mt19937_64& rng) {
    const std::int32_t D = s.head_dim;
    const std::int32_t P = s.page_size;
    const std::int32_t n_tables = static_cast<std::int32_t>(t.last.size());
    staging_page.assign(static_cast<std::size_t>(n_tables), 0);
    quantized_tokens.assign(static_cast<std::size_t>(n_tables), 0);
    const std::int32_t tables_per_b = s.table_head_stride == 0 ? 1 : s.num_kv_heads;
    const std::int32_t heads = s.table_head_stride == 0 ? s.num_kv_heads : 1;
    std::vector<std::uint16_t> rows(static_cast<std::size_t>(P) * D);
    for (std::int32_t hb = 0; hb < tables_per_b; ++hb) {
      for (std::int32_t b = 0; b < s.batch; ++b) {
        const std::int32_t table = hb * s.table_head_stride + b;
        const std::int64_t len = t.tokens(static_cast<std::size_t>(table));
        const std::int64_t q = whole_groups ? len : len - Q::residual_tokens(len);
        quantized_tokens[static_cast<std::size_t>(table)] = static_cast<std::int32_t>(q);
        staging_page[static_cast<std::size_t>(table)] = table;
        for (std::int32_t h = 0; h < heads; ++h) {
          for (bool v : {false, true}) {
            const kv_side side = v ? kv_side::value : kv_side::key;
            for (std::int64_t t0 = 0; t0 < len; t0 += P) {
              const std::int32_t page = t.indices[t.indptr[table] + t0 / P];
              const auto n = static_cast<std::int32_t>(std::min<std::int64_t>(P, len - t0));
              const std::int32_t grp = Q::format.side(side).token_group();
              const std::int32_t nfill = whole_groups ? std::min(P, (n + grp - 1) / grp * grp) : n;
              for (std::int32_t i = 0; i < nfill; ++i) {
                const std::int64_t tok = t0 + i;
                const bool third = (tok / 16) % 3 == 0;  // every third 16-token tile
                for (std::int32_t d = 0; d < D; ++d) {
                  float scale = (!v && d % 17 == 3) ? 4.0f : 1.0f;
                  if (v && values_mode == 1 && third) scale = 6000.0f;
                  if (v && values_mode == 2) scale = 1e-4f;
                  float x = std::clamp(rand_value(rng, scale), -60000.0f, 60000.0f);
                  if (v && values_mode == 3 && third && tok % 16 == 0 && d < 2) {
                    x = d == 0 ? 65504.0f : -65504.0f;
                  }
                  rows[static_cast<std::size_t>(i) * D + d] = to_float16(x).bits;
                }
              }
              const auto nq = static_cast<std::int32_t>(std::clamp<std::int64_t>(q - t0, 0, n));
              if (nq > 0) {
                std::byte* hp = qview.head_page(side, layer, page, h);
                const std::int32_t nqq = whole_groups ? nfill : nq;
                quantize_job qj{rows.data(), hp, 0, nqq, side};
                quantize_pages_host<Q>(&qj, 1, P, D);
                dequantize_job dj{hp, deq.row(v, layer, page, 0, h), 0, nq, side};
                dequantize_pages_host<Q>(&dj, 1, P, D);
                const quant_side_format& f = Q::format.side(side);
                for (std::int32_t i = nq; i < nqq; ++i) {  // past the length: poisoned again
                  for (std::size_t b = 0; b < f.code_row_bytes(D); ++b) {
                    hp[f.code_byte_offset(i, static_cast<std::int32_t>(b), D)] = std::byte{0xFF};
                  }
                  if (f.scheme != quant_scheme::kivi_token) continue;
                  std::byte* meta = hp + f.metadata_offset(P, D);
                  for (std::int32_t j = 0; j < D / f.group; ++j) {
                    std::memset(meta + f.kivi_token_min_offset(i, j, D), 0xFF, 2);
                    std::memset(meta + f.kivi_token_scale_offset(i, j, D), 0xFF, 2);
                  }
                }
              }
              for (std::int32_t i = nq; i < n; ++i) {
                const std::int64_t tok = t0 + i;
                std::memcpy(deq.row(v, layer, page, i, h), rows.data() + static_cast<std::size_t>(i) * D, 2 * static_cast<std::size_t>(D));
                std::memcpy(staging.row(v, layer, table, static_cast<std::int32_t>(tok - q), h),
                            rows.data() + static_cast<std::size_t>(i) * D, 2 * static_cast<std::size_t>(D));
              }
            }
          }
        }
      }
    }
  }
};

/// A batch of decode steps of a recorded text (`kvcache::quality::trace`), one layer: real keys
/// and values as f16 pages (HND, page 16, one table per step), and the recorded query of each
/// step's position; step t attends to positions [0, t]. Steps: the last recorded query, then
/// every 47th position back while queries were recorded (at most 6).
struct trace_case {
  paged_decode_shape shape;
  std::vector<std::int64_t> lens;
  tables_host tables;
  pool16 pool;
  std::vector<std::uint16_t> q;

  template <class Trace, class Layer>
  trace_case(const Trace& tr, const Layer& layer, std::mt19937_64& rng)
      : lens(steps_of(tr)),
        tables(make_tables(lens, 16, pages_for(lens, 16) + 3, rng)),
        pool(1, pages_for(lens, 16) + 3, 16, tr.kv_heads(), tr.head_dim(), kv_order::hnd,
             dtype::f16) {
    const std::int32_t kvh = tr.kv_heads(), qh = tr.q_heads(), d = tr.head_dim(), ps = 16;
    shape = paged_decode_shape{static_cast<std::int32_t>(lens.size()), qh, kvh, d, ps, 0, dtype::f16};
    for (std::size_t b = 0; b < lens.size(); ++b) {
      for (std::int64_t tok = 0; tok < lens[b]; ++tok) {
        const std::int32_t page = tables.indices[static_cast<std::size_t>(tables.indptr[b] + tok / ps)];
        for (std::int32_t h = 0; h < kvh; ++h) {
          const auto k = tr.key(layer, tok, h);
          const auto v = tr.value(layer, tok, h);
          std::uint16_t* kr = pool.row(false, 0, page, static_cast<std::int32_t>(tok % ps), h);
          std::uint16_t* vr = pool.row(true, 0, page, static_cast<std::int32_t>(tok % ps), h);
          for (std::int32_t c = 0; c < d; ++c) {
            kr[c] = bits_of(k[static_cast<std::size_t>(c)], dtype::f16);
            vr[c] = bits_of(v[static_cast<std::size_t>(c)], dtype::f16);
          }
        }
      }
    }
    q.resize(lens.size() * static_cast<std::size_t>(qh) * static_cast<std::size_t>(d));
    for (std::size_t b = 0; b < lens.size(); ++b) {
      for (std::int32_t h = 0; h < qh; ++h) {
        const auto row = tr.query(layer, lens[b] - 1, h);
        for (std::int32_t c = 0; c < d; ++c) {
          q[(b * static_cast<std::size_t>(qh) + static_cast<std::size_t>(h)) * static_cast<std::size_t>(d) +
            static_cast<std::size_t>(c)] = bits_of(row[static_cast<std::size_t>(c)], dtype::f16);
        }
      }
    }
  }

 private:
  template <class Trace>
  static std::vector<std::int64_t> steps_of(const Trace& tr) {
    std::vector<std::int64_t> l;
    for (std::int64_t t = tr.tokens() - 1; t >= tr.q_first() && l.size() < 6; t -= 47) l.push_back(t + 1);
    return l;
  }
};

#ifdef KVCACHE_QUALITY_DATA_DIR
/// fn(label, c, plan, ms) for every recorded layer of both SmolLM2 fixture texts: the layer's
/// trace_case c (its own generator, seeded from `seed`), a plan with the mass output over its
/// tables, and the mass rows' length ms; label names the file and the layer.
template <class Fn>
void for_each_trace_case(std::uint64_t seed, Fn&& fn) {
  for (const char* file : {"smollm2-135m-prose-1024.safetensors", "smollm2-135m-code-1024.safetensors"}) {
    const auto tr = kvcache::quality::trace::load(std::string(KVCACHE_QUALITY_DATA_DIR) + "/" + file);
    for (const auto& layer : tr.layers()) {
      std::mt19937_64 rng(++seed);
      trace_case c(tr, layer, rng);
      paged_decode_options o;
      o.attention_mass = true;
      const auto plan = plan_paged_decode(c.shape, c.tables.view(), o);
      const std::int64_t ms = std::max<std::int64_t>(1, plan.max_tokens);
      fn(std::string(file) + " layer " + std::to_string(layer.index), c, plan, ms);
    }
  }
}
#endif

}  // namespace kvtest
