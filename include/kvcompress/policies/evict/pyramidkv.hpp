// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// PyramidKV — "PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information
/// Funneling", Cai et al., arXiv 2406.02069 (eviction spec §13.4; §1.10 row "PyramidKV").
///
/// The SnapKV scorer and selector (snapkv.hpp: observation window W, pooling, window kept) with
/// a per-layer budget that decreases linearly with depth — the pyramid allocator of spec §1.6 in
/// its kvpress form (common::pyramid_budgets): with prompt length m, retained ratio r and β,
///   cap = W + m·r;  min = (cap − W)/β;  max = 2(cap − W) − min  (max clipped to m − W);
///   k_l = round(max − l·(max − min)/(L − 1)), or m·r everywhere when not m ≥ max ≥ min ≥ W.
/// k_l counts every kept slot of the layer, window included, so the mean over layers is m·r
/// (spec example m = 1000, r = 0.5, W = 64, L = 32: layer 0 keeps 936, layer 31 keeps 64).
///
/// Budget: `budget.ratio` = r (kvpress 1 − compression_ratio), or `budget.tokens` = the mean
/// per-layer capacity C (KVCache-Factory `max_capacity_prompt`), i.e. r = min(1, C/m).
/// Defaults follow kvpress PyramidKVPress (W = 64, avg pooling kernel 5, β = 20) with C = 1024;
/// integer budgets are rounded per layer (kClipOnly, the kvpress behaviour); kApportion realises
/// Σ_l k_l = floor(L·m·r) exactly instead.

#include <algorithm>
#include <cstddef>
#include <string>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/policies/evict/common/layer_budget.hpp"
#include "kvcompress/policies/evict/snapkv.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {

/// SnapKV scoring with pyramid (linearly decreasing) per-layer budgets.
struct PyramidKV : Base {
  static constexpr const char* kName = "pyramidkv";
  static constexpr bool kPerHead = true;
  static constexpr bool kSelectsAtPrefillEnd = true;

  /// The SnapKV knobs (window, pooling, sinks, overflow) plus the pyramid shape.
  struct Config : SnapKV::Config {
    double beta = 20.0;  ///< β ≥ 1: ratio of the top layer's prefix budget to the bottom one's
    common::BudgetRealisation realisation = common::BudgetRealisation::kClipOnly;

    Config() { window = 64; }

    void validate(const CacheShape&) const {
      const char* where = "evict::PyramidKV";
      check_scorer(where);
      detail::require(beta >= 1.0, where, "beta", beta, ">= 1");
    }
  };

  template <class C>
  static std::size_t query_window(const C& c) { return c.window; }

  /// Per-layer budgets for a prompt of m live slots in each layer (the trace of §1.6).
  static common::LayerBudgets budgets(const Config& c, std::size_t m, int num_layers) {
    const double r = c.budget.tokens > 0 ? std::min(1.0, double(c.budget.tokens) / double(m)) : c.budget.ratio;
    return common::pyramid_budgets(m, r, c.window, num_layers, c.beta, c.realisation);
  }

  static void on_prefill_end(const Config& c, PrefillContext& ctx) {
    for (int l = 0; l < ctx.num_layers(); ++l)
      for (int h = 0; h < ctx.views_per_layer(); ++h) {
        const std::size_t m = ctx.slots(l, h).n_alive;
        if (m == 0) continue;
        const std::size_t k = budgets(c, m, ctx.num_layers()).kept[static_cast<std::size_t>(l)];
        SnapKV::select(c, ctx, l, h, k, "evict::PyramidKV", c.budget.field());
      }
  }
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
