/**
 * @file space.hpp
 * @brief Memory spaces: where bytes live and who can touch them.
 *
 * A space is an empty tag type with two flags. `host_space` is pageable host memory;
 * `pinned_host_space` is page-locked host memory the GPU can DMA from and to (and map);
 * `cuda_space` is device memory of the current CUDA device.
 */
#pragma once

#include <concepts>
#include <string_view>

namespace kvcache {

/// @brief Pageable host memory (malloc / operator new).
struct host_space {
  static constexpr bool host_accessible = true;    ///< the CPU may dereference it
  static constexpr bool device_accessible = false; ///< a kernel may dereference it
  static constexpr std::string_view name = "host";
};

/// @brief Page-locked host memory (cudaHostAlloc): host-accessible, DMA-able, mapped for kernels.
struct pinned_host_space {
  static constexpr bool host_accessible = true;
  static constexpr bool device_accessible = true;
  static constexpr std::string_view name = "pinned_host";
};

/// @brief Device memory of the current CUDA device (cudaMalloc, cudaMallocAsync).
struct cuda_space {
  static constexpr bool host_accessible = false;
  static constexpr bool device_accessible = true;
  static constexpr std::string_view name = "cuda";
};

/// @brief A memory space tag: two accessibility flags and a name.
template <class S>
concept memory_space = requires {
  { S::host_accessible } -> std::convertible_to<bool>;
  { S::device_accessible } -> std::convertible_to<bool>;
  { S::name } -> std::convertible_to<std::string_view>;
};

static_assert(memory_space<host_space>);
static_assert(memory_space<pinned_host_space>);
static_assert(memory_space<cuda_space>);

}  // namespace kvcache
