/**
 * @file stream.hpp
 * @brief `stream_view` (non-owning, always available) and the RAII `stream` and `event`
 * (CUDA only: their members are defined in kvcache::cuda).
 *
 * Every call that enqueues GPU work takes a `stream_view` last (before an optional resource).
 * A default-constructed `stream_view` is CUDA's legacy default stream on the GPU and means
 * "synchronous, now" for host-only work.
 */
#pragma once

#include <type_traits>

namespace kvcache {

/// @brief Non-owning handle to a CUDA stream (a `cudaStream_t` held as `void*`). Trivially copyable.
class stream_view {
 public:
  constexpr stream_view() noexcept = default;
  /// @brief Wraps a `cudaStream_t` (pass it as is; it converts to `void*`).
  constexpr explicit stream_view(void* cuda_stream) noexcept : handle_(cuda_stream) {}
  /// @brief The raw `cudaStream_t`, as `void*` (nullptr = the default stream).
  [[nodiscard]] constexpr void* handle() const noexcept { return handle_; }
  /// @brief True for the default stream.
  [[nodiscard]] constexpr bool is_default() const noexcept { return handle_ == nullptr; }
  friend constexpr bool operator==(stream_view, stream_view) = default;

 private:
  void* handle_ = nullptr;
};
static_assert(std::is_trivially_copyable_v<stream_view>);

/**
 * @brief Owning, move-only CUDA stream (non-blocking with respect to the default stream).
 * @note Needs kvcache::cuda. Destruction synchronizes nothing; it releases the handle.
 */
class stream {
 public:
  stream();  ///< cudaStreamCreateWithFlags(cudaStreamNonBlocking); throws errc::cuda_error
  ~stream();
  stream(stream&& other) noexcept : handle_(other.handle_) { other.handle_ = nullptr; }
  stream& operator=(stream&& other) noexcept;
  stream(const stream&) = delete;
  stream& operator=(const stream&) = delete;

  [[nodiscard]] stream_view view() const noexcept { return stream_view{handle_}; }
  operator stream_view() const noexcept { return view(); }  // NOLINT: as RMM's cuda_stream
  /// @brief Blocks until all work on the stream is done.
  void synchronize() const;

 private:
  void* handle_ = nullptr;
};

/**
 * @brief Owning, move-only CUDA event with timing enabled.
 * @note Needs kvcache::cuda.
 */
class event {
 public:
  event();  ///< cudaEventCreate; throws errc::cuda_error
  ~event();
  event(event&& other) noexcept : handle_(other.handle_) { other.handle_ = nullptr; }
  event& operator=(event&& other) noexcept;
  event(const event&) = delete;
  event& operator=(const event&) = delete;

  /// @brief Records the event on `s` (asynchronous).
  void record(stream_view s = {});
  /// @brief Blocks until the event has completed.
  void synchronize() const;
  /// @brief Makes `s` wait for this event (asynchronous).
  void wait(stream_view s) const;
  /// @brief Milliseconds between two recorded, completed events.
  [[nodiscard]] static float elapsed_ms(const event& start, const event& stop);
  [[nodiscard]] void* handle() const noexcept { return handle_; }

 private:
  void* handle_ = nullptr;
};

/// @brief Blocks the calling thread until all work on `s` is done. Defined in kvcache::cuda;
/// throws errc::cuda_error.
void synchronize(stream_view s);

/// @brief Number of usable CUDA devices; 0 where there is no driver or no device. Never throws.
/// Defined in kvcache::cuda.
[[nodiscard]] int cuda_device_count() noexcept;

}  // namespace kvcache
