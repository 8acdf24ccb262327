/**
 * @file prefetch.hpp
 * @brief `detail::prefetch`: a software prefetch of one cache line that the optimizer keeps.
 * GCC 12 at -O2 drops `__builtin_prefetch` calls in some inlined loops (dead-code elimination
 * treats them as having no effect), which silently undoes the prefetching the indexes rely on;
 * on x86 the instruction is emitted through `asm volatile` instead.
 */
#pragma once

namespace kvcache::detail {

/// @brief Prefetches the cache line holding `p` (any address; never faults).
inline void prefetch(const void* p) noexcept {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#elif defined(__GNUC__)
  __builtin_prefetch(p);
#else
  (void)p;
#endif
}

}  // namespace kvcache::detail
