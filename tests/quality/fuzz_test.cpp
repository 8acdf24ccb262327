// Fuzz-style: random truncations and byte flips of real and synthetic trace files must give
// either a trace or a kvcache::error, never a crash, a hang or another exception. Run under
// ASan/UBSan in CI. The seed is kvtest::seed() (KVCACHE_TEST_SEED).
#include <random>

#include "kvcache/quality/baselines.hpp"
#include "kvcache/quality/safetensors.hpp"
#include "kvcache/quality/score.hpp"
#include "kvcache/quality/trace.hpp"
#include "quality_support.hpp"
#include "support/catch.hpp"

namespace q = kvcache::quality;
namespace kq = kvtest::quality;

namespace {

struct outcome {
  int loaded = 0;
  int rejected = 0;
};

/// Parses `bytes` as a trace and, if that works, scores a couple of steps on it.
void try_load(std::vector<std::byte> bytes, outcome& out, bool score) {
  try {
    const auto f = q::safetensors_file::parse(std::move(bytes), "fuzzed");
    const auto tr = q::trace::from(f);
    if (score) {
      q::score_options o;
      o.steps = std::min<std::int64_t>(2, tr.tokens() - tr.q_first());
      (void)q::score(tr, q::recent_window{0.5}, o);
    }
    ++out.loaded;
  } catch (const kvcache::error&) {
    ++out.rejected;
  }
  // Anything else propagates and fails the test.
}

/// The offset where the data section starts (8 + header length).
std::size_t data_begin(const std::vector<std::byte>& b) {
  std::uint64_t n = 0;
  std::memcpy(&n, b.data(), 8);
  return static_cast<std::size_t>(8 + n);
}

void fuzz(const std::vector<std::byte>& original, int iterations, bool score, outcome& out) {
  std::mt19937_64 rng(kvtest::seed());
  const std::size_t header_end = data_begin(original);
  for (int i = 0; i < iterations; ++i) {
    std::vector<std::byte> b = original;
    switch (rng() % 5) {
      case 4:  // flip data bytes only: always parses; values may become inf or NaN
        for (int f = 0; f < 8 && b.size() > header_end; ++f) {
          b[header_end + rng() % (b.size() - header_end)] ^= std::byte(1u << (rng() % 8));
        }
        break;
      case 0:  // truncate anywhere
        b.resize(rng() % b.size());
        break;
      case 1:  // truncate inside the header
        b.resize(rng() % header_end);
        break;
      case 2: {  // flip a few header bytes (length field included)
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int f = 0; f < flips; ++f) b[rng() % header_end] ^= std::byte(1u << (rng() % 8));
        break;
      }
      default: {  // replace a header byte with an interesting character
        static constexpr char chars[] = "{}[]\",:0123456789-.eE \\u";
        b[8 + rng() % (header_end - 8)] = std::byte(chars[rng() % (sizeof(chars) - 1)]);
        // and flip a data byte too (values may become inf or NaN)
        if (b.size() > header_end)
          b[header_end + rng() % (b.size() - header_end)] ^= std::byte{0x7c};
      }
    }
    try_load(std::move(b), out, score);
  }
}

}  // namespace

TEST_CASE("fuzz: truncated and flipped synthetic traces", "[quality][fuzz]") {
  const auto bytes = kq::make_synth_trace().bytes();
  outcome out;
  fuzz(bytes, 3000, /*score=*/true, out);
  INFO("loaded " << out.loaded << ", rejected " << out.rejected);
  CHECK(out.rejected > 0);
  CHECK(out.loaded + out.rejected == 3000);
}

TEST_CASE("fuzz: truncated and flipped fixture", "[quality][fuzz]") {
  const auto bytes = kq::read_bytes(kq::code_trace());
  REQUIRE(bytes.size() > 1000);
  outcome out;
  fuzz(bytes, 60, /*score=*/false, out);
  INFO("loaded " << out.loaded << ", rejected " << out.rejected);
  CHECK(out.rejected > 0);
}

TEST_CASE("fuzz: the tiny file", "[quality][fuzz]") {
  const auto bytes = kq::read_bytes(kq::tiny_file());
  std::mt19937_64 rng(kvtest::seed() + 1);
  int ok = 0;
  for (int i = 0; i < 3000; ++i) {
    auto b = bytes;
    if (i % 2 == 0) {
      b.resize(rng() % b.size());
    } else {
      b[rng() % b.size()] ^= std::byte(1u << (rng() % 8));
    }
    try {
      const auto f = q::safetensors_file::parse(std::move(b));
      for (const auto& t : f.tensors()) {
        if (t.dtype == q::st_dtype::i32) {
          (void)f.to_i32(t.name);
        } else {
          (void)f.to_f32(t.name);
        }
      }
      ++ok;
    } catch (const kvcache::error&) {
    }
  }
  CHECK(ok > 0);  // flips in the data section still parse
}
