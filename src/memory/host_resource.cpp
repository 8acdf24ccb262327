#include "kvcache/memory/host_resource.hpp"

#include <new>

namespace kvcache {

void* host_resource::allocate(std::size_t bytes, std::size_t alignment) {
  detail::check_allocation(bytes, alignment, "host_resource");
  void* p = ::operator new(bytes, std::align_val_t{alignment}, std::nothrow);
  KVCACHE_EXPECTS(p != nullptr, errc::out_of_memory,
                  "host_resource: allocation of {} bytes (alignment {}) failed", bytes, alignment);
  return p;
}

void host_resource::deallocate(void* p, std::size_t /*bytes*/, std::size_t alignment) noexcept {
  ::operator delete(p, std::align_val_t{alignment});
}

template <>
resource_ref<host_space> default_resource<host_space>() {
  static host_resource resource;
  return resource_ref<host_space>{resource};
}

}  // namespace kvcache
