// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// PrefixKV — "PrefixKV: Adaptive Prefix KV Cache is What Vision Instruction-Following Models
/// Need for Efficient Generation", Wang et al., NeurIPS 2025, arXiv 2412.03409; code
/// THU-MIG/PrefixKV (eviction spec §5).
///
/// Composition (spec §1.10): trigger = prefill end + every decode step; scorer = all-row column
/// sums averaged over heads (the cache accumulates SlotView::score over every prompt row; for this
/// per-layer policy it is the mean over the KV heads of the per-KV-head group means, i.e. the mean
/// over all query heads, §5 step 1); allocator = one common cumulative-priority threshold found by
/// bisection (common::cdf_threshold_budgets, §5 steps 2–4) or, in offline mode, a calibrated
/// per-layer forget profile (common::static_profile_budgets, §5 step 5); selector = sinks + last
/// prompt token + top-R_l by score, same indices for every head (common::select_top_k, §5 step 6).
///
/// Decode (§5 step 7, [code]): layer l keeps its prefill ratio r_l = kept_l / m, read from the
/// SlotView (prefill_slots / prefill_tokens, recorded by the cache at end_prefill, so the policy is
/// stateless). Before each append
/// of n tokens, if ⌊len_after − n_seen_after·r_l⌋ ≥ 1, up to n live slots are removed starting at
/// the fixed live index t_l = kept_l − 25 (kept_l / 2 when that is < 1). Slots before t_l never
/// change after prefill; the tail after t_l is a FIFO of recent tokens (common::fixed_offset_evict,
/// shared with Elastic Cache).
///
/// Interpretations ([rec] of the spec, recorded here):
///  - Protected slots (4 sinks + the last prompt slot) are excluded from the CDF and the search
///    target is r·Σn_l − Σ|protected_l| (the code includes them and subtracts afterwards; ≤ 5 slots
///    per layer of difference).
///  - The online search is the default (`forget_profile` empty). The paper's offline mode (a profile
///    averaged over ~10 calibration prompts) is selected by filling `forget_profile` with one
///    forget fraction per layer, as stored in the code's confs/*.json; layer l then keeps
///    m − round(f_l·m) slots, protected ones included. `calibrate_forget_profile` produces such a
///    profile from the per-layer ratios of calibration runs (mean of the ratios).
///  - m ≤ |protected| + 1 in every layer: identity. ratio = 1: identity.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/policies/evict/common/cdf_budget.hpp"
#include "kvcompress/policies/evict/common/fixed_offset_eviction.hpp"
#include "kvcompress/policies/evict/common/layer_budget.hpp"
#include "kvcompress/policies/evict/common/prefill_selection.hpp"
#include "kvcompress/policies/evict/common/prefill_window.hpp"
#include "kvcompress/policies/evict/common/protected_set.hpp"
#include "kvcompress/policies/evict/none.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {

/// PrefixKV layer-adaptive prefix eviction (see the file comment).
struct PrefixKV : Base {
  static constexpr const char* kName = "prefix_kv";
  static constexpr bool kPerHead = false;
  static constexpr bool kNeedsScores = true;
  static constexpr ScoreMode kScoreMode = ScoreMode::kAccumulate;
  static constexpr bool kSelectsAtPrefillEnd = true;

  struct Config {
    double ratio = 0.2;                ///< r: retained fraction, (0, 1] (paper headline 20 %)
    std::size_t sink_tokens = 4;       ///< start_size: first slots always kept
    bool protect_last_token = true;    ///< protect_size = 1: the last prompt slot is kept
    std::size_t decode_distance = 25;  ///< t_l = kept_l − decode_distance (code: 25)
    /// Offline mode: one *forget* fraction f_l ∈ [0, 1) per layer (code confs/*.json); empty =
    /// online search with `ratio`.
    std::vector<double> forget_profile;

    void validate(const CacheShape& shape) const {
      const char* where = "evict::PrefixKV";
      detail::require(ratio > 0.0 && ratio <= 1.0, where, "ratio", ratio, "in (0, 1]");
      detail::require(forget_profile.empty() || forget_profile.size() == static_cast<std::size_t>(shape.num_layers),
                      where, "forget_profile.size()", forget_profile.size(),
                      "0 (online search) or num_layers (" + std::to_string(shape.num_layers) + ")");
      for (double f : forget_profile) detail::require(f >= 0.0 && f < 1.0, where, "forget_profile[l]", f, "in [0, 1)");
    }
  };

  /// Paper defaults: online search, r = 0.2, 4 sinks + last token, decode distance 25.
  using Paper = Config;

  /// Offline profile from calibration runs (§5 step 5): forget_l = 1 − mean over runs of the
  /// realised retained ratio of layer l; `ratios[run][l]` = KVCache::size(l, 0) / m after an
  /// online-mode calibration run's end_prefill (or a LayerBudgets::ratio trace).
  static std::vector<double> calibrate_forget_profile(const std::vector<std::vector<double>>& ratios) {
    const char* where = "evict::PrefixKV::calibrate_forget_profile";
    detail::require(!ratios.empty(), where, "ratios.size()", ratios.size(), ">= 1 calibration run");
    const std::size_t L = ratios[0].size();
    std::vector<double> f(L, 0.0);
    for (const auto& run : ratios) {
      detail::require(run.size() == L, where, "ratios[run].size()", run.size(), "the same layer count in every run");
      for (std::size_t l = 0; l < L; ++l) f[l] += run[l];
    }
    for (double& x : f) x = std::clamp(1.0 - x / double(ratios.size()), 0.0, 1.0 - 1e-12);
    return f;
  }

  /// Prefill end: layer budgets from the CDF search (or the profile), then per layer the protected
  /// slots plus the top-(kept_l − |protected_l|) slots by head-mean score.
  static void on_prefill_end(const Config& c, PrefillContext& ctx) {
    const char* where = "evict::PrefixKV::on_prefill_end";
    const int L = ctx.num_layers();
    common::ProtectionConfig pc;
    pc.sinks = c.sink_tokens;
    pc.last_token = c.protect_last_token;
    std::vector<std::vector<common::Protection>> prot(static_cast<std::size_t>(L));
    std::vector<std::vector<float>> free_scores(static_cast<std::size_t>(L));
    std::vector<std::size_t> n_prot(static_cast<std::size_t>(L)), n_live(static_cast<std::size_t>(L));
    bool all_tiny = true;
    for (int l = 0; l < L; ++l) {
      const SlotView& s = ctx.slots(l, 0);
      detail::require(s.n == 0 || s.score != nullptr, where, "slots.score", "nullptr",
                      "accumulated attention (kNeedsScores)");
      auto& p = prot[static_cast<std::size_t>(l)];
      p.resize(s.n);
      common::mark_protected(pc, s.n, s.alive, nullptr, p.data());
      n_prot[static_cast<std::size_t>(l)] = common::count_protected(p.data(), s.n);
      n_live[static_cast<std::size_t>(l)] = s.n_alive;
      for (std::size_t j = 0; j < s.n; ++j)
        if (s.alive[j] && p[j] == common::Protection::kNone)
          free_scores[static_cast<std::size_t>(l)].push_back(std::max(0.0f, s.score[j]));
      all_tiny = all_tiny && s.n_alive <= n_prot[static_cast<std::size_t>(l)] + 1;
    }
    std::vector<std::size_t> kept = n_live;
    if (!all_tiny && (c.ratio < 1.0 || !c.forget_profile.empty())) {
      if (c.forget_profile.empty()) {
        kept = common::cdf_threshold_budgets(free_scores, n_prot, c.ratio).budgets.kept;
      } else {
        std::vector<std::size_t> n1(n_live);
        for (auto& x : n1) x = std::max<std::size_t>(x, 1);
        kept = common::static_profile_budgets(c.forget_profile, n1).kept;
        for (int l = 0; l < L; ++l)
          detail::require(kept[static_cast<std::size_t>(l)] >=
                              std::min(n_prot[static_cast<std::size_t>(l)], n_live[static_cast<std::size_t>(l)]),
                          where, "forget_profile[l]", c.forget_profile[static_cast<std::size_t>(l)],
                          "small enough that the layer keeps its " +
                              std::to_string(n_prot[static_cast<std::size_t>(l)]) + " protected slots");
      }
    }
    for (int l = 0; l < L; ++l) {
      const std::size_t li = static_cast<std::size_t>(l);
      const SlotView& s = ctx.slots(l, 0);
      const std::size_t k = std::min(kept[li], n_live[li]);
      if (k == 0) continue;
      common::keep_top_k(s, common::live_scores(s, s.score).data(), pc, k, common::ProtectedOverflow::kError,
                         ctx.keep(l, 0), where, c.forget_profile.empty() ? "ratio" : "forget_profile[l]");
    }
  }

  /// Decode: fixed-offset removal keeping the layer near n_seen·r_l (common::fixed_offset_evict;
  /// allocation-free).
  static void make_room(const Config& c, const SlotView& s, std::size_t n_incoming, std::uint8_t* keep) {
    if (s.prefill_tokens <= 0) return;  // before end_prefill
    const double r_l = double(s.prefill_slots) / double(s.prefill_tokens);
    common::fixed_offset_evict(s, c.decode_distance, n_incoming, r_l, keep);
  }
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
