// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// BB-7 of methods/quantization.md: weighted k-means in 1-D (KVQuant's nuqX LUTs, arXiv
/// 2401.18079 §3.4/App. E, sample weights = Fisher information) and in c-D (CQ's channel-group
/// codebooks, arXiv 2405.03917, weights = summed squared gradients). Offline / calibration code:
/// allocates, runs in double, never on the decode path.
///
/// Algorithm (deterministic for a given seed, see calib/seeded_random.hpp):
///   1. k-means++ seeding (Arthur & Vassilvitskii 2007) with weights: the first centre is point i
///      with probability ∝ w_i, each next one with probability ∝ w_i·D_i², D_i = distance to the
///      nearest chosen centre (no "local trials", unlike scikit-learn; if every remaining
///      w_i·D_i² is 0 the lowest-index positive-weight point not yet chosen is taken).
///   2. Lloyd iterations: assign every point to its nearest centroid (squared L2, ties → lowest
///      index), then C_j = Σ_{i∈j} w_i x_i / Σ_{i∈j} w_i. A cluster with zero total weight is
///      re-seeded with the positive-weight point farthest from its current centroid (ties → lowest
///      index; each such point used once per iteration) [rec]. Stops when an iteration changes no
///      assignment and re-seeds nothing, or after max_iterations (KVQuant: scikit-learn max_iter=50).
///   3. The returned assignment is recomputed against the returned centroids; in 1-D the
///      centroids are sorted ascending (the LUT order KVQuant's kernels and saved LUTs use [rec])
///      and the assignment renumbered accordingly.
/// Zero-weight points never influence a centroid, but they are assigned. When the data hold fewer
/// distinct positive-weight points than clusters, some centroids coincide.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kvcompress/calib/seeded_random.hpp"
#include "kvcompress/config.hpp"
#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace calib {

/// Configuration of weighted_kmeans.
struct KMeansConfig {
  std::size_t clusters = 16;         ///< k ≥ 1 (2^b for a b-bit LUT / codebook)
  int max_iterations = 50;           ///< Lloyd iterations ≥ 1 (KVQuant: 50)
  std::uint64_t seed = kDefaultSeed; ///< mt19937_64 seed of the k-means++ draws
};

/// Result of weighted_kmeans.
struct KMeansResult {
  std::vector<float> centroids;             ///< [clusters][dim]; ascending when dim == 1
  std::vector<std::uint32_t> assignment;    ///< [n] nearest centroid of every point
  double inertia = 0.0;                     ///< Σ_i w_i·||x_i − C_assignment(i)||²
  int iterations = 0;                       ///< Lloyd iterations run
  bool converged = false;                   ///< true if stopped by an unchanged assignment
};

namespace detail {

inline double squared_distance(const float* a, const double* b, std::size_t dim) {
  double s = 0.0;
  for (std::size_t j = 0; j < dim; ++j) {
    const double e = static_cast<double>(a[j]) - b[j];
    s += e * e;
  }
  return s;
}

/// Nearest centroid of point x (ties → lowest index) and its squared distance.
inline std::uint32_t nearest(const float* x, const std::vector<double>& c, std::size_t k, std::size_t dim,
                             double* dist) {
  std::uint32_t best = 0;
  double best_d = squared_distance(x, c.data(), dim);
  for (std::size_t j = 1; j < k; ++j) {
    const double d = squared_distance(x, c.data() + j * dim, dim);
    if (d < best_d) {
      best = static_cast<std::uint32_t>(j);
      best_d = d;
    }
  }
  *dist = best_d;
  return best;
}

/// Index i drawn with probability ∝ mass[i] (total > 0).
inline std::size_t draw(const std::vector<double>& mass, double total, std::mt19937_64& rng) {
  const double u = uniform01(rng) * total;
  double cum = 0.0;
  std::size_t last_positive = 0;
  for (std::size_t i = 0; i < mass.size(); ++i) {
    if (mass[i] <= 0.0) continue;
    cum += mass[i];
    last_positive = i;
    if (u < cum) return i;
  }
  return last_positive;  // u rounded up to the total
}

}  // namespace detail

/// Weighted k-means of n points x[i·dim .. i·dim + dim) with weights w (nullptr = all 1).
/// Throws InvalidArgument for dim = 0, clusters = 0, max_iterations < 1, fewer positive-weight
/// points than clusters, a non-finite coordinate, or a negative or non-finite weight.
inline KMeansResult weighted_kmeans(const float* x, std::size_t n, std::size_t dim, const float* w,
                                    const KMeansConfig& cfg) {
  constexpr const char* where = "calib::weighted_kmeans";
  kvcompress::detail::require(dim >= 1, where, "dim", dim, "≥ 1");
  kvcompress::detail::require(cfg.clusters >= 1, where, "clusters", cfg.clusters, "≥ 1");
  kvcompress::detail::require(cfg.max_iterations >= 1, where, "max_iterations", cfg.max_iterations, "≥ 1");
  for (std::size_t i = 0; i < n * dim; ++i)
    if (!std::isfinite(x[i]))
      kvcompress::detail::require(false, where, ("x[" + std::to_string(i) + "]").c_str(), x[i], "a finite value");
  std::vector<double> weight(n, 1.0);
  std::size_t positive = n;
  if (w != nullptr) {
    positive = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (!std::isfinite(w[i]) || w[i] < 0.0f)
        kvcompress::detail::require(false, where, ("w[" + std::to_string(i) + "]").c_str(), w[i],
                                    "a finite weight ≥ 0");
      weight[i] = w[i];
      positive += w[i] > 0.0f ? 1 : 0;
    }
  }
  kvcompress::detail::require(positive >= cfg.clusters, where, "n", positive,
                              "at least clusters = " + std::to_string(cfg.clusters) + " points of positive weight");

  const std::size_t k = cfg.clusters;
  std::vector<double> c(k * dim);
  std::mt19937_64 rng(cfg.seed);

  // 1. k-means++ seeding.
  std::vector<double> d2(n, std::numeric_limits<double>::infinity());
  std::vector<std::uint8_t> is_centre(n, 0);
  std::vector<double> mass(n);
  for (std::size_t j = 0; j < k; ++j) {
    double total = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      mass[i] = j == 0 ? weight[i] : weight[i] * d2[i];
      total += mass[i];
    }
    std::size_t pick = n;
    if (total > 0.0) {
      pick = detail::draw(mass, total, rng);
    } else {
      for (std::size_t i = 0; i < n && pick == n; ++i)
        if (weight[i] > 0.0 && !is_centre[i]) pick = i;
    }
    is_centre[pick] = 1;
    for (std::size_t t = 0; t < dim; ++t) c[j * dim + t] = x[pick * dim + t];
    for (std::size_t i = 0; i < n; ++i)
      d2[i] = std::min(d2[i], detail::squared_distance(x + i * dim, c.data() + j * dim, dim));
  }

  // 2. Lloyd iterations.
  KMeansResult res;
  std::vector<std::uint32_t> assign(n, 0), prev(n, std::numeric_limits<std::uint32_t>::max());
  std::vector<double> dist(n), sum(k * dim), wsum(k);
  for (int it = 1; it <= cfg.max_iterations; ++it) {
    res.iterations = it;
    for (std::size_t i = 0; i < n; ++i) assign[i] = detail::nearest(x + i * dim, c, k, dim, &dist[i]);
    std::fill(sum.begin(), sum.end(), 0.0);
    std::fill(wsum.begin(), wsum.end(), 0.0);
    for (std::size_t i = 0; i < n; ++i) {
      wsum[assign[i]] += weight[i];
      for (std::size_t t = 0; t < dim; ++t) sum[assign[i] * dim + t] += weight[i] * x[i * dim + t];
    }
    bool reseeded = false;
    std::vector<std::uint8_t> used(n, 0);
    for (std::size_t j = 0; j < k; ++j) {
      if (wsum[j] > 0.0) {
        for (std::size_t t = 0; t < dim; ++t) c[j * dim + t] = sum[j * dim + t] / wsum[j];
        continue;
      }
      std::size_t far = n;
      for (std::size_t i = 0; i < n; ++i)
        if (weight[i] > 0.0 && !used[i] && (far == n || dist[i] > dist[far])) far = i;
      used[far] = 1;
      for (std::size_t t = 0; t < dim; ++t) c[j * dim + t] = x[far * dim + t];
      reseeded = true;
    }
    if (!reseeded && assign == prev) {
      res.converged = true;
      break;
    }
    prev = assign;
  }

  // 3. Final assignment against the final centroids; 1-D centroids ascending.
  std::vector<std::size_t> order(k);
  std::iota(order.begin(), order.end(), std::size_t{0});
  if (dim == 1)
    std::stable_sort(order.begin(), order.end(), [&c](std::size_t a, std::size_t b) { return c[a] < c[b]; });
  std::vector<double> sorted(k * dim);
  for (std::size_t j = 0; j < k; ++j)  // rounded to the fp32 values returned
    for (std::size_t t = 0; t < dim; ++t) sorted[j * dim + t] = static_cast<float>(c[order[j] * dim + t]);
  res.centroids.resize(k * dim);
  for (std::size_t i = 0; i < k * dim; ++i) res.centroids[i] = static_cast<float>(sorted[i]);
  res.assignment.resize(n);
  res.inertia = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    double d = 0.0;
    res.assignment[i] = detail::nearest(x + i * dim, sorted, k, dim, &d);
    res.inertia += weight[i] * d;
  }
  return res;
}

}  // namespace calib
KVCOMPRESS_NAMESPACE_END
