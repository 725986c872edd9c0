// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Elastic Cache merging — "Efficient Inference of Vision Instruction-Following Models with
/// Elastic Cache", Liu et al., ECCV 2024, arXiv 2407.18121 (eviction spec §6 steps 3–4, §1.7).
///
/// At end_prefill the kept slots that are not protected are the anchors t_1 < … < t_N. The
/// unprotected range is split into positional buckets [paper Eq. 2]:
///   B_1 = {first … ⌊(t_1+t_2)/2⌋}, B_k = {⌊(t_{k−1}+t_k)/2⌋+1 … ⌊(t_k+t_{k+1})/2⌋}, B_N = {… last},
/// i.e. nearest anchor by position, ties to the left (the official code's argmin of |Δpos|); and
/// each anchor's K and V become the mean of its bucket, anchor included [paper Eq. 3]. Protected
/// slots (sinks and the last prompt token) are kept untouched and never absorb others [code].
/// Buckets are per layer (the anchors come from the layer-shared importance) and the mean is
/// taken per head — this function runs once per (layer, KV head).
///
/// The Merge contract does not say which kept slots were protected, so Config repeats the
/// protected set of evict::ElasticCache (same defaults: 4 sinks + last prompt token); keep the two
/// in step when changing either. Primitives: merge::common::assign_positional_buckets and
/// merge_into_anchors with MergeReducer::kBucketMean.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/slot_view.hpp"
#include "kvcompress/policies/evict/common/protected_set.hpp"
#include "kvcompress/policies/merge/common/merge_assignment.hpp"
#include "kvcompress/policies/merge/common/merge_reducers.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace merge {

/// Positional buckets around importance anchors, bucket mean (Elastic Cache).
struct BucketMean {
  static constexpr const char* kName = "bucket_mean";

  struct Config {
    std::size_t sinks = 4;   ///< first live slots that never absorb others (= ElasticCache::Config::sinks)
    bool last_token = true;  ///< the last live slot never absorbs others (= ElasticCache::Config::last_token)
    void validate(const CacheShape&) const {}
  };

  /// Folds every live evicted slot of one (layer, KV head) into the bucket of its positional
  /// anchor (kept, unprotected), rewriting k and v ([view.n][d]) in place. No anchor → rows
  /// unchanged (the evicted slots are dropped).
  static void merge(const Config& c, const SlotView& view, const std::uint8_t* keep, float* k, float* v,
                    std::size_t d) {
    evict::common::ProtectionConfig pc;
    pc.sinks = c.sinks;
    pc.last_token = c.last_token;
    std::vector<evict::common::Protection> prot(view.n);
    evict::common::mark_protected(pc, view.n, view.alive, nullptr, prot.data());
    std::vector<std::size_t> anchors, members;
    for (std::size_t j = 0; j < view.n; ++j) {
      if (view.alive != nullptr && !view.alive[j]) continue;
      if (!keep[j]) members.push_back(j);
      else if (prot[j] == evict::common::Protection::kNone) anchors.push_back(j);
    }
    if (anchors.empty() || members.empty()) return;
    std::vector<std::size_t> assignment(members.size());
    common::assign_positional_buckets(view.pos, view.n, anchors.data(), anchors.size(), members.data(),
                                      members.size(), assignment.data());
    std::vector<std::uint32_t> count(anchors.size());
    for (float* data : {k, v})
      common::merge_into_anchors(data, view.n, d, anchors.data(), anchors.size(), members.data(), assignment.data(),
                                 nullptr, members.size(), common::MergeReducer::kBucketMean, count.data());
  }
};

}  // namespace merge
KVCOMPRESS_NAMESPACE_END
