/**
 * @file baselines.hpp
 * @brief The trivial configurations every compression is compared with: the full cache,
 * keep-recent-window and keep-random at a keep ratio.
 */
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kvcache/quality/compression.hpp"

namespace kvcache::quality {

/// @brief The uncompressed cache: every position [0, t], original rows, fp16 bytes.
class full_cache final : public compression {
 public:
  [[nodiscard]] std::string name() const override { return "full"; }
  [[nodiscard]] std::unique_ptr<head_compressor> start(const head_view& head,
                                                       std::int64_t first_step) const override;
};

/// @brief The most recent ceil(ratio * (t + 1)) positions.
class recent_window final : public compression {
 public:
  /// @throws kvcache::error errc::invalid_argument unless 0 < ratio <= 1.
  explicit recent_window(double ratio);
  [[nodiscard]] double ratio() const noexcept { return ratio_; }
  [[nodiscard]] std::string name() const override;
  [[nodiscard]] std::unique_ptr<head_compressor> start(const head_view& head,
                                                       std::int64_t first_step) const override;

 private:
  double ratio_;
};

/**
 * @brief The current position plus the ceil(ratio * (t + 1)) - 1 earlier positions of highest
 * priority, where each (layer, kv head, position) has a fixed pseudo-random priority drawn from
 * `seed`: deterministic, independent of replay order, and monotone like a random eviction.
 */
class random_keep final : public compression {
 public:
  /// @throws kvcache::error errc::invalid_argument unless 0 < ratio <= 1.
  explicit random_keep(double ratio, std::uint64_t seed = 1);
  [[nodiscard]] double ratio() const noexcept { return ratio_; }
  [[nodiscard]] std::uint64_t seed() const noexcept { return seed_; }
  [[nodiscard]] std::string name() const override;
  [[nodiscard]] std::unique_ptr<head_compressor> start(const head_view& head,
                                                       std::int64_t first_step) const override;

 private:
  double ratio_;
  std::uint64_t seed_;
};

}  // namespace kvcache::quality
