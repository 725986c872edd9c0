// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// H2O — "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language Models",
/// Zhang et al., NeurIPS 2023, arXiv 2306.14048 (eviction spec §13.2).
///
/// Score of a slot = attention it has received, accumulated over every query the cache attended
/// (all prefill rows, then each decode row), per KV head (the mean over the query heads of the
/// GQA group, spec §0 rule 5). Budget = `heavy_budget` heavy hitters + `recent_budget` most
/// recent slots. At prefill end each head keeps its top heavy_budget slots by score plus the
/// recent ones; during decode, whenever an append would exceed the budget, the lowest-scoring
/// non-recent slots are evicted (one per decode step). Ties keep the lower position.
///
/// The paper states budgets as fractions of the sequence (20 % = 10 % heavy + 10 % recent); the
/// engine knows its prompt length and sets the absolute budgets from it.

#include <cstddef>
#include <cstdint>
#include <string>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/policies/evict/common/score_selection.hpp"
#include "kvcompress/policies/evict/none.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {

/// Heavy hitters + recent window, decided per KV head from accumulated attention.
struct H2O : Base {
  static constexpr const char* kName = "h2o";
  static constexpr bool kPerHead = true;
  static constexpr bool kNeedsScores = true;
  static constexpr bool kSelectsAtPrefillEnd = true;

  struct Config {
    std::size_t heavy_budget = 0;   ///< k_h: heavy-hitter slots kept
    std::size_t recent_budget = 0;  ///< k_r: most recent slots always kept (≥ 1)

    void validate(const CacheShape& shape) const {
      detail::require(recent_budget >= 1, "evict::H2O", "recent_budget", recent_budget,
                      ">= 1 (the newest token must stay)");
      detail::require(heavy_budget + recent_budget <= shape.capacity, "evict::H2O",
                      "heavy_budget + recent_budget", heavy_budget + recent_budget,
                      "<= capacity (" + std::to_string(shape.capacity) + ")");
    }
  };

  /// Decode: evict the lowest-scoring non-recent slots so live + n_incoming ≤ k_h + k_r.
  static void make_room(const Config& c, const SlotView& s, std::size_t n_incoming, std::uint8_t* keep) {
    const std::size_t budget = c.heavy_budget + c.recent_budget;
    if (s.n_alive + n_incoming <= budget) return;
    const std::size_t recent_old = c.recent_budget > n_incoming ? c.recent_budget - n_incoming : 0;
    common::evict_lowest_scores(s, s.n_alive + n_incoming - budget, recent_old, keep);
  }

  /// Prefill end: per head, keep the k_h highest accumulated scores plus the k_r recent slots.
  static void on_prefill_end(const Config& c, PrefillContext& ctx) {
    for (int l = 0; l < ctx.num_layers(); ++l)
      for (int h = 0; h < ctx.views_per_layer(); ++h)
        common::keep_top_scores(ctx.slots(l, h), c.heavy_budget, c.recent_budget, ctx.keep(l, h));
  }
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
