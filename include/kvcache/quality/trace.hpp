/**
 * @file trace.hpp
 * @brief `trace`: recorded queries, keys, values and attention outputs of a real model.
 *
 * A trace file is a safetensors file written by tools/kvdump (format "kvcache-trace/1", see
 * tools/kvdump/README.md). For T tokens and each recorded model layer L it holds, in f16, bf16
 * or f32:
 *
 * | tensor        | shape                          | positions            |
 * | ------------- | ------------------------------ | -------------------- |
 * | `layerL.q`    | [T - q_first, q_heads, head_dim]   | q_first .. T-1   |
 * | `layerL.k`    | [T, kv_heads, head_dim]            | 0 .. T-1         |
 * | `layerL.v`    | [T, kv_heads, head_dim]            | 0 .. T-1         |
 * | `layerL.out`  | [T - out_first, q_heads, head_dim] | out_first .. T-1 |
 *
 * q and k are taken after the rotary embedding; `out` is softmax(q k^T / sqrt(head_dim)) v per
 * query head, before the output projection. Query head h reads kv head h / (q_heads / kv_heads).
 * An optional I32 tensor `tokens` [T] holds the token ids. The metadata holds the shape
 * (`tokens`, `layers`, `q_heads`, `kv_heads`, `head_dim`, `q_first`, `out_first`) and the
 * provenance (`model`, `text`, rope settings).
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace kvcache::quality {

class safetensors_file;

/// @brief The recorded tensors of one model layer, converted to f32, row-major.
struct trace_layer {
  int index = 0;           ///< the model's layer number
  std::vector<float> q;    ///< [q_count, q_heads, head_dim], positions q_first..T-1
  std::vector<float> k;    ///< [tokens, kv_heads, head_dim]
  std::vector<float> v;    ///< [tokens, kv_heads, head_dim]
  std::vector<float> out;  ///< [out_count, q_heads, head_dim], positions out_first..T-1
};

/**
 * @brief An attention trace held in memory as f32. Move-only (it can be large).
 */
class trace {
 public:
  /**
   * @brief Loads a trace file. @throws kvcache::error errc::io_error if unreadable,
   * errc::parse_error if malformed or a tensor or metadata key is missing,
   * errc::dtype_mismatch if a tensor is not floating point, errc::shape_mismatch if shapes
   * disagree with each other or with the metadata.
   */
  [[nodiscard]] static trace load(const std::filesystem::path& path);
  /// @brief Builds a trace from a parsed file (same checks as `load`).
  [[nodiscard]] static trace from(const safetensors_file& file);

  trace(trace&&) noexcept = default;
  trace& operator=(trace&&) noexcept = default;
  trace(const trace&) = delete;
  trace& operator=(const trace&) = delete;
  ~trace() = default;

  [[nodiscard]] std::int64_t tokens() const noexcept { return tokens_; }  ///< T
  [[nodiscard]] int q_heads() const noexcept { return q_heads_; }         ///< query heads
  [[nodiscard]] int kv_heads() const noexcept { return kv_heads_; }       ///< key/value heads
  [[nodiscard]] int head_dim() const noexcept { return head_dim_; }       ///< channels a head
  [[nodiscard]] int group_size() const noexcept { return q_heads_ / kv_heads_; }  ///< q per kv
  [[nodiscard]] std::int64_t q_first() const noexcept { return q_first_; }        ///< first query
  [[nodiscard]] std::int64_t out_first() const noexcept { return out_first_; }    ///< first output
  /// @brief The attention scale, 1 / sqrt(head_dim).
  [[nodiscard]] double scale() const noexcept;

  /// @brief The recorded layers, in file order.
  [[nodiscard]] std::span<const trace_layer> layers() const noexcept { return layers_; }
  /// @brief The layer with model index `index`. @throws errc::out_of_range if not recorded.
  [[nodiscard]] const trace_layer& layer(int index) const;
  /// @brief Token ids (empty if the file has none).
  [[nodiscard]] const std::vector<std::int32_t>& token_ids() const noexcept { return token_ids_; }
  /// @brief The file's metadata.
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const noexcept {
    return metadata_;
  }
  /// @brief The metadata value for `key`, or `fallback`.
  [[nodiscard]] std::string meta(const std::string& key, const std::string& fallback = "") const;
  /// @brief Where it was loaded from.
  [[nodiscard]] const std::string& source() const noexcept { return source_; }

  /// @brief The query of head `h` at position `pos` (q_first <= pos < T): head_dim floats.
  [[nodiscard]] std::span<const float> query(const trace_layer& l, std::int64_t pos, int h) const;
  /// @brief The key of kv head `h` at position `pos`: head_dim floats.
  [[nodiscard]] std::span<const float> key(const trace_layer& l, std::int64_t pos, int h) const;
  /// @brief The value of kv head `h` at position `pos`: head_dim floats.
  [[nodiscard]] std::span<const float> value(const trace_layer& l, std::int64_t pos, int h) const;
  /// @brief The recorded output of query head `h` at `pos` (out_first <= pos < T).
  [[nodiscard]] std::span<const float> output(const trace_layer& l, std::int64_t pos, int h) const;

 private:
  trace() = default;

  std::int64_t tokens_ = 0;
  int q_heads_ = 0;
  int kv_heads_ = 0;
  int head_dim_ = 0;
  std::int64_t q_first_ = 0;
  std::int64_t out_first_ = 0;
  std::vector<trace_layer> layers_;
  std::vector<std::int32_t> token_ids_;
  std::map<std::string, std::string> metadata_;
  std::string source_;
};

}  // namespace kvcache::quality
