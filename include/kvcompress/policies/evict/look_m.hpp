// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// LOOK-M eviction — "LOOK-M: Look-Once Optimization in KV Cache for Efficient Multimodal
/// Long-Context Inference", Wan et al., Findings of EMNLP 2024, arXiv 2406.18139 (eviction spec
/// §2, Eqs. 4–12). Merging is the Merge axis: merge::LookMPivotal (paper default), LookMAverage,
/// LookMWeighted (policies/merge/look_m.hpp).
///
/// Once per layer and KV head at the end of prefill ("look once"; decode tokens are never
/// evicted), with m = live prompt slots, M = floor(α1·m) recent and N = floor(α2·m) important:
///  1. A_s[j] = Σ_{i<m} A[i][j]: the attention column sums over *all* prompt rows, which the
///     cache accumulates as SlotView::score (kNeedsScores, ScoreMode::kAccumulate; per KV head the
///     mean over its GQA query heads, spec §0 rule 5).
///  2. Text prior: T_p = max_j A_s[j] (per head, over all slots, recent window included), and
///     A_s[j] += T_p for every text slot. Attention is ≥ 0, so every boosted text slot scores ≥
///     every visual slot: selection is "text by raw score first, then visual by raw score",
///     exact ties preferring text [rec]. The policy selects in exactly that order (two top-k
///     passes of common::select_top_k), which is the additive rule without its float rounding.
///  3. The last M live slots are always kept (M = 0: no recent window).
///  4. The N best non-recent slots by boosted score are kept; everything else is evicted.
///     N + M ≥ m → identity.
/// "Text" = every modality except the visual ones (Config::visual_modalities, default image and
/// video; the reference penalises only image spans). Unlabelled slots (SlotView::mod == nullptr)
/// count as text, so the prior reduces to H2O-prefill selection, as it does for a prompt without
/// visual slots in paper mode (spec §2 edge cases).
///
/// Code-vs-paper [code]: the reference's prior is *hard* (image spans −65516, then every slot
/// with a non-negative score kept: all non-recent text survives even beyond N, so the cache holds
/// max(N, #text) + M); it compresses only prompts that contain an image. Both are Config options
/// (TextPrior::kHard, skip_without_visual), off by default.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/modality.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/core/slot_view.hpp"
#include "kvcompress/policies/evict/common/protected_set.hpp"
#include "kvcompress/policies/evict/common/score_selection.hpp"
#include "kvcompress/policies/evict/none.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {

/// How text slots are favoured over visual slots (LOOK-M step 2).
enum class TextPrior : std::uint8_t {
  kNone,  ///< plain accumulated attention (H2O-prefill selection)
  kSoft,  ///< A_s[text] += max A_s: text first, capped at N (paper, default)
  kHard,  ///< every non-recent text slot kept even beyond N (reference code)
};

/// Stable name for logs and test output.
constexpr const char* to_string(TextPrior p) {
  switch (p) {
    case TextPrior::kNone: return "none";
    case TextPrior::kSoft: return "soft";
    case TextPrior::kHard: return "hard";
  }
  return "invalid";
}

/// Text-prior top-N + recent-M selection at prefill end, per KV head.
struct LookM : Base {
  static constexpr const char* kName = "look_m";
  static constexpr bool kPerHead = true;
  static constexpr bool kNeedsScores = true;
  static constexpr ScoreMode kScoreMode = ScoreMode::kAccumulate;
  static constexpr bool kSelectsAtPrefillEnd = true;

  /// Default visual modalities: image and video.
  static constexpr std::uint8_t kVisual =
      common::modality_bit(Modality::kImage) | common::modality_bit(Modality::kVideo);

  struct Config {
    double recent_ratio = 0.1;     ///< α1: M = floor(α1·m) recent slots kept (paper 0.1)
    double important_ratio = 0.1;  ///< α2: N = floor(α2·m) important slots kept (paper 0.1)
    TextPrior text_prior = TextPrior::kSoft;
    std::uint8_t visual_modalities = kVisual;  ///< OR of common::modality_bit(); the rest is text
    bool skip_without_visual = false;          ///< [code] leave prompts without a visual slot intact

    void validate(const CacheShape&) const { validate_ratios("evict::LookM", recent_ratio, important_ratio); }
  };

  /// The one validation rule of a recent/important split: each in [0, 1], total in (0, 1].
  static void validate_ratios(const char* where, double recent, double important) {
    detail::require(recent >= 0.0 && recent <= 1.0, where, "recent_ratio", recent, "in [0, 1]");
    detail::require(important >= 0.0 && important <= 1.0, where, "important_ratio", important, "in [0, 1]");
    detail::require(recent + important > 0.0 && recent + important <= 1.0, where, "recent_ratio + important_ratio",
                    recent + important, "in (0, 1] (the retained fraction of the prompt)");
  }

  /// Prefill end: per head, N = floor(α2·m) important + M = floor(α1·m) recent. Throws (before
  /// touching any keep mask) when a non-empty head would keep no slot at all (§1.5: a budget of
  /// zero slots is never valid), i.e. when the prompt is shorter than 1/(α1+α2) or so.
  static void on_prefill_end(const Config& c, PrefillContext& ctx) {
    auto split = [&](const SlotView& s) {
      const double m = double(s.n_alive);
      return std::pair<std::size_t, std::size_t>{static_cast<std::size_t>(c.important_ratio * m),
                                                 static_cast<std::size_t>(c.recent_ratio * m)};
    };
    for (int l = 0; l < ctx.num_layers(); ++l)
      for (int h = 0; h < ctx.views_per_layer(); ++h) {
        const auto [n_imp, n_rec] = split(ctx.slots(l, h));
        require_nonempty_budget("evict::LookM", "recent_ratio + important_ratio", c.recent_ratio + c.important_ratio,
                                n_imp + n_rec, ctx.slots(l, h).n_alive);
      }
    for (int l = 0; l < ctx.num_layers(); ++l)
      for (int h = 0; h < ctx.views_per_layer(); ++h) {
        const auto [n_imp, n_rec] = split(ctx.slots(l, h));
        select(c, ctx.slots(l, h), n_imp, n_rec, ctx.keep(l, h));
      }
  }

  /// Throws InvalidArgument naming `field` when a stream of m ≥ 1 live slots would keep none.
  static void require_nonempty_budget(const char* where, const char* field, double value, std::size_t budget,
                                      std::size_t m) {
    detail::require(budget >= 1 || m == 0, where, field, value, [&] {
      return "large enough that the prompt of " + std::to_string(m) + " slots keeps >= 1 slot per head";
    });
  }

  /// True when slot j counts as text under Config::visual_modalities.
  static bool is_text(const Config& c, const SlotView& s, std::size_t j) {
    return s.mod == nullptr || (c.visual_modalities & common::modality_bit(s.mod[j])) == 0;
  }

  /// LOOK-M steps 2–4 on one view: keeps the `recent` newest live slots and the `important` best
  /// non-recent ones under the text prior; clears keep[] for every other live slot. Also used
  /// by MEDA with per-layer (N_l, M_l). Allocates (prefill end only).
  static void select(const Config& c, const SlotView& s, std::size_t important, std::size_t recent,
                     std::uint8_t* keep) {
    const char* where = "evict::LookM::select";
    if (important + recent >= s.n_alive) return;  // identity
    require_nonempty_budget(where, "important + recent", 0.0, important + recent, s.n_alive);
    detail::require(s.score != nullptr, where, "view.score", "nullptr", "accumulated attention (kNeedsScores)");
    auto live = [&](std::size_t j) { return s.alive == nullptr || s.alive[j] != 0; };
    if (c.skip_without_visual) {
      bool any_visual = false;
      for (std::size_t j = 0; j < s.n; ++j) any_visual |= live(j) && !is_text(c, s, j);
      if (!any_visual) return;
    }
    const std::size_t first_recent = recent == 0 ? s.n : common::recent_start(s, recent);
    std::vector<std::uint8_t> kept(s.n, 0), cand(s.n, 0);
    for (std::size_t j = first_recent; j < s.n; ++j) kept[j] = live(j) ? 1 : 0;
    std::vector<std::size_t> idx(s.n), scratch(s.n);
    // Keeps the `k` best slots with cand[j] set and adds them to `kept`.
    auto take = [&](std::size_t k) {
      if (k == 0) return;
      const auto r = common::select_top_k(s.score, s.pos, cand.data(), nullptr, s.n, static_cast<std::ptrdiff_t>(k),
                                          common::ProtectedOverflow::kError, idx.data(), scratch.data());
      for (std::size_t t = 0; t < r.count; ++t) kept[idx[t]] = 1;
    };
    if (c.text_prior == TextPrior::kNone) {
      for (std::size_t j = 0; j < first_recent; ++j) cand[j] = live(j) ? 1 : 0;
      take(important);
    } else {
      std::size_t n_text = 0;
      for (std::size_t j = 0; j < first_recent; ++j) {
        cand[j] = live(j) && is_text(c, s, j) ? 1 : 0;
        n_text += cand[j];
      }
      const std::size_t k_text = c.text_prior == TextPrior::kHard ? n_text : std::min(important, n_text);
      take(k_text);
      for (std::size_t j = 0; j < first_recent; ++j) cand[j] = live(j) && !is_text(c, s, j) ? 1 : 0;
      take(important > k_text ? important - k_text : 0);
    }
    for (std::size_t j = 0; j < s.n; ++j)
      if (live(j) && !kept[j]) keep[j] = 0;
  }
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
