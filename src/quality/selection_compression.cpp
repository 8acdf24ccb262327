// selection compressions for the quality harness (registered by make_compression's table).
#include "registry.hpp"

namespace kvcache::quality::detail {

void register_selection_compressions(registry_table& table) { (void)table; }

}  // namespace kvcache::quality::detail
