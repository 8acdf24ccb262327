// One include for Catch2 2.x (Debian 12) and 3.x (Ubuntu 24.04, the GPU machine).
#pragma once

#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#define KVCACHE_CATCH_MAJOR 3
namespace kvtest {
using Catch::Approx;
}
#else
#include <catch2/catch.hpp>
#define KVCACHE_CATCH_MAJOR 2
namespace kvtest {
using Approx = ::Catch::Detail::Approx;
}
#endif

#include <cstdint>
#include <string>

#include "kvcache/core/error.hpp"

/// Requires that `expr` throws kvcache::error with `code` and a message containing `text`.
#define KVTEST_REQUIRE_ERROR(expr, expected_code_, expected_text_)                                       \
  do {                                                                               \
    bool kvtest_threw_ = false;                                                      \
    try {                                                                            \
      (void)(expr);                                                                  \
    } catch (const ::kvcache::error& kvtest_e_) {                                    \
      kvtest_threw_ = true;                                                          \
      INFO("what(): " << kvtest_e_.what());                                          \
      CHECK(kvtest_e_.code() == (expected_code_));                                             \
      CHECK(std::string(kvtest_e_.what()).find(expected_text_) != std::string::npos);          \
    }                                                                                \
    if (!kvtest_threw_) FAIL("expected kvcache::error from: " #expr);                \
  } while (0)

namespace kvtest {
/// Seed for random tests: fixed, overridable with KVCACHE_TEST_SEED, printed on failure by INFO.
std::uint64_t seed();
}  // namespace kvtest
