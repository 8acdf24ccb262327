/**
 * @file error.hpp
 * @brief `kvcache::error`, its codes, and the checking macros every layer uses.
 *
 * Misuse (an unknown id, a bad shape, a double free) throws `kvcache::error` carrying an
 * `errc` and a message that names the offending value, the failed condition and file:line.
 * Running out of pages is not misuse: `try_` calls return an empty optional instead.
 */
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace kvcache {

/// @brief What went wrong; carried by every `kvcache::error`.
enum class errc : int {
  invalid_argument = 1,  ///< a parameter out of its documented domain (zero size, bad alignment)
  out_of_range,          ///< an index or length beyond what exists
  shape_mismatch,        ///< sizes or shapes of two operands do not agree
  dtype_mismatch,        ///< a tensor's element type is not the one expected
  out_of_memory,         ///< an allocation failed or would exceed a limit
  bad_free,              ///< deallocation of memory not owned, or freed twice
  unknown_id,            ///< an unknown or released sequence / page / handle id
  not_supported,         ///< a valid request this build or device cannot serve
  cuda_error,            ///< a CUDA runtime call failed
  io_error,              ///< reading or writing a file failed
  parse_error,           ///< malformed input data
  logic_error,           ///< an internal invariant broke (a bug in kvcache: please report)
};

/// @brief The name of a code, e.g. "out_of_memory".
[[nodiscard]] const char* to_string(errc code) noexcept;

/**
 * @brief The exception kvcache throws on misuse and on failed system calls.
 * @note `what()` reads "kvcache: <code>: <message> [<condition>] at <file>:<line>".
 */
class error : public std::runtime_error {
 public:
  error(errc code, const std::string& what) : std::runtime_error(what), code_(code) {}
  /// @brief The code this error carries.
  [[nodiscard]] errc code() const noexcept { return code_; }

 private:
  errc code_;
};

namespace detail {
/// @brief Builds the full message and throws `kvcache::error`. Out of line to keep call sites small.
[[noreturn]] void throw_error(errc code, const char* condition, const char* file, int line,
                              const std::string& message);
}  // namespace detail

}  // namespace kvcache

/**
 * @brief Throws `kvcache::error` with `code` unless `cond` holds; the remaining arguments are an
 * fmt format string and its values, which should name the bad value.
 * @code KVCACHE_EXPECTS(n > 0, kvcache::errc::invalid_argument, "page size {} must be > 0", n);
 */
#define KVCACHE_EXPECTS(cond, code, ...)                                                      \
  do {                                                                                        \
    if (!(cond)) [[unlikely]] {                                                               \
      ::kvcache::detail::throw_error((code), #cond, __FILE__, __LINE__,                       \
                                     ::fmt::format(__VA_ARGS__));                             \
    }                                                                                         \
  } while (0)

/// @brief Throws `kvcache::error` with `code` unconditionally (fmt-formatted message).
#define KVCACHE_FAIL(code, ...) \
  ::kvcache::detail::throw_error((code), nullptr, __FILE__, __LINE__, ::fmt::format(__VA_ARGS__))
