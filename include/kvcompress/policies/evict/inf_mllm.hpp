// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Inf-MLLM — "Inf-MLLM: Efficient Streaming Inference of Multimodal Large Language Models on a
/// Single GPU", Ning, Zhao, Jin, Ding, Guo, arXiv 2409.09086 (eviction spec §11). No public code;
/// the spec marks the details below [2nd + rec] and so do we: every knob is configurable and
/// the defaults are our choice, not the paper's (which are unpublished).
///
/// A fixed-size cache of `recent` newest slots plus the `cache_size − recent` most relevant
/// others ("attention saddles"). Whenever an append (a streamed chunk, a video frame's tokens, a
/// decoded token) would exceed `cache_size`, per KV head:
///   1. s[j] = attention of the retrieval window on slot j — the query rows of the latest
///      attend/observe call (ScoreMode::kLatest: the chunk just processed, or the decode row),
///      mean over the GQA group;
///   2. local sum over neighbouring live slots, kernel `local_kernel` (§1.3 "sum"), so saddle
///      neighbourhoods survive together;
///   3. recency bias s'[j] = localsum(s)[j] + β·(pos[j] − pos_min)/(pos_max − pos_min) over the
///      live slots (spec step 3 [rec]), so the relevant set drifts forward in multi-round streams;
///      β = 0 disables it;
///   4. the lowest s' outside the protected recent window are evicted (ties: the later position
///      goes first, §0 rule 2).
/// A streaming policy: it evicts while the prompt arrives (kSelectsAtPrefillEnd stays false),
/// and end_prefill trims a prompt appended in one piece to `cache_size` (the last attend call
/// is the retrieval window).
///
/// Positions: the paper reaches 4M tokens by re-assigning positions inside the cache, which
/// needs pre-RoPE keys (BB-16 rule 5). Kept slots here keep their original positions (spec §0
/// rule 3); an engine that wants re-positioning must use a pre-RoPE store and its own position ids.
/// Decode path: allocation-free (argmin scans computing s' on the fly; O(n·kernel) per evicted
/// slot). Common primitives: common::evict_lowest (argmin eviction with the §0 tie rule).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/policies/evict/common/score_selection.hpp"
#include "kvcompress/policies/evict/none.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {

/// Recent window + locally summed, recency-biased retrieval-window attention, per KV head.
struct InfMLLM : Base {
  static constexpr const char* kName = "inf_mllm";
  static constexpr bool kPerHead = true;
  static constexpr bool kNeedsScores = true;
  static constexpr ScoreMode kScoreMode = ScoreMode::kLatest;

  struct Config {
    std::size_t cache_size = 2048;  ///< C = recent + relevant slots kept [rec]
    std::size_t recent = 512;       ///< R newest slots always kept [rec]
    int local_kernel = 5;           ///< odd window of the local sum; 1 = no smoothing [rec]
    float bias = 0.0f;              ///< β ≥ 0 of the recency bias; 0 disables it [rec]

    void validate(const CacheShape& shape) const {
      const char* w = "evict::InfMLLM";
      detail::require(recent >= 1, w, "recent", recent, ">= 1 (the newest token must stay)");
      detail::require(cache_size > recent, w, "cache_size", cache_size,
                      "> recent (" + std::to_string(recent) + "): room for relevant slots");
      detail::require(cache_size <= shape.capacity, w, "cache_size", cache_size,
                      "<= capacity (" + std::to_string(shape.capacity) + ")");
      detail::require(local_kernel >= 1 && local_kernel % 2 == 1, w, "local_kernel", local_kernel, "an odd value >= 1");
      detail::require(std::isfinite(bias) && bias >= 0.0f, w, "bias", bias, "a finite value >= 0");
    }
  };

  /// s'[j] of step 3 for live slot j of view s. The local sum runs over the kernel/2 nearest live
  /// slots on each side (evicted slots are gone, whether or not the store has compacted them
  /// yet); fewer exist near the ends (zero padding, as in §1.3).
  static float biased_score(const Config& c, const SlotView& s, std::size_t j, std::int32_t pos_min,
                            std::int32_t pos_max) {
    const std::size_t half = static_cast<std::size_t>(c.local_kernel / 2);
    float sum = s.score[j];
    for (std::size_t t = j, k = 0; t > 0 && k < half;)
      if (s.alive[--t]) {
        sum += s.score[t];
        ++k;
      }
    for (std::size_t t = j + 1, k = 0; t < s.n && k < half; ++t)
      if (s.alive[t]) {
        sum += s.score[t];
        ++k;
      }
    if (c.bias == 0.0f || pos_max == pos_min) return sum;
    return sum + c.bias * static_cast<float>(s.pos[j] - pos_min) / static_cast<float>(pos_max - pos_min);
  }

  /// Evicts so that live + n_incoming ≤ cache_size, keeping the newest `recent` (counting the
  /// incoming tokens, which are the newest).
  static void make_room(const Config& c, const SlotView& s, std::size_t n_incoming, std::uint8_t* keep) {
    if (s.n_alive + n_incoming <= c.cache_size) return;
    const std::size_t excess = s.n_alive + n_incoming - c.cache_size;
    const std::size_t recent_old = c.recent > n_incoming ? c.recent - n_incoming : 0;
    std::int32_t pos_min = std::numeric_limits<std::int32_t>::max(), pos_max = std::numeric_limits<std::int32_t>::min();
    for (std::size_t j = 0; j < s.n; ++j)
      if (s.alive[j]) {
        pos_min = std::min(pos_min, s.pos[j]);
        pos_max = std::max(pos_max, s.pos[j]);
      }
    common::evict_lowest(s, [&](std::size_t j) { return biased_score(c, s, j, pos_min, pos_max); }, excess,
                         recent_old, keep);
  }

  /// Prefill end: the same rule with nothing incoming.
  static void on_prefill_end(const Config& c, PrefillContext& ctx) {
    for (int l = 0; l < ctx.num_layers(); ++l)
      for (int h = 0; h < ctx.views_per_layer(); ++h) make_room(c, ctx.slots(l, h), 0, ctx.keep(l, h));
  }
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
