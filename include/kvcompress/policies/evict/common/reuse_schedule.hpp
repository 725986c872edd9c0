// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// VLA-Cache layer reuse schedule (arXiv 2502.02175; code `vla_cache_utils.get_layer_mask_schedule`;
/// eviction spec §12 step 4–5, §1.6 "entropy schedule"): focused (low-entropy) layers reuse more
/// of last frame's static visual KV. ρ_l = 1 − minmax(H_l), then damped growth along depth:
/// if ρ_l > ρ_{l−1} then ρ_l ← ρ_{l−1} + growth·(ρ_l − ρ_{l−1}), using the already damped ρ_{l−1}.
/// This is a reuse ratio, not an eviction budget; `reuse_count` turns it into a token count.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {
namespace common {

/// Per-layer reuse ratios ρ_l ∈ [0, 1] from the layers' mean attention entropies H_l (head-mean
/// attention, rows renormalised; mean_row_entropy in score_math.hpp). Equal entropies in every
/// layer leave min-max undefined: ρ_l = 0 (recompute everything) [rec].
/// Examples: H = [1, 2, 3] → [1, 0.5, 0]; H = [3, 2, 1] → [0, 0.275, 0.67375].
/// \param growth damping factor in [0, 1] (paper code: 0.55)
inline std::vector<double> entropy_reuse_schedule(const std::vector<double>& layer_entropy, double growth = 0.55) {
  const char* where = "evict::common::entropy_reuse_schedule";
  detail::require(growth >= 0.0 && growth <= 1.0, where, "growth", growth, "in [0, 1]");
  std::vector<double> rho(layer_entropy.size(), 0.0);
  if (layer_entropy.empty()) return rho;
  for (double h : layer_entropy) detail::require(std::isfinite(h), where, "layer_entropy[l]", h, "a finite value");
  const auto [mn, mx] = std::minmax_element(layer_entropy.begin(), layer_entropy.end());
  const double lo = *mn, span = *mx - *mn;
  if (!(span > 0.0)) return rho;
  for (std::size_t l = 0; l < rho.size(); ++l) {
    rho[l] = 1.0 - (layer_entropy[l] - lo) / span;
    if (l > 0 && rho[l] > rho[l - 1]) rho[l] = rho[l - 1] + growth * (rho[l] - rho[l - 1]);
  }
  return rho;
}

/// Tokens a layer takes from the previous frame: max(1, floor(ρ·reusable)), 0 when nothing is
/// reusable (VLA-Cache code: the first that many positions of the sorted reusable set).
inline std::size_t reuse_count(double rho, std::size_t reusable) {
  detail::require(rho >= 0.0 && rho <= 1.0, "evict::common::reuse_count", "rho", rho, "in [0, 1]");
  if (reusable == 0) return 0;
  return std::max<std::size_t>(1, static_cast<std::size_t>(std::floor(rho * double(reusable))));
}

}  // namespace common
}  // namespace evict
KVCOMPRESS_NAMESPACE_END
