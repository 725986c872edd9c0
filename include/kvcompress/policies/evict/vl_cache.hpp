// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// VL-Cache — "VL-Cache: Sparsity and Modality-Aware KV Cache Compression for Vision-Language
/// Model Inference Acceleration", Tu, Vashchilenko, Lu, Xu, ICLR 2025, arXiv 2410.23317
/// (eviction spec §4; no official code, paper-derived reimplementation spec arupcsedu/MosaicKV).
///
/// Composition (spec §1.10): trigger = prefill end; scorer = post-vision column sums; allocator =
/// density-proportional with clip; selector = top-k + 10 % recent, per KV head.
///  1. Post-vision rows P: the query-window rows whose position is after the last slot labelled
///     kImage/kVideo (the engine's labels, never inferred image sizes). No visual slot → every
///     window row [rec]; visual span at the very end (τ = 0) → the last window row [rec].
///  2. Their causal attention over every prompt key is recomputed from the window
///     (common::attention_rows_from_window, FlashAttention-compatible back-end 2).
///  3. Token score s_h[j] = Σ_{q∈P} A[q][j], mean over the query heads of KV head h (§0 rule 5).
///  4. Sparsity (Eq. 1–2, Alg. 1): threshold filter p·rowmax over each row's causal entries
///     (common::threshold_filter); γ_{l,g} = zeros / causal entries pooled over the rows of P;
///     γ_l = mean over query heads; density d_l = 1 − γ_l.
///  5. Budgets β_l = clip(d_l/Σd · α·L, 0.01, 1), k_l = β_l·n_l (common::proportional_budgets;
///     kClipOnly, no redistribution, is the paper-faithful default; kApportion gives Σk_l = ⌊α·Σn_l⌋).
///  6. Per KV head: the last w_l = ⌊0.1·k_l⌋ slots plus the top (k_l − w_l) by s_h.
///
/// Window size: the cache keeps the last `max_post_vision_queries` query rows, so P is the
/// post-vision region clipped to that many rows (the paper's own speed benchmark used 50). Every
/// prompt key competes in one ranking. α = 1 is the identity (no compression requested).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/policies/evict/common/attention_provider.hpp"
#include "kvcompress/policies/evict/common/layer_budget.hpp"
#include "kvcompress/policies/evict/common/prefill_selection.hpp"
#include "kvcompress/policies/evict/common/prefill_window.hpp"
#include "kvcompress/policies/evict/common/protected_set.hpp"
#include "kvcompress/policies/evict/common/score_accumulation.hpp"
#include "kvcompress/policies/evict/common/score_math.hpp"
#include "kvcompress/policies/evict/none.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {

/// VL-Cache sparsity-aware budgets + post-vision scoring (see the file comment).
struct VLCache : Base {
  static constexpr const char* kName = "vl_cache";
  static constexpr bool kPerHead = true;
  static constexpr bool kNeedsScores = false;
  static constexpr bool kSelectsAtPrefillEnd = true;

  struct Config {
    double alpha = 0.1;                         ///< α: global retained ratio, (0, 1] (headline 10 %)
    float threshold = 0.01f;                    ///< p of the threshold filter, [0, 1]
    double clip_lo = 0.01, clip_hi = 1.0;       ///< clip of β_l
    double recent_fraction = 0.1;               ///< w_l = ⌊recent_fraction · k_l⌋, [0, 1)
    std::size_t max_post_vision_queries = 256;  ///< query rows the cache keeps per layer (≥ 1)
    common::BudgetRealisation realisation = common::BudgetRealisation::kClipOnly;

    void validate(const CacheShape&) const {
      const char* where = "evict::VLCache";
      detail::require(alpha > 0.0 && alpha <= 1.0, where, "alpha", alpha, "in (0, 1]");
      detail::require(threshold >= 0.0f && threshold <= 1.0f, where, "threshold", threshold, "in [0, 1]");
      detail::require(clip_lo >= 0.0 && clip_lo <= clip_hi && clip_hi <= 1.0, where, "clip_lo", clip_lo,
                      "0 <= clip_lo <= clip_hi <= 1");
      detail::require(recent_fraction >= 0.0 && recent_fraction < 1.0, where, "recent_fraction", recent_fraction,
                      "in [0, 1)");
      detail::require(max_post_vision_queries >= 1, where, "max_post_vision_queries", max_post_vision_queries, ">= 1");
    }
  };
  /// Paper defaults: α = 0.1, p = 0.01, clip [0.01, 1], 10 % recent, clip-only budgets.
  using Paper = Config;

  template <class C>
  static std::size_t query_window(const C& c) {
    return c.max_post_vision_queries;
  }

  /// Per-layer statistics and scores (exposed for tests and traces).
  struct Analysis {
    std::vector<double> density;            ///< d_l
    std::vector<std::size_t> first_row;     ///< index of the first post-vision window row
    std::vector<std::vector<float>> score;  ///< [L][Hkv·n] post-vision column sums per KV head
    common::LayerBudgets budgets;           ///< k_l and β_l
  };

  static Analysis analyse(const Config& c, const PrefillContext& ctx) {
    const char* where = "evict::VLCache::on_prefill_end";
    const CacheShape& sh = ctx.shape();
    const int L = ctx.num_layers(), Hq = sh.num_q_heads, Hkv = sh.num_kv_heads;
    Analysis a;
    std::vector<std::size_t> n_live;
    std::vector<float> keys, probs;
    for (int l = 0; l < L; ++l) {
      const SlotView& s = ctx.slots(l, 0);
      for (int h = 1; h < ctx.views_per_layer(); ++h)
        detail::require(ctx.slots(l, h).n == s.n, where, "slots(layer, head).n", ctx.slots(l, h).n,
                        "the same slot table in every head at prefill end");
      const QueryRows q = common::require_query_window(ctx, l, where);
      // v = first position after the last visual slot.
      std::int64_t last_visual = -1;
      for (std::size_t j = 0; j < s.n; ++j)
        if (s.alive[j] && common::is_visual(s.mod[j])) last_visual = s.pos[j];
      std::size_t i0 = 0;
      if (last_visual >= 0) {
        while (i0 < q.rows && q.pos[i0] <= last_visual) ++i0;
        if (i0 == q.rows) i0 = q.rows - 1;  // τ = 0: the last prompt row
      }
      common::read_layer_keys(ctx, l, s.n, keys);
      const KeyRows k{keys.data(), s.pos, Hkv, s.n, sh.head_dim};
      probs.assign(static_cast<std::size_t>(Hq) * q.rows * s.n, 0.0f);
      common::attention_rows_from_window(q, k, ctx.scale(), probs.data());
      std::vector<float> score(static_cast<std::size_t>(Hkv) * s.n);
      const common::AttentionRows rows{probs.data(), q.pos, s.pos, Hq, q.rows, s.n};
      common::column_scores(rows, common::QuerySet::from(i0, q.rows), Hkv, common::RowReduce::kSum,
                            common::HeadReduce::kPerKvHead, score.data());
      double gamma = 0.0;
      for (int g = 0; g < Hq; ++g) {
        std::size_t zeros = 0, causal = 0;
        for (std::size_t i = i0; i < q.rows; ++i) {
          const std::size_t visible =
              static_cast<std::size_t>(std::upper_bound(s.pos, s.pos + s.n, q.pos[i]) - s.pos);  // positions ascend
          float* row = probs.data() + (static_cast<std::size_t>(g) * q.rows + i) * s.n;
          zeros += common::threshold_filter(row, visible, c.threshold);
          causal += visible;
        }
        gamma += causal ? double(zeros) / double(causal) : 0.0;
      }
      a.density.push_back(1.0 - gamma / double(Hq));
      a.first_row.push_back(i0);
      a.score.push_back(std::move(score));
      n_live.push_back(std::max<std::size_t>(1, s.n_alive));
    }
    a.budgets = common::proportional_budgets(a.density, c.alpha, n_live, c.clip_lo, c.clip_hi, c.realisation);
    return a;
  }

  /// Prefill end: density budgets, then per KV head ⌊0.1·k_l⌋ recent + top-k by post-vision score.
  static void on_prefill_end(const Config& c, PrefillContext& ctx) {
    if (c.alpha >= 1.0) return;
    const Analysis a = analyse(c, ctx);
    for (int l = 0; l < ctx.num_layers(); ++l) {
      const std::size_t k = a.budgets.kept[static_cast<std::size_t>(l)];
      for (int h = 0; h < ctx.views_per_layer(); ++h) {
        const SlotView& s = ctx.slots(l, h);
        common::ProtectionConfig pc;
        pc.recent = static_cast<std::size_t>(std::floor(c.recent_fraction * double(k)));
        const float* score = a.score[static_cast<std::size_t>(l)].data() + static_cast<std::size_t>(h) * s.n;
        common::keep_top_k(s, common::live_scores(s, score).data(), pc, k, common::ProtectedOverflow::kError,
                           ctx.keep(l, h), "evict::VLCache::on_prefill_end", "alpha");
      }
    }
  }
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
