// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AttentionProvider back-ends (eviction spec §1.1): the three ways an attention-based scorer
/// obtains the attention of a query set on the keys of one layer.
///   1. Materialised: the engine hands probability rows (eager attention); `AttentionRows` views
///      them and the score accumulators (score_accumulation.hpp) read them directly.
///   2. Recompute-from-window: `attention_rows_from_window` computes softmax(Q Kᵀ·scale + causal
///      mask) for a few post-RoPE query rows (SnapKV window, VL-Cache post-vision rows, ZipVL
///      probes, AirCache elite rows). This is what makes a scorer FlashAttention-compatible.
///   3. Column sums from LSE: `column_sums_from_lse` computes colsum[j] = Σ_i exp(q_i·k_j·scale −
///      LSE_i) over *all* prompt rows from the per-row log-sum-exp FlashAttention returns, tile by
///      tile, never storing the m×m matrix (LOOK-M, MEDA, PrefixKV, Elastic Cache, H2O prefill).
///      `row_log_sum_exp` produces those LSE values for an engine that has none.
/// Shapes: queries [Hq][rows][d], keys [Hkv][n][d], probabilities [Hq][rows][n]. Query head g
/// reads KV head g / n_rep (GQA, n_rep = Hq / Hkv). Row i sees key j iff key_pos[j] ≤ row_pos[i]
/// (causal by original position, so it stays correct after eviction). Allocation-free.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/query_rows.hpp"
#include "kvcompress/kernels/isa.hpp"
#include "kvcompress/kernels/softmax.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {
namespace common {

using ::kvcompress::KeyRows;
using ::kvcompress::QueryRows;

/// Materialised attention probabilities of a query set (back-end 1, or the output of back-end 2).
/// Masked (future) entries are 0.
struct AttentionRows {
  const float* p = nullptr;               ///< [num_heads][rows][n]
  const std::int32_t* row_pos = nullptr;  ///< [rows] query positions (needed by causal means only)
  const std::int32_t* key_pos = nullptr;  ///< [n] key positions (needed by causal means only)
  int num_heads = 0;                      ///< Hq
  std::size_t rows = 0;
  std::size_t n = 0;
};

namespace detail_attention {

/// Checks that q and k describe one layer: equal head_dim, Hq a positive multiple of Hkv, data
/// and positions present whenever the extents are non-zero.
inline void check_shapes(const char* where, const QueryRows& q, const KeyRows& k) {
  detail::require(q.head_dim > 0 && q.head_dim == k.head_dim, where, "q.head_dim", q.head_dim,
                  [&] { return "> 0 and == k.head_dim (" + std::to_string(k.head_dim) + ")"; });
  detail::require(k.num_heads > 0, where, "k.num_heads", k.num_heads, "> 0");
  detail::require(q.num_heads > 0 && q.num_heads % k.num_heads == 0, where, "q.num_heads", q.num_heads,
                  [&] { return "a positive multiple of k.num_heads (" + std::to_string(k.num_heads) + ")"; });
  detail::require(q.rows == 0 || (q.q != nullptr && q.pos != nullptr), where, "q.q/q.pos", "nullptr",
                  "non-null when rows > 0");
  detail::require(k.n == 0 || (k.k != nullptr && k.pos != nullptr), where, "k.k/k.pos", "nullptr",
                  "non-null when n > 0");
}

/// q·k over d elements, fp32 accumulation (vectorisable).
inline float dot(const float* a, const float* b, int d) {
  float s = 0.0f;
  for (int t = 0; t < d; ++t) s += a[t] * b[t];
  return s;
}

}  // namespace detail_attention

/// Back-end 2: causal softmax rows of a query set, recomputed from post-RoPE Q and K.
/// out[g][i][j] = softmax_j(q_{g,i}·k_{g/n_rep,j}·scale) over the keys with pos ≤ row pos, 0 for
/// the others; a row that sees no key is all zeros.
/// \param scale logit scale, normally 1/√d
/// \param out   [Hq][rows][n] probabilities
inline void attention_rows_from_window(const QueryRows& q, const KeyRows& k, float scale, float* out) {
  const char* where = "evict::common::attention_rows_from_window";
  detail_attention::check_shapes(where, q, k);
  const int n_rep = q.num_heads / k.num_heads, d = q.head_dim;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int g = 0; g < q.num_heads; ++g) {
    const float* keys = k.k + static_cast<std::size_t>(g / n_rep) * k.n * d;
    for (std::size_t i = 0; i < q.rows; ++i) {
      const float* qi = q.q + (static_cast<std::size_t>(g) * q.rows + i) * d;
      float* row = out + (static_cast<std::size_t>(g) * q.rows + i) * k.n;
      for (std::size_t j = 0; j < k.n; ++j)
        row[j] = k.pos[j] <= q.pos[i] ? detail_attention::dot(qi, keys + j * d, d) * scale : neg_inf;
      const float m = kernels::max_value(row, k.n, best_isa{});
      const float sum = kernels::exp_shift_sum(row, k.n, m, best_isa{});
      if (sum > 0.0f) {
        const float inv = 1.0f / sum;
        for (std::size_t j = 0; j < k.n; ++j) row[j] *= inv;
      }
    }
  }
}

/// Per-row log-sum-exp of the causal logits, LSE_{g,i} = log Σ_{j visible} exp(q_{g,i}·k_j·scale)
/// (natural log, scale included: FlashAttention's `softmax_lse` convention). One online pass per
/// row; −inf for a row that sees no key.
/// \param lse [Hq][rows]
inline void row_log_sum_exp(const QueryRows& q, const KeyRows& k, float scale, float* lse) {
  const char* where = "evict::common::row_log_sum_exp";
  detail_attention::check_shapes(where, q, k);
  const int n_rep = q.num_heads / k.num_heads, d = q.head_dim;
  for (int g = 0; g < q.num_heads; ++g) {
    const float* keys = k.k + static_cast<std::size_t>(g / n_rep) * k.n * d;
    for (std::size_t i = 0; i < q.rows; ++i) {
      const float* qi = q.q + (static_cast<std::size_t>(g) * q.rows + i) * d;
      double m = -std::numeric_limits<double>::infinity(), s = 0.0;
      for (std::size_t j = 0; j < k.n; ++j) {
        if (k.pos[j] > q.pos[i]) continue;
        const double x = double(detail_attention::dot(qi, keys + j * d, d)) * scale;
        if (x > m) {
          s = s * std::exp(m - x) + 1.0;
          m = x;
        } else {
          s += std::exp(x - m);
        }
      }
      lse[static_cast<std::size_t>(g) * q.rows + i] = s > 0.0 ? float(m + std::log(s)) : float(m);
    }
  }
}

/// Row and key extents of one tile of `column_sums_from_lse` (rows × keys visited together so the
/// keys of a tile stay in cache while every row of the tile passes over them).
inline constexpr std::size_t kLseTileRows = 32;
inline constexpr std::size_t kLseTileKeys = 128;

/// Back-end 3: column sums of the causal attention over every row of `q`, from per-row LSE.
/// colsum[g][j] = Σ_{i : pos_i ≥ pos_j} exp(q_{g,i}·k_{g/n_rep,j}·scale − LSE_{g,i}); exact (no
/// approximation beyond fp32), O(rows·n·d) work, tile by tile, no m×m buffer. Rows whose LSE is
/// −inf (they saw no key) contribute nothing.
/// \param lse    [Hq][rows] as produced by FlashAttention or row_log_sum_exp (same `scale`)
/// \param colsum [Hq][n], overwritten
inline void column_sums_from_lse(const QueryRows& q, const float* lse, const KeyRows& k, float scale,
                                 float* colsum) {
  const char* where = "evict::common::column_sums_from_lse";
  detail_attention::check_shapes(where, q, k);
  detail::require(q.rows == 0 || lse != nullptr, where, "lse", "nullptr", "[Hq][rows] log-sum-exp values");
  const int n_rep = q.num_heads / k.num_heads, d = q.head_dim;
  std::fill(colsum, colsum + static_cast<std::size_t>(q.num_heads) * k.n, 0.0f);
  for (int g = 0; g < q.num_heads; ++g) {
    const float* keys = k.k + static_cast<std::size_t>(g / n_rep) * k.n * d;
    const float* row_lse = lse + static_cast<std::size_t>(g) * q.rows;
    float* out = colsum + static_cast<std::size_t>(g) * k.n;
    for (std::size_t i0 = 0; i0 < q.rows; i0 += kLseTileRows) {
      const std::size_t i1 = std::min(q.rows, i0 + kLseTileRows);
      for (std::size_t j0 = 0; j0 < k.n; j0 += kLseTileKeys) {
        const std::size_t j1 = std::min(k.n, j0 + kLseTileKeys);
        for (std::size_t i = i0; i < i1; ++i) {
          if (!std::isfinite(row_lse[i])) continue;
          const float* qi = q.q + (static_cast<std::size_t>(g) * q.rows + i) * d;
          for (std::size_t j = j0; j < j1; ++j) {
            if (k.pos[j] > q.pos[i]) continue;
            out[j] += std::exp(detail_attention::dot(qi, keys + j * d, d) * scale - row_lse[i]);
          }
        }
      }
    }
  }
}

}  // namespace common
}  // namespace evict
KVCOMPRESS_NAMESPACE_END
