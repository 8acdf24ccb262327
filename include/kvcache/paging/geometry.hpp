/**
 * @file geometry.hpp
 * @brief Page geometries: what one page id covers, and how many block tables a sequence has.
 *
 * | geometry      | a page holds                         | tables per sequence      |
 * | ------------- | ------------------------------------ | ------------------------ |
 * | `span_layers` | page_size tokens x all kv heads, in  | 1 (vLLM)                 |
 * |               | every layer (K and V per layer)      |                          |
 * | `per_layer`   | page_size tokens x all kv heads, in  | layers                   |
 * |               | one layer                            |                          |
 * | `per_head`    | page_size tokens x one kv head, in   | layers x kv_heads        |
 * |               | one layer                            |                          |
 *
 * With `per_layer` and `per_head`, tables of one sequence grow and shrink independently, so
 * layer-wise and head-wise budgets free real pages. Table t of a sequence serves
 * layer = t / kv_heads and head = t % kv_heads under `per_head`, layer = t under `per_layer`.
 */
#pragma once

#include <concepts>
#include <cstdint>

#include "kvcache/core/kv_layout.hpp"

namespace kvcache {

/// @brief One page id covers every layer; one block table per sequence (vLLM's layout).
struct span_layers {
  static constexpr const char* name = "span_layers";
  static constexpr std::int32_t tables_per_sequence(const kv_layout&) noexcept { return 1; }
  static constexpr std::int32_t heads_per_page(const kv_layout& l) noexcept { return l.kv_heads; }
  /// Layer arrays in the pool: one K and one V array per layer.
  static constexpr std::int32_t layer_arrays(const kv_layout& l) noexcept { return l.layers; }
  static constexpr std::int32_t table_of(const kv_layout&, std::int32_t, std::int32_t) noexcept {
    return 0;
  }
};

/// @brief A page belongs to one layer; a block table per (sequence, layer).
struct per_layer {
  static constexpr const char* name = "per_layer";
  static constexpr std::int32_t tables_per_sequence(const kv_layout& l) noexcept {
    return l.layers;
  }
  static constexpr std::int32_t heads_per_page(const kv_layout& l) noexcept { return l.kv_heads; }
  static constexpr std::int32_t layer_arrays(const kv_layout&) noexcept { return 1; }
  static constexpr std::int32_t table_of(const kv_layout&, std::int32_t layer,
                                         std::int32_t) noexcept {
    return layer;
  }
};

/// @brief A page belongs to one (layer, kv head); a block table per (sequence, layer, kv head).
struct per_head {
  static constexpr const char* name = "per_head";
  static constexpr std::int32_t tables_per_sequence(const kv_layout& l) noexcept {
    return l.layers * l.kv_heads;
  }
  static constexpr std::int32_t heads_per_page(const kv_layout&) noexcept { return 1; }
  static constexpr std::int32_t layer_arrays(const kv_layout&) noexcept { return 1; }
  static constexpr std::int32_t table_of(const kv_layout& l, std::int32_t layer,
                                         std::int32_t head) noexcept {
    return layer * l.kv_heads + head;
  }
};

/// @brief A page geometry: the static functions above.
template <class G>
concept page_geometry = requires(const kv_layout& l, std::int32_t i) {
  { G::name } -> std::convertible_to<const char*>;
  { G::tables_per_sequence(l) } -> std::same_as<std::int32_t>;
  { G::heads_per_page(l) } -> std::same_as<std::int32_t>;
  { G::layer_arrays(l) } -> std::same_as<std::int32_t>;
  { G::table_of(l, i, i) } -> std::same_as<std::int32_t>;
};

static_assert(page_geometry<span_layers>);
static_assert(page_geometry<per_layer>);
static_assert(page_geometry<per_head>);

}  // namespace kvcache
