/**
 * @file kvcache.hpp
 * @brief Umbrella header: every public header of kvcache's host library. CUDA-only types
 * (cuda_resource, pinned_host_resource, cuda_async_pool_resource) are declared here too; their
 * members are defined in kvcache::cuda, which is available where KVCACHE_HAS_CUDA is defined.
 */
#pragma once

#include "kvcache/core/config.hpp"
#include "kvcache/core/dtype.hpp"
#include "kvcache/core/error.hpp"
#include "kvcache/core/kv_layout.hpp"
#include "kvcache/memory/buffer.hpp"
#include "kvcache/memory/copy.hpp"
#include "kvcache/memory/cuda_async_pool_resource.hpp"
#include "kvcache/memory/cuda_resource.hpp"
#include "kvcache/memory/host_resource.hpp"
#include "kvcache/memory/limiting_adaptor.hpp"
#include "kvcache/memory/memory_resource.hpp"
#include "kvcache/memory/pinned_host_resource.hpp"
#include "kvcache/memory/resource_ref.hpp"
#include "kvcache/memory/space.hpp"
#include "kvcache/memory/statistics_adaptor.hpp"
#include "kvcache/memory/stream.hpp"
#include "kvcache/paging/batch_builder.hpp"
#include "kvcache/paging/block_table.hpp"
#include "kvcache/paging/geometry.hpp"
#include "kvcache/paging/kernels.hpp"
#include "kvcache/paging/lifo_allocator.hpp"
#include "kvcache/paging/page_allocator.hpp"
#include "kvcache/paging/page_pool.hpp"
#include "kvcache/paging/paged_kv_store.hpp"
#include "kvcache/paging/paged_kv_view.hpp"
#include "kvcache/quality/baselines.hpp"
#include "kvcache/quality/compression.hpp"
#include "kvcache/quality/safetensors.hpp"
#include "kvcache/quality/score.hpp"
#include "kvcache/quality/trace.hpp"
