/**
 * @file flat_table.hpp
 * @brief `detail::flat_table`: open addressing (linear probing, backward-shift deletion) from a
 * 64-bit hash to an int32 unit id. A slot keeps 32 bits of the hash (the tag, which also gives
 * the home slot) and the id, 8 bytes in all; the caller tells entries apart through a callback
 * (or chains equal tags itself), so the table never reads the units on insert or erase.
 * @note Sized once for a maximum number of entries (load factor <= 1/2); never allocates after.
 */
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

#include "kvcache/core/error.hpp"
#include "kvcache/prefix/detail/huge_allocator.hpp"
#include "kvcache/prefix/detail/prefetch.hpp"

namespace kvcache::detail {

class flat_table {
 public:
  flat_table() = default;
  explicit flat_table(std::size_t max_entries)
      : slots_(std::bit_ceil(std::max<std::size_t>(16, 2 * max_entries))),
        mask_(slots_.size() - 1),
        max_entries_(max_entries) {}

  /// @brief The first entry with h's tag for which eq(value) holds, or -1.
  template <class Eq>
  [[nodiscard]] std::int32_t find(std::uint64_t h, Eq&& eq) const {
    const std::uint32_t tag = tag_of(h);
    for (std::size_t i = home(tag);; i = (i + 1) & mask_) {
      const slot& s = slots_[i];
      if (s.value < 0) return -1;
      if (s.tag == tag && eq(s.value)) return s.value;
    }
  }
  /// @brief Adds an entry (duplicates of a tag are allowed; `find` returns the first).
  void insert(std::uint64_t h, std::int32_t value) {
    KVCACHE_EXPECTS(size_ < max_entries_, errc::logic_error, "flat_table: more than {} entries",
                    max_entries_);
    const std::uint32_t tag = tag_of(h);
    std::size_t i = home(tag);
    while (slots_[i].value >= 0) i = (i + 1) & mask_;
    slots_[i] = slot{tag, value};
    ++size_;
  }
  /// @brief Whether (h, value) is stored.
  [[nodiscard]] bool contains(std::uint64_t h, std::int32_t value) const noexcept {
    return slot_of(h, value) != npos;
  }
  /// @brief Points the entry (h, old_value) at new_value.
  void replace(std::uint64_t h, std::int32_t old_value, std::int32_t new_value) {
    slots_[checked_slot(h, old_value)].value = new_value;
  }
  /// @brief Removes the entry (h, value), moving later entries of its cluster back toward home.
  void erase(std::uint64_t h, std::int32_t value) {
    std::size_t hole = checked_slot(h, value);
    for (std::size_t j = (hole + 1) & mask_;; j = (j + 1) & mask_) {
      const slot s = slots_[j];
      if (s.value < 0) break;
      // Move back when the hole lies between the entry's home and its slot (cyclically).
      if (((j - home(s.tag)) & mask_) >= ((j - hole) & mask_)) {
        slots_[hole] = s;
        hole = j;
      }
    }
    slots_[hole] = slot{};
    --size_;
  }
  void prefetch(std::uint64_t h) const noexcept {
    detail::prefetch(&slots_[home(tag_of(h))]);
  }
  void clear() noexcept {
    std::fill(slots_.begin(), slots_.end(), slot{});
    size_ = 0;
  }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  struct slot {
    std::uint32_t tag = 0;
    std::int32_t value = -1;
  };
  static constexpr std::size_t npos = ~std::size_t{0};
  [[nodiscard]] static std::uint32_t tag_of(std::uint64_t h) noexcept {
    return static_cast<std::uint32_t>(h >> 32);
  }
  [[nodiscard]] std::size_t home(std::uint32_t tag) const noexcept { return tag & mask_; }
  [[nodiscard]] std::size_t slot_of(std::uint64_t h, std::int32_t value) const noexcept {
    for (std::size_t i = home(tag_of(h));; i = (i + 1) & mask_) {
      if (slots_[i].value == value) return i;
      if (slots_[i].value < 0) return npos;
    }
  }
  [[nodiscard]] std::size_t checked_slot(std::uint64_t h, std::int32_t value) const {
    const std::size_t i = slot_of(h, value);
    KVCACHE_EXPECTS(i != npos, errc::logic_error, "flat_table: unit {} is not stored under {:#x}",
                    value, h);
    return i;
  }

  huge_vector<slot> slots_;
  std::size_t mask_ = 0;
  std::size_t size_ = 0;
  std::size_t max_entries_ = 0;
};

}  // namespace kvcache::detail
