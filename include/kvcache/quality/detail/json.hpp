/**
 * @file json.hpp
 * @brief A strict parser for the JSON subset that safetensors headers use (internal).
 *
 * Accepts objects, arrays, strings (all escapes, \\u with surrogate pairs, UTF-8 passed through)
 * and integers. Rejects what a safetensors header never holds and what would make the reader
 * ambiguous or unsafe: fractions and exponents, `true`/`false`/`null`, duplicate keys, control
 * characters in strings, nesting deeper than `max_depth`, integers outside int64, and anything
 * but whitespace after the top-level value. Every failure throws `kvcache::error` with
 * errc::parse_error naming the byte offset.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace kvcache::quality::detail {

class json_value;

/// @brief Members of a JSON object, in document order (keys are unique).
using json_object = std::vector<std::pair<std::string, json_value>>;
/// @brief Elements of a JSON array.
using json_array = std::vector<json_value>;

/// @brief One parsed JSON value: an integer, a string, an array or an object.
class json_value {
 public:
  enum class kind : std::uint8_t { integer, string, array, object };

  json_value() = default;
  explicit json_value(std::int64_t v) : v_(v) {}
  explicit json_value(std::string v) : v_(std::move(v)) {}
  explicit json_value(json_array v) : v_(std::make_shared<json_array>(std::move(v))) {}
  explicit json_value(json_object v) : v_(std::make_shared<json_object>(std::move(v))) {}

  [[nodiscard]] kind type() const noexcept { return static_cast<kind>(v_.index()); }
  [[nodiscard]] bool is_integer() const noexcept { return type() == kind::integer; }
  [[nodiscard]] bool is_string() const noexcept { return type() == kind::string; }
  [[nodiscard]] bool is_array() const noexcept { return type() == kind::array; }
  [[nodiscard]] bool is_object() const noexcept { return type() == kind::object; }

  /// @brief The value; the caller checks the kind first (std::get throws otherwise).
  [[nodiscard]] std::int64_t integer() const { return std::get<std::int64_t>(v_); }
  [[nodiscard]] const std::string& string() const { return std::get<std::string>(v_); }
  [[nodiscard]] const json_array& array() const {
    return *std::get<std::shared_ptr<json_array>>(v_);
  }
  [[nodiscard]] const json_object& object() const {
    return *std::get<std::shared_ptr<json_object>>(v_);
  }
  /// @brief The member `key` of an object, or nullptr.
  [[nodiscard]] const json_value* find(std::string_view key) const;

 private:
  std::variant<std::int64_t, std::string, std::shared_ptr<json_array>, std::shared_ptr<json_object>>
      v_{std::int64_t{0}};
};

/// @brief Name of a kind ("integer", "string", "array", "object") for messages.
[[nodiscard]] const char* kind_name(json_value::kind k) noexcept;

/**
 * @brief Parses `text` as one JSON value followed only by whitespace.
 * @param what names the input in error messages (e.g. the file name).
 * @throws kvcache::error errc::parse_error with the byte offset and what was expected.
 */
[[nodiscard]] json_value parse_json(std::string_view text, std::string_view what = "JSON",
                                    int max_depth = 16);

/// @brief `s` as a JSON string literal (quotes and escapes), for writers.
[[nodiscard]] std::string json_quote(std::string_view s);

}  // namespace kvcache::quality::detail
