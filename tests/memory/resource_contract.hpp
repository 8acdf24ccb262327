// The memory_resource contract, written once and run over every model (host and GPU tests).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kvcache/memory/memory_resource.hpp"
#include "support/catch.hpp"

namespace kvtest {

template <class R>
void check_resource_contract(R& r, std::size_t max_alignment = 256) {
  using kvcache::errc;
  SECTION("allocations are distinct, aligned and usable") {
    struct block {
      void* p;
      std::size_t bytes, alignment;
    };
    std::vector<block> blocks;
    for (std::size_t bytes : {1u, 7u, 64u, 4096u, 1u << 20}) {
      for (std::size_t alignment = 1; alignment <= max_alignment; alignment *= 4) {
        void* p = r.allocate(bytes, alignment);
        REQUIRE(p != nullptr);
        CHECK(reinterpret_cast<std::uintptr_t>(p) % alignment == 0);
        if constexpr (R::space_type::host_accessible) {
          std::memset(p, 0xAB, bytes);
          CHECK(static_cast<unsigned char*>(p)[bytes - 1] == 0xAB);
        }
        for (auto& b : blocks) CHECK(b.p != p);
        r.deallocate(p, bytes, alignment);
        blocks.push_back({r.allocate(bytes, alignment), bytes, alignment});
      }
    }
    for (auto& b : blocks) r.deallocate(b.p, b.bytes, b.alignment);
  }
  SECTION("zero bytes is rejected, naming the resource") {
    KVTEST_REQUIRE_ERROR(r.allocate(0, 64), errc::invalid_argument, "cannot allocate 0 bytes");
  }
  SECTION("alignment must be a power of two") {
    KVTEST_REQUIRE_ERROR(r.allocate(64, 48), errc::invalid_argument, "alignment 48");
    KVTEST_REQUIRE_ERROR(r.allocate(64, 0), errc::invalid_argument, "alignment 0");
  }
  SECTION("oversized allocations are rejected, naming the size") {
    const std::size_t huge = kvcache::max_allocation_bytes + 1;
    KVTEST_REQUIRE_ERROR(r.allocate(huge, 64), errc::invalid_argument, std::to_string(huge));
  }
}

}  // namespace kvtest
