/**
 * @file quantizers.hpp
 * @brief Every quantizer kvcache ships, as a type list, and `visit_quantizer`, which turns a
 * runtime name (a command-line `--quant kivi2`) into a call with the type.
 */
#pragma once

#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kvcache/core/error.hpp"
#include "kvcache/quant/fp8.hpp"
#include "kvcache/quant/identity.hpp"
#include "kvcache/quant/int8.hpp"
#include "kvcache/quant/kivi.hpp"
#include "kvcache/quant/quantizer.hpp"

namespace kvcache {

/// @brief The quantizers with a runtime name, in the order of `quantizer_names`.
using named_quantizers = std::tuple<identity_quantizer, int8_quantizer, fp8_e4m3_quantizer, kivi2,
                                    kivi4, kivi2_token_keys, kivi4_token_keys>;

/// @brief Runtime names of `named_quantizers` ("none" is the identity).
inline constexpr std::string_view quantizer_names[] = {
    "none", "int8", "fp8", "kivi2", "kivi4", "kivi2_token_keys", "kivi4_token_keys"};

/// @brief Type tag passed to `visit_quantizer`'s callable.
template <class Q>
struct quantizer_tag {
  using type = Q;
};

/**
 * @brief Calls `f(quantizer_tag<Q>{})` for the quantizer named `name` (one of
 * `quantizer_names`; "identity" and "fp8_e4m3" are accepted as well) and returns its result.
 * @throws kvcache::error errc::invalid_argument naming `name` and listing the valid names.
 * @code
 * kvcache::visit_quantizer("kivi2", [&]<class Q>(kvcache::quantizer_tag<Q>) { run<Q>(); });
 * @endcode
 */
template <class F>
decltype(auto) visit_quantizer(std::string_view name, F&& f) {
  if (name == "identity") name = "none";
  if (name == "fp8_e4m3") name = "fp8";
  using result = decltype(f(quantizer_tag<identity_quantizer>{}));
  return [&]<std::size_t... I>(std::index_sequence<I...>) -> result {
    std::size_t found = sizeof...(I);
    ((name == quantizer_names[I] ? (found = I, true) : false) || ...);
    KVCACHE_EXPECTS(found < sizeof...(I), errc::invalid_argument,
                    "unknown quantizer '{}': expected one of none, int8, fp8, kivi2, kivi4, "
                    "kivi2_token_keys, kivi4_token_keys",
                    name);
    if constexpr (std::is_void_v<result>) {
      ((found == I ? (f(quantizer_tag<std::tuple_element_t<I, named_quantizers>>{}), 0) : 0), ...);
    } else {
      result r{};
      ((found == I ? (r = f(quantizer_tag<std::tuple_element_t<I, named_quantizers>>{}), 0) : 0),
       ...);
      return r;
    }
  }(std::make_index_sequence<std::tuple_size_v<named_quantizers>>{});
}

static_assert(std::tuple_size_v<named_quantizers> == std::size(quantizer_names));

}  // namespace kvcache
