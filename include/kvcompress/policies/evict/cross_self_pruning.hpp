// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Cross-Self Pruning (CSP) — "Cross-Self KV Cache Pruning for Efficient Vision-Language
/// Inference", Pei, Huang, Xu, arXiv 2412.04652 (Dec 2024); code TerryPei/CSP (eviction spec §8).
///
/// Composition (spec §1.10): trigger = prefill end; allocator = uniform ratio; scorer = window
/// attention split into self/cross modality regions under n-softmax; selector = two top-k + recent,
/// per KV head (code: per head; §8 (d) default per-KV-head, GQA mean over the group, §0 rule 5).
///  1. m = live prompt slots; recent R = ⌊recent_ratio·m·recent_bias⌋; observation window O = R
///     rows (the last min(R, window rows) query rows the cache kept; at least one).
///  2. A = n-softmax (n = 1) of the causally masked logits of each window row over *all* keys,
///     restricted to the candidate keys (all but the last R live slots). Evaluated as the
///     ordinary softmax (common::attention_rows_from_window) times 1/(1 + n·e^{−LSE}) with the
///     row's log-sum-exp (common::row_log_sum_exp) — algebraically common::n_softmax.
///  3. Self region = (query visual ∧ key visual) ∨ (query non-visual ∧ key non-visual); cross = the
///     complement. Visual = kImage/kVideo labels of the engine; a query row's label is the label of
///     its own slot.
///  4. A^s[j] = Σ_rows A·self, A^c[j] = Σ_rows A·cross.
///  5. cache_size = ⌊hh_ratio·m⌋ + ⌊recent_ratio·m⌋, K = cache_size − R, k_c = ⌊K·c⌋,
///     k_s = ⌊K·(1−c)⌋ (the code's k_c = 1 at c ≤ 0 is not reproduced: c = 0 is pure self ranking,
///     as the spec's oracle requires).
///  6. Keep dedup(top-k_s(A^s) ∪ top-k_c(A^c)) ∪ recent R (union with dedupe, `keep_savings`:
///     a slot chosen twice saves budget; per-head lengths may differ, which the per-(layer, KV head)
///     store handles natively).
/// Empty cross region (e.g. a text-only prompt): the cross budget goes to the self ranking [rec].
/// cache_size ≥ m (e.g. hh_ratio + recent_ratio ≥ 1): identity. n-softmax is used for selection
/// only; decode attention keeps the ordinary softmax [code].

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/policies/evict/common/attention_provider.hpp"
#include "kvcompress/policies/evict/common/prefill_selection.hpp"
#include "kvcompress/policies/evict/common/prefill_window.hpp"
#include "kvcompress/policies/evict/common/score_selection.hpp"
#include "kvcompress/policies/evict/none.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {

/// CSP self/cross split selection (see the file comment).
struct CrossSelfPruning : Base {
  static constexpr const char* kName = "cross_self_pruning";
  static constexpr bool kPerHead = true;
  static constexpr bool kNeedsScores = false;
  static constexpr bool kSelectsAtPrefillEnd = true;

  struct Config {
    double hh_ratio = 0.1;         ///< heavy-hitter share of the prompt, (0, 1] (LOOK-M protocol)
    double recent_ratio = 0.1;     ///< recent share of the prompt, [0, 1]
    double recent_bias = 1.0;      ///< kv_recent_bias: multiplies the recent window (> 0)
    double cross_ratio = 0.1;      ///< c: share of the heavy budget ranked in the cross region, [0, 1]
    float n = 1.0f;                ///< n of the n-softmax (≥ 0; 0 = softmax)
    std::size_t max_window = 256;  ///< query rows the cache keeps per layer (≥ 1); O = min(R, this)
    /// Dedupe policy (§8 (b)): false = keep_savings (default: a slot picked by both rankings saves
    /// budget); true = refill_to_budget: the shortfall is filled with the best remaining
    /// candidates by A^s + A^c [rec].
    bool refill_to_budget = false;

    void validate(const CacheShape&) const {
      const char* where = "evict::CrossSelfPruning";
      detail::require(hh_ratio > 0.0 && hh_ratio <= 1.0, where, "hh_ratio", hh_ratio, "in (0, 1]");
      detail::require(recent_ratio >= 0.0 && recent_ratio <= 1.0, where, "recent_ratio", recent_ratio, "in [0, 1]");
      detail::require(recent_bias > 0.0 && std::isfinite(recent_bias), where, "recent_bias", recent_bias,
                      "a finite value > 0");
      detail::require(cross_ratio >= 0.0 && cross_ratio <= 1.0, where, "cross_ratio", cross_ratio, "in [0, 1]");
      detail::require(n >= 0.0f && std::isfinite(n), where, "n", n, "a finite value >= 0");
      detail::require(max_window >= 1, where, "max_window", max_window, ">= 1");
    }
  };
  /// Paper/code defaults: hh = recent = 0.1, n = 1, c = 0.1 (the most common tuned value).
  using Paper = Config;

  template <class C>
  static std::size_t query_window(const C& c) {
    return c.max_window;
  }

  /// Self and cross scores of one layer, [Hkv][n] each, plus whether the cross region is empty.
  struct LayerScores {
    std::vector<float> self, cross;
    bool cross_empty = true;
    std::size_t recent = 0, k_self = 0, k_cross = 0;
  };

  static LayerScores score_layer(const Config& c, const PrefillContext& ctx, int l) {
    const char* where = "evict::CrossSelfPruning::on_prefill_end";
    const CacheShape& sh = ctx.shape();
    const int Hq = sh.num_q_heads, Hkv = sh.num_kv_heads, rep = Hq / Hkv;
    const SlotView& s = ctx.slots(l, 0);
    const std::size_t m = s.n_alive;
    LayerScores out;
    out.recent = static_cast<std::size_t>(std::floor(c.recent_ratio * double(m) * c.recent_bias));
    const std::size_t cache_size = static_cast<std::size_t>(std::floor(c.hh_ratio * double(m))) +
                                   static_cast<std::size_t>(std::floor(c.recent_ratio * double(m)));
    const std::size_t K = cache_size > out.recent ? cache_size - out.recent : 0;
    out.k_cross = static_cast<std::size_t>(std::floor(double(K) * c.cross_ratio));
    out.k_self = static_cast<std::size_t>(std::floor(double(K) * (1.0 - c.cross_ratio)));
    const QueryRows q = common::require_query_window(ctx, l, where);
    std::vector<float> keys, probs(static_cast<std::size_t>(Hq) * q.rows * s.n),
        lse(static_cast<std::size_t>(Hq) * q.rows);
    common::read_layer_keys(ctx, l, s.n, keys);
    const KeyRows k{keys.data(), s.pos, Hkv, s.n, sh.head_dim};
    common::attention_rows_from_window(q, k, ctx.scale(), probs.data());
    common::row_log_sum_exp(q, k, ctx.scale(), lse.data());
    const std::size_t O = std::min(q.rows, std::max<std::size_t>(out.recent, 1));
    const std::size_t cand_end = common::recent_start(s, out.recent);
    // Modality class of each window row: the label of its own slot (non-visual if absent).
    std::vector<std::uint8_t> row_visual(q.rows, 0);
    for (std::size_t i = 0; i < q.rows; ++i) {
      const auto it = std::lower_bound(s.pos, s.pos + s.n, q.pos[i]);
      row_visual[i] = it != s.pos + s.n && *it == q.pos[i] && common::is_visual(s.mod[it - s.pos]);
    }
    out.self.assign(static_cast<std::size_t>(Hkv) * s.n, 0.0f);
    out.cross.assign(out.self.size(), 0.0f);
    for (int g = 0; g < Hq; ++g) {
      float* dst_s = out.self.data() + static_cast<std::size_t>(g / rep) * s.n;
      float* dst_c = out.cross.data() + static_cast<std::size_t>(g / rep) * s.n;
      for (std::size_t i = q.rows - O; i < q.rows; ++i) {
        const float e = lse[static_cast<std::size_t>(g) * q.rows + i];
        if (!std::isfinite(e)) continue;
        const float shrink = 1.0f / (1.0f + c.n * std::exp(-e));  // softmax → n-softmax
        const float* row = probs.data() + (static_cast<std::size_t>(g) * q.rows + i) * s.n;
        for (std::size_t j = 0; j < cand_end; ++j) {
          if (!s.alive[j] || s.pos[j] > q.pos[i]) continue;
          const float a = row[j] * shrink / float(rep);
          const bool self = row_visual[i] == static_cast<std::uint8_t>(common::is_visual(s.mod[j]));
          (self ? dst_s : dst_c)[j] += a;
          out.cross_empty = out.cross_empty && self;
        }
      }
    }
    if (out.cross_empty) out.k_self += out.k_cross, out.k_cross = 0;
    return out;
  }

  /// Mask of the k best `score` among the slots with eligible[j] (all of them when k ≥ their count).
  static std::vector<std::uint8_t> pick(const SlotView& s, const std::vector<std::uint8_t>& eligible,
                                        const float* score, std::size_t k) {
    std::vector<std::uint8_t> mask(eligible);
    if (k == 0) return std::vector<std::uint8_t>(s.n, 0);
    SlotView v = s;
    v.alive = eligible.data();
    v.n_alive = 0;
    for (std::uint8_t e : eligible) v.n_alive += e ? 1 : 0;
    common::keep_top_k(v, common::live_scores(v, score).data(), common::ProtectionConfig{}, k,
                       common::ProtectedOverflow::kError, mask.data(), "evict::CrossSelfPruning::on_prefill_end",
                       "hh_ratio");
    return mask;
  }

  /// Prefill end: per layer and KV head, dedup(top-k_s self ∪ top-k_c cross) ∪ last R slots.
  static void on_prefill_end(const Config& c, PrefillContext& ctx) {
    for (int l = 0; l < ctx.num_layers(); ++l) {
      const SlotView& s0 = ctx.slots(l, 0);
      const std::size_t m = s0.n_alive;
      if (static_cast<std::size_t>(std::floor(c.hh_ratio * double(m))) +
              static_cast<std::size_t>(std::floor(c.recent_ratio * double(m))) >=
          m)
        continue;  // identity
      const LayerScores sc = score_layer(c, ctx, l);
      for (int h = 0; h < ctx.views_per_layer(); ++h) {
        const SlotView& s = ctx.slots(l, h);
        const std::size_t cand_end = common::recent_start(s, sc.recent);
        std::vector<std::uint8_t> cand(s.n, 0);
        for (std::size_t j = 0; j < cand_end; ++j) cand[j] = s.alive[j];
        const float* self = sc.self.data() + static_cast<std::size_t>(h) * s.n;
        const float* cross = sc.cross.data() + static_cast<std::size_t>(h) * s.n;
        const auto ms = pick(s, cand, self, sc.k_self), mc = pick(s, cand, cross, sc.k_cross);
        std::vector<std::uint8_t> chosen(s.n, 0), rest(s.n, 0);
        std::size_t n_chosen = 0;
        for (std::size_t j = 0; j < s.n; ++j) {
          chosen[j] = ms[j] || mc[j];
          rest[j] = cand[j] && !chosen[j];
          n_chosen += chosen[j];
        }
        if (c.refill_to_budget && n_chosen < sc.k_self + sc.k_cross) {
          std::vector<float> both(s.n);
          for (std::size_t j = 0; j < s.n; ++j) both[j] = self[j] + cross[j];
          const auto extra = pick(s, rest, both.data(), sc.k_self + sc.k_cross - n_chosen);
          for (std::size_t j = 0; j < s.n; ++j) chosen[j] = chosen[j] || extra[j];
        }
        std::uint8_t* keep = ctx.keep(l, h);
        for (std::size_t j = 0; j < cand_end; ++j)
          if (s.alive[j] && !chosen[j]) keep[j] = 0;
      }
    }
  }
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
