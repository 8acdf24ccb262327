/**
 * @file buffer.hpp
 * @brief `buffer<T, Space>`: move-only owning array in a memory space, and `buffer_view`, its
 * non-owning span-like view.
 */
#pragma once

#include <cstddef>
#include <span>
#include <type_traits>
#include <utility>

#include "kvcache/memory/resource_ref.hpp"

namespace kvcache {

/**
 * @brief Non-owning view of `size()` elements of `T` in `Space`: a pointer and a count,
 * trivially copyable, passed by value to launchers and kernels.
 * @note Element access from the host is only offered for host-accessible spaces.
 */
template <class T, memory_space Space>
class buffer_view {
 public:
  using element_type = T;
  using space_type = Space;

  constexpr buffer_view() noexcept = default;
  constexpr buffer_view(T* data, std::size_t size) noexcept : data_(data), size_(size) {}
  /// @brief A view of const elements converts from a view of mutable ones.
  template <class U>
    requires std::is_same_v<const U, T> && (!std::is_same_v<U, T>)
  constexpr buffer_view(buffer_view<U, Space> other) noexcept  // NOLINT: implicit, as span
      : data_(other.data()), size_(other.size()) {}

  [[nodiscard]] constexpr T* data() const noexcept { return data_; }
  [[nodiscard]] constexpr std::size_t size() const noexcept { return size_; }
  [[nodiscard]] constexpr std::size_t size_bytes() const noexcept { return size_ * sizeof(T); }
  [[nodiscard]] constexpr bool empty() const noexcept { return size_ == 0; }

  /// @brief Elements [offset, offset + count); throws errc::out_of_range naming the bounds.
  [[nodiscard]] buffer_view subview(std::size_t offset, std::size_t count) const {
    KVCACHE_EXPECTS(offset <= size_ && count <= size_ - offset, errc::out_of_range,
                    "buffer_view::subview({}, {}) of a view of {} elements", offset, count, size_);
    return buffer_view{data_ + offset, count};
  }
  /// @brief Host access (host-accessible spaces only); unchecked.
  [[nodiscard]] constexpr T& operator[](std::size_t i) const noexcept
    requires(Space::host_accessible)
  {
    return data_[i];
  }
  /// @brief As a std::span (host-accessible spaces only).
  [[nodiscard]] constexpr std::span<T> span() const noexcept
    requires(Space::host_accessible)
  {
    return {data_, size_};
  }
  [[nodiscard]] constexpr T* begin() const noexcept requires(Space::host_accessible) {
    return data_;
  }
  [[nodiscard]] constexpr T* end() const noexcept requires(Space::host_accessible) {
    return data_ + size_;
  }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

/**
 * @brief Move-only owning array of trivially copyable `T` in `Space`, allocated from a
 * `resource_ref<Space>` (the space's default resource unless one is given). Elements are not
 * initialized. A buffer of size 0 allocates nothing.
 * @note Not thread-safe (like std::vector). Construction and destruction cost one allocate and one
 * deallocate of the resource; nothing else allocates.
 */
template <class T, memory_space Space = host_space>
class buffer {
  static_assert(std::is_trivially_copyable_v<T>,
                "kvcache::buffer holds bytes that kernels and memcpy move: T must be trivially "
                "copyable.");

 public:
  using element_type = T;
  using space_type = Space;
  using view_type = buffer_view<T, Space>;
  using const_view_type = buffer_view<const T, Space>;

  /// @brief An empty buffer using the default resource.
  buffer() : resource_(default_resource<Space>()) {}
  /// @brief Uninitialized storage for `size` elements.
  /// @throws kvcache::error errc::out_of_memory (from the resource), errc::invalid_argument when
  /// size * sizeof(T) overflows or exceeds `max_allocation_bytes`.
  explicit buffer(std::size_t size, resource_ref<Space> resource = default_resource<Space>())
      : resource_(resource), size_(size) {
    if (size_ != 0) {
      KVCACHE_EXPECTS(size_ <= max_allocation_bytes / sizeof(T), errc::invalid_argument,
                      "buffer: {} elements of {} bytes is over the {} byte maximum", size_,
                      sizeof(T), max_allocation_bytes);
      data_ = static_cast<T*>(resource_.allocate(size_ * sizeof(T), alignment()));
    }
  }
  ~buffer() { reset(); }
  buffer(buffer&& other) noexcept
      : resource_(other.resource_),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  buffer& operator=(buffer&& other) noexcept {
    if (this != &other) {
      reset();
      resource_ = other.resource_;
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  buffer(const buffer&) = delete;
  buffer& operator=(const buffer&) = delete;

  [[nodiscard]] T* data() noexcept { return data_; }
  [[nodiscard]] const T* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::size_t size_bytes() const noexcept { return size_ * sizeof(T); }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] resource_ref<Space> resource() const noexcept { return resource_; }

  [[nodiscard]] view_type view() noexcept { return {data_, size_}; }
  [[nodiscard]] const_view_type view() const noexcept { return {data_, size_}; }
  operator view_type() noexcept { return view(); }              // NOLINT
  operator const_view_type() const noexcept { return view(); }  // NOLINT

  [[nodiscard]] T& operator[](std::size_t i) noexcept requires(Space::host_accessible) {
    return data_[i];
  }
  [[nodiscard]] const T& operator[](std::size_t i) const noexcept
    requires(Space::host_accessible)
  {
    return data_[i];
  }
  [[nodiscard]] std::span<T> span() noexcept requires(Space::host_accessible) {
    return {data_, size_};
  }
  [[nodiscard]] std::span<const T> span() const noexcept requires(Space::host_accessible) {
    return {data_, size_};
  }
  [[nodiscard]] T* begin() noexcept requires(Space::host_accessible) { return data_; }
  [[nodiscard]] T* end() noexcept requires(Space::host_accessible) { return data_ + size_; }
  [[nodiscard]] const T* begin() const noexcept requires(Space::host_accessible) { return data_; }
  [[nodiscard]] const T* end() const noexcept requires(Space::host_accessible) {
    return data_ + size_;
  }

  /// @brief Frees the storage now; the buffer becomes empty.
  void reset() noexcept {
    if (data_ != nullptr) {
      try {
        resource_.deallocate(data_, size_ * sizeof(T), alignment());
      } catch (...) {  // a checking adaptor may throw; a destructor must not
      }
      data_ = nullptr;
      size_ = 0;
    }
  }

 private:
  static constexpr std::size_t alignment() noexcept {
    return alignof(T) > default_alignment ? alignof(T) : default_alignment;
  }
  resource_ref<Space> resource_;
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

static_assert(std::is_trivially_copyable_v<buffer_view<float, host_space>>);
static_assert(!std::is_copy_constructible_v<buffer<float>>);
static_assert(std::is_nothrow_move_constructible_v<buffer<float>>);

}  // namespace kvcache
