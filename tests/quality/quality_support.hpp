// Helpers shared by the quality tests: fixture paths, raw files, small synthetic traces.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "kvcache/quality/safetensors.hpp"

namespace kvtest::quality {

inline std::filesystem::path data_dir() { return KVCACHE_QUALITY_DATA_DIR; }
inline std::filesystem::path prose_trace() {
  return data_dir() / "smollm2-135m-prose-1024.safetensors";
}
inline std::filesystem::path code_trace() {
  return data_dir() / "smollm2-135m-code-1024.safetensors";
}
inline std::filesystem::path tiny_file() { return data_dir() / "kvdump-tiny.safetensors"; }

inline std::vector<std::byte> read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(chars.size());
  if (!chars.empty()) std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}

/// A file from a literal header and `data_size` zero bytes of data.
inline std::vector<std::byte> raw_file(const std::string& header, std::size_t data_size) {
  std::vector<std::byte> out(8 + header.size() + data_size, std::byte{0});
  const std::uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

/// f32 values as little-endian F32 bytes.
inline std::vector<std::byte> f32_bytes(const std::vector<float>& v) {
  std::vector<std::byte> out(v.size() * 4);
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

/// Shape of a small synthetic trace.
struct synth_shape {
  std::int64_t tokens = 24;
  int q_heads = 4;
  int kv_heads = 2;
  int head_dim = 8;
  std::int64_t q_first = 16;
  std::int64_t out_first = 20;
  std::vector<int> layers = {0, 5};
};

/// The tensors and metadata of a synthetic trace with random values (out is not a real
/// attention output); tests edit them to make malformed files.
struct synth_trace {
  std::vector<kvcache::quality::tensor_blob> tensors;
  std::map<std::string, std::string> metadata;

  [[nodiscard]] std::vector<std::byte> bytes() const {
    return kvcache::quality::write_safetensors(tensors, metadata);
  }
  kvcache::quality::tensor_blob* find(const std::string& name) {
    for (auto& t : tensors) {
      if (t.name == name) return &t;
    }
    return nullptr;
  }
};

inline synth_trace make_synth_trace(const synth_shape& s = {}, std::uint64_t seed = 7) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const auto blob = [&](const std::string& name, std::vector<std::int64_t> shape) {
    std::int64_t n = 1;
    for (const auto d : shape) n *= d;
    std::vector<float> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = normal(rng);
    return kvcache::quality::tensor_blob{name, kvcache::quality::st_dtype::f32, std::move(shape),
                                         f32_bytes(v)};
  };
  synth_trace t;
  std::string layers;
  for (const int l : s.layers) {
    layers += (layers.empty() ? "" : ",") + std::to_string(l);
    const std::string p = "layer" + std::to_string(l) + ".";
    t.tensors.push_back(blob(p + "q", {s.tokens - s.q_first, s.q_heads, s.head_dim}));
    t.tensors.push_back(blob(p + "k", {s.tokens, s.kv_heads, s.head_dim}));
    t.tensors.push_back(blob(p + "v", {s.tokens, s.kv_heads, s.head_dim}));
    t.tensors.push_back(blob(p + "out", {s.tokens - s.out_first, s.q_heads, s.head_dim}));
  }
  t.metadata = {{"format", "kvcache-trace/1"},
                {"text", "synthetic"},
                {"tokens", std::to_string(s.tokens)},
                {"layers", layers},
                {"q_heads", std::to_string(s.q_heads)},
                {"kv_heads", std::to_string(s.kv_heads)},
                {"head_dim", std::to_string(s.head_dim)},
                {"q_first", std::to_string(s.q_first)},
                {"out_first", std::to_string(s.out_first)}};
  return t;
}

}  // namespace kvtest::quality
