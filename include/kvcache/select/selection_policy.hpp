/**
 * @file selection_policy.hpp
 * @brief The `selection_policy` concept: which tokens of one (layer, kv head) stay in the KV
 * cache (StreamingLLM, H2O, SnapKV, Scissorhands, TOVA, key-norm).
 *
 * A policy object is the state of **one (layer, kv head) of one sequence**: an engine holds
 * layers x kv_heads of them per sequence (or per table under the `per_head` geometry). It holds
 * the tokens the cache holds, in the order of the cache rows (ascending position; an append
 * adds rows at the end), and per token what the policy needs (accumulated attention mass,
 * votes, counts, key norms). The held index i is the row i of the table in the paging store, so
 * `select` output feeds `paged_kv_store::try_compact` directly.
 *
 * What a policy observes (each call optional for the policies that ignore it):
 * - `append(n, key_norms)`: n new tokens (positions continue from the last); `key_norms` is
 *   empty or the L2 norm of each new token's key (key-norm policies require it);
 * - `observe_prefill(probs, queries, heads)`: the prompt's last `queries` queries' attention
 *   over the held tokens, `[queries][heads][size()]` softmax rows (causal: a query gives 0 to
 *   later tokens), the query of row q being the token at held index size() - queries + q.
 *   `prefill_queries()` says how many it wants (SnapKV's observation window);
 * - `observe(probs, heads)`: one decode step's attention over the held tokens, `[heads][size()]`
 *   (the group's query heads; GQA). An engine's attention kernel hands it over through the
 *   per-layer attention-mass buffer of attention_mass.hpp (`observe_attention_mass`).
 *
 * What it answers:
 * - `scores(budget, out)`: each held token's importance when `budget` tokens are kept
 *   (higher: keep; `+inf`: protected, e.g. sinks and recent windows). The budget layer compares
 *   these across heads (AdaKV);
 * - `select(budget, out)`: the held indices of the min(budget, size()) tokens to keep,
 *   ascending: the highest scores, ties going to the more recent token. Changes no state;
 * - `retain(keep)`: keeps only the held indices `keep` (ascending; usually `select`'s output),
 *   in order: afterwards held index j is the former `keep[j]`, as in the compacted table.
 *
 * **A new policy provides** (see `detail::policy_base` for the common part): `reset(capacity)`
 * (empty, reserves `capacity` tokens so the per-step calls do not allocate), `append`,
 * `observe_prefill`, `observe`, `prefill_queries()`, `size()`, `positions()`, `scores`,
 * `select`, `retain`; and a `static_assert(kvcache::selection_policy<P>)` in its header.
 *
 * Complexity (n held tokens, h heads): `append` O(new), `observe` O(h n), `observe_prefill`
 * O(queries h n), `scores` O(n), `select` O(n) average (nth_element) + O(k log k), `retain`
 * O(n). No allocation after `reset(capacity)` while size() <= capacity.
 * Thread-safety: none per object; distinct objects (heads, layers) are independent.
 */
#pragma once

#include <concepts>
#include <cstdint>
#include <span>

namespace kvcache {

/// @brief `prefill_queries()` of a policy that wants every prompt query it can get (H2O).
inline constexpr std::int64_t all_queries = INT64_MAX;

/**
 * @brief A token selection policy for one (layer, kv head): see the file comment for the
 * semantics of each expression.
 */
template <class P>
concept selection_policy =
    std::movable<P> &&
    requires(P& p, const P& cp, std::int64_t n, std::int32_t k, std::span<const float> f,
             std::span<float> scores_out, std::span<std::int64_t> out,
             std::span<const std::int64_t> keep) {
      p.reset(n);
      p.append(n, f);
      p.observe_prefill(f, k, k);
      p.observe(f, k);
      { cp.prefill_queries() } -> std::same_as<std::int64_t>;
      { cp.size() } -> std::same_as<std::int64_t>;
      { cp.positions() } -> std::same_as<std::span<const std::int64_t>>;
      cp.scores(n, scores_out);
      { p.select(n, out) } -> std::same_as<std::int64_t>;
      p.retain(keep);
    };

}  // namespace kvcache
