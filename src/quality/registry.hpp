// Internal: how the compression families register their specs in make_compression's table.
// Each family lives in its own file (src/quality/<family>_compression.cpp) and adds its
// factories to the table the first time the registry is built.
#pragma once

#include <map>
#include <string>

#include "kvcache/quality/compression.hpp"

namespace kvcache::quality::detail {

using registry_table = std::map<std::string, compression_factory>;

/// Quantizers: "quant:kivi2", "quant:int8", ... (src/quality/quant_compression.cpp).
void register_quant_compressions(registry_table& table);
/// Token selection policies and budgets (src/quality/selection_compression.cpp).
void register_selection_compressions(registry_table& table);

}  // namespace kvcache::quality::detail
