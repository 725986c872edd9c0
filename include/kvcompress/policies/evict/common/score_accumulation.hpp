// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Score accumulation (eviction spec §1.2): turning attention rows into one importance score per
/// key, score[h][j] = reduce_{g ∈ group(h)} ( rowreduce_{i ∈ Qset} A[g][i][j] ).
/// The variants are parameters of one primitive:
///   - Qset (`QuerySet`): all prompt rows (H2O, LOOK-M, MEDA, PrefixKV, Elastic Cache), the last W
///     rows (SnapKV, CSP), the post-vision rows (VL-Cache), probe or elite rows (ZipVL, AirCache);
///   - row reduction (`RowReduce`): sum, mean, or the causal-count mean of ZipVL Eq. 7;
///   - head reduction (`HeadReduce`): per KV head, the mean over its n_rep query heads (§0 rule 5),
///     or one layer-shared vector, the mean over all query heads (PrefixKV, Elastic Cache);
///   - decode-step accumulation (H2O): `accumulate_decode_row` adds one step's reduced row.
/// The LSE back-end yields per-query-head column sums directly; `reduce_query_heads` and
/// `normalise_by_causal_count` finish those the same way. Allocation-free.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "kvcompress/core/errors.hpp"
#include "kvcompress/policies/evict/common/attention_provider.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {
namespace common {

/// How the rows of the query set are combined per key.
enum class RowReduce : std::uint8_t {
  kSum,         ///< Σ_{i∈Qset} A[i][j] (H2O, SnapKV, LOOK-M, VL-Cache)
  kMean,        ///< Σ / |Qset|: same ranking as kSum within one call, differs when accumulated
  kCausalMean,  ///< Σ_{i∈Qset, pos_i ≥ pos_j} A[i][j] / #{i∈Qset : pos_i ≥ pos_j} (ZipVL Eq. 7,
                ///< kvpress observed attention); 0 for a key no row of Qset can see
};

/// How query heads are combined into the stored score.
enum class HeadReduce : std::uint8_t {
  kPerKvHead,    ///< [Hkv][n]: mean over the n_rep query heads of each KV head (§0 rule 5)
  kLayerShared,  ///< [n]: mean over all Hq query heads (PrefixKV, Elastic Cache, CSP paper text)
};

/// Stable name for logs and test output.
constexpr const char* to_string(RowReduce r) {
  switch (r) {
    case RowReduce::kSum: return "sum";
    case RowReduce::kMean: return "mean";
    case RowReduce::kCausalMean: return "causal_mean";
  }
  return "invalid";
}

/// Stable name for logs and test output.
constexpr const char* to_string(HeadReduce r) {
  switch (r) {
    case HeadReduce::kPerKvHead: return "per_kv_head";
    case HeadReduce::kLayerShared: return "layer_shared";
  }
  return "invalid";
}

/// The rows of an attention block that form Qset: either a contiguous range [begin, end) or an
/// explicit list of row indices (AirCache elite rows, ZipVL random probes).
struct QuerySet {
  std::size_t begin = 0;                ///< first row of the range (when list == nullptr)
  std::size_t end = 0;                  ///< one past the last row of the range
  const std::size_t* list = nullptr;    ///< [list_size] explicit rows, or nullptr for the range
  std::size_t list_size = 0;

  /// Every row of a block of `rows` rows (all prompt rows).
  static QuerySet all(std::size_t rows) { return {0, rows, nullptr, 0}; }
  /// The last min(w, rows) rows (SnapKV / CSP observation window).
  static QuerySet last(std::size_t rows, std::size_t w) { return {rows - std::min(w, rows), rows, nullptr, 0}; }
  /// Rows [first, rows) (VL-Cache post-vision rows: first = slot after the last visual slot).
  static QuerySet from(std::size_t first, std::size_t rows) { return {first, rows, nullptr, 0}; }
  /// An explicit row list.
  static QuerySet of(const std::size_t* rows, std::size_t count) { return {0, 0, rows, count}; }

  std::size_t size() const { return list ? list_size : (end > begin ? end - begin : 0); }
  /// The t-th row of the set.
  std::size_t row(std::size_t t) const { return list ? list[t] : begin + t; }
};

namespace detail_scores {

inline void check_heads(const char* where, int num_q_heads, int num_kv_heads) {
  detail::require(num_kv_heads > 0, where, "num_kv_heads", num_kv_heads, "> 0");
  detail::require(num_q_heads > 0 && num_q_heads % num_kv_heads == 0, where, "num_q_heads", num_q_heads,
                  [&] { return "a positive multiple of num_kv_heads (" + std::to_string(num_kv_heads) + ")"; });
}

/// Output heads and the query→output mapping of a head reduction.
inline int output_heads(HeadReduce r, int num_kv_heads) { return r == HeadReduce::kPerKvHead ? num_kv_heads : 1; }

}  // namespace detail_scores

/// Divides score[h][j] by the number of rows of `q` that can see key j (pos_row ≥ key_pos[j]);
/// scores of keys no row sees become 0. Turns column sums into the causal-count mean (ZipVL
/// Eq. 7). O(n·|Qset|).
/// \param score   [heads][n]
/// \param row_pos positions of the block's rows, indexed by QuerySet::row
inline void normalise_by_causal_count(float* score, int heads, std::size_t n, const std::int32_t* key_pos,
                                      const std::int32_t* row_pos, const QuerySet& q) {
  const char* where = "evict::common::normalise_by_causal_count";
  detail::require(n == 0 || key_pos != nullptr, where, "key_pos", "nullptr", "[n] key positions");
  detail::require(q.size() == 0 || row_pos != nullptr, where, "row_pos", "nullptr", "row positions");
  for (std::size_t j = 0; j < n; ++j) {
    std::size_t count = 0;
    for (std::size_t t = 0; t < q.size(); ++t) count += row_pos[q.row(t)] >= key_pos[j] ? 1 : 0;
    const float inv = count ? 1.0f / float(count) : 0.0f;
    for (int h = 0; h < heads; ++h) score[static_cast<std::size_t>(h) * n + j] *= inv;
  }
}

/// Reduces per-query-head scores [Hq][n] (e.g. the output of column_sums_from_lse) to [Hkv][n]
/// (mean over each GQA group) or to one layer-shared [n] (mean over all heads). Overwrites `out`.
inline void reduce_query_heads(const float* per_q_head, int num_q_heads, int num_kv_heads, std::size_t n,
                               HeadReduce reduce, float* out) {
  const char* where = "evict::common::reduce_query_heads";
  detail_scores::check_heads(where, num_q_heads, num_kv_heads);
  const int out_heads = detail_scores::output_heads(reduce, num_kv_heads);
  const int per_out = num_q_heads / out_heads;
  const float w = 1.0f / float(per_out);
  std::fill(out, out + static_cast<std::size_t>(out_heads) * n, 0.0f);
  for (int g = 0; g < num_q_heads; ++g) {
    float* dst = out + static_cast<std::size_t>(g / per_out) * n;
    const float* src = per_q_head + static_cast<std::size_t>(g) * n;
    for (std::size_t j = 0; j < n; ++j) dst[j] += w * src[j];
  }
}

/// One-shot score of materialised rows: out = headreduce(rowreduce_{i∈q}(a)). Overwrites `out`,
/// which is [num_kv_heads][n] for kPerKvHead and [n] for kLayerShared. kCausalMean needs
/// a.row_pos and a.key_pos.
inline void column_scores(const AttentionRows& a, const QuerySet& q, int num_kv_heads, RowReduce rows,
                          HeadReduce heads, float* out) {
  const char* where = "evict::common::column_scores";
  detail_scores::check_heads(where, a.num_heads, num_kv_heads);
  detail::require(a.rows == 0 || a.n == 0 || a.p != nullptr, where, "a.p", "nullptr", "[Hq][rows][n] probabilities");
  for (std::size_t t = 0; t < q.size(); ++t)
    detail::require(q.row(t) < a.rows, where, "q row", q.row(t), [&] { return "< a.rows (" + std::to_string(a.rows) + ")"; });
  const int out_heads = detail_scores::output_heads(heads, num_kv_heads);
  const int per_out = a.num_heads / out_heads;
  const float w = 1.0f / float(per_out);
  std::fill(out, out + static_cast<std::size_t>(out_heads) * a.n, 0.0f);
  for (int g = 0; g < a.num_heads; ++g) {
    float* dst = out + static_cast<std::size_t>(g / per_out) * a.n;
    for (std::size_t t = 0; t < q.size(); ++t) {
      const float* src = a.p + (static_cast<std::size_t>(g) * a.rows + q.row(t)) * a.n;
      for (std::size_t j = 0; j < a.n; ++j) dst[j] += w * src[j];
    }
  }
  if (rows == RowReduce::kMean && q.size() > 0) {
    const float inv = 1.0f / float(q.size());
    for (std::size_t j = 0; j < static_cast<std::size_t>(out_heads) * a.n; ++j) out[j] *= inv;
  } else if (rows == RowReduce::kCausalMean) {
    normalise_by_causal_count(out, out_heads, a.n, a.key_pos, a.row_pos, q);
  }
}

/// Decode-step accumulation (H2O, arXiv 2306.14048): score += headreduce(row) for one new query
/// row [Hq][n] over the current n slots. A slot appended this step starts at score 0 in the
/// caller's array, so it is initialised with its own attention (§1.2).
/// \param score [num_kv_heads][n] for kPerKvHead, [n] for kLayerShared; accumulated in place
inline void accumulate_decode_row(const float* row, int num_q_heads, int num_kv_heads, std::size_t n,
                                  HeadReduce heads, float* score) {
  const char* where = "evict::common::accumulate_decode_row";
  detail_scores::check_heads(where, num_q_heads, num_kv_heads);
  const int per_out = num_q_heads / detail_scores::output_heads(heads, num_kv_heads);
  const float w = 1.0f / float(per_out);
  for (int g = 0; g < num_q_heads; ++g) {
    float* dst = score + static_cast<std::size_t>(g / per_out) * n;
    const float* src = row + static_cast<std::size_t>(g) * n;
    for (std::size_t j = 0; j < n; ++j) dst[j] += w * src[j];
  }
}

}  // namespace common
}  // namespace evict
KVCOMPRESS_NAMESPACE_END
