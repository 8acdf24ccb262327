#include "kvcache/core/dtype.hpp"

#include "kvcache/core/error.hpp"

namespace kvcache {

dtype parse_dtype(std::string_view name) {
  for (int i = 0; i < dtype_count; ++i) {
    const auto t = static_cast<dtype>(i);
    if (name_of(t) == name) return t;
  }
  KVCACHE_FAIL(errc::invalid_argument,
               "unknown dtype '{}' (expected f32, f16, bf16, fp8_e4m3, fp8_e5m2, int8, uint8, "
               "int4 or int2)",
               name);
}

}  // namespace kvcache
