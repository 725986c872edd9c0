// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Small math utilities shared by the scorers and allocators (eviction spec §1.9): the VL-Cache
/// threshold filter, row entropy (MEDA, VLA-Cache), sample skewness G1 (AirCache), the CSP
/// n-softmax in its overflow-safe form, and cosine similarity with an ε guard (LOOK-M/MEDA merge
/// assignment, §1.7). Scalar, allocation-free; reductions run in double so the results do not
/// depend on the summation order more than necessary.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

#include "kvcompress/config.hpp"
#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace evict {
namespace common {

/// VL-Cache threshold filter (arXiv 2410.23317, Eq. 1): zeroes every entry of `row` that is below
/// `p · max(row)`, where the row holds the `n_visible` causally visible attention probabilities
/// of one query. Returns the number of zero entries after filtering (pre-existing zeros
/// included), i.e. the numerator of the row's sparsity γ (Alg. 1 counts causal entries only, so
/// the caller passes just the visible prefix).
/// \param row        [n_visible] probabilities, modified in place
/// \param n_visible  causally visible keys of this row
/// \param p          relative threshold in [0, 1] (paper: 0.01)
inline std::size_t threshold_filter(float* row, std::size_t n_visible, float p) {
  detail::require(p >= 0.0f && p <= 1.0f, "evict::common::threshold_filter", "p", p, "in [0, 1]");
  float row_max = 0.0f;
  for (std::size_t j = 0; j < n_visible; ++j) row_max = std::max(row_max, row[j]);
  const float cut = p * row_max;
  std::size_t zeros = 0;
  for (std::size_t j = 0; j < n_visible; ++j) {
    if (row[j] < cut) row[j] = 0.0f;
    zeros += row[j] == 0.0f ? 1 : 0;
  }
  return zeros;
}

/// Shannon entropy of one probability row, H(a) = −Σ a_j · log(a_j + 1e-12) (natural log; the
/// 1e-12 keeps log finite on zero entries, as in the MEDA and VLA-Cache codes). A uniform row over
/// k keys gives ln k.
inline double row_entropy(const float* a, std::size_t n) {
  double h = 0.0;
  for (std::size_t j = 0; j < n; ++j) h -= double(a[j]) * std::log(double(a[j]) + 1e-12);
  return h;
}

/// Mean of row_entropy over the rows of a [rows][n] probability matrix (MEDA Eqs. 5–6, VLA-Cache
/// layer schedule). 0 for an empty matrix.
inline double mean_row_entropy(const float* a, std::size_t rows, std::size_t n) {
  if (rows == 0) return 0.0;
  double sum = 0.0;
  for (std::size_t i = 0; i < rows; ++i) sum += row_entropy(a + i * n, n);
  return sum / double(rows);
}

/// Adjusted Fisher–Pearson sample skewness used by AirCache (arXiv 2503.23956):
/// G1 = N / ((N−1)(N−2)) · Σ ((x_i − μ)/s)³ with s the sample standard deviation (divisor N−1).
/// Degenerate inputs have no skew by definition [rec]: G1 = 0 when N < 3 or when s = 0 (constant
/// vector). Example: [0.1, 0.1, 0.1, 0.7] → 2.0.
inline double sample_skewness(const float* x, std::size_t n) {
  if (n < 3) return 0.0;
  double mean = 0.0;
  for (std::size_t i = 0; i < n; ++i) mean += x[i];
  mean /= double(n);
  double ss = 0.0;
  for (std::size_t i = 0; i < n; ++i) ss += (x[i] - mean) * (x[i] - mean);
  const double s = std::sqrt(ss / double(n - 1));
  if (!(s > 0.0)) return 0.0;
  double cubes = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double z = (x[i] - mean) / s;
    cubes += z * z * z;
  }
  const double nn = double(n);
  return nn / ((nn - 1.0) * (nn - 2.0)) * cubes;
}

/// CSP n-softmax (arXiv 2412.04652, Eq. 7): a_i = exp(o_i) / (n + Σ_j exp(o_j)), evaluated in the
/// stable form exp(o_i − M) / (n·exp(−M) + Σ_j exp(o_j − M)) with M = max_j o_j, so rows sum to
/// less than 1 and n = 0 is the ordinary softmax. −inf logits (causal mask) give 0; a row with
/// every logit −inf gives all zeros.
/// \param logits [size] pre-softmax scores of one row
/// \param n      extra mass in the denominator, ≥ 0 (CSP uses 1)
/// \param out    [size] probabilities; may alias `logits`
inline void n_softmax(const float* logits, std::size_t size, float n, float* out) {
  detail::require(n >= 0.0f && std::isfinite(n), "evict::common::n_softmax", "n", n, "a finite value >= 0");
  const double neg_inf = -std::numeric_limits<double>::infinity();
  double m = neg_inf;
  for (std::size_t i = 0; i < size; ++i) m = std::max(m, double(logits[i]));
  if (m == neg_inf) {
    std::fill(out, out + size, 0.0f);
    return;
  }
  double denom = double(n) * std::exp(-m);  // may overflow to inf when M ≪ 0: then every a_i → 0
  for (std::size_t i = 0; i < size; ++i) denom += std::exp(double(logits[i]) - m);
  for (std::size_t i = 0; i < size; ++i) out[i] = float(std::exp(double(logits[i]) - m) / denom);
}

/// Σ_t a[t]·b[t] accumulated in double over 8 independent partial sums (the compiler turns them
/// into one SIMD register; the order differs from a sequential sum only at the 1e-16 level).
inline double dot_f64(const float* a, const float* b, std::size_t d) {
  double acc[8] = {};
  std::size_t t = 0;
  for (; t + 8 <= d; t += 8)
    for (std::size_t u = 0; u < 8; ++u) acc[u] += double(a[t + u]) * double(b[t + u]);
  double tail = 0.0;
  for (; t < d; ++t) tail += double(a[t]) * double(b[t]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

/// The cosine a·b / max(‖a‖·‖b‖, eps) from a dot product and the two norms (what
/// cosine_similarity computes; callers comparing one key with many precompute the norms).
inline float cosine_from_dot(double dot, double norm_a, double norm_b, float eps = 1e-6f) {
  return float(dot / std::max(norm_a * norm_b, double(eps)));
}

/// Cosine similarity a·b / max(‖a‖·‖b‖, eps) of two d-vectors (§1.7: the ε guard makes a
/// zero-norm key similar to nothing instead of NaN). Result in [−1, 1] up to rounding.
inline float cosine_similarity(const float* a, const float* b, std::size_t d, float eps = 1e-6f) {
  return cosine_from_dot(dot_f64(a, b, d), std::sqrt(dot_f64(a, a, d)), std::sqrt(dot_f64(b, b, d)), eps);
}

}  // namespace common
}  // namespace evict
KVCOMPRESS_NAMESPACE_END
