// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Elastic Cache eviction — "Efficient Inference of Vision Instruction-Following Models with
/// Elastic Cache", Liu et al., ECCV 2024, arXiv 2407.18121 (eviction spec §6). Merging is the
/// Merge axis: merge::BucketMean (policies/merge/bucket_mean.hpp).
///
/// Prefill end, once per layer (one decision shared by all KV heads, kPerHead = false):
///  1. Importance I_l[t] = (1/H) Σ_h Σ_i A_{l,h}[i][t], the layer-wise sum of attention over all
///     prompt rows: SlotView::score of a per-layer policy is the mean over the layer's KV heads
///     of the per-KV-head means over their query heads = the mean over all query heads.
///  2. Protected: the first `sinks` live slots (code 4; paper "first token") and the last prompt
///     slot. Anchors = the top N_I unprotected slots by I_l (true top-k: the reference's
///     argsort-index bug is not replicated); ties → lower position. N_I = T − ⌊(1−γ)·T⌋ − |P|,
///     so anchors + protected = the budget (code intent, §1.4, default; AnchorCount::kPaper:
///     N_I = ⌊γ·T⌋ with the protected slots on top). γ = 1 → identity.
///  3–4. Merging into positional buckets: merge::BucketMean.
///  5. Generation (make_room): after each step, while int(cache_len − γ·n_seen) ≥ 1, delete the
///     slot at the fixed index N_tl = (post-prefill length) − 25 (one per step). The prompt part
///     before N_tl is frozen; the slots after it form a FIFO. When the post-prefill length is ≤
///     the distance, N_tl = half of it (PrefixKV code's fallback, [rec]).
///
/// Stateless: the fixed index comes from the post-prefill length the cache records in every
/// SlotView (prefill_slots), through common::fixed_offset_evict.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/core/slot_view.hpp"
#include "kvcompress/policies/evict/common/fixed_offset_eviction.hpp"
#include "kvcompress/policies/evict/common/protected_set.hpp"
#include "kvcompress/policies/evict/common/score_selection.hpp"
#include "kvcompress/policies/evict/none.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {

/// Importance anchors at prefill end + fixed-offset eviction during decode.
struct ElasticCache : Base {
  static constexpr const char* kName = "elastic_cache";
  static constexpr bool kPerHead = false;
  static constexpr bool kNeedsScores = true;
  static constexpr ScoreMode kScoreMode = ScoreMode::kAccumulate;
  static constexpr bool kSelectsAtPrefillEnd = true;

  /// How many anchors step 2 chooses.
  enum class AnchorCount : std::uint8_t {
    kBudget,  ///< anchors + protected = T − ⌊(1−γ)T⌋ (code intent, default)
    kPaper,   ///< ⌊γ·T⌋ anchors, protected slots on top
  };

  struct Config {
    double ratio = 0.2;                     ///< γ: retained fraction (paper headline 0.2)
    std::size_t sinks = 4;                  ///< protected first slots (code 4, paper 1)
    bool last_token = true;                 ///< last prompt slot protected
    std::size_t truncation_distance = 25;   ///< N_tl = post-prefill length − distance
    bool decode_eviction = true;            ///< step 5 on/off
    AnchorCount anchor_count = AnchorCount::kBudget;
    common::ProtectedOverflow on_protected_overflow = common::ProtectedOverflow::kError;

    void validate(const CacheShape&) const {
      const char* where = "evict::ElasticCache";
      detail::require(ratio > 0.0 && ratio <= 1.0, where, "ratio", ratio, "in (0, 1]");
      detail::require(truncation_distance >= 1, where, "truncation_distance", truncation_distance, ">= 1");
    }
  };

  /// Slots layer view `s` keeps at prefill end (protected ones included), before overflow rules.
  static std::size_t budget(const Config& c, std::size_t T, std::size_t n_protected) {
    if (c.anchor_count == AnchorCount::kPaper)
      return static_cast<std::size_t>(std::floor(c.ratio * double(T))) + n_protected;
    return T - static_cast<std::size_t>(std::floor((1.0 - c.ratio) * double(T)));
  }

  static void on_prefill_end(const Config& c, PrefillContext& ctx) {
    const char* where = "evict::ElasticCache";
    common::ProtectionConfig pc;
    pc.sinks = c.sinks;
    pc.last_token = c.last_token;
    const int L = ctx.num_layers();
    std::vector<std::vector<common::Protection>> prot(static_cast<std::size_t>(L));
    // Pass 1: check every layer before touching a keep mask (cache unchanged on error).
    for (int l = 0; l < L; ++l) {
      const SlotView& s = ctx.slots(l, 0);
      auto& p = prot[static_cast<std::size_t>(l)];
      p.resize(s.n);
      common::mark_protected(pc, s.n, s.alive, nullptr, p.data());
      const std::size_t np = common::count_protected(p.data(), s.n), k = budget(c, s.n_alive, np);
      if (k >= s.n_alive) continue;
      detail::require(s.score != nullptr, where, "view.score", "nullptr", "accumulated attention (kNeedsScores)");
      detail::require(k >= 1 && (np <= k || c.on_protected_overflow != common::ProtectedOverflow::kError), where,
                      "ratio", c.ratio, [&] {
                        return "a budget (" + std::to_string(k) + " of " + std::to_string(s.n_alive) +
                               " slots) >= the protected set (" + std::to_string(np) +
                               "), or on_protected_overflow = keep_all / truncate";
                      });
    }
    for (int l = 0; l < L; ++l) {
      const SlotView& s = ctx.slots(l, 0);
      const auto& p = prot[static_cast<std::size_t>(l)];
      const std::size_t k = budget(c, s.n_alive, common::count_protected(p.data(), s.n));
      if (k >= s.n_alive) continue;
      std::vector<std::size_t> idx(s.n), scratch(s.n);
      const auto r = common::select_top_k(s.score, s.pos, s.alive, p.data(), s.n, static_cast<std::ptrdiff_t>(k),
                                          c.on_protected_overflow, idx.data(), scratch.data());
      std::vector<std::uint8_t> mask(s.n, 0);
      for (std::size_t t = 0; t < r.count; ++t) mask[idx[t]] = 1;
      std::uint8_t* keep = ctx.keep(l, 0);
      for (std::size_t j = 0; j < s.n; ++j)
        if (!mask[j]) keep[j] = 0;
    }
  }

  /// Decode: one deletion per appended token while int(len − γ·n_seen) ≥ 1, at the fixed live
  /// ordinal N_tl (then N_tl+1, … for several incoming tokens: the FIFO's oldest slots).
  static void make_room(const Config& c, const SlotView& s, std::size_t n_incoming, std::uint8_t* keep) {
    if (c.decode_eviction) common::fixed_offset_evict(s, c.truncation_distance, n_incoming, c.ratio, keep);
  }
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
