/**
 * @file page_allocator.hpp
 * @brief The `page_allocator` concept: hands out page ids of a fixed pool, with reference counts.
 *
 * A model provides (all O(1) per page, none allocating memory after construction):
 *  - `A(std::int32_t num_pages)`: every page free;
 *  - `std::optional<page_id> a.try_allocate()`: one page with reference count 1, or empty when
 *    none is free (nothing changes);
 *  - `bool a.try_allocate(std::span<page_id> out)`: fills all of `out` or, when fewer pages are
 *    free, changes nothing and returns false;
 *  - `a.add_ref(p)` / `bool a.drop_ref(p)`: the latter returns true when the page became free;
 *    both throw errc::bad_free / errc::out_of_range naming the page for a free or unknown page;
 *  - `a.ref_count(p)`, `a.free_count()`, `a.num_pages()`.
 * A new model (a buddy allocator, a NUMA-aware one, a priority-aware one) must keep those costs
 * and add a `static_assert(kvcache::page_allocator<my_allocator>)` at the end of its header.
 */
#pragma once

#include <concepts>
#include <cstdint>
#include <optional>
#include <span>

namespace kvcache {

/// @brief Index of a page in a page pool.
using page_id = std::int32_t;

template <class A>
concept page_allocator =
    std::constructible_from<A, std::int32_t> &&
    requires(A& a, const A& ca, page_id p, std::span<page_id> out) {
      { a.try_allocate() } -> std::same_as<std::optional<page_id>>;
      { a.try_allocate(out) } -> std::same_as<bool>;
      a.add_ref(p);
      { a.drop_ref(p) } -> std::same_as<bool>;
      { ca.ref_count(p) } -> std::same_as<std::int32_t>;
      { ca.free_count() } -> std::same_as<std::int32_t>;
      { ca.num_pages() } -> std::same_as<std::int32_t>;
    };

}  // namespace kvcache
