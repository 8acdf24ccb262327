#include "kvcache/quality/safetensors.hpp"

#include <fmt/ranges.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>

#include "kvcache/core/error.hpp"
#include "kvcache/core/numeric.hpp"
#include "kvcache/quality/detail/json.hpp"

static_assert(std::endian::native == std::endian::little,
              "kvcache's safetensors reader assumes a little-endian host.");

namespace kvcache::quality {

namespace {

// The reference implementation refuses headers over 100 MB; so do we.
constexpr std::uint64_t max_header_bytes = 100'000'000;

using detail::json_value;

struct dtype_name {
  const char* name;
  bool supported;
  st_dtype dtype;
};

// Every dtype name the safetensors format defines; the ones we decode are marked.
constexpr dtype_name known_dtypes[] = {
    {"F16", true, st_dtype::f16},
    {"BF16", true, st_dtype::bf16},
    {"F32", true, st_dtype::f32},
    {"I32", true, st_dtype::i32},
    {"F64", false, {}},
    {"I64", false, {}},
    {"U64", false, {}},
    {"U32", false, {}},
    {"I16", false, {}},
    {"U16", false, {}},
    {"I8", false, {}},
    {"U8", false, {}},
    {"BOOL", false, {}},
    {"F8_E4M3", false, {}},
    {"F8_E5M2", false, {}},
    {"F8_E8M0", false, {}},
    {"F4", false, {}},
    {"F6_E2M3", false, {}},
    {"F6_E3M2", false, {}},
    {"C64", false, {}},
};

std::string truncated(std::string_view s) {
  constexpr std::size_t limit = 64;
  if (s.size() <= limit) return std::string(s);
  return std::string(s.substr(0, limit)) + "...";
}

st_dtype parse_dtype_name(const std::string& src, const std::string& tensor, const std::string& s) {
  for (const auto& d : known_dtypes) {
    if (s == d.name) {
      KVCACHE_EXPECTS(d.supported, errc::not_supported,
                      "{}: tensor '{}' has dtype {}, which this reader does not decode (F16, BF16, "
                      "F32, I32)",
                      src, truncated(tensor), s);
      return d.dtype;
    }
  }
  KVCACHE_FAIL(errc::parse_error, "{}: tensor '{}' has unknown dtype \"{}\"", src,
               truncated(tensor), truncated(s));
}

tensor_info parse_entry(const std::string& src, const std::string& name, const json_value& v,
                        std::uint64_t data_size) {
  KVCACHE_EXPECTS(v.is_object(), errc::parse_error, "{}: entry '{}' is a JSON {}, not an object",
                  src, truncated(name), detail::kind_name(v.type()));
  const json_value* dtype = nullptr;
  const json_value* shape = nullptr;
  const json_value* offsets = nullptr;
  for (const auto& [key, value] : v.object()) {
    if (key == "dtype") {
      dtype = &value;
    } else if (key == "shape") {
      shape = &value;
    } else if (key == "data_offsets") {
      offsets = &value;
    } else {
      KVCACHE_FAIL(errc::parse_error, "{}: tensor '{}' has unexpected key \"{}\"", src,
                   truncated(name), truncated(key));
    }
  }
  KVCACHE_EXPECTS(dtype != nullptr && shape != nullptr && offsets != nullptr, errc::parse_error,
                  "{}: tensor '{}' lacks {}", src, truncated(name),
                  dtype == nullptr   ? "\"dtype\""
                  : shape == nullptr ? "\"shape\""
                                     : "\"data_offsets\"");
  KVCACHE_EXPECTS(dtype->is_string(), errc::parse_error,
                  "{}: tensor '{}': dtype is a {}, not a string", src, truncated(name),
                  detail::kind_name(dtype->type()));
  tensor_info t;
  t.name = name;
  t.dtype = parse_dtype_name(src, name, dtype->string());

  KVCACHE_EXPECTS(shape->is_array(), errc::parse_error,
                  "{}: tensor '{}': shape is a {}, not an array", src, truncated(name),
                  detail::kind_name(shape->type()));
  KVCACHE_EXPECTS(shape->array().size() <= 8, errc::parse_error,
                  "{}: tensor '{}' has {} dimensions (at most 8 accepted)", src, truncated(name),
                  shape->array().size());
  // Element count, with overflow checks: it must fit the data section anyway.
  std::uint64_t numel = 1;
  bool overflow = false;
  for (const auto& d : shape->array()) {
    KVCACHE_EXPECTS(d.is_integer() && d.integer() >= 0, errc::parse_error,
                    "{}: tensor '{}': shape entries must be non-negative integers", src,
                    truncated(name));
    const auto dim = static_cast<std::uint64_t>(d.integer());
    t.shape.push_back(d.integer());
    // Every prefix product must fit int64 (tensor_info::numel computes in int64), even when a
    // later zero dimension makes the total 0.
    constexpr auto limit = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    if (dim != 0 && numel > limit / dim) overflow = true;
    numel *= dim;
  }
  const std::uint64_t esize = size_of(t.dtype);
  if (numel > std::numeric_limits<std::uint64_t>::max() / esize) overflow = true;
  KVCACHE_EXPECTS(!overflow, errc::parse_error, "{}: tensor '{}': shape {} overflows", src,
                  truncated(name), t.shape_string());

  KVCACHE_EXPECTS(offsets->is_array() && offsets->array().size() == 2, errc::parse_error,
                  "{}: tensor '{}': data_offsets must be an array [begin, end]", src,
                  truncated(name));
  const auto& b = offsets->array()[0];
  const auto& e = offsets->array()[1];
  KVCACHE_EXPECTS(b.is_integer() && e.is_integer() && b.integer() >= 0 && e.integer() >= 0,
                  errc::parse_error, "{}: tensor '{}': data_offsets must be non-negative integers",
                  src, truncated(name));
  const auto begin = static_cast<std::uint64_t>(b.integer());
  const auto end = static_cast<std::uint64_t>(e.integer());
  KVCACHE_EXPECTS(begin <= end, errc::parse_error,
                  "{}: tensor '{}': data_offsets [{}, {}] decrease", src, truncated(name), begin,
                  end);
  KVCACHE_EXPECTS(end <= data_size, errc::parse_error,
                  "{}: tensor '{}': data_offsets [{}, {}] run past the {}-byte data section "
                  "(file truncated?)",
                  src, truncated(name), begin, end, data_size);
  KVCACHE_EXPECTS(
      end - begin == numel * esize, errc::parse_error,
      "{}: tensor '{}': {} {} elements take {} bytes, but data_offsets [{}, {}] hold {}", src,
      truncated(name), t.shape_string(), name_of(t.dtype), numel * esize, begin, end, end - begin);
  t.offset = static_cast<std::size_t>(begin);
  t.size_bytes = static_cast<std::size_t>(end - begin);
  return t;
}

}  // namespace

const char* name_of(st_dtype t) noexcept {
  switch (t) {
    case st_dtype::f16:
      return "F16";
    case st_dtype::bf16:
      return "BF16";
    case st_dtype::f32:
      return "F32";
    case st_dtype::i32:
      return "I32";
  }
  return "?";
}

std::size_t size_of(st_dtype t) noexcept {
  switch (t) {
    case st_dtype::f16:
    case st_dtype::bf16:
      return 2;
    case st_dtype::f32:
    case st_dtype::i32:
      return 4;
  }
  return 1;
}

std::int64_t tensor_info::numel() const noexcept {
  std::int64_t n = 1;
  for (const auto d : shape) n *= d;
  return n;
}

std::string tensor_info::shape_string() const {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

safetensors_file safetensors_file::open(const std::filesystem::path& path) {
  std::error_code ec;
  KVCACHE_EXPECTS(std::filesystem::is_regular_file(path, ec), errc::io_error,
                  "'{}' is not a readable regular file{}", path.string(),
                  ec ? ": " + ec.message() : std::string());
  std::ifstream in(path, std::ios::binary);
  KVCACHE_EXPECTS(in.good(), errc::io_error, "cannot open '{}' for reading: {}", path.string(),
                  std::strerror(errno));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  KVCACHE_EXPECTS(size >= 0, errc::io_error, "cannot determine the size of '{}'", path.string());
  in.seekg(0, std::ios::beg);
  std::vector<std::byte> bytes(static_cast<std::size_t>(size));
  if (size > 0) in.read(reinterpret_cast<char*>(bytes.data()), size);
  KVCACHE_EXPECTS(in.good() || (size == 0 && !in.bad()), errc::io_error,
                  "reading {} bytes of '{}' failed", size, path.string());
  return parse(std::move(bytes), path.string());
}

safetensors_file safetensors_file::parse(std::vector<std::byte> bytes, std::string source) {
  safetensors_file f;
  f.source_ = std::move(source);
  const std::string& src = f.source_;
  KVCACHE_EXPECTS(bytes.size() >= 8, errc::parse_error,
                  "{}: {} bytes, shorter than the 8-byte header length (file truncated?)", src,
                  bytes.size());
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  KVCACHE_EXPECTS(n <= max_header_bytes, errc::parse_error,
                  "{}: header length {} exceeds the {}-byte limit", src, n, max_header_bytes);
  KVCACHE_EXPECTS(n <= bytes.size() - 8, errc::parse_error,
                  "{}: header length {} runs past the end of the {}-byte file (file truncated?)",
                  src, n, bytes.size());
  KVCACHE_EXPECTS(n >= 2, errc::parse_error, "{}: header length {} cannot hold a JSON object", src,
                  n);
  const std::string_view header(reinterpret_cast<const char*>(bytes.data()) + 8,
                                static_cast<std::size_t>(n));
  KVCACHE_EXPECTS(header.front() == '{', errc::parse_error,
                  "{}: the header must start with '{{', found byte 0x{:02x}", src,
                  static_cast<unsigned char>(header.front()));
  const json_value root = detail::parse_json(header, src + " header");
  KVCACHE_EXPECTS(root.is_object(), errc::parse_error, "{}: the header is not a JSON object", src);

  f.data_begin_ = 8 + static_cast<std::size_t>(n);
  const std::uint64_t data_size = bytes.size() - f.data_begin_;
  for (const auto& [key, value] : root.object()) {
    if (key == "__metadata__") {
      KVCACHE_EXPECTS(value.is_object(), errc::parse_error,
                      "{}: __metadata__ is a {}, not an object", src,
                      detail::kind_name(value.type()));
      for (const auto& [mk, mv] : value.object()) {
        KVCACHE_EXPECTS(mv.is_string(), errc::parse_error,
                        "{}: __metadata__ value of '{}' is a {}, not a string", src, truncated(mk),
                        detail::kind_name(mv.type()));
        f.metadata_.emplace(mk, mv.string());
      }
      continue;
    }
    KVCACHE_EXPECTS(!key.empty(), errc::parse_error, "{}: a tensor has an empty name", src);
    f.tensors_.push_back(parse_entry(src, key, value, data_size));
  }

  // The tensors must tile the data section: sorted by offset, each starts where the last ended.
  std::stable_sort(
      f.tensors_.begin(), f.tensors_.end(), [](const tensor_info& a, const tensor_info& b) {
        return a.offset != b.offset ? a.offset < b.offset : a.size_bytes < b.size_bytes;
      });
  std::uint64_t expected = 0;
  for (const auto& t : f.tensors_) {
    KVCACHE_EXPECTS(
        t.offset >= expected, errc::parse_error,
        "{}: tensor '{}' at bytes [{}, {}) overlaps the tensor before it, which ends at {}", src,
        truncated(t.name), t.offset, t.offset + t.size_bytes, expected);
    KVCACHE_EXPECTS(t.offset == expected, errc::parse_error,
                    "{}: a gap of {} bytes before tensor '{}' at offset {}", src,
                    t.offset - expected, truncated(t.name), t.offset);
    expected = t.offset + t.size_bytes;
  }
  KVCACHE_EXPECTS(expected == data_size, errc::parse_error,
                  "{}: the tensors cover {} bytes of the {}-byte data section", src, expected,
                  data_size);
  f.bytes_ = std::move(bytes);
  return f;
}

const tensor_info* safetensors_file::find(std::string_view name) const noexcept {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const tensor_info& safetensors_file::at(std::string_view name) const {
  const tensor_info* t = find(name);
  KVCACHE_EXPECTS(t != nullptr, errc::parse_error, "{}: no tensor named '{}'", source_, name);
  return *t;
}

std::span<const std::byte> safetensors_file::data(const tensor_info& t) const noexcept {
  return {bytes_.data() + data_begin_ + t.offset, t.size_bytes};
}

std::vector<float> safetensors_file::to_f32(std::string_view name) const {
  const tensor_info& t = at(name);
  const auto raw = data(t);
  const auto n = static_cast<std::size_t>(t.numel());
  std::vector<float> out(n);
  switch (t.dtype) {
    case st_dtype::f32:
      if (n > 0) std::memcpy(out.data(), raw.data(), n * 4);
      break;
    case st_dtype::f16:
    case st_dtype::bf16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h = 0;
        std::memcpy(&h, raw.data() + 2 * i, 2);
        out[i] =
            t.dtype == st_dtype::f16 ? to_float(float16::from_bits(h)) : to_float(bfloat16::from_bits(h));
      }
      break;
    case st_dtype::i32:
      KVCACHE_FAIL(errc::dtype_mismatch, "{}: tensor '{}' is I32, expected F16, BF16 or F32",
                   source_, name);
  }
  return out;
}

std::vector<std::int32_t> safetensors_file::to_i32(std::string_view name) const {
  const tensor_info& t = at(name);
  KVCACHE_EXPECTS(t.dtype == st_dtype::i32, errc::dtype_mismatch,
                  "{}: tensor '{}' is {}, expected I32", source_, name, name_of(t.dtype));
  std::vector<std::int32_t> out(static_cast<std::size_t>(t.numel()));
  if (!out.empty()) std::memcpy(out.data(), data(t).data(), out.size() * 4);
  return out;
}

std::vector<std::byte> write_safetensors(const std::vector<tensor_blob>& tensors,
                                         const std::map<std::string, std::string>& metadata) {
  std::string header = "{";
  std::set<std::string_view> names;
  std::size_t offset = 0;
  for (const auto& t : tensors) {
    KVCACHE_EXPECTS(names.insert(t.name).second && t.name != "__metadata__" && !t.name.empty(),
                    errc::invalid_argument, "tensor name '{}' is empty, reserved or repeated",
                    t.name);
    std::size_t numel = 1;
    for (const auto d : t.shape) {
      KVCACHE_EXPECTS(d >= 0, errc::invalid_argument, "tensor '{}' has a negative dimension {}",
                      t.name, d);
      numel *= static_cast<std::size_t>(d);
    }
    KVCACHE_EXPECTS(t.bytes.size() == numel * size_of(t.dtype), errc::invalid_argument,
                    "tensor '{}': {} bytes given for {} elements of {}", t.name, t.bytes.size(),
                    numel, name_of(t.dtype));
    if (header.size() > 1) header += ',';
    header += fmt::format("{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                          detail::json_quote(t.name), name_of(t.dtype), fmt::join(t.shape, ","),
                          offset, offset + t.bytes.size());
    offset += t.bytes.size();
  }
  if (!metadata.empty()) {
    if (header.size() > 1) header += ',';
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) header += ',';
      first = false;
      header += detail::json_quote(k) + ":" + detail::json_quote(v);
    }
    header += '}';
  }
  header += '}';
  header.append((8 - header.size() % 8) % 8, ' ');
  std::vector<std::byte> out(8 + header.size() + offset);
  const std::uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  std::size_t at = 8 + header.size();
  for (const auto& t : tensors) {
    if (!t.bytes.empty()) std::memcpy(out.data() + at, t.bytes.data(), t.bytes.size());
    at += t.bytes.size();
  }
  return out;
}

}  // namespace kvcache::quality
