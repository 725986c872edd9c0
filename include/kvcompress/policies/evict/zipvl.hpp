// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// ZipVL — "ZipVL: Efficient Large Vision-Language Models with Dynamic Token Sparsification and KV
/// Cache Compression", He, Chen, Liu, Shao, Zhou, Zhang, Zhuang, arXiv 2410.08584, ICLR 2025
/// submission (eviction
/// spec §7; no public code).
///
/// Composition (spec §1.10): trigger = prefill end + every `interval` decode tokens; allocator =
/// per-layer mass threshold τ; scorer = probe-row normalised attention; selector = important set T.
///  1. Probes: the last `probe_recent` rows of the query window plus `probe_random` rows drawn
///     without replacement from the earlier window rows (mt19937_64 with `seed`, calib::uniform01;
///     fewer when the window is shorter). A' = causal softmax of the probes over every key
///     (common::attention_rows_from_window), averaged over all query heads [rec].
///  2. a[j] = Σ_probes A'[i][j]; p = min{p : Σ_top-p a ≥ τ·Σ a} (common::mass_prefix_count, Eq. 6).
///  3. ã[j] = a[j] / #{probes i : pos_i ≥ pos_j} (RowReduce::kCausalMean, Eq. 7); T = top-p by ã.
///  4. Decode: when the tokens generated since the prompt reach a multiple of `interval`, the
///     last `interval` live slots are re-ranked with the attention of the latest query
///     (SlotView::score under ScoreMode::kLatest, head mean), steps 2–3 on them.
///
/// Two forms, chosen by the store (core/precision_tier.hpp):
///  - **mixed precision** (the paper, step 5): with a store that has precision tiers
///    (quant::ZipVLMixed: T at 4 bits, U at 2 bits, policies/quant/mixed_precision.hpp) nothing
///    is evicted; T is marked PrecisionTier::kHigh and U kLow, at prefill end and for the last
///    `interval` slots at every decode re-rank (until then decode tokens stay fp16 in the store's
///    window, step 6). `ZipVLPolicy` (policies/zipvl_policy.hpp) is this pairing.
///  - **eviction**: with any other store, T is kept and U evicted at the same points.
/// Its sparse prefill attention over T is engine compute, not KV compression.
/// Stateless: the tokens generated since the prompt are tokens_seen − SlotView::prefill_tokens
/// (recorded by the cache at end_prefill, −1 before it and after clear). τ = 1 keeps every slot
/// with non-zero attention mass.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kvcompress/calib/seeded_random.hpp"
#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/policies/evict/common/attention_provider.hpp"
#include "kvcompress/policies/evict/common/cdf_budget.hpp"
#include "kvcompress/policies/evict/common/prefill_selection.hpp"
#include "kvcompress/policies/evict/common/prefill_window.hpp"
#include "kvcompress/policies/evict/common/score_accumulation.hpp"
#include "kvcompress/policies/evict/common/score_selection.hpp"
#include "kvcompress/policies/evict/none.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {

/// ZipVL τ-threshold important-token selection, eviction form (see the file comment).
struct ZipVL : Base {
  static constexpr const char* kName = "zipvl";
  static constexpr bool kPerHead = false;
  static constexpr bool kNeedsScores = true;
  static constexpr ScoreMode kScoreMode = ScoreMode::kLatest;
  static constexpr bool kSelectsAtPrefillEnd = true;
  /// Largest decode re-rank interval (stack scratch of make_room).
  static constexpr std::size_t kMaxInterval = 1024;

  struct Config {
    double tau = 0.975;             ///< τ: attention mass the important set covers, (0, 1]
    std::size_t probe_recent = 64;  ///< most recent window rows used as probes
    std::size_t probe_random = 64;  ///< random earlier window rows used as probes
    std::uint64_t seed = calib::kDefaultSeed;
    std::size_t interval = 100;    ///< decode re-rank period and size, [1, kMaxInterval]; 0 = none
    std::size_t max_window = 512;  ///< query rows the cache keeps per layer (≥ probe_recent)

    void validate(const CacheShape&) const {
      const char* where = "evict::ZipVL";
      detail::require(tau > 0.0 && tau <= 1.0, where, "tau", tau, "in (0, 1]");
      detail::require(probe_recent >= 1, where, "probe_recent", probe_recent, ">= 1");
      detail::require(interval <= kMaxInterval, where, "interval", interval,
                      "in [0, " + std::to_string(kMaxInterval) + "]");
      detail::require(max_window >= probe_recent, where, "max_window", max_window,
                      ">= probe_recent (" + std::to_string(probe_recent) + ")");
    }
  };
  /// Paper defaults: τ = 0.975, 64 recent + 64 random probes, re-rank every 100 tokens.
  using Paper = Config;

  template <class C>
  static std::size_t query_window(const C& c) {
    return c.max_window;
  }

  /// Probe rows of a window of `rows` rows: the last probe_recent, plus probe_random drawn from the
  /// earlier ones; ascending.
  static std::vector<std::size_t> probe_rows(const Config& c, std::size_t rows) {
    const std::size_t recent = std::min(c.probe_recent, rows);
    std::vector<std::size_t> earlier(rows - recent);
    std::iota(earlier.begin(), earlier.end(), std::size_t{0});
    const std::size_t draw = std::min(c.probe_random, earlier.size());
    std::mt19937_64 rng(c.seed);
    for (std::size_t t = 0; t < draw; ++t) {  // partial Fisher–Yates
      const std::size_t r = t + static_cast<std::size_t>(calib::uniform01(rng) * double(earlier.size() - t));
      std::swap(earlier[t], earlier[std::min(r, earlier.size() - 1)]);
    }
    std::vector<std::size_t> out(earlier.begin(), earlier.begin() + static_cast<std::ptrdiff_t>(draw));
    for (std::size_t i = rows - recent; i < rows; ++i) out.push_back(i);
    std::sort(out.begin(), out.end());
    return out;
  }

  /// One layer's probe scores and important count.
  struct LayerScores {
    std::vector<float> mass;        ///< a[j]
    std::vector<float> normalised;  ///< ã[j]
    std::size_t important = 0;      ///< p
  };

  static LayerScores layer_scores(const Config& c, const PrefillContext& ctx, int l) {
    const CacheShape& sh = ctx.shape();
    const SlotView& s = ctx.slots(l, 0);
    const QueryRows q = common::require_query_window(ctx, l, "evict::ZipVL::on_prefill_end");
    std::vector<float> keys, probs(static_cast<std::size_t>(sh.num_q_heads) * q.rows * s.n);
    common::read_layer_keys(ctx, l, s.n, keys);
    const KeyRows k{keys.data(), s.pos, sh.num_kv_heads, s.n, sh.head_dim};
    common::attention_rows_from_window(q, k, ctx.scale(), probs.data());
    const std::vector<std::size_t> probes = probe_rows(c, q.rows);
    const common::QuerySet set = common::QuerySet::of(probes.data(), probes.size());
    const common::AttentionRows rows{probs.data(), q.pos, s.pos, sh.num_q_heads, q.rows, s.n};
    LayerScores out;
    out.mass.resize(s.n);
    out.normalised.resize(s.n);
    common::column_scores(rows, set, sh.num_kv_heads, common::RowReduce::kSum, common::HeadReduce::kLayerShared,
                          out.mass.data());
    common::column_scores(rows, set, sh.num_kv_heads, common::RowReduce::kCausalMean, common::HeadReduce::kLayerShared,
                          out.normalised.data());
    for (std::size_t j = 0; j < s.n; ++j)
      if (!s.alive[j]) out.mass[j] = 0.0f, out.normalised[j] = -1.0f;
    std::vector<float> scratch(s.n);
    out.important = common::mass_prefix_count(out.mass.data(), s.n, c.tau, scratch.data());
    return out;
  }

  /// Prefill end: per layer the top-p slots by normalised probe score are T; U is demoted to the
  /// low tier (tiered store) or evicted.
  static void on_prefill_end(const Config& c, PrefillContext& ctx) {
    for (int l = 0; l < ctx.num_layers(); ++l) {
      const SlotView& s = ctx.slots(l, 0);
      PrecisionTier* tier = ctx.tier(l, 0);
      std::uint8_t* keep = ctx.keep(l, 0);
      std::vector<std::uint8_t> important;
      if (tier != nullptr) {
        important.assign(keep, keep + s.n);
        keep = important.data();
      }
      if (c.tau < 1.0 && s.n_alive > 0) {
        const LayerScores sc = layer_scores(c, ctx, l);
        common::keep_top_k(s, common::live_scores(s, sc.normalised.data()).data(), common::ProtectionConfig{},
                           std::max<std::size_t>(sc.important, 1), common::ProtectedOverflow::kError, keep,
                           "evict::ZipVL::on_prefill_end", "tau");
      }
      if (tier != nullptr) assign_tiers(s, 0, keep, tier);
    }
  }

  /// tier[j] = kHigh where important[j − from], else kLow, for the live slots j ≥ from.
  static void assign_tiers(const SlotView& s, std::size_t from, const std::uint8_t* important, PrecisionTier* tier) {
    for (std::size_t j = from; j < s.n; ++j)
      if (s.alive[j]) tier[j] = important[j - from] ? PrecisionTier::kHigh : PrecisionTier::kLow;
  }

  /// Decode re-rank of the last `interval` slots (allocation-free, stack scratch): U is demoted
  /// (s.tier set) or evicted.
  static void make_room(const Config& c, const SlotView& s, std::size_t, std::uint8_t* keep) {
    if (c.interval == 0 || s.prefill_tokens < 0 || s.score == nullptr) return;
    if (c.tau >= 1.0 && s.tier == nullptr) return;
    const std::int64_t generated = s.tokens_seen - s.prefill_tokens;
    if (generated <= 0 || generated % static_cast<std::int64_t>(c.interval) != 0) return;
    const std::size_t start = common::recent_start(s, c.interval);
    std::array<float, kMaxInterval> live{}, scratch{};
    std::array<std::uint8_t, kMaxInterval> important{};
    std::size_t cnt = 0;
    for (std::size_t j = start; j < s.n; ++j)
      if (s.alive[j]) live[cnt++] = std::max(0.0f, s.score[j]);
    const std::size_t p = c.tau >= 1.0 ? cnt
                                       : std::max<std::size_t>(1, common::mass_prefix_count(live.data(), cnt, c.tau,
                                                                                            scratch.data()));
    std::uint8_t* out = keep + start;
    if (s.tier != nullptr) {  // nothing is ever evicted then: the tail is the cnt <= interval slots
      std::fill(important.begin(), important.begin() + static_cast<std::ptrdiff_t>(s.n - start), std::uint8_t{1});
      out = important.data();
    }
    if (p < cnt) {
      SlotView tail = s;  // the re-ranked slots only
      tail.n = s.n - start;
      tail.pos = s.pos + start;
      tail.mod = s.mod ? s.mod + start : nullptr;
      tail.alive = s.alive + start;
      tail.score = s.score + start;
      common::evict_lowest_scores(tail, cnt - p, 0, out);
    }
    if (s.tier != nullptr) assign_tiers(s, start, important.data(), s.tier);
  }
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
