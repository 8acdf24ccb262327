#include "kvcache/core/error.hpp"

#include <cstring>

namespace kvcache {

const char* to_string(errc code) noexcept {
  switch (code) {
    case errc::invalid_argument: return "invalid_argument";
    case errc::out_of_range: return "out_of_range";
    case errc::shape_mismatch: return "shape_mismatch";
    case errc::dtype_mismatch: return "dtype_mismatch";
    case errc::out_of_memory: return "out_of_memory";
    case errc::bad_free: return "bad_free";
    case errc::unknown_id: return "unknown_id";
    case errc::not_supported: return "not_supported";
    case errc::cuda_error: return "cuda_error";
    case errc::io_error: return "io_error";
    case errc::parse_error: return "parse_error";
    case errc::logic_error: return "logic_error";
  }
  return "unknown_error";
}

namespace detail {

[[noreturn]] void throw_error(errc code, const char* condition, const char* file, int line,
                              const std::string& message) {
  // Keep the path short: the part after the last "include/", "src/" or "cuda/" is enough.
  const char* shown = file;
  for (const char* marker : {"include/", "src/", "cuda/", "tests/", "examples/", "bench/"}) {
    if (const char* p = std::strstr(file, marker)) {
      shown = p;
      break;
    }
  }
  std::string what = fmt::format("kvcache: {}: {}", to_string(code), message);
  if (condition != nullptr) what += fmt::format(" [failed: {}]", condition);
  what += fmt::format(" at {}:{}", shown, line);
  throw error(code, what);
}

}  // namespace detail
}  // namespace kvcache
