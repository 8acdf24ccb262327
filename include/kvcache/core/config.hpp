/**
 * @file config.hpp
 * @brief Compiler portability macros shared by host and CUDA code.
 */
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define KVCACHE_HOST_DEVICE __host__ __device__
#define KVCACHE_DEVICE __device__
#else
#define KVCACHE_HOST_DEVICE
#define KVCACHE_DEVICE
#endif

#define KVCACHE_VERSION_MAJOR 0
#define KVCACHE_VERSION_MINOR 1
#define KVCACHE_VERSION_PATCH 0
