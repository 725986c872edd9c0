// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Layer-budget allocators (eviction spec §1.6): pure functions from per-layer statistics and a
/// global retained ratio to integer per-layer budgets k_l (slots kept, protected ones included).
///   - uniform_budgets:       k_l = floor(r·n_l)                       (H2O, SnapKV, LOOK-M, CSP)
///   - pyramid_budgets:       linear max → min over depth, kvpress form  (PyramidKV, §13.4)
///   - proportional_budgets:  β_l = clip(w_l/Σw · α·L, lo, hi)           (VL-Cache, AirCache)
///   - softmax_budgets:       β_l = clip(softmax(E)_l · L·ρ, 0.01, 1)    (MEDA)
///   - static_profile_budgets: calibrated per-layer forget fractions   (PrefixKV offline)
/// The CDF-threshold search (PrefixKV, ZipVL) is in cdf_budget.hpp and the VLA-Cache entropy
/// schedule in reuse_schedule.hpp. Every result carries the paper-exact real ratios as a trace.
/// Ratios are *retained* fractions (§0) unless a name says "forget".

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kvcompress/core/errors.hpp"
#include "kvcompress/policies/evict/common/apportion.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {
namespace common {

/// How real per-layer budgets become integers.
enum class BudgetRealisation : std::uint8_t {
  kApportion,  ///< bounded largest remainder + water-filling: Σ k_l = target exactly (§1.6 [rec])
  kClipOnly,   ///< each layer on its own, clipped, never redistributed: the paper/code-faithful
               ///< mode of MEDA and VL-Cache; `total` reports what was realised
};

/// Stable name for logs and test output.
constexpr const char* to_string(BudgetRealisation r) {
  switch (r) {
    case BudgetRealisation::kApportion: return "apportion";
    case BudgetRealisation::kClipOnly: return "clip_only";
  }
  return "invalid";
}

/// Per-layer budgets and their trace.
struct LayerBudgets {
  std::vector<std::size_t> kept;  ///< k_l: slots layer l keeps, 1 ≤ k_l ≤ n_l
  std::vector<double> ratio;      ///< paper-exact real retained ratio of layer l (before integers)
  std::size_t target = 0;         ///< global budget B the allocator aimed at
  std::size_t total = 0;          ///< Σ k_l realised (== target under kApportion)
};

namespace detail_budget {

inline void check_ratio(const char* where, const char* name, double r) {
  detail::require(r > 0.0 && r <= 1.0, where, name, r, "in (0, 1]");
}

inline void check_lengths(const char* where, const std::vector<std::size_t>& n) {
  detail::require(!n.empty(), where, "n.size()", n.size(), ">= 1 layer");
  for (std::size_t l = 0; l < n.size(); ++l) detail::require(n[l] >= 1, where, "n[l]", n[l], ">= 1 slot");
}

inline std::size_t sum(const std::vector<std::size_t>& v) {
  std::size_t s = 0;
  for (std::size_t x : v) s += x;
  return s;
}

/// Python's round(): half to even (kvpress and the PrefixKV code round with it).
inline double round_half_even(double x) {
  const double f = std::floor(x), diff = x - f;
  if (diff > 0.5) return f + 1.0;
  if (diff < 0.5) return f;
  return std::fmod(f, 2.0) == 0.0 ? f : f + 1.0;
}

/// Realises real desired counts x_l within integer bounds [lo_l, hi_l] either by apportionment
/// to `target` (clamped into the feasible range) or by flooring and clipping each layer alone.
inline LayerBudgets realise(const std::vector<double>& x, const std::vector<std::size_t>& lo,
                            const std::vector<std::size_t>& hi, std::size_t target, BudgetRealisation mode, std::vector<double> ratio) {
  LayerBudgets b;
  b.ratio = std::move(ratio);
  b.target = target;
  if (mode == BudgetRealisation::kApportion) {
    b.kept = apportion(x, lo, hi, std::clamp(target, sum(lo), sum(hi)));
  } else {
    b.kept.resize(x.size());
    for (std::size_t l = 0; l < x.size(); ++l)
      b.kept[l] = std::clamp(static_cast<std::size_t>(std::floor(x[l])), lo[l], hi[l]);
  }
  b.total = sum(b.kept);
  return b;
}

}  // namespace detail_budget

/// Uniform allocation: k_l = floor(r·n_l), at least 1 (H2O, SnapKV, LOOK-M, CSP).
/// \param n     n_l: slots of each layer (≥ 1)
/// \param ratio retained fraction r ∈ (0, 1]
inline LayerBudgets uniform_budgets(const std::vector<std::size_t>& n, double ratio) {
  const char* where = "evict::common::uniform_budgets";
  detail_budget::check_lengths(where, n);
  detail_budget::check_ratio(where, "ratio", ratio);
  LayerBudgets b;
  for (std::size_t l = 0; l < n.size(); ++l) {
    const std::size_t k = static_cast<std::size_t>(std::floor(ratio * double(n[l])));
    b.target += k;
    b.kept.push_back(std::clamp<std::size_t>(k, 1, n[l]));
    b.ratio.push_back(ratio);
  }
  b.total = detail_budget::sum(b.kept);
  return b;
}

/// PyramidKV allocation in the kvpress form (arXiv 2406.02069; spec §13.4): with prompt length
/// m, retained ratio r (= 1 − kvpress `compression_ratio`), window W and β,
///   cap = W + m·r;  min = (cap − W)/β;  max = 2(cap − W) − min;
///   if max ≥ m − W: max = m − W, min = 2(cap − W) − max;
///   k_l = max − l·(max − min)/(L − 1)  if m ≥ max ≥ min ≥ W, else m·r for every layer (fallback);
/// so the mean stays m·r. kClipOnly rounds each layer half-to-even like kvpress (total ≈ L·m·r);
/// kApportion realises exactly B = floor(L·m·r). L = 1 is the uniform case. Example m=1000,
/// r=0.5, W=64, L=32: layer 0 keeps 936, layer 31 keeps 64, mean 500.
inline LayerBudgets pyramid_budgets(std::size_t m, double ratio, std::size_t window, int num_layers,
                                    double beta = 20.0, BudgetRealisation mode = BudgetRealisation::kClipOnly) {
  const char* where = "evict::common::pyramid_budgets";
  detail::require(m >= 1, where, "m", m, ">= 1");
  detail_budget::check_ratio(where, "ratio", ratio);
  detail::require(num_layers >= 1, where, "num_layers", num_layers, ">= 1");
  detail::require(beta >= 1.0, where, "beta", beta, ">= 1");
  const double M = double(m), W = double(window), L = double(num_layers);
  const double cap = W + M * ratio;
  double lo = (cap - W) / beta, hi = 2.0 * (cap - W) - lo;
  if (hi >= M - W) {
    hi = M - W;
    lo = 2.0 * (cap - W) - hi;
  }
  const bool linear = num_layers > 1 && M >= hi && hi >= lo && lo >= W;
  std::vector<double> x(num_layers), r(num_layers);
  for (int l = 0; l < num_layers; ++l) {
    x[l] = linear ? hi - double(l) * (hi - lo) / (L - 1.0) : M * ratio;
    r[l] = x[l] / M;
  }
  const std::vector<std::size_t> lo_k(num_layers, 1), hi_k(num_layers, m);
  const std::size_t target = static_cast<std::size_t>(std::floor(L * M * ratio));
  if (mode == BudgetRealisation::kApportion) return detail_budget::realise(x, lo_k, hi_k, target, mode, r);
  LayerBudgets b;
  b.ratio = r;
  b.target = target;
  for (int l = 0; l < num_layers; ++l)
    b.kept.push_back(std::clamp<std::size_t>(static_cast<std::size_t>(detail_budget::round_half_even(x[l])), 1, m));
  b.total = detail_budget::sum(b.kept);
  return b;
}

/// Proportional-with-clip allocation: β_l = clip(w_l/Σw · α·L, lo, hi), k_l = β_l·n_l.
/// VL-Cache (arXiv 2410.23317, Alg. 1): w = attention density 1 − γ_l, lo = 0.01, hi = 1.
/// AirCache (arXiv 2503.23956): w = ½(s'_t + s'_k), the mean-normalised strength and skewness.
/// `ratio` in the trace is the paper-exact clipped β_l. kClipOnly: k_l = floor(β_l·n_l) with no
/// redistribution (faithful; Σ may fall short of α·Σn_l). kApportion: target B = floor(α·Σ n_l),
/// bounds [max(1, ceil(lo·n_l)), floor(hi·n_l)], desired w_l/Σw·α·L·n_l, clipped surplus water-filled
/// (if B lies outside the bounds' range, the nearest feasible total is realised and `total` says so).
/// All-zero weights count as equal weights. Every k_l ≥ 1.
/// \param weight w_l ≥ 0, one per layer
/// \param alpha  global retained ratio α ∈ (0, 1]
/// \param n      n_l: slots of each layer
inline LayerBudgets proportional_budgets(const std::vector<double>& weight, double alpha,
                                         const std::vector<std::size_t>& n, double lo = 0.01, double hi = 1.0,
                                         BudgetRealisation mode = BudgetRealisation::kClipOnly) {
  const char* where = "evict::common::proportional_budgets";
  detail_budget::check_lengths(where, n);
  detail_budget::check_ratio(where, "alpha", alpha);
  detail::require(weight.size() == n.size(), where, "weight.size()", weight.size(),
                  [&] { return "== n.size() (" + std::to_string(n.size()) + ")"; });
  detail::require(lo >= 0.0 && lo <= hi && hi <= 1.0, where, "lo", lo, "0 <= lo <= hi <= 1");
  double wsum = 0.0;
  for (double w : weight) {
    detail::require(std::isfinite(w) && w >= 0.0, where, "weight[l]", w, "a finite value >= 0");
    wsum += w;
  }
  const std::size_t L = n.size();
  std::vector<double> share(L), beta(L), x(L);
  std::vector<std::size_t> lo_k(L), hi_k(L);
  for (std::size_t l = 0; l < L; ++l) {
    share[l] = wsum > 0.0 ? weight[l] / wsum : 1.0 / double(L);
    const double raw = share[l] * alpha * double(L);
    beta[l] = std::clamp(raw, lo, hi);
    hi_k[l] = std::max<std::size_t>(1, static_cast<std::size_t>(std::floor(hi * double(n[l]))));
    lo_k[l] = std::clamp<std::size_t>(static_cast<std::size_t>(std::ceil(lo * double(n[l]))), 1, hi_k[l]);
    x[l] = mode == BudgetRealisation::kApportion ? raw * double(n[l]) : beta[l] * double(n[l]);
  }
  const std::size_t target = static_cast<std::size_t>(std::floor(alpha * double(detail_budget::sum(n))));
  return detail_budget::realise(x, lo_k, hi_k, target, mode, beta);
}

/// MEDA allocation (arXiv 2502.17599, §3): α_l = softmax_l(E_CM)·L·ρ clipped to [lo, hi] =
/// [0.01, 1], where E_CM^l is the layer's cross-modal attention entropy: proportional_budgets
/// with w = softmax(E). The MEDA code clips without redistribution (kClipOnly, the default).
/// Example E = [2, 1, 0.5, 0.5], ρ = 0.2 → α = [0.44098, 0.16223, 0.09840, 0.09840].
inline LayerBudgets softmax_budgets(const std::vector<double>& entropy, double rho, const std::vector<std::size_t>& n,
                                    double lo = 0.01, double hi = 1.0,
                                    BudgetRealisation mode = BudgetRealisation::kClipOnly) {
  const char* where = "evict::common::softmax_budgets";
  detail::require(!entropy.empty(), where, "entropy.size()", entropy.size(), ">= 1 layer");
  double emax = entropy[0];
  for (double e : entropy) {
    detail::require(std::isfinite(e), where, "entropy[l]", e, "a finite value");
    emax = std::max(emax, e);
  }
  std::vector<double> w(entropy.size());
  for (std::size_t l = 0; l < entropy.size(); ++l) w[l] = std::exp(entropy[l] - emax);
  return proportional_budgets(w, rho, n, lo, hi, mode);
}

/// PrefixKV offline profile (arXiv 2412.03409; code `confs/*.json`): per-layer *forget*
/// fractions f_l from calibration; layer l keeps n_l − round(f_l·n_l) slots (round half to even as
/// in the Python code), protected slots included, at least 1. `ratio` trace = 1 − f_l.
/// \param forget f_l ∈ [0, 1), one per layer
inline LayerBudgets static_profile_budgets(const std::vector<double>& forget, const std::vector<std::size_t>& n) {
  const char* where = "evict::common::static_profile_budgets";
  detail_budget::check_lengths(where, n);
  detail::require(forget.size() == n.size(), where, "forget.size()", forget.size(),
                  [&] { return "== n.size() (" + std::to_string(n.size()) + ")"; });
  LayerBudgets b;
  for (std::size_t l = 0; l < n.size(); ++l) {
    detail::require(forget[l] >= 0.0 && forget[l] < 1.0, where, "forget[l]", forget[l], "in [0, 1)");
    const double drop = detail_budget::round_half_even(forget[l] * double(n[l]));
    const std::size_t k = n[l] - std::min(n[l], static_cast<std::size_t>(drop));
    b.kept.push_back(std::max<std::size_t>(k, 1));
    b.ratio.push_back(1.0 - forget[l]);
    b.target += k;
  }
  b.total = detail_budget::sum(b.kept);
  return b;
}

}  // namespace common
}  // namespace evict
KVCOMPRESS_NAMESPACE_END
