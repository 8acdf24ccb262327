/**
 * @file safetensors.hpp
 * @brief `safetensors_file`: a strict, validating reader of the safetensors format.
 *
 * Layout: 8 bytes little-endian header length N, N bytes of UTF-8 JSON, then the data section.
 * The JSON maps each tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets
 * relative to the data section) and may hold `"__metadata__"`, a map of strings to strings.
 *
 * Everything is checked before a byte of tensor data is read: the header length against the
 * file size, the JSON (strict subset, see detail/json.hpp), each entry's keys and types, that
 * `end - begin` equals the element count times the element size, and that the tensors tile the
 * data section exactly (sorted by offset: no overlap, no gap, nothing past the end). Any failure
 * throws `kvcache::error` (errc::io_error for the file system, errc::parse_error for the bytes,
 * errc::not_supported for a valid dtype this reader does not decode) naming the value at fault.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvcache::quality {

/// @brief Element types this reader decodes (the safetensors names F16, BF16, F32, I32).
enum class st_dtype : std::uint8_t { f16, bf16, f32, i32 };

/// @brief The safetensors name of a dtype: "F16", "BF16", "F32", "I32".
[[nodiscard]] const char* name_of(st_dtype t) noexcept;
/// @brief Bytes per element.
[[nodiscard]] std::size_t size_of(st_dtype t) noexcept;

/// @brief One tensor's entry in the header.
struct tensor_info {
  std::string name;                 ///< key in the header
  st_dtype dtype = st_dtype::f32;   ///< element type
  std::vector<std::int64_t> shape;  ///< dimensions, outermost first (empty: a scalar)
  std::size_t offset = 0;           ///< begin, relative to the data section
  std::size_t size_bytes = 0;       ///< end - begin

  /// @brief Number of elements (the product of the shape; 1 for a scalar).
  [[nodiscard]] std::int64_t numel() const noexcept;
  /// @brief The shape as text, e.g. "[1024, 3, 64]".
  [[nodiscard]] std::string shape_string() const;
};

/**
 * @brief A safetensors file held in memory, validated on construction. Move-only.
 */
class safetensors_file {
 public:
  /**
   * @brief Reads and validates the file at `path`.
   * @throws kvcache::error errc::io_error if it cannot be read; errc::parse_error if malformed.
   */
  [[nodiscard]] static safetensors_file open(const std::filesystem::path& path);

  /**
   * @brief Validates `bytes` as a safetensors file; `source` names it in messages.
   * @throws kvcache::error errc::parse_error if malformed, errc::not_supported for a dtype
   * outside F16/BF16/F32/I32.
   */
  [[nodiscard]] static safetensors_file parse(std::vector<std::byte> bytes,
                                              std::string source = "<memory>");

  safetensors_file(safetensors_file&&) noexcept = default;
  safetensors_file& operator=(safetensors_file&&) noexcept = default;
  safetensors_file(const safetensors_file&) = delete;
  safetensors_file& operator=(const safetensors_file&) = delete;
  ~safetensors_file() = default;

  /// @brief The tensors, sorted by offset (file order).
  [[nodiscard]] const std::vector<tensor_info>& tensors() const noexcept { return tensors_; }
  /// @brief The `__metadata__` map (empty if absent).
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const noexcept {
    return metadata_;
  }
  /// @brief The name given at construction (the path for `open`).
  [[nodiscard]] const std::string& source() const noexcept { return source_; }

  /// @brief The tensor named `name`, or nullptr.
  [[nodiscard]] const tensor_info* find(std::string_view name) const noexcept;
  /// @brief The tensor named `name`. @throws kvcache::error errc::parse_error if absent.
  [[nodiscard]] const tensor_info& at(std::string_view name) const;
  /// @brief The raw little-endian bytes of a tensor of this file.
  [[nodiscard]] std::span<const std::byte> data(const tensor_info& t) const noexcept;

  /**
   * @brief The elements of a floating-point tensor (F16, BF16, F32) converted to float.
   * @throws kvcache::error errc::parse_error if absent, errc::dtype_mismatch for I32.
   */
  [[nodiscard]] std::vector<float> to_f32(std::string_view name) const;
  /// @brief The elements of an I32 tensor. @throws errc::dtype_mismatch for other dtypes.
  [[nodiscard]] std::vector<std::int32_t> to_i32(std::string_view name) const;

 private:
  safetensors_file() = default;

  std::vector<std::byte> bytes_;
  std::size_t data_begin_ = 0;
  std::vector<tensor_info> tensors_;
  std::map<std::string, std::string> metadata_;
  std::string source_;
};

/// @brief One tensor to write: raw little-endian bytes of `shape` elements of `dtype`.
struct tensor_blob {
  std::string name;
  st_dtype dtype = st_dtype::f32;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> bytes;
};

/**
 * @brief The bytes of a safetensors file holding `tensors` (in the given order, back to back)
 * and `metadata`; the header is padded with spaces to a multiple of 8 bytes.
 * @throws kvcache::error errc::invalid_argument if a blob's size disagrees with its shape or a
 * name repeats.
 */
[[nodiscard]] std::vector<std::byte> write_safetensors(
    const std::vector<tensor_blob>& tensors,
    const std::map<std::string, std::string>& metadata = {});

}  // namespace kvcache::quality
