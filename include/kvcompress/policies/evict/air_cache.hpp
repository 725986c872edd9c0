// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AirCache — "AirCache: Activating Inter-modal Relevancy KV Cache Compression for Efficient Large
/// Vision-Language Model Inference", arXiv 2503.23956, ICCV 2025 (eviction spec §9; no official
/// code, algorithm from detailed paper notes [2nd]).
///
/// Composition (spec §1.10): trigger = prefill end (all layers' statistics first); allocator =
/// strength + skewness; scorer = elite-window visual importance; selector = top-k of the visual
/// slots, every non-visual slot kept. One decision per layer (shared indices, §9 (b) [rec]).
///  1. Last text token t = the last window row whose slot is non-visual. Att = softmax over the
///     text keys of the window of q_t (mean over query heads), common::attention_rows_from_window.
///  2. Elite set E = {j : Att[j] ≥ α·max Att}, α = 0.9 (α = 1: every maximum).
///  3. A = softmax(Q_E [K_V; K_E]ᵀ/√d), causal by position, over the visual keys and the elite
///     text keys; I_v[i] = mean over elites and query heads of A[e][i] for visual slot i
///     (common::column_scores, kMean rows, kLayerShared heads).
///  4. Strength s_t = Σ_i I_v[i]; skewness s_k = G1(I_v) (common::sample_skewness).
///  5. Normalisation ' across layers = mean-normalisation s'_l = s_l / mean_l(s) (1 when the mean
///     is 0); skewness is first shifted s_k ← s_k − min_l s_k + 1e-6 if any is negative [rec].
///     Visual budget k_l = ½(s'_t + s'_k)·r·N_v, clipped to [1, N_v] and water-filled so that
///     Σ_l k_l = ⌊r·Σ_l N_v⌋ (common::proportional_budgets, kApportion).
///  6. Keep the top-k_l visual slots by I_v plus every non-visual slot (modality protection).
/// Interpretations [rec]: the text candidate pool of step 1 is the non-visual slots inside the
/// query window the cache kept (elites need their queries); a window without any non-visual row
/// uses its last row as the only elite; a layer without visual slots is left unchanged and is
/// not part of the normalisation; r = 1 is the identity.

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

/// AirCache elite-window scoring and strength/skewness budgets (see the file comment).
struct AirCache : Base {
  static constexpr const char* kName = "air_cache";
  static constexpr bool kPerHead = false;
  static constexpr bool kNeedsScores = false;
  static constexpr bool kSelectsAtPrefillEnd = true;

  struct Config {
    double ratio = 0.1;            ///< r: retained share of the visual slots, (0, 1] (paper: 10 %)
    double elite_alpha = 0.9;      ///< α of the elite set, (0, 1]
    std::size_t max_window = 512;  ///< query rows the cache keeps per layer (elite candidates), ≥ 1

    void validate(const CacheShape&) const {
      const char* where = "evict::AirCache";
      detail::require(ratio > 0.0 && ratio <= 1.0, where, "ratio", ratio, "in (0, 1]");
      detail::require(elite_alpha > 0.0 && elite_alpha <= 1.0, where, "elite_alpha", elite_alpha, "in (0, 1]");
      detail::require(max_window >= 1, where, "max_window", max_window, ">= 1");
    }
  };
  /// Paper defaults: r = 0.1, α = 0.9.
  using Paper = Config;

  template <class C>
  static std::size_t query_window(const C& c) {
    return c.max_window;
  }

  /// One layer's elite-window statistics.
  struct LayerStats {
    std::vector<std::size_t> elite;   ///< window row indices of the elite set
    std::vector<std::size_t> visual;  ///< slot indices of the live visual slots
    std::vector<float> importance;    ///< I_v, aligned with `visual`
    double strength = 0.0, skewness = 0.0;
  };

  /// Steps 1–4 for one layer.
  static LayerStats layer_stats(const Config& c, const PrefillContext& ctx, int l) {
    const char* where = "evict::AirCache::on_prefill_end";
    const CacheShape& sh = ctx.shape();
    const int Hq = sh.num_q_heads, Hkv = sh.num_kv_heads;
    const SlotView& s = ctx.slots(l, 0);
    LayerStats st;
    for (std::size_t j = 0; j < s.n; ++j)
      if (s.alive[j] && common::is_visual(s.mod[j])) st.visual.push_back(j);
    if (st.visual.empty()) return st;
    const QueryRows q = common::require_query_window(ctx, l, where);
    // Window rows whose own slot is text, and that slot's index.
    std::vector<std::size_t> text_rows, text_slots;
    for (std::size_t i = 0; i < q.rows; ++i) {
      const auto it = std::lower_bound(s.pos, s.pos + s.n, q.pos[i]);
      const std::size_t j = static_cast<std::size_t>(it - s.pos);
      if (it != s.pos + s.n && *it == q.pos[i] && s.alive[j] && !common::is_visual(s.mod[j]))
        text_rows.push_back(i), text_slots.push_back(j);
    }
    std::vector<float> keys;
    common::read_layer_keys(ctx, l, s.n, keys);
    if (text_rows.empty()) {
      st.elite.push_back(q.rows - 1);
    } else {
      // 1–2: the last text row attends over the window's text keys; elites by α·max.
      const std::size_t last = text_rows.back();
      const auto q_last = common::gather_rows(q.q, q.pos, Hq, q.rows, q.head_dim, &last, 1);
      const auto k_text =
          common::gather_rows(keys.data(), s.pos, Hkv, s.n, sh.head_dim, text_slots.data(), text_slots.size());
      std::vector<float> p(static_cast<std::size_t>(Hq) * text_slots.size()), att(text_slots.size());
      common::attention_rows_from_window(q_last.queries(), k_text.keys(), ctx.scale(), p.data());
      common::reduce_query_heads(p.data(), Hq, 1, text_slots.size(), common::HeadReduce::kLayerShared, att.data());
      const float mx = *std::max_element(att.begin(), att.end());
      for (std::size_t t = 0; t < text_rows.size(); ++t)
        if (att[t] >= c.elite_alpha * mx) st.elite.push_back(text_rows[t]);
    }
    // 3: elite queries over [K_V; K_E].
    std::vector<std::size_t> key_slots = st.visual;
    for (std::size_t e : st.elite) {
      const auto it = std::lower_bound(s.pos, s.pos + s.n, q.pos[e]);
      if (it != s.pos + s.n && *it == q.pos[e] && !common::is_visual(s.mod[it - s.pos]))
        key_slots.push_back(static_cast<std::size_t>(it - s.pos));
    }
    const auto qe = common::gather_rows(q.q, q.pos, Hq, q.rows, q.head_dim, st.elite.data(), st.elite.size());
    const auto ke = common::gather_rows(keys.data(), s.pos, Hkv, s.n, sh.head_dim, key_slots.data(), key_slots.size());
    std::vector<float> a(static_cast<std::size_t>(Hq) * st.elite.size() * key_slots.size()), col(key_slots.size());
    common::attention_rows_from_window(qe.queries(), ke.keys(), ctx.scale(), a.data());
    const common::AttentionRows rows{a.data(), qe.pos.data(), ke.pos.data(), Hq, st.elite.size(), key_slots.size()};
    common::column_scores(rows, common::QuerySet::all(st.elite.size()), Hkv, common::RowReduce::kMean,
                          common::HeadReduce::kLayerShared, col.data());
    // 4: statistics of the visual importance.
    st.importance.assign(col.begin(), col.begin() + static_cast<std::ptrdiff_t>(st.visual.size()));
    for (float x : st.importance) st.strength += x;
    st.skewness = common::sample_skewness(st.importance.data(), st.importance.size());
    return st;
  }

  /// Step 5: visual budgets k_l of the layers with visual slots (0 for the others).
  static common::LayerBudgets budgets(const Config& c, const std::vector<LayerStats>& st) {
    std::vector<double> ts, ks;
    std::vector<std::size_t> nv;
    for (const auto& x : st)
      if (!x.visual.empty()) ts.push_back(x.strength), ks.push_back(x.skewness), nv.push_back(x.visual.size());
    common::LayerBudgets out;
    if (nv.empty()) return out;
    const double kmin = *std::min_element(ks.begin(), ks.end());
    if (kmin < 0.0)
      for (double& k : ks) k = k - kmin + 1e-6;
    auto mean_normalise = [](std::vector<double>& v) {
      double m = 0.0;
      for (double x : v) m += x;
      m /= double(v.size());
      for (double& x : v) x = m > 0.0 ? x / m : 1.0;
    };
    mean_normalise(ts);
    mean_normalise(ks);
    std::vector<double> w(nv.size());
    for (std::size_t t = 0; t < nv.size(); ++t) w[t] = 0.5 * (ts[t] + ks[t]);
    const auto b = common::proportional_budgets(w, c.ratio, nv, 0.0, 1.0, common::BudgetRealisation::kApportion);
    out.target = b.target;
    out.total = b.total;
    for (std::size_t l = 0, t = 0; l < st.size(); ++l) {
      const bool has = !st[l].visual.empty();
      out.kept.push_back(has ? b.kept[t] : 0);
      out.ratio.push_back(has ? b.ratio[t] : 1.0);
      t += has ? 1 : 0;
    }
    return out;
  }

  /// Prefill end: statistics of every layer, budgets, then top-k_l visual slots + all text.
  static void on_prefill_end(const Config& c, PrefillContext& ctx) {
    if (c.ratio >= 1.0) return;
    std::vector<LayerStats> st;
    for (int l = 0; l < ctx.num_layers(); ++l) st.push_back(layer_stats(c, ctx, l));
    const common::LayerBudgets b = budgets(c, st);
    common::ProtectionConfig pc;
    for (int m = 0; m < kModalityCount; ++m)
      if (!common::is_visual(static_cast<Modality>(m))) pc.modalities |= common::modality_bit(static_cast<Modality>(m));
    for (int l = 0; l < ctx.num_layers(); ++l) {
      const LayerStats& x = st[static_cast<std::size_t>(l)];
      if (x.visual.empty()) continue;
      const SlotView& s = ctx.slots(l, 0);
      std::vector<float> score(s.n, 0.0f);
      for (std::size_t t = 0; t < x.visual.size(); ++t) score[x.visual[t]] = x.importance[t];
      const std::size_t text = s.n_alive - x.visual.size();
      common::keep_top_k(s, common::live_scores(s, score.data()).data(), pc, text + b.kept[static_cast<std::size_t>(l)],
                         common::ProtectedOverflow::kError, ctx.keep(l, 0), "evict::AirCache::on_prefill_end", "ratio");
    }
  }
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
