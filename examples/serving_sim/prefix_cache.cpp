#include "prefix_cache.hpp"

namespace kvsim {

std::unique_ptr<prefix_cache> make_prefix_cache(const std::string& kind, sim_store& store) {
  (void)store;
  if (kind == "none") return nullptr;
  KVCACHE_FAIL(kvcache::errc::not_supported, "kvcache-sim: prefix cache '{}' is not built yet",
               kind);
}

}  // namespace kvsim
