#include "kvcache/quality/detail/json.hpp"

#include <limits>

#include "kvcache/core/error.hpp"

namespace kvcache::quality::detail {

const json_value* json_value::find(std::string_view key) const {
  if (!is_object()) return nullptr;
  for (const auto& [k, v] : object()) {
    if (k == key) return &v;
  }
  return nullptr;
}

const char* kind_name(json_value::kind k) noexcept {
  switch (k) {
    case json_value::kind::integer:
      return "integer";
    case json_value::kind::string:
      return "string";
    case json_value::kind::array:
      return "array";
    case json_value::kind::object:
      return "object";
  }
  return "unknown";
}

namespace {

class parser {
 public:
  parser(std::string_view text, std::string_view what, int max_depth)
      : s_(text), what_(what), max_depth_(max_depth) {}

  json_value parse_document() {
    skip_ws();
    json_value v = parse_value(0);
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected '{}' after the end of the value", shown(peek()));
    return v;
  }

 private:
  template <typename... Args>
  [[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) const {
    KVCACHE_FAIL(errc::parse_error, "{}: invalid JSON at byte {}: {}", what_, pos_,
                 fmt::format(f, std::forward<Args>(args)...));
  }

  static std::string shown(int c) {
    if (c < 0) return "end of input";
    if (c >= 0x20 && c < 0x7f) return std::string(1, static_cast<char>(c));
    return fmt::format("\\x{:02x}", c);
  }

  int peek() const { return pos_ < s_.size() ? static_cast<unsigned char>(s_[pos_]) : -1; }

  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }

  void expect(char c) {
    if (peek() != static_cast<unsigned char>(c)) fail("expected '{}', found {}", c, shown(peek()));
    ++pos_;
  }

  json_value parse_value(int depth) {
    const int c = peek();
    if (c == '{') return parse_object(depth + 1);
    if (c == '[') return parse_array(depth + 1);
    if (c == '"') return json_value(parse_string());
    if (c == '-' || (c >= '0' && c <= '9')) return json_value(parse_integer());
    if (c == 't' || c == 'f' || c == 'n') fail("true, false and null are not accepted here");
    fail("expected a value, found {}", shown(c));
  }

  void check_depth(int depth) const {
    if (depth > max_depth_) fail("nesting deeper than {}", max_depth_);
  }

  json_value parse_object(int depth) {
    check_depth(depth);
    expect('{');
    json_object members;
    skip_ws();
    if (peek() == '}') {
      ++pos_;
      return json_value(std::move(members));
    }
    for (;;) {
      skip_ws();
      if (peek() != '"') fail("expected a string key, found {}", shown(peek()));
      const std::size_t key_pos = pos_;
      std::string key = parse_string();
      for (const auto& m : members) {
        if (m.first == key) {
          pos_ = key_pos;
          fail("duplicate key \"{}\"", key);
        }
      }
      skip_ws();
      expect(':');
      skip_ws();
      json_value v = parse_value(depth);
      members.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        return json_value(std::move(members));
      }
      fail("expected ',' or '}}' in an object, found {}", shown(peek()));
    }
  }

  json_value parse_array(int depth) {
    check_depth(depth);
    expect('[');
    json_array items;
    skip_ws();
    if (peek() == ']') {
      ++pos_;
      return json_value(std::move(items));
    }
    for (;;) {
      skip_ws();
      items.push_back(parse_value(depth));
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        return json_value(std::move(items));
      }
      fail("expected ',' or ']' in an array, found {}", shown(peek()));
    }
  }

  std::int64_t parse_integer() {
    const bool negative = peek() == '-';
    if (negative) ++pos_;
    if (peek() < '0' || peek() > '9') fail("expected a digit, found {}", shown(peek()));
    if (peek() == '0' && pos_ + 1 < s_.size() && s_[pos_ + 1] >= '0' && s_[pos_ + 1] <= '9') {
      fail("leading zeros are not allowed");
    }
    // Accumulate as a negative number so that INT64_MIN fits.
    std::int64_t value = 0;
    constexpr std::int64_t lowest = std::numeric_limits<std::int64_t>::min();
    while (peek() >= '0' && peek() <= '9') {
      const int digit = peek() - '0';
      if (value < (lowest + digit) / 10) fail("integer out of the int64 range");
      value = value * 10 - digit;
      ++pos_;
    }
    if (peek() == '.' || peek() == 'e' || peek() == 'E') {
      fail("only integers are accepted, found {}", shown(peek()));
    }
    if (!negative) {
      if (value == lowest) fail("integer out of the int64 range");
      value = -value;
    }
    return value;
  }

  unsigned parse_hex4() {
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const int c = peek();
      unsigned d = 0;
      if (c >= '0' && c <= '9') {
        d = static_cast<unsigned>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        d = static_cast<unsigned>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        d = static_cast<unsigned>(c - 'A' + 10);
      } else {
        fail("expected a hex digit in \\u escape, found {}", shown(c));
      }
      v = v * 16 + d;
      ++pos_;
    }
    return v;
  }

  static void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string parse_string() {
    expect('"');
    std::string out;
    for (;;) {
      const int c = peek();
      if (c < 0) fail("unterminated string");
      ++pos_;
      if (c == '"') return out;
      if (c < 0x20) {
        --pos_;
        fail("control character {} in a string", shown(c));
      }
      if (c != '\\') {
        out += static_cast<char>(c);
        continue;
      }
      const int e = peek();
      ++pos_;
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          unsigned cp = parse_hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (peek() != '\\') fail("unpaired high surrogate \\u{:04x}", cp);
            ++pos_;
            if (peek() != 'u') fail("unpaired high surrogate \\u{:04x}", cp);
            ++pos_;
            const unsigned lo = parse_hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("bad low surrogate \\u{:04x}", lo);
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail("unpaired low surrogate \\u{:04x}", cp);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          --pos_;
          fail("bad escape '\\{}'", shown(e));
      }
    }
  }

  std::string_view s_;
  std::string_view what_;
  int max_depth_;
  std::size_t pos_ = 0;
};

}  // namespace

json_value parse_json(std::string_view text, std::string_view what, int max_depth) {
  return parser(text, what, max_depth).parse_document();
}

std::string json_quote(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += fmt::format("\\u{:04x}", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
  return out;
}

}  // namespace kvcache::quality::detail
