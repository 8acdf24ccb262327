#include "kvcache/prefix/hasher.hpp"

#include <cstring>

// xxHash in its header-only mode (no library to link): the system's <xxhash.h> (Debian's and
// Ubuntu's libxxhash-dev, which scripts/setup.sh installs). A machine without the package can put
// the header on the include path instead (scripts/gpu-check.sh does, from .carry/include).
#if !__has_include(<xxhash.h>)
#error "kvcache needs xxHash's header <xxhash.h>: install libxxhash-dev (apt), or add a directory holding xxhash.h to the include path"
#endif
#define XXH_INLINE_ALL
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <xxhash.h>
#pragma GCC diagnostic pop

namespace kvcache {

static_assert(sizeof(std::int32_t) == 4 && sizeof(XXH128_hash_t) == 16);

page_key xxh3_hasher::root(cache_salt salt, std::uint64_t extra) const noexcept {
  const std::uint64_t in[2] = {salt, extra};
  const XXH128_hash_t h = XXH3_128bits_withSeed(in, sizeof(in), seed);
  return page_key{h.low64, h.high64};
}

page_key xxh3_hasher::page(const page_key& parent, std::span<const std::int32_t> tokens,
                           std::uint64_t extra) const noexcept {
  const std::size_t token_bytes = tokens.size_bytes();
  constexpr std::size_t head = 3 * sizeof(std::uint64_t);
  XXH128_hash_t h;
  if (head + token_bytes <= 1024) {  // one shot on a stack buffer: pages up to 250 tokens
    alignas(8) unsigned char buf[1024];
    const std::uint64_t prefix[3] = {parent.lo, parent.hi, extra};
    std::memcpy(buf, prefix, head);
    if (token_bytes != 0) std::memcpy(buf + head, tokens.data(), token_bytes);
    h = XXH3_128bits_withSeed(buf, head + token_bytes, seed);
  } else {
    XXH3_state_t state{};  // zeroed: xxHash 0.8.1 reads two fields before setting them
    XXH3_128bits_reset_withSeed(&state, seed);
    const std::uint64_t prefix[3] = {parent.lo, parent.hi, extra};
    XXH3_128bits_update(&state, prefix, head);
    XXH3_128bits_update(&state, tokens.data(), token_bytes);
    h = XXH3_128bits_digest(&state);
  }
  return page_key{h.low64, h.high64};
}

std::uint64_t xxh3_hasher::content(std::span<const std::int32_t> tokens) const noexcept {
  return XXH3_64bits_withSeed(tokens.data(), tokens.size_bytes(), seed);
}

}  // namespace kvcache
