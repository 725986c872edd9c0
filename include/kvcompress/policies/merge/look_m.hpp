// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// LOOK-M merging — "LOOK-M: Look-Once Optimization in KV Cache for Efficient Multimodal
/// Long-Context Inference", Wan et al., Findings of EMNLP 2024, arXiv 2406.18139 (eviction spec
/// §2 step 5, §1.7); also the merge of MEDA (Wan et al., NAACL 2025, arXiv 2502.17599, spec §3
/// step 6, which uses the average reducer).
///
/// At end_prefill, for one (layer, KV head): every evicted live slot e is assigned to the kept
/// anchor whose key is cosine-nearest, c*(e) = argmax_c cos(k_e, k_c) over *all* kept slots (the
/// recent window included), ties → lower position, ε = 1e-6 guards zero-norm keys; then each
/// anchor absorbs its members with one reducer, applied identically to K and V (values follow the
/// key assignment and, for W-Merge, the key-derived weights):
///   average  (A-Merge)  (x + Σ y_i)/(n+1)
///   pivotal  (P-Merge)  ((1 + n/2)·x + ½Σ y_i)/(n+1)          ← paper default
///   weighted (W-Merge)  (x + Σ s_i·y_i)/(n+1), s_i = cos(k_{y_i}, k_x), not normalised
/// Keys are merged post-RoPE as stored (spec §0 rule 4). Anchors without members stay
/// bit-identical; the kept count never changes.
///
/// Code-vs-paper: the reference A-Merge/W-Merge classes only merge evicted slots whose
/// head-averaged best similarity is above the global mean (and A-Merge pairs the filtered indices
/// with the unfiltered rows, an indexing bug). That filter needs all heads of a layer at once,
/// which the per-head Merge contract does not provide; the library implements the paper (every
/// evicted slot merged) only.
///
/// The primitives are merge::common::assign_cosine_nearest and merge::common::merge_into_anchors.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/slot_view.hpp"
#include "kvcompress/policies/merge/common/merge_assignment.hpp"
#include "kvcompress/policies/merge/common/merge_reducers.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace merge {

namespace detail_cosine_merge {

constexpr const char* name_of(common::MergeReducer r) {
  return r == common::MergeReducer::kAverage   ? "look_m_average"
         : r == common::MergeReducer::kPivotal ? "look_m_pivotal"
         : r == common::MergeReducer::kWeighted ? "look_m_weighted"
                                                : "cosine_bucket_mean";
}

}  // namespace detail_cosine_merge

/// Cosine-nearest-key assignment + one reducer (LOOK-M A/P/W-Merge, MEDA).
template <common::MergeReducer Reducer>
struct CosineMerge {
  static constexpr const char* kName = detail_cosine_merge::name_of(Reducer);
  static constexpr common::MergeReducer kReducer = Reducer;

  struct Config {
    float eps = 1e-6f;  ///< ε of the cosine denominator (spec §1.7 [rec])
    void validate(const CacheShape&) const {
      detail::require(eps > 0.0f && std::isfinite(eps), "merge::CosineMerge", "eps", eps, "a finite value > 0");
    }
  };

  /// Folds every live evicted slot (alive && !keep) of one (layer, KV head) into its
  /// cosine-nearest kept anchor, rewriting the anchors' rows of k and v ([view.n][d]) in place.
  /// Dead slots are ignored. No kept slot → nothing to merge into, rows unchanged.
  static void merge(const Config& c, const SlotView& view, const std::uint8_t* keep, float* k, float* v,
                    std::size_t d) {
    std::vector<std::size_t> anchors, members;
    for (std::size_t j = 0; j < view.n; ++j) {
      if (view.alive != nullptr && !view.alive[j]) continue;
      (keep[j] ? anchors : members).push_back(j);
    }
    if (anchors.empty() || members.empty()) return;
    std::vector<std::size_t> assignment(members.size());
    std::vector<float> similarity(members.size());
    // Assignment and weights come from the original keys, before any anchor is rewritten.
    common::assign_cosine_nearest(k, view.n, d, anchors.data(), anchors.size(), members.data(), members.size(),
                                  assignment.data(), similarity.data(), c.eps);
    std::vector<std::uint32_t> count(anchors.size());
    for (float* data : {k, v})
      common::merge_into_anchors(data, view.n, d, anchors.data(), anchors.size(), members.data(), assignment.data(),
                                 similarity.data(), members.size(), Reducer, count.data());
  }
};

/// LOOK-M A-Merge; also MEDA's merge (spec §3 step 6).
using LookMAverage = CosineMerge<common::MergeReducer::kAverage>;
/// LOOK-M P-Merge, the paper's default.
using LookMPivotal = CosineMerge<common::MergeReducer::kPivotal>;
/// LOOK-M W-Merge.
using LookMWeighted = CosineMerge<common::MergeReducer::kWeighted>;
/// MEDA merge: cosine-nearest assignment, average reducer (arXiv 2502.17599 Eq. 8).
using Meda = LookMAverage;

}  // namespace merge
KVCOMPRESS_NAMESPACE_END
