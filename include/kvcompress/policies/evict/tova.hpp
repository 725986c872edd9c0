// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// TOVA — Token Omission Via Attention, from "Transformers are Multi-State RNNs", Oren et al.,
/// arXiv 2401.06104 (eviction spec §13.5; §1.10 row "TOVA").
///
/// A fixed multi-state size C per layer. At each step the new token joins the C kept states, the
/// current query attends over the C + 1 slots, and then the slot with the lowest attention from
/// that *current* query, averaged over all heads of the layer, is dropped (one decision per
/// layer, shared by every KV head). The current token is never dropped (spec oracle;
/// kvpress TOVAPress forces it too, the original TOVA code does not — its attention on itself is
/// usually high). Ties drop
/// the later position, so equal scores keep the lower one (§0 rule 2).
///
/// Mapping onto the cache: the drop decided after step t runs in make_room of the append of
/// token t + 1, from SlotView::score = the head-mean attention of the latest attend call
/// (kScoreMode = kLatest: the cache gives this per-layer policy the mean over KV heads of the
/// per-KV-head group means, i.e. the mean over all query heads); the newest live slot (token t)
/// is protected. So a layer holds at most C + 1 slots while attending and C between steps.
///
/// Prompt: the paper applies the same rule per prompt token. An engine that appends the prompt
/// token by token gets exactly that from make_room. For a chunked prefill, end_prefill applies
/// one TOVA step with the last prompt query (`query_window(cfg)` = 1): keep the C slots with the
/// highest head-mean attention from it, the last token protected — the kvpress one-shot form
/// (`TOVAPress` scores the prompt by the last row's head-mean attention). After a token-by-token
/// prefill this is the same single drop that the next make_room would make.
/// A chunk appended at once stays whole until the next append or end_prefill trims it (its
/// queries need every key of the chunk); between chunks make_room drops by the attention of the
/// previous chunk's rows summed (kLatest over a multi-row call), an approximation of the
/// per-token rule. Capacity: C + 1 for token-by-token prefill, C + 1 + the largest chunk
/// otherwise.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/policies/evict/common/attention_provider.hpp"
#include "kvcompress/policies/evict/common/prefill_selection.hpp"
#include "kvcompress/policies/evict/common/prefill_window.hpp"
#include "kvcompress/policies/evict/common/protected_set.hpp"
#include "kvcompress/policies/evict/common/score_accumulation.hpp"
#include "kvcompress/policies/evict/common/score_selection.hpp"
#include "kvcompress/policies/evict/none.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {

/// Drop the argmin of the current query's head-mean attention, one decision per layer.
struct TOVA : Base {
  static constexpr const char* kName = "tova";
  static constexpr bool kPerHead = false;
  static constexpr bool kNeedsScores = true;
  static constexpr ScoreMode kScoreMode = ScoreMode::kLatest;
  /// False although on_prefill_end evicts: TOVA also evicts *during* the prompt (make_room per
  /// appended token), which the cache suppresses until end_prefill for policies that select
  /// only at prefill end. Consequence: with a lossy store the prompt is encoded as it arrives and
  /// the end-of-prompt step reads the store's dequantized keys (as every decode-time TOVA step
  /// reads the store's attention anyway).
  static constexpr bool kSelectsAtPrefillEnd = false;

  struct Config {
    /// C: states kept per layer between steps (the paper sweeps 64…4096 and reports ≈ 1/8 of
    /// the context with little loss; 512 is its main long-context setting).
    std::size_t cache_size = 512;

    void validate(const CacheShape& shape) const {
      detail::require(cache_size >= 1, "evict::TOVA", "cache_size", cache_size, ">= 1");
      detail::require(cache_size + 1 <= shape.capacity, "evict::TOVA", "cache_size", cache_size,
                      "<= capacity - 1 (" + std::to_string(shape.capacity) +
                          " - 1): the new token joins the C states before the drop");
    }
  };

  template <class C>
  static std::size_t query_window(const C&) { return 1; }

  /// Decode: before the next token arrives, drop the lowest-scoring slots (the latest query's
  /// head-mean attention) so live + n_incoming ≤ C + 1; the newest live slot stays.
  static void make_room(const Config& c, const SlotView& s, std::size_t n_incoming, std::uint8_t* keep) {
    const std::size_t limit = c.cache_size + 1;
    if (s.n_alive + n_incoming <= limit) return;
    common::evict_lowest_scores(s, s.n_alive + n_incoming - limit, 1, keep);
  }

  /// Head-mean attention of the last prompt query on the live slots of `layer` ([n_live],
  /// ascending position).
  static std::vector<float> last_row_scores(const PrefillContext& ctx, int layer) {
    const SlotView& s = ctx.slots(layer, 0);
    const int d = ctx.shape().head_dim, hkv = ctx.shape().num_kv_heads;
    const QueryRows q = common::require_query_window(ctx, layer, "evict::TOVA");
    // The window is [Hq][rows][d]: gather the last row of every query head.
    std::vector<float> qlast(static_cast<std::size_t>(q.num_heads) * d);
    for (int g = 0; g < q.num_heads; ++g)
      std::copy(q.q + (static_cast<std::size_t>(g) * q.rows + q.rows - 1) * d,
                q.q + (static_cast<std::size_t>(g) * q.rows + q.rows) * d, qlast.begin() + static_cast<std::size_t>(g) * d);
    const QueryRows row{qlast.data(), q.pos + (q.rows - 1), q.num_heads, 1, d};
    std::vector<float> keys;
    std::vector<std::int32_t> pos;
    for (int h = 0; h < hkv; ++h) {
      const common::LiveRows r = common::read_live_rows(ctx, layer, 0, h);
      keys.insert(keys.end(), r.k.begin(), r.k.end());
      if (h == 0) pos = r.pos;
    }
    const std::size_t n = s.n_alive;
    std::vector<float> p(static_cast<std::size_t>(q.num_heads) * n), score(n);
    common::attention_rows_from_window(row, KeyRows{keys.data(), pos.data(), hkv, n, d}, ctx.scale(), p.data());
    const common::AttentionRows a{p.data(), row.pos, pos.data(), q.num_heads, 1, n};
    common::column_scores(a, common::QuerySet::all(1), hkv, common::RowReduce::kSum, common::HeadReduce::kLayerShared,
                          score.data());
    return score;
  }

  /// Prefill end: one TOVA step with the last prompt query — keep the C best slots per layer.
  static void on_prefill_end(const Config& c, PrefillContext& ctx) {
    for (int l = 0; l < ctx.num_layers(); ++l) {
      const SlotView& s = ctx.slots(l, 0);
      if (s.n_alive <= c.cache_size) continue;
      const std::vector<float> score = last_row_scores(ctx, l);
      common::ProtectionConfig pc;
      pc.last_token = true;
      common::keep_top_k(s, score.data(), pc, c.cache_size, common::ProtectedOverflow::kError, ctx.keep(l, 0),
                         "evict::TOVA", "cache_size");
    }
  }
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
