/**
 * @file resource_ref.hpp
 * @brief `resource_ref<Space>`: a non-owning, type-erased handle to any memory resource of a
 * space, and the per-space default resources.
 */
#pragma once

#include <cstddef>
#include <type_traits>

#include "kvcache/memory/memory_resource.hpp"

namespace kvcache {

/**
 * @brief Non-owning handle to a `memory_resource` serving `Space`; trivially copyable.
 * @note The resource must outlive every ref and every allocation made through it.
 */
template <memory_space Space>
class resource_ref {
 public:
  using space_type = Space;

  template <class R>
    requires(!std::is_same_v<std::remove_cv_t<R>, resource_ref>) && resource_for<R, Space>
  resource_ref(R& r) noexcept  // NOLINT: implicit, as cuda::mr::resource_ref
      : object_(&r),
        allocate_([](void* o, std::size_t b, std::size_t a) {
          return static_cast<R*>(o)->allocate(b, a);
        }),
        deallocate_([](void* o, void* p, std::size_t b, std::size_t a) {
          static_cast<R*>(o)->deallocate(p, b, a);
        }) {}

  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t alignment = default_alignment) const {
    return allocate_(object_, bytes, alignment);
  }
  void deallocate(void* p, std::size_t bytes, std::size_t alignment = default_alignment) const {
    deallocate_(object_, p, bytes, alignment);
  }
  /// @brief The address of the resource behind the ref (identity).
  [[nodiscard]] const void* target() const noexcept { return object_; }
  friend bool operator==(const resource_ref& a, const resource_ref& b) noexcept {
    return a.object_ == b.object_;
  }

 private:
  void* object_;
  void* (*allocate_)(void*, std::size_t, std::size_t);
  void (*deallocate_)(void*, void*, std::size_t, std::size_t);
};

/**
 * @brief The process-wide default resource of a space: `host_resource` for host_space,
 * `cuda_resource` for cuda_space and `pinned_host_resource` for pinned_host_space (the last two
 * defined in kvcache::cuda). Thread-safe; lives until exit.
 */
template <memory_space Space>
resource_ref<Space> default_resource();

template <>
resource_ref<host_space> default_resource<host_space>();
template <>
resource_ref<cuda_space> default_resource<cuda_space>();
template <>
resource_ref<pinned_host_space> default_resource<pinned_host_space>();

}  // namespace kvcache
