// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// VLA-Cache — "VLA-Cache: Efficient Vision-Language-Action Manipulation via Adaptive Token
/// Caching", Xu, Wang, Xia, Zhu, Huang, Xu, NeurIPS 2025, arXiv 2502.02175 (eviction spec §12;
/// reference `vla_cache_utils.py`: find_static_patches, task_relevant_selection,
/// get_layer_mask_schedule). Not an eviction policy: a reuse planner. Once per control step,
/// before the step's prefill, it decides per layer which visual-token positions may take their
/// K/V from the previous step's cache instead of being recomputed:
///   1. static patches: cosine similarity of the flattened pixel patches of the previous and the
///      current frame; patches with similarity ≥ threshold, the `static_top_k` most similar
///      (stable: equal similarity → lower patch id);
///   2. task-relevant patches: the previous step's attention of the text rows on this image's
///      visual tokens at one layer, mean over heads and rows; the `relevant_top_k` highest;
///   3. reusable = static ∖ relevant, sorted by patch id;
///   4. per-layer reuse ratio ρ_l from the previous step's attention entropies
///      (common::entropy_reuse_schedule, damped growth 0.55), count_l = max(1, ⌊ρ_l·|reusable|⌋);
///   5. layer l reuses the first count_l reusable positions (position order, as the reference);
///      the set only grows with depth, so count_l is the running maximum over layers ≤ l
///      (the reference drops tokens from the hidden-state sequence, which cannot come back).
/// Positions come from the engine (`visual_pos0`: the position of patch 0 of this image);
/// patch ids are row-major over the (height/patch) × (width/patch) grid. Recomputation and
/// copying the reused K/V is the engine's job (it owns both steps' caches).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <numeric>
#include <string>
#include <vector>

#include "kvcompress/core/errors.hpp"
#include "kvcompress/policies/evict/common/reuse_schedule.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace reuse {

/// One camera frame, row-major [height][width][channels] pixels (any scale: cosine similarity).
struct Frame {
  const float* pixels = nullptr;
  int height = 0, width = 0, channels = 0;
};

/// VLA-Cache knobs; defaults are the OpenVLA-OFT settings of the reference code.
struct VlaCacheConfig {
  double similarity_threshold = 0.996;  ///< static if cosine(prev, cur) ≥ this
  std::size_t static_top_k = 150;       ///< k_s (OpenVLA: 130)
  std::size_t relevant_top_k = 100;     ///< k_r (OpenVLA: 120)
  double growth = 0.55;                 ///< damping of the layer schedule
  int patch = 14;                       ///< patch side in pixels (224 / 14 = 16 × 16 patches)

  void validate() const {
    const char* w = "reuse::VlaCacheConfig";
    detail::require(similarity_threshold >= -1.0 && similarity_threshold <= 1.0, w, "similarity_threshold",
                    similarity_threshold, "in [-1, 1]");
    detail::require(growth >= 0.0 && growth <= 1.0, w, "growth", growth, "in [0, 1]");
    detail::require(patch >= 1, w, "patch", patch, ">= 1");
  }
};

/// Step 1: ids of the static patches, most similar first (ties: lower id first).
inline std::vector<int> static_patches(const VlaCacheConfig& c, const Frame& prev, const Frame& cur) {
  const char* w = "reuse::static_patches";
  c.validate();
  detail::require(prev.pixels != nullptr && cur.pixels != nullptr, w, "frame.pixels", "nullptr", "pixel buffers");
  detail::require(prev.height == cur.height && prev.width == cur.width && prev.channels == cur.channels, w,
                  "cur", "a frame of another size", "the previous frame's height, width and channels");
  detail::require(cur.height % c.patch == 0 && cur.width % c.patch == 0 && cur.channels >= 1, w, "frame size",
                  std::to_string(cur.height) + "x" + std::to_string(cur.width),
                  "multiples of patch (" + std::to_string(c.patch) + ") and channels >= 1");
  const int gh = cur.height / c.patch, gw = cur.width / c.patch;
  std::vector<double> sim(static_cast<std::size_t>(gh * gw));
  for (int py = 0; py < gh; ++py)
    for (int px = 0; px < gw; ++px) {
      double dot = 0, na = 0, nb = 0;
      for (int y = py * c.patch; y < (py + 1) * c.patch; ++y)
        for (int x = px * c.patch; x < (px + 1) * c.patch; ++x)
          for (int ch = 0; ch < cur.channels; ++ch) {
            const std::size_t i = (static_cast<std::size_t>(y) * static_cast<std::size_t>(cur.width) + static_cast<std::size_t>(x)) *
                                      static_cast<std::size_t>(cur.channels) + static_cast<std::size_t>(ch);
            const double a = prev.pixels[i], b = cur.pixels[i];
            dot += a * b;
            na += a * a;
            nb += b * b;
          }
      // sqrt(na·nb) (not sqrt(na)·sqrt(nb)) makes identical patches exactly 1 (sqrt(x²) = |x| in
      // IEEE arithmetic), so the spec's "identical frames keep the lowest ids" holds. Two black
      // patches are identical; one black patch is not similar to anything.
      const double den = std::sqrt(na * nb);
      sim[static_cast<std::size_t>(py * gw + px)] = den > 0 ? std::min(1.0, dot / den) : (na == nb ? 1.0 : 0.0);
    }
  std::vector<int> ids;
  for (int p = 0; p < gh * gw; ++p)
    if (sim[static_cast<std::size_t>(p)] >= c.similarity_threshold) ids.push_back(p);
  std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) { return sim[static_cast<std::size_t>(a)] > sim[static_cast<std::size_t>(b)]; });
  if (ids.size() > c.static_top_k) ids.resize(c.static_top_k);
  return ids;
}

/// Step 2: the k most attended patches. attn is [heads][rows][patches]: the previous step's
/// attention of the text rows on this image's visual tokens at the chosen layer.
inline std::vector<int> task_relevant_patches(const float* attn, int heads, std::size_t rows, std::size_t patches,
                                              std::size_t k) {
  detail::require(attn != nullptr || heads * rows * patches == 0, "reuse::task_relevant_patches", "attn", "nullptr",
                  "[heads][rows][patches] attention");
  detail::require(heads >= 1 && rows >= 1, "reuse::task_relevant_patches", "heads/rows",
                  std::to_string(heads) + "/" + std::to_string(rows), ">= 1 each");
  std::vector<double> mean(patches, 0.0);
  for (std::size_t i = 0; i < static_cast<std::size_t>(heads) * rows; ++i)
    for (std::size_t p = 0; p < patches; ++p) mean[p] += attn[i * patches + p];
  std::vector<int> ids(patches);
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) { return mean[static_cast<std::size_t>(a)] > mean[static_cast<std::size_t>(b)]; });
  if (ids.size() > k) ids.resize(k);
  std::sort(ids.begin(), ids.end());
  return ids;
}

/// Step 3: static ∖ relevant, sorted by patch id.
inline std::vector<int> reusable_patches(std::vector<int> static_ids, const std::vector<int>& relevant) {
  std::sort(static_ids.begin(), static_ids.end());
  std::vector<int> rel(relevant);
  std::sort(rel.begin(), rel.end());
  std::vector<int> out;
  std::set_difference(static_ids.begin(), static_ids.end(), rel.begin(), rel.end(), std::back_inserter(out));
  return out;
}

/// Steps 4–5: per layer, the positions whose K/V come from the previous step.
/// \param reusable     output of reusable_patches (sorted patch ids)
/// \param visual_pos0  position of patch 0 of this image in the prompt (from the engine)
/// \param layer_entropy mean row entropy of each layer's head-mean attention in the previous step
inline std::vector<std::vector<std::int32_t>> plan_reuse(const VlaCacheConfig& c, const std::vector<int>& reusable,
                                                          std::int32_t visual_pos0,
                                                          const std::vector<double>& layer_entropy) {
  c.validate();
  const std::vector<double> rho = evict::common::entropy_reuse_schedule(layer_entropy, c.growth);
  std::vector<std::vector<std::int32_t>> plan(rho.size());
  std::size_t count = 0;
  for (std::size_t l = 0; l < rho.size(); ++l) {
    count = std::max(count, evict::common::reuse_count(rho[l], reusable.size()));
    for (std::size_t i = 0; i < count; ++i) plan[l].push_back(visual_pos0 + reusable[i]);
  }
  return plan;
}

}  // namespace reuse
KVCOMPRESS_NAMESPACE_END
