/**
 * @file unit_heap.hpp
 * @brief `detail::unit_heap`: an indexed binary min-heap of unit ids (push, erase, re-sift after
 * a key change, all O(log n)); the order is a callable passed to each call.
 */
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace kvcache::detail {

class unit_heap {
 public:
  /// @brief Makes room for ids [0, ids) without allocating later.
  void reserve(std::size_t ids) {
    if (pos_.size() < ids) pos_.resize(ids, -1);
    heap_.reserve(ids);
  }
  [[nodiscard]] bool contains(std::int32_t u) const noexcept {
    return static_cast<std::size_t>(u) < pos_.size() && pos_[static_cast<std::size_t>(u)] >= 0;
  }
  [[nodiscard]] bool empty() const noexcept { return heap_.empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return heap_.size(); }
  [[nodiscard]] std::int32_t top() const noexcept { return heap_.front(); }

  template <class Less>
  void push(std::int32_t u, Less&& less) {
    if (static_cast<std::size_t>(u) >= pos_.size()) pos_.resize(static_cast<std::size_t>(u) * 2 + 16, -1);
    heap_.push_back(u);
    set(heap_.size() - 1, u);
    up(heap_.size() - 1, less);
  }
  template <class Less>
  void erase(std::int32_t u, Less&& less) {
    const auto i = static_cast<std::size_t>(pos_[static_cast<std::size_t>(u)]);
    pos_[static_cast<std::size_t>(u)] = -1;
    const std::int32_t last = heap_.back();
    heap_.pop_back();
    if (i < heap_.size()) {
      set(i, last);
      fix(i, less);
    }
  }
  /// @brief Removes the top and puts u (not in the heap) in its place: one sift instead of a pop
  /// and a push; O(1) when u belongs at the top (a chain's parent inheriting its tail's time).
  template <class Less>
  void replace_top(std::int32_t u, Less&& less) {
    if (static_cast<std::size_t>(u) >= pos_.size()) pos_.resize(static_cast<std::size_t>(u) * 2 + 16, -1);
    pos_[static_cast<std::size_t>(heap_.front())] = -1;
    set(0, u);
    down(0, less);
  }
  /// @brief Removes the top.
  template <class Less>
  void pop(Less&& less) {
    erase(heap_.front(), less);
  }
  /// @brief Restores the order after u's key changed.
  template <class Less>
  void update(std::int32_t u, Less&& less) {
    fix(static_cast<std::size_t>(pos_[static_cast<std::size_t>(u)]), less);
  }
  void clear() noexcept {
    for (std::int32_t u : heap_) pos_[static_cast<std::size_t>(u)] = -1;
    heap_.clear();
  }

 private:
  void set(std::size_t i, std::int32_t u) noexcept {
    heap_[i] = u;
    pos_[static_cast<std::size_t>(u)] = static_cast<std::int32_t>(i);
  }
  template <class Less>
  void fix(std::size_t i, Less& less) {
    if (i > 0 && less(heap_[i], heap_[(i - 1) / 2])) {
      up(i, less);
    } else {
      down(i, less);
    }
  }
  template <class Less>
  void up(std::size_t i, Less& less) {
    const std::int32_t u = heap_[i];
    while (i > 0) {
      const std::size_t parent = (i - 1) / 2;
      if (!less(u, heap_[parent])) break;
      set(i, heap_[parent]);
      i = parent;
    }
    set(i, u);
  }
  template <class Less>
  void down(std::size_t i, Less& less) {
    const std::int32_t u = heap_[i];
    const std::size_t n = heap_.size();
    for (;;) {
      std::size_t c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && less(heap_[c + 1], heap_[c])) ++c;
      if (!less(heap_[c], u)) break;
      set(i, heap_[c]);
      i = c;
    }
    set(i, u);
  }

  std::vector<std::int32_t> heap_;
  std::vector<std::int32_t> pos_;
};

}  // namespace kvcache::detail
