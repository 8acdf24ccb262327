// Host implementations of the paging kernels (append_kv, gather_kv, copy_pages, compact_kv) and the argument
// checks they share with the CUDA implementations (kvcache/paging/detail/kernel_checks.hpp).
// Each operation validates everything before it writes, so a call that throws changed nothing.
#include <cstdint>
#include <cstring>
#include <vector>

#include "kvcache/core/error.hpp"
#include "kvcache/paging/detail/kernel_checks.hpp"
#include "kvcache/paging/kernels.hpp"

namespace kvcache {

namespace {
bool aligned(const void* p, std::int64_t to) {
  return reinterpret_cast<std::uintptr_t>(p) % static_cast<std::uintptr_t>(to) == 0;
}
}  // namespace

namespace detail {

void check_pool_view(const paged_kv_view& pool, const char* who) {
  KVCACHE_EXPECTS(pool.data != nullptr, errc::invalid_argument, "{}: the pool's data is null", who);
  KVCACHE_EXPECTS(pool.num_pages >= 1, errc::invalid_argument, "{}: pool num_pages {} < 1", who,
                  pool.num_pages);
  KVCACHE_EXPECTS(pool.layers >= 1, errc::invalid_argument, "{}: pool layers {} < 1", who,
                  pool.layers);
  KVCACHE_EXPECTS(pool.page_size >= 1, errc::invalid_argument, "{}: pool page_size {} < 1", who,
                  pool.page_size);
  KVCACHE_EXPECTS(pool.heads_per_page >= 1, errc::invalid_argument,
                  "{}: pool heads_per_page {} < 1", who, pool.heads_per_page);
  KVCACHE_EXPECTS(pool.head_dim >= 1, errc::invalid_argument, "{}: pool head_dim {} < 1", who,
                  pool.head_dim);
  KVCACHE_EXPECTS(pool.elem_bytes == 2 || pool.elem_bytes == 4, errc::invalid_argument,
                  "{}: element size {} bytes is not supported (2 or 4: f16, bf16, f32)", who,
                  pool.elem_bytes);
  KVCACHE_EXPECTS(bits_of(pool.type) == 8 * pool.elem_bytes, errc::dtype_mismatch,
                  "{}: the pool's dtype {} does not have {}-byte elements", who, name_of(pool.type),
                  pool.elem_bytes);
  const std::int64_t e = pool.elem_bytes;
  KVCACHE_EXPECTS(aligned(pool.data, e), errc::invalid_argument,
                  "{}: the pool's data {} is not aligned to its {}-byte elements", who,
                  static_cast<const void*>(pool.data), e);
  const std::int64_t min_page =
      static_cast<std::int64_t>(pool.page_size) * pool.heads_per_page * pool.row_bytes();
  KVCACHE_EXPECTS(
      pool.page_bytes >= min_page && pool.page_bytes % e == 0, errc::invalid_argument,
      "{}: page_bytes {} cannot hold {} tokens x {} heads x {} bytes (a multiple of {})", who,
      pool.page_bytes, pool.page_size, pool.heads_per_page, pool.row_bytes(), e);
  const std::int64_t array_bytes = pool.page_bytes * pool.num_pages;
  KVCACHE_EXPECTS(pool.v_offset_bytes >= array_bytes && pool.v_offset_bytes % e == 0,
                  errc::invalid_argument,
                  "{}: v_offset_bytes {} is below the K array's {} bytes (or not a multiple of {})",
                  who, pool.v_offset_bytes, array_bytes, e);
  KVCACHE_EXPECTS(pool.layer_stride_bytes == 0 ||
                      (pool.layer_stride_bytes >= pool.v_offset_bytes + array_bytes &&
                       pool.layer_stride_bytes % e == 0),
                  errc::invalid_argument,
                  "{}: layer_stride_bytes {} is neither 0 nor past the layer's K and V arrays "
                  "({} bytes)",
                  who, pool.layer_stride_bytes, pool.v_offset_bytes + array_bytes);
}

void check_append_shapes(const paged_kv_view& pool, const kv_input_view& input,
                         const slot_mapping_view& slots, const char* who) {
  check_pool_view(pool, who);
  KVCACHE_EXPECTS(input.num_tokens >= 0, errc::invalid_argument, "{}: num_tokens {} < 0", who,
                  input.num_tokens);
  KVCACHE_EXPECTS(input.n_layers >= 0, errc::invalid_argument, "{}: n_layers {} < 0", who,
                  input.n_layers);
  KVCACHE_EXPECTS(input.first_layer >= 0 && input.first_layer + input.n_layers <= pool.layers,
                  errc::shape_mismatch,
                  "{}: input layers {}..{} (first_layer {}, n_layers {}) are not within the "
                  "pool's {} layers",
                  who, input.first_layer, input.first_layer + input.n_layers - 1, input.first_layer,
                  input.n_layers, pool.layers);
  KVCACHE_EXPECTS(slots.num_tokens == input.num_tokens, errc::shape_mismatch,
                  "{}: the slot mapping has {} tokens, the input {}", who, slots.num_tokens,
                  input.num_tokens);
  KVCACHE_EXPECTS(input.kv_heads >= 1, errc::invalid_argument, "{}: input kv_heads {} < 1", who,
                  input.kv_heads);
  if (pool.heads_per_page != 1) {
    KVCACHE_EXPECTS(input.kv_heads == pool.heads_per_page, errc::shape_mismatch,
                    "{}: the input has {} kv heads, the pool's pages hold {}", who, input.kv_heads,
                    pool.heads_per_page);
  } else {
    KVCACHE_EXPECTS(input.kv_heads == 1 || slots.head_stride != 0, errc::invalid_argument,
                    "{}: {} kv heads into one-head pages need a slot mapping per head "
                    "(head_stride is 0)",
                    who, input.kv_heads);
  }
  KVCACHE_EXPECTS(slots.layer_stride >= 0 && slots.head_stride >= 0, errc::invalid_argument,
                  "{}: slot mapping strides must be >= 0, got layer_stride {}, head_stride {}", who,
                  slots.layer_stride, slots.head_stride);
  if (input.num_tokens == 0 || input.n_layers == 0) return;
  KVCACHE_EXPECTS(input.k != nullptr && input.v != nullptr, errc::invalid_argument,
                  "{}: input K ({}) or V ({}) is null", who, static_cast<const void*>(input.k),
                  static_cast<const void*>(input.v));
  KVCACHE_EXPECTS(slots.slots != nullptr, errc::invalid_argument, "{}: the slot mapping is null",
                  who);
  KVCACHE_EXPECTS(
      aligned(input.k, pool.elem_bytes) && aligned(input.v, pool.elem_bytes),
      errc::invalid_argument, "{}: input K ({}) or V ({}) is not aligned to {}-byte elements", who,
      static_cast<const void*>(input.k), static_cast<const void*>(input.v), pool.elem_bytes);
  KVCACHE_EXPECTS(aligned(slots.slots, 8), errc::invalid_argument,
                  "{}: the slot mapping {} is not 8-byte aligned", who,
                  static_cast<const void*>(slots.slots));
}

void check_append_contents(const paged_kv_view& pool, const kv_input_view& input,
                           const slot_mapping_view& slots, const char* who) {
  if (input.num_tokens == 0 || input.n_layers == 0) return;
  const std::int64_t limit = static_cast<std::int64_t>(pool.num_pages) * pool.page_size;
  // A stride of 0 shares one mapping: check it once.
  const std::int32_t layers = slots.layer_stride == 0 ? 1 : input.n_layers;
  const std::int32_t heads = slots.head_stride == 0 ? 1 : input.kv_heads;
  for (std::int32_t l = 0; l < layers; ++l) {
    for (std::int32_t h = 0; h < heads; ++h) {
      const std::int64_t* row = slots.slots + l * slots.layer_stride + h * slots.head_stride;
      for (std::int32_t i = 0; i < input.num_tokens; ++i) {
        KVCACHE_EXPECTS(row[i] < limit, errc::out_of_range,
                        "{}: slot {} of token {}, layer {}, kv head {} is beyond the pool's {} "
                        "slots ({} pages of {} tokens)",
                        who, row[i], i, input.first_layer + l, h, limit, pool.num_pages,
                        pool.page_size);
      }
    }
  }
}

void check_gather_shapes(const paged_kv_view& pool, std::int32_t layer,
                         const page_table_view& tables, const std::int64_t* out_offsets,
                         const std::byte* out_k, const std::byte* out_v, const char* who) {
  check_pool_view(pool, who);
  KVCACHE_EXPECTS(layer >= 0 && layer < pool.layers, errc::out_of_range,
                  "{}: layer {} is not in the pool's {} layers", who, layer, pool.layers);
  KVCACHE_EXPECTS(tables.num_tables >= 0, errc::invalid_argument, "{}: num_tables {} < 0", who,
                  tables.num_tables);
  if (tables.num_tables == 0) return;
  KVCACHE_EXPECTS(tables.page_size == pool.page_size, errc::shape_mismatch,
                  "{}: the tables' page_size {} differs from the pool's {}", who, tables.page_size,
                  pool.page_size);
  KVCACHE_EXPECTS(
      tables.indptr != nullptr && tables.last_page_len != nullptr, errc::invalid_argument,
      "{}: the tables' indptr ({}) or last_page_len ({}) is null", who,
      static_cast<const void*>(tables.indptr), static_cast<const void*>(tables.last_page_len));
  KVCACHE_EXPECTS(out_offsets != nullptr && out_k != nullptr && out_v != nullptr,
                  errc::invalid_argument, "{}: out_offsets ({}), out_k ({}) or out_v ({}) is null",
                  who, static_cast<const void*>(out_offsets), static_cast<const void*>(out_k),
                  static_cast<const void*>(out_v));
  KVCACHE_EXPECTS(
      aligned(out_k, pool.elem_bytes) && aligned(out_v, pool.elem_bytes), errc::invalid_argument,
      "{}: out_k ({}) or out_v ({}) is not aligned to {}-byte elements", who,
      static_cast<const void*>(out_k), static_cast<const void*>(out_v), pool.elem_bytes);
  KVCACHE_EXPECTS(aligned(tables.indptr, 4) && aligned(tables.indices, 4) &&
                      aligned(tables.last_page_len, 4) && aligned(out_offsets, 8),
                  errc::invalid_argument,
                  "{}: a page table array or out_offsets is misaligned for its type", who);
}

void check_gather_contents(const paged_kv_view& pool, const page_table_view& tables,
                           const std::int64_t* out_offsets, const char* who) {
  if (tables.num_tables == 0) return;
  KVCACHE_EXPECTS(tables.indptr[0] >= 0, errc::invalid_argument, "{}: indptr[0] is {} < 0", who,
                  tables.indptr[0]);
  for (std::int32_t t = 0; t < tables.num_tables; ++t) {
    const std::int32_t begin = tables.indptr[t];
    const std::int32_t end = tables.indptr[t + 1];
    KVCACHE_EXPECTS(end >= begin, errc::invalid_argument,
                    "{}: indptr decreases at table {}: {} then {}", who, t, begin, end);
    if (end == begin) continue;
    KVCACHE_EXPECTS(tables.indices != nullptr, errc::invalid_argument,
                    "{}: table {} has {} pages but indices is null", who, t, end - begin);
    for (std::int32_t p = begin; p < end; ++p) {
      const std::int32_t id = tables.indices[p];
      KVCACHE_EXPECTS(id >= 0 && id < pool.num_pages, errc::out_of_range,
                      "{}: page id {} (table {}, indices[{}]) is beyond the pool's {} pages", who,
                      id, t, p, pool.num_pages);
    }
    const std::int32_t last = tables.last_page_len[t];
    KVCACHE_EXPECTS(last >= 1 && last <= pool.page_size, errc::out_of_range,
                    "{}: last_page_len {} of table {} is not in 1..{}", who, last, t,
                    pool.page_size);
    KVCACHE_EXPECTS(out_offsets[t] >= 0, errc::out_of_range, "{}: out_offsets[{}] is {} < 0", who,
                    t, out_offsets[t]);
  }
}

void check_copy_shapes(const paged_kv_view& pool, const page_copy* copies, std::int32_t n,
                       const char* who) {
  check_pool_view(pool, who);
  KVCACHE_EXPECTS(n >= 0, errc::invalid_argument, "{}: {} copies < 0", who, n);
  if (n == 0) return;
  KVCACHE_EXPECTS(copies != nullptr, errc::invalid_argument, "{}: {} copies from a null array", who,
                  n);
  KVCACHE_EXPECTS(aligned(copies, 4), errc::invalid_argument,
                  "{}: the copy array {} is not 4-byte aligned", who,
                  static_cast<const void*>(copies));
}

void check_copy_contents(const paged_kv_view& pool, const page_copy* copies, std::int32_t n,
                         const char* who) {
  for (std::int32_t i = 0; i < n; ++i) {
    KVCACHE_EXPECTS(copies[i].src >= 0 && copies[i].src < pool.num_pages, errc::out_of_range,
                    "{}: copy {}: source page {} is beyond the pool's {} pages", who, i,
                    copies[i].src, pool.num_pages);
    KVCACHE_EXPECTS(copies[i].dst >= 0 && copies[i].dst < pool.num_pages, errc::out_of_range,
                    "{}: copy {}: destination page {} is beyond the pool's {} pages", who, i,
                    copies[i].dst, pool.num_pages);
  }
  auto twice = [&](std::int32_t i) {
    KVCACHE_FAIL(errc::invalid_argument, "{}: copy {}: destination page {} is written twice", who,
                 i, copies[i].dst);
  };
  auto read_and_written = [&](std::int32_t i) {
    KVCACHE_FAIL(errc::invalid_argument,
                 "{}: copy {}: destination page {} is also a source of the batch", who, i,
                 copies[i].dst);
  };
  if (n <= 64) {  // no allocation for the usual few copy-on-write copies
    for (std::int32_t i = 0; i < n; ++i) {
      for (std::int32_t j = 0; j < n; ++j) {
        if (copies[j].src == copies[i].dst) read_and_written(i);
        if (j < i && copies[j].dst == copies[i].dst) twice(i);
      }
    }
    return;
  }
  std::vector<std::uint8_t> marks(static_cast<std::size_t>(pool.num_pages), 0);
  for (std::int32_t i = 0; i < n; ++i) marks[static_cast<std::size_t>(copies[i].src)] |= 1;
  for (std::int32_t i = 0; i < n; ++i) {
    auto& m = marks[static_cast<std::size_t>(copies[i].dst)];
    if (m & 1) read_and_written(i);
    if (m & 2) twice(i);
    m |= 2;
  }
}

[[noreturn]] void throw_cuda_failure(const char* who, const char* call, const char* name,
                                     const char* text, const char* file, int line) {
  throw_error(errc::cuda_error, nullptr, file, line,
              fmt::format("{}: {} failed: {} ({})", who, call, name, text));
}

[[noreturn]] void throw_not_device_accessible(const char* who, const char* what, const void* p) {
  KVCACHE_FAIL(errc::invalid_argument,
               "{}: {} ({}) is not accessible from the device: pass device or pinned memory", who,
               what, p);
}

}  // namespace detail

// ---- append_kv ------------------------------------------------------------------------------
void append_kv_host(const paged_kv_view& pool, const kv_input_view& input,
                    const slot_mapping_view& slots) {
  constexpr const char* who = "append_kv_host";
  detail::check_append_shapes(pool, input, slots, who);
  detail::check_append_contents(pool, input, slots, who);
  const std::int64_t row = pool.row_bytes();
  const std::int32_t n = input.num_tokens;
  const std::int32_t heads = input.kv_heads;
  for (std::int32_t l = 0; l < input.n_layers; ++l) {
    const std::int32_t layer = input.first_layer + l;
    for (std::int32_t i = 0; i < n; ++i) {
      for (std::int32_t h = 0; h < heads; ++h) {
        const std::int64_t s = slots.slots[l * slots.layer_stride + h * slots.head_stride + i];
        if (s < 0) continue;
        const auto page = static_cast<std::int32_t>(s / pool.page_size);
        const auto token = static_cast<std::int32_t>(s % pool.page_size);
        const std::int32_t head = pool.heads_per_page == 1 ? 0 : h;
        const std::int64_t dst = pool.k_row_offset(layer, page, token, head);
        const std::int64_t src = ((static_cast<std::int64_t>(l) * n + i) * heads + h) * row;
        std::memcpy(pool.data + dst, input.k + src, static_cast<std::size_t>(row));
        std::memcpy(pool.data + dst + pool.v_offset_bytes, input.v + src,
                    static_cast<std::size_t>(row));
      }
    }
  }
}

// ---- gather_kv ------------------------------------------------------------------------------
void gather_kv_host(const paged_kv_view& pool, std::int32_t layer, const page_table_view& tables,
                    const std::int64_t* out_offsets, std::byte* out_k, std::byte* out_v) {
  constexpr const char* who = "gather_kv_host";
  detail::check_gather_shapes(pool, layer, tables, out_offsets, out_k, out_v, who);
  detail::check_gather_contents(pool, tables, out_offsets, who);
  const std::int64_t row = pool.row_bytes();
  const std::int64_t token_bytes = row * pool.heads_per_page;
  const std::int32_t ps = pool.page_size;
  for (std::int32_t t = 0; t < tables.num_tables; ++t) {
    const std::int32_t begin = tables.indptr[t];
    const std::int32_t end = tables.indptr[t + 1];
    for (std::int32_t p = begin; p < end; ++p) {
      const std::int32_t page = tables.indices[p];
      const std::int32_t tokens = p == end - 1 ? tables.last_page_len[t] : ps;
      const std::int64_t out_row = out_offsets[t] + static_cast<std::int64_t>(p - begin) * ps;
      std::byte* dk = out_k + out_row * token_bytes;
      std::byte* dv = out_v + out_row * token_bytes;
      if (pool.order == kv_order::nhd) {  // the page's first tokens are one contiguous run
        const std::int64_t src = pool.k_row_offset(layer, page, 0, 0);
        std::memcpy(dk, pool.data + src, static_cast<std::size_t>(tokens * token_bytes));
        std::memcpy(dv, pool.data + src + pool.v_offset_bytes,
                    static_cast<std::size_t>(tokens * token_bytes));
        continue;
      }
      for (std::int32_t j = 0; j < tokens; ++j) {
        for (std::int32_t h = 0; h < pool.heads_per_page; ++h) {
          const std::int64_t src = pool.k_row_offset(layer, page, j, h);
          const std::int64_t dst = j * token_bytes + h * row;
          std::memcpy(dk + dst, pool.data + src, static_cast<std::size_t>(row));
          std::memcpy(dv + dst, pool.data + src + pool.v_offset_bytes,
                      static_cast<std::size_t>(row));
        }
      }
    }
  }
}

// ---- copy_pages -----------------------------------------------------------------------------
void copy_pages_host(const paged_kv_view& pool, const page_copy* copies, std::int32_t n) {
  constexpr const char* who = "copy_pages_host";
  detail::check_copy_shapes(pool, copies, n, who);
  detail::check_copy_contents(pool, copies, n, who);
  const std::int32_t arrays = pool.layer_stride_bytes == 0 ? 1 : pool.layers;
  for (std::int32_t i = 0; i < n; ++i) {
    for (std::int32_t a = 0; a < arrays; ++a) {
      for (std::int64_t kv : {std::int64_t{0}, pool.v_offset_bytes}) {
        std::byte* base = pool.data + a * pool.layer_stride_bytes + kv;
        std::memcpy(base + copies[i].dst * pool.page_bytes, base + copies[i].src * pool.page_bytes,
                    static_cast<std::size_t>(pool.page_bytes));
      }
    }
  }
}

void compact_kv_host(const paged_kv_view& pool, const slot_move* moves, std::int64_t n) {
  constexpr const char* who = "compact_kv_host";
  detail::check_pool_view(pool, who);
  KVCACHE_EXPECTS(n >= 0 && (n == 0 || moves != nullptr), errc::invalid_argument,
                  "{}: {} moves at {}", who, n, static_cast<const void*>(moves));
  const std::int64_t slots = static_cast<std::int64_t>(pool.num_pages) * pool.page_size;
  for (std::int64_t i = 0; i < n; ++i) {
    KVCACHE_EXPECTS(moves[i].src >= 0 && moves[i].src < slots && moves[i].dst >= 0 &&
                        moves[i].dst < slots,
                    errc::out_of_range, "{}: move {} ({} -> {}) names a slot outside the {} slots",
                    who, i, moves[i].src, moves[i].dst, slots);
  }
  const std::int32_t arrays = pool.layer_stride_bytes == 0 ? 1 : pool.layers;
  const auto row = static_cast<std::size_t>(pool.row_bytes());
  for (std::int64_t i = 0; i < n; ++i) {
    const auto sp = static_cast<std::int32_t>(moves[i].src / pool.page_size);
    const auto st = static_cast<std::int32_t>(moves[i].src % pool.page_size);
    const auto dp = static_cast<std::int32_t>(moves[i].dst / pool.page_size);
    const auto dt = static_cast<std::int32_t>(moves[i].dst % pool.page_size);
    for (std::int32_t a = 0; a < arrays; ++a) {
      for (std::int32_t h = 0; h < pool.heads_per_page; ++h) {
        const std::int64_t from = pool.k_row_offset(a, sp, st, h);
        const std::int64_t to = pool.k_row_offset(a, dp, dt, h);
        std::memmove(pool.data + to, pool.data + from, row);
        std::memmove(pool.data + to + pool.v_offset_bytes, pool.data + from + pool.v_offset_bytes,
                     row);
      }
    }
  }
}

}  // namespace kvcache
