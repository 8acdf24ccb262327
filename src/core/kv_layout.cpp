#include "kvcache/core/kv_layout.hpp"

#include <bit>

#include "kvcache/core/error.hpp"

namespace kvcache {

void kv_layout::validate() const {
  constexpr auto bad = errc::invalid_argument;
  KVCACHE_EXPECTS(layers >= 1, bad, "kv_layout: layers must be >= 1, got {}", layers);
  KVCACHE_EXPECTS(kv_heads >= 1, bad, "kv_layout: kv_heads must be >= 1, got {}", kv_heads);
  KVCACHE_EXPECTS(q_heads >= 1, bad, "kv_layout: q_heads must be >= 1, got {}", q_heads);
  KVCACHE_EXPECTS(head_dim >= 1, bad, "kv_layout: head_dim must be >= 1, got {}", head_dim);
  KVCACHE_EXPECTS(page_size >= 1, bad, "kv_layout: page_size must be >= 1, got {}", page_size);
  KVCACHE_EXPECTS(std::has_single_bit(static_cast<std::uint32_t>(page_size)), bad,
                  "kv_layout: page_size must be a power of two, got {}", page_size);
  KVCACHE_EXPECTS(page_size <= 65536, bad, "kv_layout: page_size must be <= 65536, got {}",
                  page_size);
  KVCACHE_EXPECTS(q_heads % kv_heads == 0, bad,
                  "kv_layout: q_heads ({}) must be a multiple of kv_heads ({})", q_heads, kv_heads);
  KVCACHE_EXPECTS((static_cast<long long>(head_dim) * bits_of(type)) % 8 == 0, bad,
                  "kv_layout: head_dim {} of {} does not fill whole bytes", head_dim,
                  name_of(type));
  KVCACHE_EXPECTS(static_cast<int>(type) < dtype_count, bad,
                  "kv_layout: dtype value {} is not a dtype", static_cast<int>(type));
}

std::string kv_layout::to_string() const {
  return fmt::format("layers={} kv_heads={} q_heads={} head_dim={} page_size={} order={} dtype={}",
                     layers, kv_heads, q_heads, head_dim, page_size, name_of(order),
                     name_of(type));
}

}  // namespace kvcache
