// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// KNorm — "A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression", Devoto,
/// Zhao, Scardapane and Minervini, EMNLP 2024, arXiv 2406.11430; kvpress `KnormPress` (eviction
/// spec §13.7; §1.10 row "KNorm").
///
/// Keys with a low L2 norm tend to receive high attention, so at prefill end each KV head keeps
/// the floor(r·n) live slots with the *smallest* ‖k_j‖₂ (score −‖k_j‖₂, top-k; ties keep the
/// lower position). No attention is needed, so it works with any attention kernel. The norm is
/// taken over the full-precision post-RoPE keys (RoPE preserves the norm, so pre/post is moot).
/// Budget: `budget.ratio` (default 0.5, the paper's headline "50 % without loss" setting) or
/// `budget.tokens`; optional `sinks` (0 by default, as in KnormPress).

#include <cmath>
#include <cstddef>
#include <vector>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/policies/evict/common/keep_budget.hpp"
#include "kvcompress/policies/evict/common/prefill_selection.hpp"
#include "kvcompress/policies/evict/common/protected_set.hpp"
#include "kvcompress/policies/evict/common/score_selection.hpp"
#include "kvcompress/policies/evict/none.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {

/// Keep the lowest-key-norm slots, per KV head, at prefill end.
struct KNorm : Base {
  static constexpr const char* kName = "knorm";
  static constexpr bool kPerHead = true;
  static constexpr bool kSelectsAtPrefillEnd = true;

  struct Config {
    common::KeepBudget budget{0.5, 0};  ///< retained fraction (or tokens > 0: absolute)
    std::size_t sinks = 0;              ///< first live slots always kept (not in the paper)
    common::ProtectedOverflow on_protected_overflow = common::ProtectedOverflow::kError;

    void validate(const CacheShape&) const {
      const char* where = "evict::KNorm";
      budget.validate(where);
      if (budget.tokens > 0 && on_protected_overflow == common::ProtectedOverflow::kError)
        detail::require(budget.tokens >= sinks, where, "budget.tokens", budget.tokens, ">= sinks");
    }
  };

  /// −‖k_j‖₂ of each live row (fp32 data, double accumulation).
  static std::vector<float> scores(const common::LiveRows& rows, int d) {
    std::vector<float> score(rows.size());
    for (std::size_t t = 0; t < rows.size(); ++t) {
      double ss = 0.0;
      for (int c = 0; c < d; ++c) ss += double(rows.k[t * d + c]) * rows.k[t * d + c];
      score[t] = -static_cast<float>(std::sqrt(ss));
    }
    return score;
  }

  static void on_prefill_end(const Config& c, PrefillContext& ctx) {
    for (int l = 0; l < ctx.num_layers(); ++l)
      for (int h = 0; h < ctx.views_per_layer(); ++h) {
        const SlotView& s = ctx.slots(l, h);
        const std::size_t k = c.budget.resolve(s.n_alive);
        if (k >= s.n_alive) continue;
        const std::vector<float> score = scores(common::read_live_rows(ctx, l, h, h), ctx.shape().head_dim);
        common::ProtectionConfig pc;
        pc.sinks = c.sinks;
        common::keep_top_k(s, score.data(), pc, k, c.on_protected_overflow, ctx.keep(l, h), "evict::KNorm",
                           c.budget.field());
      }
  }
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
