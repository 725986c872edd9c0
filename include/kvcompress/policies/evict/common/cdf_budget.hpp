// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Cumulative-importance budgets (eviction spec §1.6 "CDF threshold"): a layer keeps the
/// shortest prefix of its scores, sorted descending, that holds a given share of the layer's
/// attention mass.
///   - mass_prefix_count: one layer, a fixed share τ (ZipVL Eq. 6, arXiv 2410.08584);
///   - cdf_threshold_budgets: one share p common to all layers, found by bisection so the layers'
///     prefixes plus their protected slots add up to r·Σ n_l (PrefixKV Alg. 1, arXiv 2412.03409).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "kvcompress/core/errors.hpp"
#include "kvcompress/policies/evict/common/apportion.hpp"
#include "kvcompress/policies/evict/common/layer_budget.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {
namespace common {

/// ZipVL important-token count: the smallest p with Σ_{top p} a ≥ τ·Σ_j a (scores sorted
/// descending). τ = 1 gives the number of tokens with non-zero mass; an all-zero row gives 0.
/// Example a = [0.5, 0.3, 0.1, 0.05, 0.05], τ = 0.85 → 3.
/// \param score   [n] non-negative importance (un-normalised attention column sums)
/// \param tau     share of the mass to cover, in (0, 1]
/// \param scratch [n] work space (sorted copy), so the decode-time re-rank does not allocate
inline std::size_t mass_prefix_count(const float* score, std::size_t n, double tau, float* scratch) {
  const char* where = "evict::common::mass_prefix_count";
  detail::require(tau > 0.0 && tau <= 1.0, where, "tau", tau, "in (0, 1]");
  std::copy(score, score + n, scratch);
  std::sort(scratch, scratch + n, std::greater<float>());
  double total = 0.0;
  for (std::size_t j = 0; j < n; ++j) total += scratch[j];  // same order as the prefix sums below
  if (!(total > 0.0)) return 0;
  double prefix = 0.0;
  for (std::size_t j = 0; j < n; ++j) {
    prefix += scratch[j];
    if (prefix >= tau * total) return j + 1;
  }
  return n;
}

/// Result of cdf_threshold_budgets.
struct CdfBudgets {
  LayerBudgets budgets;             ///< kept_l = prefix_l + protected_l, Σ = floor(r·Σ n_l)
  std::vector<std::size_t> prefix;  ///< R_l: unprotected slots kept (top-R_l by score)
  double threshold = 0.0;           ///< the common cumulative share p found by the search
};

/// PrefixKV layer budgets (arXiv 2412.03409, Alg. 1; spec §5 steps 2–4). Per layer the
/// unprotected scores are sorted descending and normalised to a CDF P_l (a zero-mass layer uses
/// the uniform CDF); R_l(p) = min{o : P_l^o ≥ p}, at least 1. Bisection on p ∈ [0, 1] looks for
/// Σ_l R_l(p) = floor(r·Σ n_l) − Σ_l protected_l, so the kept total *including* protected slots
/// is floor(r·Σ n_l) (protected slots excluded from the CDF [rec]). When the discrete sizes
/// cannot hit the target exactly, the prefixes between the bracketing thresholds are apportioned
/// (§1.6) — the paper's "rescale proportionally". With distinct CDF values, a larger r never
/// shrinks a layer.
/// \param scores          per layer: importance of its unprotected slots (any order, ≥ 0)
/// \param protected_count per layer: slots protected outright (sinks + last token)
/// \param ratio           retained fraction r ∈ (0, 1]
inline CdfBudgets cdf_threshold_budgets(const std::vector<std::vector<float>>& scores,
                                        const std::vector<std::size_t>& protected_count, double ratio) {
  const char* where = "evict::common::cdf_threshold_budgets";
  const std::size_t L = scores.size();
  detail::require(L >= 1, where, "scores.size()", L, ">= 1 layer");
  detail::require(protected_count.size() == L, where, "protected_count.size()", protected_count.size(),
                  [&] { return "== scores.size() (" + std::to_string(L) + ")"; });
  detail::require(ratio > 0.0 && ratio <= 1.0, where, "ratio", ratio, "in (0, 1]");

  // Per-layer CDF of the descending scores; the last entry is forced to exactly 1.
  std::vector<std::vector<double>> cdf(L);
  std::size_t n_total = 0, prot_total = 0, min_prefix = 0, max_prefix = 0;
  for (std::size_t l = 0; l < L; ++l) {
    std::vector<double> s(scores[l].begin(), scores[l].end());
    for (double v : s) detail::require(std::isfinite(v) && v >= 0.0, where, "scores[l][j]", v, "a finite value >= 0");
    std::sort(s.begin(), s.end(), std::greater<double>());
    double total = 0.0;
    for (double v : s) total += v;
    cdf[l].resize(s.size());
    double acc = 0.0;
    for (std::size_t o = 0; o < s.size(); ++o) {
      acc += total > 0.0 ? s[o] / total : 1.0 / double(s.size());
      cdf[l][o] = acc;
    }
    if (!s.empty()) cdf[l].back() = 1.0;
    n_total += s.size() + protected_count[l];
    prot_total += protected_count[l];
    min_prefix += s.empty() ? 0 : 1;
    max_prefix += s.size();
  }
  const std::size_t kept_total = static_cast<std::size_t>(std::floor(ratio * double(n_total)));
  detail::require(kept_total >= prot_total + min_prefix, where, "ratio", ratio, [&] {
    return "large enough that floor(r * " + std::to_string(n_total) + ") >= protected slots + one per layer (" +
           std::to_string(prot_total + min_prefix) + ")";
  });
  const std::size_t target = std::min(kept_total - prot_total, max_prefix);

  auto prefix_at = [&](double p, std::vector<std::size_t>& R) {
    std::size_t sum = 0;
    for (std::size_t l = 0; l < L; ++l) {
      const auto it = std::lower_bound(cdf[l].begin(), cdf[l].end(), p);
      R[l] = cdf[l].empty() ? 0 : std::max<std::size_t>(1, static_cast<std::size_t>(it - cdf[l].begin()) + 1);
      R[l] = std::min(R[l], cdf[l].size());
      sum += R[l];
    }
    return sum;
  };
  std::vector<std::size_t> R(L), R_lo(L), R_hi(L);
  double p_lo = 0.0, p_hi = 1.0, p = 0.0;
  bool exact = false;
  if (prefix_at(p_lo, R_lo) == target) {
    R = R_lo, exact = true;
  } else {
    if (prefix_at(p_hi, R_hi) < target)  // trailing zero scores: only "all slots" reaches it
      for (std::size_t l = 0; l < L; ++l) R_hi[l] = cdf[l].size();
    for (int it = 0; it < 100 && !exact; ++it) {
      p = 0.5 * (p_lo + p_hi);
      const std::size_t s = prefix_at(p, R);
      if (s == target) exact = true;
      else if (s < target) p_lo = p, R_lo = R;
      else p_hi = p, R_hi = R;
    }
  }
  CdfBudgets out;
  if (exact) {
    out.threshold = p;
    out.prefix = R;
  } else {
    std::size_t s_lo = 0, s_hi = 0;
    for (std::size_t l = 0; l < L; ++l) s_lo += R_lo[l], s_hi += R_hi[l];
    const double theta = double(target - s_lo) / double(s_hi - s_lo);
    std::vector<double> x(L);
    for (std::size_t l = 0; l < L; ++l) x[l] = double(R_lo[l]) + theta * double(R_hi[l] - R_lo[l]);
    out.threshold = p_hi;
    out.prefix = apportion(x, R_lo, R_hi, target);
  }
  out.budgets.target = kept_total;
  for (std::size_t l = 0; l < L; ++l) {
    const std::size_t n_l = cdf[l].size() + protected_count[l];
    out.budgets.kept.push_back(out.prefix[l] + protected_count[l]);
    out.budgets.ratio.push_back(n_l ? double(out.budgets.kept[l]) / double(n_l) : 0.0);
    out.budgets.total += out.budgets.kept[l];
  }
  return out;
}

}  // namespace common
}  // namespace evict
KVCOMPRESS_NAMESPACE_END
