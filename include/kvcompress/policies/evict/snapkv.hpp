// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// SnapKV — "SnapKV: LLM Knows What You are Looking for Before Generation", Li et al., NeurIPS
/// 2024, arXiv 2404.14469 (eviction spec §13.3; §1.10 row "SnapKV").
///
/// One-shot at prefill end, per KV head. The observation window is the last W prompt tokens:
///   s[j] = Σ_{i ∈ window} A[i][j] for the live slots j before the window (attention recomputed
///          from the window's post-RoPE queries, common::attention_rows_from_window, spec §1.1
///          back-end 2, so it works with engines that run FlashAttention and `observe` the window);
///   pooled along the key axis (§1.3; avg, kernel 5 by default) over those prefix slots only
///          (the SnapKV code pools `attn[..., :-W]`, so window scores never leak into the prefix);
///   GQA: pooled per query head, then the mean over the n_rep heads of the group (kvpress order;
///          identical to mean-then-pool for avg/sum pooling, §0 rule 5);
///   keep the top (C − W) prefix slots + the window (protected, counts against C); a view with
///          C ≥ live slots is left unchanged ("skip compression when m < C").
/// Ties keep the lower position (§0 rule 2). Positions are never renumbered.
///
/// Budget: `budget.tokens` = C (`max_capacity_prompt`, paper/code setting 1024/2048/4096; default
/// 1024) or `budget.ratio` = retained fraction of the live slots (tokens = 0). Optional
/// `sinks` protect the first live slots (not in the paper; 0 by default). A budget below the
/// protected set (window + sinks) throws under on_protected_overflow = error (default, §1.5).
///
/// The cache keeps the last W query rows per layer for this (`query_window(cfg)` = W): the
/// engine must `attend` (or `observe`) at least the last W prompt queries of each layer.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/policies/evict/common/attention_provider.hpp"
#include "kvcompress/policies/evict/common/keep_budget.hpp"
#include "kvcompress/policies/evict/common/pooling.hpp"
#include "kvcompress/policies/evict/common/prefill_selection.hpp"
#include "kvcompress/policies/evict/common/prefill_window.hpp"
#include "kvcompress/policies/evict/common/protected_set.hpp"
#include "kvcompress/policies/evict/common/score_accumulation.hpp"
#include "kvcompress/policies/evict/common/score_selection.hpp"
#include "kvcompress/policies/evict/none.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {

/// Observation-window scorer + top-k, per KV head, at prefill end.
struct SnapKV : Base {
  static constexpr const char* kName = "snapkv";
  static constexpr bool kPerHead = true;
  static constexpr bool kSelectsAtPrefillEnd = true;

  struct Config {
    common::KeepBudget budget{1.0, 1024};   ///< C = 1024 slots per KV head (or a ratio, tokens = 0)
    std::size_t window = 32;                ///< W: observation window (SnapKV code 32; kvpress 64)
    int kernel = 5;                         ///< pooling kernel, odd (SnapKV default 5; LongBench max/7)
    common::PoolKind pool = common::PoolKind::kAvg;  ///< avg (default) or max (LongBench configs)
    std::size_t sinks = 0;                  ///< first live slots always kept (not in the paper)
    common::ProtectedOverflow on_protected_overflow = common::ProtectedOverflow::kError;

    void validate(const CacheShape&) const {
      const char* where = "evict::SnapKV";
      check_scorer(where);
      if (budget.tokens > 0 && on_protected_overflow == common::ProtectedOverflow::kError)
        detail::require(budget.tokens >= window + sinks, where, "budget.tokens", budget.tokens,
                        ">= window + sinks (" + std::to_string(window + sinks) +
                            "): the observation window is kept and counts against the budget");
    }

    /// Checks shared by the SnapKV-scored policies (PyramidKV): budget ratio, window, kernel.
    void check_scorer(const char* where) const {
      budget.validate(where);
      detail::require(window >= 1, where, "window", window, ">= 1 (the observation window)");
      detail::require(kernel >= 1 && kernel % 2 == 1, where, "kernel", kernel, "an odd value >= 1");
    }
  };

  template <class C>
  static std::size_t query_window(const C& c) { return c.window; }

  /// SnapKV scores of the live slots of stream (layer, kv_head), in ascending position: pooled
  /// window attention for the slots before the window, 0 for the last min(W, n) slots (the
  /// window, protected by the caller). `rows` receives the live rows that were read.
  static std::vector<float> scores(const Config& c, const PrefillContext& ctx, int layer, int kv_head,
                                   common::LiveRows& rows) {
    rows = common::read_live_rows(ctx, layer, kv_head, kv_head);
    const std::size_t n = rows.size();
    const std::size_t w = std::min(c.window, n), prefix = n - w;
    std::vector<float> score(n, 0.0f);
    if (prefix == 0) return score;
    const QueryRows q = common::require_query_window(ctx, layer, "evict::SnapKV");
    const int d = ctx.shape().head_dim, rep = ctx.shape().group_size();
    const QueryRows group{q.q + static_cast<std::size_t>(kv_head) * rep * q.rows * d, q.pos, rep, q.rows, d};
    const KeyRows keys{rows.k.data(), rows.pos.data(), 1, n, d};
    std::vector<float> p(static_cast<std::size_t>(rep) * q.rows * n);
    common::attention_rows_from_window(group, keys, ctx.scale(), p.data());
    // Per query head: Σ over the window rows (§1.2, Qset = last W rows, sum), then pooling.
    std::vector<float> per_q(static_cast<std::size_t>(rep) * n), pooled(static_cast<std::size_t>(rep) * prefix);
    const common::AttentionRows a{p.data(), q.pos, rows.pos.data(), rep, q.rows, n};
    common::column_scores(a, common::QuerySet::all(q.rows), rep, common::RowReduce::kSum,
                          common::HeadReduce::kPerKvHead, per_q.data());
    for (int g = 0; g < rep; ++g)
      common::pool_scores(per_q.data() + static_cast<std::size_t>(g) * n, prefix, c.kernel, c.pool,
                          pooled.data() + static_cast<std::size_t>(g) * prefix);
    common::reduce_query_heads(pooled.data(), rep, 1, prefix, common::HeadReduce::kPerKvHead, score.data());
    return score;
  }

  /// Keeps `k` live slots of (layer, kv_head) by SnapKV score, window (+ sinks) protected.
  static void select(const Config& c, PrefillContext& ctx, int layer, int kv_head, std::size_t k,
                     const char* where, const char* budget_field) {
    const SlotView& s = ctx.slots(layer, kv_head);
    if (k >= s.n_alive) return;
    common::LiveRows rows;
    const std::vector<float> score = scores(c, ctx, layer, kv_head, rows);
    common::ProtectionConfig pc;
    pc.sinks = c.sinks;
    pc.mandatory_begin = rows.size() - std::min(c.window, rows.size());
    pc.mandatory_end = rows.size();
    common::keep_top_k(s, score.data(), pc, k, c.on_protected_overflow, ctx.keep(layer, kv_head), where,
                       budget_field);
  }

  static void on_prefill_end(const Config& c, PrefillContext& ctx) {
    for (int l = 0; l < ctx.num_layers(); ++l)
      for (int h = 0; h < ctx.views_per_layer(); ++h)
        select(c, ctx, l, h, c.budget.resolve(ctx.slots(l, h).n_alive), "evict::SnapKV", c.budget.field());
  }
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
