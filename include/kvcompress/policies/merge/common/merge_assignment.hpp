// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Merge assignment (eviction spec §1.7): which kept anchor each evicted slot is folded into, for
/// one (layer, KV head). Two rules:
///   - cosine-nearest key (LOOK-M arXiv 2406.18139 Eqs. 8–9, MEDA arXiv 2502.17599 §3):
///     c*(e) = argmax_{c ∈ anchors} cos(k_e, k_c), ties → the lower position, zero-norm keys guarded
///     by ε = 1e-6 in the denominator; values follow the key assignment;
///   - positional buckets (Elastic Cache arXiv 2407.18121, Eq. 2): anchors t_1 < … < t_N split the
///     positions at floor((t_k + t_{k+1})/2), the boundary slot going to the left anchor — the
///     nearest anchor by position, ties to the left. Slots before t_1 go to anchor 1.
/// Anchors and members are slot indices, anchors strictly ascending (slots are stored in
/// ascending position, §0 rule 1); an assignment is an index into the anchor list, so every
/// member is assigned to exactly one anchor. Prefill-end code: the cosine rule keeps one buffer of
/// anchor norms; the positional rule allocates nothing.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kvcompress/core/errors.hpp"
#include "kvcompress/policies/evict/common/score_math.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace merge {
namespace common {

namespace detail_assign {

/// Anchors strictly ascending and < n; members < n and not anchors.
inline void check_sets(const char* where, std::size_t n, const std::size_t* anchors, std::size_t n_anchors,
                       const std::size_t* members, std::size_t n_members) {
  detail::require(n_members == 0 || n_anchors > 0, where, "n_anchors", n_anchors, ">= 1 when there are members");
  for (std::size_t a = 0; a < n_anchors; ++a) {
    detail::require(anchors[a] < n, where, "anchors[a]", anchors[a], [&] { return "< n (" + std::to_string(n) + ")"; });
    detail::require(a == 0 || anchors[a - 1] < anchors[a], where, "anchors[a]", anchors[a],
                    "strictly ascending slot indices");
  }
  for (std::size_t e = 0; e < n_members; ++e) {
    detail::require(members[e] < n, where, "members[e]", members[e], [&] { return "< n (" + std::to_string(n) + ")"; });
    detail::require(!std::binary_search(anchors, anchors + n_anchors, members[e]), where, "members[e]", members[e],
                    "a slot that is not an anchor");
  }
}

}  // namespace detail_assign

/// Cosine-nearest anchor of every member, on keys.
/// \param keys       [n][d] keys of one (layer, KV head) (post-RoPE as stored, §0 rule 4)
/// \param anchors    [n_anchors] kept slots, strictly ascending
/// \param members    [n_members] evicted slots to merge
/// \param assignment [n_members] index into `anchors` of each member's anchor
/// \param similarity [n_members] cosine to that anchor (the W-Merge weights s_i), or nullptr
inline void assign_cosine_nearest(const float* keys, std::size_t n, std::size_t d, const std::size_t* anchors,
                                  std::size_t n_anchors, const std::size_t* members, std::size_t n_members,
                                  std::size_t* assignment, float* similarity, float eps = 1e-6f) {
  const char* where = "merge::common::assign_cosine_nearest";
  detail::require(d >= 1, where, "d", d, ">= 1");
  detail_assign::check_sets(where, n, anchors, n_anchors, members, n_members);
  using evict::common::dot_f64;
  std::vector<double> anchor_norm(n_anchors);  // each anchor's norm once, not once per member
  for (std::size_t a = 0; a < n_anchors; ++a) {
    const float* ka = keys + anchors[a] * d;
    anchor_norm[a] = std::sqrt(dot_f64(ka, ka, d));
  }
  for (std::size_t e = 0; e < n_members; ++e) {
    const float* ke = keys + members[e] * d;
    const double norm_e = std::sqrt(dot_f64(ke, ke, d));
    std::size_t best = 0;
    float best_sim = 0.0f;
    for (std::size_t a = 0; a < n_anchors; ++a) {
      const float s = evict::common::cosine_from_dot(dot_f64(ke, keys + anchors[a] * d, d), norm_e, anchor_norm[a], eps);
      if (a == 0 || s > best_sim) best = a, best_sim = s;  // strict: ties stay with the lower position
    }
    assignment[e] = best;
    if (similarity) similarity[e] = best_sim;
  }
}

/// Elastic Cache bucket of every member by position: the anchor k with
/// floor((t_{k−1}+t_k)/2) < pos ≤ floor((t_k+t_{k+1})/2) (first bucket open to the left, last to
/// the right), t_k = pos[anchors[k]]. O(n_members · log n_anchors).
/// \param pos        [n] original positions, ascending with the slot index
/// \param assignment [n_members] index into `anchors`
inline void assign_positional_buckets(const std::int32_t* pos, std::size_t n, const std::size_t* anchors,
                                      std::size_t n_anchors, const std::size_t* members, std::size_t n_members,
                                      std::size_t* assignment) {
  const char* where = "merge::common::assign_positional_buckets";
  detail_assign::check_sets(where, n, anchors, n_anchors, members, n_members);
  for (std::size_t e = 0; e < n_members; ++e) {
    const std::int64_t p = pos[members[e]];
    // First anchor at or after p; the member belongs to it or to the anchor before.
    const std::size_t right = static_cast<std::size_t>(
        std::partition_point(anchors, anchors + n_anchors, [&](std::size_t a) { return pos[a] < p; }) - anchors);
    if (right == 0) {
      assignment[e] = 0;
    } else if (right == n_anchors) {
      assignment[e] = n_anchors - 1;
    } else {
      // p ≤ floor((t_l + t_r)/2) ⇔ 2p ≤ t_l + t_r for integer p: the boundary goes left.
      const std::int64_t t_l = pos[anchors[right - 1]], t_r = pos[anchors[right]];
      assignment[e] = 2 * p <= t_l + t_r ? right - 1 : right;
    }
  }
}

}  // namespace common
}  // namespace merge
KVCOMPRESS_NAMESPACE_END
