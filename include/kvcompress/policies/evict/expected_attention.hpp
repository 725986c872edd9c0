// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Expected Attention — kvpress `ExpectedAttentionPress` (NVIDIA/kvpress; described in "Expected
/// Attention: KV Cache Compression by Estimating Attention from Future Queries Distribution",
/// Devoto, Jeblick, Jégou, arXiv 2510.00636) (eviction spec §13.6; §1.10 row "Expected Attn").
///
/// Predicts the attention future queries will pay to each cached key from the statistics of the
/// prompt's queries, without seeing those queries. At prefill end, per layer and query head g:
///  1. pre-RoPE query statistics over the prompt rows after the first n_sink: mean μ_g and the
///     population covariance Σ_g (divisor N, as kvpress);
///  2. R̄ = mean of the RoPE rotation matrices of the next n_future positions (m … m+n_future−1,
///     m = tokens seen); μ̄ = R̄μ, Σ̄ = R̄ΣR̄ᵀ;
///  3. z_j = s·k_jᵀμ̄ + s²·k_jᵀΣ̄k_j / 2 for every live non-sink key (s = the engine's logit scale,
///     1/√d by default — kvpress's k·μ/√d + kᵀΣk/(2d), the log of the Gaussian moment generating
///     function E[exp(s·qᵀk)]); a = softmax_j(z) over the non-sink keys;
///  4. per KV head: mean of a over the n_rep heads of its group (§0 rule 5), times ‖v_j‖₂ after
///     adding ε: score = (a + ε)·‖v_j‖ (use_vnorm); the first n_sink live slots are kept (as
///     kvpress pads them with the maximum score); keep the top floor(r·n) per KV head.
/// Options as kvpress: use_covariance (Σ = 0 when off), use_vnorm, epsilon.
///
/// Our interpretation of "pre-RoPE query statistics": the cache sees post-RoPE queries only (the
/// engine's attend/observe rows), so the policy keeps the last `query_window` prompt query rows
/// per layer and un-rotates each with the engine's RoPE at its own position (Config::rope, the
/// parameters a pre-RoPE store uses, quant spec BB-14; common rope_unapply), which recovers the
/// pre-RoPE queries up to fp32 rounding. kvpress averages over *all* prompt rows after the sinks
/// (it re-projects the hidden states); the statistics here cover the last `query_window` rows
/// (default 128) — set query_window ≥ the prompt length to reproduce kvpress exactly, at
/// L·Hq·W·d·4 bytes of cache memory. Cost: O(n·d²) per query head for the covariance term.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/policies/evict/common/keep_budget.hpp"
#include "kvcompress/policies/evict/common/prefill_selection.hpp"
#include "kvcompress/policies/evict/common/protected_set.hpp"
#include "kvcompress/policies/evict/common/score_selection.hpp"
#include "kvcompress/policies/evict/none.hpp"
#include "kvcompress/policies/quant/common/rope.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {

/// Predicted attention × value norm, per KV head, at prefill end.
struct ExpectedAttention : Base {
  static constexpr const char* kName = "expected_attention";
  static constexpr bool kPerHead = true;
  static constexpr bool kSelectsAtPrefillEnd = true;

  struct Config {
    common::KeepBudget budget{0.5, 0};  ///< retained fraction (kvpress 1 − compression_ratio) or tokens
    std::size_t n_sink = 4;             ///< first live slots kept and left out of the statistics
    std::size_t n_future = 512;         ///< future positions the RoPE rotation is averaged over
    bool use_covariance = true;         ///< include the k_jᵀΣ̄k_j/2 term
    bool use_vnorm = true;              ///< multiply by ‖v_j‖₂
    double epsilon = 0.0;               ///< added to the attention before the ‖v‖ rescaling
    std::size_t query_window = 128;     ///< prompt query rows per layer the statistics use
    quant::common::RopeParams rope{};   ///< the engine's RoPE (head_dim must equal the cache's)
    common::ProtectedOverflow on_protected_overflow = common::ProtectedOverflow::kError;

    void validate(const CacheShape& shape) const {
      const char* where = "evict::ExpectedAttention";
      budget.validate(where);
      detail::require(n_future >= 1, where, "n_future", n_future, ">= 1");
      detail::require(query_window >= 1, where, "query_window", query_window, ">= 1 (the statistics window)");
      detail::require(std::isfinite(epsilon) && epsilon >= 0.0, where, "epsilon", epsilon, "a finite value >= 0");
      detail::require(rope.head_dim == static_cast<std::size_t>(shape.head_dim), where, "rope.head_dim",
                      rope.head_dim, "== head_dim (" + std::to_string(shape.head_dim) + ")");
      detail::require(std::isfinite(rope.base) && rope.base > 1.0, where, "rope.base", rope.base, "a finite base > 1");
      detail::require(std::isfinite(rope.factor) && rope.factor > 0.0, where, "rope.factor", rope.factor,
                      "a finite scaling factor > 0");
      if (budget.tokens > 0 && on_protected_overflow == common::ProtectedOverflow::kError)
        detail::require(budget.tokens >= n_sink, where, "budget.tokens", budget.tokens,
                        ">= n_sink (" + std::to_string(n_sink) + ")");
    }
  };

  template <class C>
  static std::size_t query_window(const C& c) { return c.query_window; }

  /// R̄ = (1/count)·Σ_{p = p0}^{p0+count−1} R(p), d×d row-major, R(p) the RoPE matrix of `rope`
  /// (block-diagonal 2×2 rotations, so R̄ has two non-zeros per row: the channel and its pair).
  /// Built from rope_apply on the vector with a 1 in the first channel of every pair.
  static std::vector<double> average_rotation(const quant::common::RopeParams& rope, std::int64_t p0, std::size_t count) {
    const std::size_t d = rope.head_dim, half = d / 2;
    const bool rotate_half = rope.layout == quant::common::RopeLayout::kRotateHalf;
    auto first = [&](std::size_t i) { return rotate_half ? i : 2 * i; };
    auto second = [&](std::size_t i) { return rotate_half ? i + half : 2 * i + 1; };
    std::vector<double> cs(d, 0.0);  // mean cos at first(i), mean sin at second(i)
    std::vector<float> x(d);
    for (std::size_t t = 0; t < count; ++t) {
      std::fill(x.begin(), x.end(), 0.0f);
      for (std::size_t i = 0; i < half; ++i) x[first(i)] = 1.0f;
      quant::common::rope_apply(x.data(), rope, p0 + static_cast<std::int64_t>(t));
      for (std::size_t c = 0; c < d; ++c) cs[c] += x[c];
    }
    std::vector<double> r(d * d, 0.0);
    for (std::size_t i = 0; i < half; ++i) {
      const std::size_t a = first(i), b = second(i);
      const double c = cs[a] / double(count), s = cs[b] / double(count);
      r[a * d + a] = c;
      r[a * d + b] = -s;
      r[b * d + a] = s;
      r[b * d + b] = c;
    }
    return r;
  }

  /// Query statistics of one query head, as seen by a future query: μ̄ = R̄μ and Σ̄ = R̄ΣR̄ᵀ (d×d,
  /// all zero unless use_covariance), μ and Σ the mean and population covariance of the pre-RoPE
  /// rows `used` of the window (post-RoPE rows un-rotated at their positions).
  struct FutureQuery {
    std::vector<double> mean, cov;
  };

  static FutureQuery future_query(const Config& c, const QueryRows& q, std::size_t head,
                                  const std::vector<std::size_t>& used, const std::vector<double>& rbar) {
    const std::size_t d = static_cast<std::size_t>(q.head_dim), n = used.size();
    const double inv_n = 1.0 / double(n);
    std::vector<double> pre(n * d), mean(d, 0.0), cov(d * d, 0.0);
    std::vector<float> x(d);
    for (std::size_t u = 0; u < n; ++u) {
      const float* src = q.q + (head * q.rows + used[u]) * d;
      std::copy(src, src + d, x.begin());
      quant::common::rope_unapply(x.data(), c.rope, q.pos[used[u]]);
      for (std::size_t a = 0; a < d; ++a) mean[a] += (pre[u * d + a] = x[a]) * inv_n;
    }
    if (c.use_covariance)
      for (std::size_t u = 0; u < n; ++u)
        for (std::size_t a = 0; a < d; ++a) {
          const double xa = pre[u * d + a] - mean[a];
          for (std::size_t b = 0; b < d; ++b) cov[a * d + b] += xa * (pre[u * d + b] - mean[b]) * inv_n;
        }
    // Products with R̄ skip its zeros (two non-zeros per row): O(d²) instead of O(d³).
    FutureQuery f{std::vector<double>(d, 0.0), std::vector<double>(d * d, 0.0)};
    for (std::size_t a = 0; a < d; ++a)
      for (std::size_t t = 0; t < d; ++t) f.mean[a] += rbar[a * d + t] * mean[t];
    if (!c.use_covariance) return f;
    std::vector<double> rc(d * d, 0.0);  // R̄Σ
    for (std::size_t a = 0; a < d; ++a)
      for (std::size_t t = 0; t < d; ++t)
        if (rbar[a * d + t] != 0.0)
          for (std::size_t b = 0; b < d; ++b) rc[a * d + b] += rbar[a * d + t] * cov[t * d + b];
    for (std::size_t b = 0; b < d; ++b)
      for (std::size_t t = 0; t < d; ++t)
        if (rbar[b * d + t] != 0.0)
          for (std::size_t a = 0; a < d; ++a) f.cov[a * d + b] += rc[a * d + t] * rbar[b * d + t];
    return f;
  }

  /// Predicted scores of the live slots of (layer, kv_head), ascending position; the first
  /// n_sink entries are 0 (protected by the caller).
  static std::vector<float> scores(const Config& c, const PrefillContext& ctx, int layer, int kv_head,
                                   const std::vector<double>& rbar) {
    const char* where = "evict::ExpectedAttention";
    const common::LiveRows rows = common::read_live_rows(ctx, layer, kv_head, kv_head);
    const std::size_t n = rows.size(), sinks = std::min(c.n_sink, n);
    const std::size_t d = static_cast<std::size_t>(ctx.shape().head_dim);
    const int rep = ctx.shape().group_size();
    std::vector<float> out(n, 0.0f);
    if (sinks == n) return out;
    const QueryRows q = ctx.queries(layer);
    std::vector<std::size_t> used;  // window rows after the sinks
    for (std::size_t i = 0; i < q.rows; ++i)
      if (q.pos[i] >= static_cast<std::int32_t>(c.n_sink)) used.push_back(i);
    detail::require(!used.empty(), where, "queries(layer).rows", used.size(), [&] {
      return ">= 1 prompt query at a position >= n_sink for layer " + std::to_string(layer) +
             ": attend or observe the prompt queries before end_prefill";
    });
    const double s = ctx.scale();
    std::vector<double> z(n - sinks), attention(n - sinks, 0.0);
    for (int g = 0; g < rep; ++g) {
      const FutureQuery f = future_query(c, q, static_cast<std::size_t>(kv_head * rep + g), used, rbar);
      // z_j = s·kᵀμ̄ + s²·kᵀΣ̄k/2, softmax over the non-sink keys, mean over the group.
      double zmax = -std::numeric_limits<double>::infinity();
      for (std::size_t j = sinks; j < n; ++j) {
        const float* k = rows.k.data() + j * d;
        double lin = 0.0, quad = 0.0;
        for (std::size_t a = 0; a < d; ++a) lin += double(k[a]) * f.mean[a];
        if (c.use_covariance)
          for (std::size_t a = 0; a < d; ++a) {
            double row = 0.0;
            for (std::size_t b = 0; b < d; ++b) row += f.cov[a * d + b] * k[b];
            quad += double(k[a]) * row;
          }
        z[j - sinks] = s * lin + s * s * quad / 2.0;
        zmax = std::max(zmax, z[j - sinks]);
      }
      double sum = 0.0;
      for (double& v : z) sum += (v = std::exp(v - zmax));
      for (std::size_t j = 0; j < z.size(); ++j) attention[j] += z[j] / sum / double(rep);
    }
    // (a + ε)·‖v‖ (use_vnorm), else a.
    for (std::size_t j = sinks; j < n; ++j) {
      double score = attention[j - sinks];
      if (c.use_vnorm) {
        double ss = 0.0;
        for (std::size_t a = 0; a < d; ++a) ss += double(rows.v[j * d + a]) * rows.v[j * d + a];
        score = (score + c.epsilon) * std::sqrt(ss);
      }
      out[j] = static_cast<float>(score);
    }
    return out;
  }

  static void on_prefill_end(const Config& c, PrefillContext& ctx) {
    std::vector<double> rbar;
    std::int64_t rbar_at = -1;  // R̄ depends on the next position only
    for (int l = 0; l < ctx.num_layers(); ++l)
      for (int h = 0; h < ctx.views_per_layer(); ++h) {
        const SlotView& s = ctx.slots(l, h);
        const std::size_t k = c.budget.resolve(s.n_alive);
        if (k >= s.n_alive) continue;
        if (rbar_at != s.tokens_seen) rbar = average_rotation(c.rope, rbar_at = s.tokens_seen, c.n_future);
        const std::vector<float> score = scores(c, ctx, l, h, rbar);
        common::ProtectionConfig pc;
        pc.sinks = c.n_sink;
        common::keep_top_k(s, score.data(), pc, k, c.on_protected_overflow, ctx.keep(l, h),
                           "evict::ExpectedAttention", c.budget.field());
      }
  }
};

}  // namespace evict
KVCOMPRESS_NAMESPACE_END
