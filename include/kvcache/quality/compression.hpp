/**
 * @file compression.hpp
 * @brief The interface a compression configuration implements to be scored by the harness.
 *
 * The harness replays the last N queries of a trace as decode steps. For each (layer, kv head)
 * it asks the configuration for a `head_compressor` (which may keep state across steps), and at
 * every step t asks it what the compressed cache holds when the query at position t attends:
 * the token t itself has just been appended, the full cache holds positions [0, t].
 *
 * What a configuration answers, in a `kept_cache`:
 * - **which tokens** are kept (selection, eviction: StreamingLLM, H2O, SnapKV, ...);
 * - optionally **replacement key/value rows** for them (quantizers return dequantized rows,
 *   mergers return merged rows, low-rank compressors return reconstructions);
 * - optionally the **bytes** it holds (quantizers and low-rank compressors hold fewer bytes per
 *   token than fp16; the default is fp16 keys and values for every kept token).
 *
 * A new model provides:
 * - a `compression` subclass: `name()` (the spec it was made from, shown in tables) and
 *   `start(head, first_step)` returning a fresh `head_compressor` for one (layer, kv head);
 * - a `head_compressor` subclass: `step(t, out)` filling `out`, and optionally `observe(t,
 *   probs)` to see the attention the group's queries paid to what was kept (H2O-style
 *   accumulation), called right after each step;
 * - an entry in `make_compression` (src/quality/compression.cpp) or a runtime
 *   `register_compression` call, so `kvcache-quality --configs` can name it.
 */
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvcache::quality {

class trace;

/**
 * @brief Everything recorded for one (layer, kv head) of a trace, as contiguous f32 rows.
 * Non-owning: valid during the replay of that head.
 */
struct head_view {
  int layer = 0;                  ///< the model's layer number
  int kv_head = 0;                ///< kv head index
  int group_size = 1;             ///< query heads reading this kv head: q heads kv_head*g .. +g-1
  int head_dim = 0;               ///< channels per head
  std::int64_t tokens = 0;        ///< T: positions 0..T-1 have keys and values
  std::span<const float> keys;    ///< [T, head_dim]
  std::span<const float> values;  ///< [T, head_dim]
  std::int64_t q_first = 0;       ///< the first position with a recorded query
  /// [T - q_first, group_size, head_dim]: the group's queries (for policies that observe
  /// prefill attention, e.g. SnapKV's observation window); only positions < the current step
  /// may be used by an honest policy.
  std::span<const float> queries;
  /// Layers of the recorded model (metadata 'model_layers'; 0: unknown), for layer-wise budgets
  /// (PyramidKV needs the layer's place in the model, not only among the recorded layers).
  int num_layers = 0;
  /// The trace being replayed (null when the view was made by hand): lets a configuration that
  /// couples the heads of a layer (AdaKV's head-wise budgets) read the layer's other heads.
  const trace* source = nullptr;

  /// @brief The key row at position `pos`.
  [[nodiscard]] std::span<const float> key(std::int64_t pos) const noexcept {
    return keys.subspan(static_cast<std::size_t>(pos * head_dim),
                        static_cast<std::size_t>(head_dim));
  }
  /// @brief The value row at position `pos`.
  [[nodiscard]] std::span<const float> value(std::int64_t pos) const noexcept {
    return values.subspan(static_cast<std::size_t>(pos * head_dim),
                          static_cast<std::size_t>(head_dim));
  }
};

/**
 * @brief What the compressed cache of one kv head holds at one decode step.
 * The harness clears it before each `step` call (capacity is reused).
 */
struct kept_cache {
  /// Positions kept, each in [0, t], no repeats, any order; at least one.
  std::vector<std::int64_t> tokens;
  /// Empty: the original key rows. Otherwise [tokens.size(), head_dim] rows to use instead.
  std::vector<float> keys;
  /// Empty: the original value rows. Otherwise [tokens.size(), head_dim] rows to use instead.
  std::vector<float> values;
  /// Bytes of keys and values held for this kv head; unset: 2 * tokens.size() * head_dim * 2
  /// (fp16 keys and values). Include quantization scales, low-rank bases etc. where they apply.
  std::optional<double> bytes;

  void clear() noexcept {
    tokens.clear();
    keys.clear();
    values.clear();
    bytes.reset();
  }
};

/**
 * @brief The per-(layer, kv head) state of a compression during one replay.
 */
class head_compressor {
 public:
  virtual ~head_compressor() = default;
  /**
   * @brief Fills `out` with what the compressed cache holds for the query at position `t`.
   * Steps arrive in increasing order of t, starting at the `first_step` given to `start`.
   */
  virtual void step(std::int64_t t, kept_cache& out) = 0;
  /**
   * @brief The attention of the query at `t` over what `step` returned: `probs` is
   * [group_size, kept.tokens.size()], one softmax row per query head of the group, in the order
   * of `kept.tokens`. The default ignores it.
   */
  virtual void observe(std::int64_t t, std::span<const float> probs, const kept_cache& kept) {
    (void)t;
    (void)probs;
    (void)kept;
  }
};

/**
 * @brief A compression configuration: a factory of per-head compressors. Immutable and
 * reusable across heads, layers and traces.
 */
class compression {
 public:
  virtual ~compression() = default;
  /// @brief The configuration as a spec, e.g. "window:0.25"; shown in tables.
  [[nodiscard]] virtual std::string name() const = 0;
  /// @brief A fresh compressor for one (layer, kv head); replay starts at `first_step`.
  [[nodiscard]] virtual std::unique_ptr<head_compressor> start(const head_view& head,
                                                               std::int64_t first_step) const = 0;
};

/// @brief Builds a configuration from the arguments after the name in a spec ("0.25" in
/// "window:0.25"); empty when the spec has no ':'.
using compression_factory =
    std::function<std::unique_ptr<compression>(std::span<const std::string_view> args)>;

/**
 * @brief Makes a configuration from a spec "name[:arg[:arg...]]". Built in:
 * - `full`: the uncompressed cache;
 * - `window:R`: the most recent ceil(R * (t + 1)) tokens, 0 < R <= 1;
 * - `random:R[:SEED]`: the current token plus ceil(R * (t + 1)) - 1 others, chosen by a fixed
 *   random priority per (layer, kv head, token) from SEED (default 1), so the kept set only
 *   loses tokens as t grows, like a cache that evicts at random.
 * @throws kvcache::error errc::invalid_argument naming the spec if unknown or malformed.
 */
[[nodiscard]] std::unique_ptr<compression> make_compression(std::string_view spec);

/**
 * @brief Adds (or replaces) a configuration name for `make_compression`.
 * @note Not thread-safe with concurrent `make_compression` calls.
 */
void register_compression(std::string name, compression_factory factory);

/// @brief The names `make_compression` knows, sorted.
[[nodiscard]] std::vector<std::string> compression_names();

/// @brief Splits a comma-separated list of specs ("full,window:0.5") into specs.
[[nodiscard]] std::vector<std::string> split_specs(std::string_view list);

/// @brief Parses a keep ratio in (0, 1] for spec `spec`. @throws errc::invalid_argument.
[[nodiscard]] double parse_ratio(std::string_view text, std::string_view spec);

/// @brief ceil(ratio * n) clamped to [1, n]: the budget of a keep ratio over n tokens.
[[nodiscard]] std::int64_t budget_of(double ratio, std::int64_t n) noexcept;

}  // namespace kvcache::quality
