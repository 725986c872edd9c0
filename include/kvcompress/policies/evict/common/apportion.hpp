// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Integer realisation of real per-layer budgets (eviction spec §1.6 [rec], §0 rule 6): given
/// desired real counts x_l, integer bounds [lo_l, hi_l] and a hard total B, produce integers k_l
/// with Σ k_l = B and lo_l ≤ k_l ≤ hi_l by
///   1. water-filling on the reals: clip x to its bounds; while the clipped total misses B, scale
///      the layers not yet at the bound in the needed direction by one common factor (surplus or
///      deficit shared proportionally among unclipped layers; equal shares if they are all 0);
///   2. bounded largest remainder: floor everything, then +1 to the layers with the largest
///      fractional parts (ties → lower layer index) until the total is B.
/// Budgets are computed once per prefill, so this allocates its small per-layer vectors.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <string>
#include <vector>

#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {
namespace common {

/// Bounded largest-remainder apportionment with water-filling (§1.6 "integer realisation").
/// \param desired real desired counts x_l ≥ 0
/// \param lo      integer lower bounds (≥ 0)
/// \param hi      integer upper bounds (≥ lo_l)
/// \param total   B, with Σ lo ≤ B ≤ Σ hi
/// \return k_l with Σ k_l = B, lo_l ≤ k_l ≤ hi_l; |k_l − y_l| < 1 for the water-filled reals y_l
inline std::vector<std::size_t> apportion(const std::vector<double>& desired, const std::vector<std::size_t>& lo,
                                          const std::vector<std::size_t>& hi, std::size_t total) {
  const char* where = "evict::common::apportion";
  const std::size_t L = desired.size();
  detail::require(lo.size() == L && hi.size() == L, where, "lo/hi size", lo.size(),
                  [&] { return "== desired.size() (" + std::to_string(L) + ")"; });
  std::size_t sum_lo = 0, sum_hi = 0;
  for (std::size_t l = 0; l < L; ++l) {
    detail::require(std::isfinite(desired[l]) && desired[l] >= 0.0, where, "desired[l]", desired[l],
                    "a finite value >= 0");
    detail::require(lo[l] <= hi[l], where, "lo[l]", lo[l], [&] { return "<= hi[l] (" + std::to_string(hi[l]) + ")"; });
    sum_lo += lo[l];
    sum_hi += hi[l];
  }
  detail::require(total >= sum_lo && total <= sum_hi, where, "total", total, [&] {
    return "in [sum(lo), sum(hi)] = [" + std::to_string(sum_lo) + ", " + std::to_string(sum_hi) + "]";
  });

  // 1. Water-fill the reals. Each round either meets B or pins at least one more layer to a bound.
  std::vector<double> y(L);
  for (std::size_t l = 0; l < L; ++l) y[l] = std::clamp(desired[l], double(lo[l]), double(hi[l]));
  const double tol = 1e-9 * std::max(1.0, double(total));
  for (std::size_t round = 0; round <= L; ++round) {
    const double gap = double(total) - std::accumulate(y.begin(), y.end(), 0.0);
    if (std::abs(gap) <= tol) break;
    double free_sum = 0.0;
    std::size_t free_count = 0;
    for (std::size_t l = 0; l < L; ++l) {
      const bool movable = gap > 0 ? y[l] < double(hi[l]) : y[l] > double(lo[l]);
      if (movable) free_sum += y[l], ++free_count;
    }
    if (free_count == 0) break;
    for (std::size_t l = 0; l < L; ++l) {
      const bool movable = gap > 0 ? y[l] < double(hi[l]) : y[l] > double(lo[l]);
      if (!movable) continue;
      const double share = free_sum > 0.0 ? y[l] / free_sum : 1.0 / double(free_count);
      y[l] = std::clamp(y[l] + gap * share, double(lo[l]), double(hi[l]));
    }
  }

  // 2. Floor, then hand out the remainder by largest fractional part (ties → lower index).
  std::vector<std::size_t> k(L);
  std::vector<double> frac(L);
  std::size_t sum_k = 0;
  for (std::size_t l = 0; l < L; ++l) {
    const double f = std::floor(y[l]);
    k[l] = std::clamp(static_cast<std::size_t>(std::max(0.0, f)), lo[l], hi[l]);
    frac[l] = y[l] - double(k[l]);
    sum_k += k[l];
  }
  std::vector<std::size_t> order(L);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return frac[a] > frac[b] || (frac[a] == frac[b] && a < b);
  });
  // Rounding can leave the floors more than L away from B only through float error; loop
  // until exact, which terminates because B lies within [Σ lo, Σ hi].
  while (sum_k < total)
    for (std::size_t t = 0; t < L && sum_k < total; ++t)
      if (k[order[t]] < hi[order[t]]) ++k[order[t]], ++sum_k;
  while (sum_k > total)
    for (std::size_t t = L; t > 0 && sum_k > total; --t)
      if (k[order[t - 1]] > lo[order[t - 1]]) --k[order[t - 1]], --sum_k;
  return k;
}

}  // namespace common
}  // namespace evict
KVCOMPRESS_NAMESPACE_END
