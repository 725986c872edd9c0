// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Merge reducers (eviction spec §1.7): fold the members y_1..y_n assigned to an anchor x into
/// the anchor, in place, for one (layer, KV head). Call once on K and once on V with the same
/// assignment (and, for kWeighted, the same key-derived weights) so both are merged identically.
///   average   (x + Σ y_i)/(n+1)                      LOOK-M A-Merge, MEDA Eq. 8
///   pivotal   (x + ½ Σ (y_i + x))/(n+1)              LOOK-M P-Merge (paper default)
///   weighted  (x + Σ s_i·y_i)/(n+1), s_i = cos(k_{y_i}, k_x) on keys      LOOK-M W-Merge
///   bucket    mean of the bucket, anchor included    Elastic Cache Eq. 3
/// "weighted" is the paper formula and deliberately not a convex combination: with s_i < 1 the
/// merged vector shrinks. Keys are merged as stored (post-RoPE, §0 rule 4). An anchor with no
/// member is left bit-identical. Every reducer is a·x + Σ b·c_i·y_i, so the anchor row is
/// rescaled once and the members are added to it; the only scratch is a member count per anchor.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace merge {
namespace common {

/// How an anchor absorbs its members.
enum class MergeReducer : std::uint8_t {
  kAverage,     ///< (x + Σ y_i)/(n+1)
  kPivotal,     ///< ((1 + n/2)·x + ½ Σ y_i)/(n+1)
  kWeighted,    ///< (x + Σ s_i·y_i)/(n+1), not normalised
  kBucketMean,  ///< mean of anchor and members: Elastic Cache's name for the average formula
};

/// Stable name for logs and test output.
constexpr const char* to_string(MergeReducer r) {
  switch (r) {
    case MergeReducer::kAverage: return "average";
    case MergeReducer::kPivotal: return "pivotal";
    case MergeReducer::kWeighted: return "weighted";
    case MergeReducer::kBucketMean: return "bucket_mean";
  }
  return "invalid";
}

/// Merges members into their anchors in `data` ([n][d] keys or values of one head).
/// \param anchors      [n_anchors] kept slot indices, strictly ascending
/// \param members      [n_members] evicted slot indices (none of them an anchor)
/// \param assignment   [n_members] index into `anchors` (merge_assignment.hpp)
/// \param weight       [n_members] s_i for kWeighted (cosine on keys); ignored otherwise
/// \param count_scratch [n_anchors] work space
inline void merge_into_anchors(float* data, std::size_t n, std::size_t d, const std::size_t* anchors,
                               std::size_t n_anchors, const std::size_t* members, const std::size_t* assignment,
                               const float* weight, std::size_t n_members, MergeReducer reducer,
                               std::uint32_t* count_scratch) {
  const char* where = "merge::common::merge_into_anchors";
  detail::require(reducer != MergeReducer::kWeighted || n_members == 0 || weight != nullptr, where, "weight",
                  "nullptr", "[n_members] key cosines for the weighted reducer");
  for (std::size_t a = 0; a < n_anchors; ++a) {
    detail::require(anchors[a] < n && (a == 0 || anchors[a - 1] < anchors[a]), where, "anchors[a]", anchors[a],
                    [&] { return "strictly ascending and < n (" + std::to_string(n) + ")"; });
    count_scratch[a] = 0;
  }
  for (std::size_t e = 0; e < n_members; ++e) {
    detail::require(assignment[e] < n_anchors, where, "assignment[e]", assignment[e],
                    [&] { return "< n_anchors (" + std::to_string(n_anchors) + ")"; });
    detail::require(members[e] < n && !std::binary_search(anchors, anchors + n_anchors, members[e]), where,
                    "members[e]", members[e], [&] { return "< n (" + std::to_string(n) + ") and not an anchor"; });
    ++count_scratch[assignment[e]];
  }
  // x ← a(m)·x for every anchor with m > 0 members.
  for (std::size_t a = 0; a < n_anchors; ++a) {
    const float m = float(count_scratch[a]);
    if (count_scratch[a] == 0) continue;
    const float scale = reducer == MergeReducer::kPivotal ? (1.0f + 0.5f * m) / (m + 1.0f) : 1.0f / (m + 1.0f);
    float* x = data + anchors[a] * d;
    for (std::size_t t = 0; t < d; ++t) x[t] *= scale;
  }
  // x += b(m)·c_i·y_i for every member (c_i = s_i for kWeighted, 1 otherwise).
  const float* s = reducer == MergeReducer::kWeighted ? weight : nullptr;
  for (std::size_t e = 0; e < n_members; ++e) {
    const float m = float(count_scratch[assignment[e]]);
    float coef = (reducer == MergeReducer::kPivotal ? 0.5f : 1.0f) / (m + 1.0f);
    if (s != nullptr) coef *= s[e];
    float* x = data + anchors[assignment[e]] * d;
    const float* y = data + members[e] * d;
    for (std::size_t t = 0; t < d; ++t) x[t] += coef * y[t];
  }
}

}  // namespace common
}  // namespace merge
KVCOMPRESS_NAMESPACE_END
