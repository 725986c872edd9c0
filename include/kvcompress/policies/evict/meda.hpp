// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// MEDA — "MEDA: Dynamic KV Cache Allocation for Efficient Multimodal Long-Context Inference",
/// Wan et al., NAACL 2025, arXiv 2502.17599 (eviction spec §3). Merging is the Merge axis:
/// merge::Meda (= LookMAverage: cosine-nearest anchor, average reducer, paper Eq. 8).
///
/// At the end of prefill, once every layer has been seen:
///  1. Cross-modal attention per layer [paper Eq. 4]: A_TV = softmax(Q_T K_Vᵀ·scale) — text query
///     rows over the *visual keys only*, renormalised over that block — and A_VT = softmax(Q_V
///     K_Tᵀ·scale). Causal by original position [rec (a)]: a row sees only keys at or before it;
///     rows with no visible key in the block are skipped. "Text" = every non-visual slot, visual
///     = image + video [rec (d)].
///  2. E(A) = mean over rows of the row entropy H = −Σ a log(a + 1e-12); E_CM^l = E(A_TV) +
///     E(A_VT) [Eqs. 5–6]. Heads: probabilities averaged over all query heads before the entropy
///     (paper wording, default) or per-head entropies averaged (code), HeadEntropy.
///  3. α_l = clip(softmax_l(E_CM)·L·ρ, 0.01, 1), clipped without redistribution [code]
///     (common::softmax_budgets). No visual or no text slot in the prompt → E_CM = 0, α_l = ρ.
///  4. Layer l splits its budget 1:1: M_l = N_l = ⌊α_l·m/2⌋ (faithful, totals fall short of
///     ρ·L·m); with BudgetRealisation::kApportion the integer k_l of §1.6 (Σ k_l = ⌊ρ·L·m⌋) is
///     split M_l = ⌊k_l/2⌋, N_l = k_l − M_l.
///  5. Per KV head, LOOK-M selection (text prior, top-N_l + recent M_l; evict::LookM::select).
///
/// Interpretation of the attention source: the entropy needs the attention of *all* prompt
/// query rows on keys of the other modality. FlashAttention-style engines do not materialise it,
/// so the policy asks the cache for a query window (query_window(cfg) = Config::query_window,
/// default 4096 rows) and recomputes the blocks from the post-RoPE queries and the full-precision
/// keys (PrefillContext::queries/read; AttentionProvider back-end 2). With a prompt no longer
/// than the window this is exactly the paper's all-row measure; for longer prompts it is the
/// measure over the last `query_window` rows (raise the window to cover the prompt; memory is
/// L·Hq·window·d floats). The all-row column sums of step 5 come from SlotView::score
/// (kNeedsScores, accumulated over every attended row), independent of the window.
///
/// Code-vs-paper [code]: the shipped default measures mean_heads(full-attention entropy)/q_len
/// instead of the cross-modal entropy, enlarges the recent window to keep all text, uses the
/// hard text prior, ρ = 0.2, and runs at the first decode step. The library follows the paper;
/// the hard prior and the per-head-entropy mean are options; ρ is a Config knob.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/modality.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/core/query_rows.hpp"
#include "kvcompress/policies/evict/common/attention_provider.hpp"
#include "kvcompress/policies/evict/common/layer_budget.hpp"
#include "kvcompress/policies/evict/common/score_math.hpp"
#include "kvcompress/policies/evict/look_m.hpp"
#include "kvcompress/policies/evict/none.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {

/// How the heads of a layer are combined before/after the row entropy (spec §3 ambiguity (b)).
enum class HeadEntropy : std::uint8_t {
  kMeanProbabilities,  ///< H(mean_g A_g): attention averaged over heads first (paper, default)
  kMeanEntropies,      ///< mean_g H(A_g) (reference code)
};

/// Entropy-guided layer budgets + LOOK-M selection at prefill end.
struct Meda : Base {
  static constexpr const char* kName = "meda";
  static constexpr bool kPerHead = true;
  static constexpr bool kNeedsScores = true;
  static constexpr ScoreMode kScoreMode = ScoreMode::kAccumulate;
  static constexpr bool kSelectsAtPrefillEnd = true;

  struct Config {
    double rho = 0.1;   ///< ρ: retained fraction of the prompt KV over all layers (paper 0.1; code 0.2)
    double lo = 0.01;   ///< lower clip of α_l
    double hi = 1.0;    ///< upper clip of α_l
    common::BudgetRealisation realisation = common::BudgetRealisation::kClipOnly;  ///< faithful
    HeadEntropy head_entropy = HeadEntropy::kMeanProbabilities;
    TextPrior text_prior = TextPrior::kSoft;
    std::uint8_t visual_modalities = LookM::kVisual;  ///< the rest is text
    std::size_t query_window = 4096;  ///< prompt query rows kept for the entropy (see file comment)

    void validate(const CacheShape&) const {
      const char* where = "evict::Meda";
      detail::require(rho > 0.0 && rho <= 1.0, where, "rho", rho, "in (0, 1]");
      detail::require(lo >= 0.0 && lo <= hi, where, "lo", lo, "in [0, hi]");
      detail::require(hi > 0.0 && hi <= 1.0, where, "hi", hi, "in (0, 1]");
      detail::require(query_window >= 1, where, "query_window", query_window, ">= 1 query row");
    }
  };

  template <class C>
  static std::size_t query_window(const C& c) { return c.query_window; }

  /// Budgets of every layer: the allocator trace and the per-layer split.
  struct Plan {
    std::vector<double> entropy;         ///< E_CM^l
    common::LayerBudgets budgets;        ///< ratio = α_l (clipped), kept = k_l of the realisation
    std::vector<std::size_t> recent;     ///< M_l
    std::vector<std::size_t> important;  ///< N_l
  };

  static bool is_visual(const Config& c, Modality m) { return (c.visual_modalities & common::modality_bit(m)) != 0; }

  /// E(A) of one block of layer `layer`: query rows whose slot modality is visual == `query_visual`
  /// over the keys of the other modality. Views of the layer must share their slots (true at
  /// prefill end: MEDA evicts nothing before). Returns 0 when no row sees a key of the block.
  static double block_entropy(const Config& c, const PrefillContext& ctx, int layer, bool query_visual) {
    const char* where = "evict::Meda::block_entropy";
    const CacheShape& shape = ctx.shape();
    const QueryRows q = ctx.queries(layer);
    const SlotView& s = ctx.slots(layer, 0);
    const int hq = shape.num_q_heads, hkv = shape.num_kv_heads, d = shape.head_dim;
    const std::size_t ud = static_cast<std::size_t>(d);
    for (int v = 1; v < ctx.views_per_layer(); ++v)
      detail::require(ctx.slots(layer, v).n == s.n, where, "slots(layer, view).n", ctx.slots(layer, v).n,
                      "the same slots in every KV head of a layer");
    detail::require(q.rows == 0 || (q.num_heads == hq && q.head_dim == d), where, "queries(layer).num_heads", q.num_heads,
                    "Hq with head_dim d");
    auto live = [&](std::size_t j) { return s.alive == nullptr || s.alive[j] != 0; };
    // Keys of the block: the live slots of the other modality, [Hkv][nk][d].
    std::vector<std::size_t> key_idx;
    for (std::size_t j = 0; j < s.n; ++j)
      if (live(j) && is_visual(c, s.mod[j]) != query_visual) key_idx.push_back(j);
    // Query rows of the block: rows whose position holds a slot of the query modality.
    std::vector<std::size_t> row_idx;
    for (std::size_t i = 0; i < q.rows; ++i) {
      const std::int32_t* it = std::lower_bound(s.pos, s.pos + s.n, q.pos[i]);
      if (it == s.pos + s.n || *it != q.pos[i]) continue;
      if (is_visual(c, s.mod[it - s.pos]) == query_visual) row_idx.push_back(i);
    }
    if (key_idx.empty() || row_idx.empty()) return 0.0;
    const std::size_t nk = key_idx.size();
    std::vector<float> kall(s.n * ud), vall(s.n * ud), keys(static_cast<std::size_t>(hkv) * nk * ud);
    std::vector<std::int32_t> kpos(nk);
    for (std::size_t t = 0; t < nk; ++t) kpos[t] = s.pos[key_idx[t]];
    for (int h = 0; h < hkv; ++h) {
      ctx.read(layer, h, kall.data(), vall.data());
      for (std::size_t t = 0; t < nk; ++t)
        std::copy_n(kall.data() + key_idx[t] * ud, ud, keys.data() + (static_cast<std::size_t>(h) * nk + t) * ud);
    }
    const KeyRows kr{keys.data(), kpos.data(), hkv, nk, d};
    constexpr std::size_t kChunk = 32;
    std::vector<float> qc(static_cast<std::size_t>(hq) * kChunk * ud), prob(static_cast<std::size_t>(hq) * kChunk * nk),
        mean(nk);
    std::vector<std::int32_t> qpos(kChunk);
    double sum = 0.0;
    std::size_t counted = 0;
    for (std::size_t r0 = 0; r0 < row_idx.size(); r0 += kChunk) {
      const std::size_t rows = std::min(kChunk, row_idx.size() - r0);
      for (int g = 0; g < hq; ++g)
        for (std::size_t r = 0; r < rows; ++r)
          std::copy_n(q.q + (static_cast<std::size_t>(g) * q.rows + row_idx[r0 + r]) * ud, ud,
                      qc.data() + (static_cast<std::size_t>(g) * rows + r) * ud);
      for (std::size_t r = 0; r < rows; ++r) qpos[r] = q.pos[row_idx[r0 + r]];
      common::attention_rows_from_window(QueryRows{qc.data(), qpos.data(), hq, rows, d}, kr, ctx.scale(), prob.data());
      for (std::size_t r = 0; r < rows; ++r) {
        if (kpos[0] > qpos[r]) continue;  // no visible key in the block
        const float* p0 = prob.data() + r * nk;
        if (c.head_entropy == HeadEntropy::kMeanProbabilities) {
          std::fill(mean.begin(), mean.end(), 0.0f);
          for (int g = 0; g < hq; ++g) {
            const float* pg = p0 + static_cast<std::size_t>(g) * rows * nk;
            for (std::size_t j = 0; j < nk; ++j) mean[j] += pg[j] / float(hq);
          }
          sum += common::row_entropy(mean.data(), nk);
        } else {
          double h = 0.0;
          for (int g = 0; g < hq; ++g) h += common::row_entropy(p0 + static_cast<std::size_t>(g) * rows * nk, nk);
          sum += h / double(hq);
        }
        ++counted;
      }
    }
    return counted == 0 ? 0.0 : sum / double(counted);
  }

  /// E_CM^l = E(A_TV) + E(A_VT) of every layer; all 0 when the prompt lacks text or visual slots.
  static std::vector<double> cross_modal_entropy(const Config& c, const PrefillContext& ctx) {
    std::vector<double> e(static_cast<std::size_t>(ctx.num_layers()), 0.0);
    const SlotView& s0 = ctx.slots(0, 0);
    if (s0.mod == nullptr) return e;
    bool any_text = false, any_visual = false;
    for (std::size_t j = 0; j < s0.n; ++j) {
      if (s0.alive != nullptr && !s0.alive[j]) continue;
      (is_visual(c, s0.mod[j]) ? any_visual : any_text) = true;
    }
    if (!any_text || !any_visual) return e;
    for (int l = 0; l < ctx.num_layers(); ++l)
      e[static_cast<std::size_t>(l)] = block_entropy(c, ctx, l, false) + block_entropy(c, ctx, l, true);
    return e;
  }

  /// Steps 1–4: entropies, layer ratios α_l and the per-layer recent/important split.
  static Plan plan(const Config& c, const PrefillContext& ctx) {
    std::vector<std::size_t> m(static_cast<std::size_t>(ctx.num_layers()));
    for (int l = 0; l < ctx.num_layers(); ++l) m[static_cast<std::size_t>(l)] = ctx.slots(l, 0).n_alive;
    return plan_from_entropy(c, cross_modal_entropy(c, ctx), m);
  }

  /// Steps 3–4 for given entropies E_CM^l and prompt lengths m_l (live slots per layer).
  static Plan plan_from_entropy(const Config& c, std::vector<double> entropy, std::vector<std::size_t> m) {
    Plan p;
    p.entropy = std::move(entropy);
    for (std::size_t& x : m) x = std::max<std::size_t>(x, 1);  // allocators need n_l ≥ 1
    p.budgets = common::softmax_budgets(p.entropy, c.rho, m, c.lo, c.hi, c.realisation);
    for (std::size_t l = 0; l < m.size(); ++l) {
      if (c.realisation == common::BudgetRealisation::kClipOnly) {
        const auto half = static_cast<std::size_t>(p.budgets.ratio[l] * double(m[l]) / 2.0);
        p.recent.push_back(half);
        p.important.push_back(half);
      } else {
        p.recent.push_back(p.budgets.kept[l] / 2);
        p.important.push_back(p.budgets.kept[l] - p.budgets.kept[l] / 2);
      }
    }
    return p;
  }

  /// Step 5: LOOK-M selection in every KV head with the layer's (N_l, M_l).
  static void on_prefill_end(const Config& c, PrefillContext& ctx) {
    const Plan p = plan(c, ctx);
    LookM::Config lc;
    lc.text_prior = c.text_prior;
    lc.visual_modalities = c.visual_modalities;
    for (int l = 0; l < ctx.num_layers(); ++l) {
      const std::size_t ul = static_cast<std::size_t>(l);
      LookM::require_nonempty_budget("evict::Meda", "rho", c.rho, p.important[ul] + p.recent[ul],
                                     ctx.slots(l, 0).n_alive);
    }
    for (int l = 0; l < ctx.num_layers(); ++l)
      for (int h = 0; h < ctx.views_per_layer(); ++h)
        LookM::select(lc, ctx.slots(l, h), p.important[static_cast<std::size_t>(l)],
                      p.recent[static_cast<std::size_t>(l)], ctx.keep(l, h));
  }
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
