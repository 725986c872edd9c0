// SPDX-License-Identifier: Apache-2.0
// BB-7 (quantization.md §0; KVQuant §2 nuqX, CQ §3 codebooks): weighted k-means in 1-D and c-D —
// recovery of well-separated clusters (centroids = the clusters' weighted means, computed here in
// double), weights pulling centroids, determinism for a seed, equal weights = unweighted,
// degenerate data, inertia, argument checks.

#include "support/expect_invalid.hpp"
#include "kvcompress/calib/kmeans.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace {

namespace calib = kvcompress::calib;

struct Blobs {
  std::vector<float> x;       // [n][dim]
  std::vector<float> w;       // [n]
  std::vector<int> label;     // [n]
  std::vector<double> means;  // [k][dim] weighted means per label, in double
};

Blobs make_blobs(const std::vector<std::vector<double>>& centres, std::size_t per, double spread, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd(0.0, spread);
  std::uniform_real_distribution<double> uw(0.5, 2.0);
  const std::size_t k = centres.size(), dim = centres[0].size();
  Blobs b;
  b.means.assign(k * dim, 0.0);
  std::vector<double> wsum(k, 0.0);
  for (std::size_t j = 0; j < k; ++j)
    for (std::size_t i = 0; i < per; ++i) {
      const float w = static_cast<float>(uw(rng));
      b.w.push_back(w);
      b.label.push_back(static_cast<int>(j));
      wsum[j] += w;
      for (std::size_t t = 0; t < dim; ++t) {
        const float v = static_cast<float>(centres[j][t] + nd(rng));
        b.x.push_back(v);
        b.means[j * dim + t] += static_cast<double>(w) * v;
      }
    }
  for (std::size_t j = 0; j < k; ++j)
    for (std::size_t t = 0; t < dim; ++t) b.means[j * dim + t] /= wsum[j];
  return b;
}

TEST(KMeans, OneDimensionalRecoversSortedClusters) {
  const Blobs b = make_blobs({{7.0}, {-5.0}, {0.0}}, 200, 0.3, 1);
  calib::KMeansConfig cfg;
  cfg.clusters = 3;
  const calib::KMeansResult r = calib::weighted_kmeans(b.x.data(), b.w.size(), 1, b.w.data(), cfg);
  ASSERT_EQ(r.centroids.size(), 3u);
  EXPECT_TRUE(r.converged);
  // Ascending: label 1 (−5), label 2 (0), label 0 (7).
  EXPECT_NEAR(r.centroids[0], b.means[1], 1e-5);
  EXPECT_NEAR(r.centroids[1], b.means[2], 1e-5);
  EXPECT_NEAR(r.centroids[2], b.means[0], 1e-5);
  const int expect_cluster[3] = {2, 0, 1};
  for (std::size_t i = 0; i < b.w.size(); ++i) ASSERT_EQ(r.assignment[i], expect_cluster[b.label[i]]) << i;
}

TEST(KMeans, MultiDimensionalRecoversClusters) {
  const std::vector<std::vector<double>> centres = {{5, 5, 0, 0}, {-5, 5, 1, 0}, {0, -6, 0, 2}, {6, -6, -3, 0}};
  const Blobs b = make_blobs(centres, 150, 0.4, 2);
  calib::KMeansConfig cfg;
  cfg.clusters = 4;
  const calib::KMeansResult r = calib::weighted_kmeans(b.x.data(), b.w.size(), 4, b.w.data(), cfg);
  // Match each true cluster with the centroid of its first point's assignment.
  std::vector<int> used(4, 0);
  for (std::size_t j = 0; j < 4; ++j) {
    const std::uint32_t c = r.assignment[j * 150];
    used[c]++;
    for (std::size_t t = 0; t < 4; ++t) EXPECT_NEAR(r.centroids[c * 4 + t], b.means[j * 4 + t], 1e-5);
    for (std::size_t i = 0; i < 150; ++i) ASSERT_EQ(r.assignment[j * 150 + i], c);
  }
  for (int u : used) EXPECT_EQ(u, 1);
}

// k = 1: the centroid is Σ w x / Σ w; k = 2 on {0, 1 | 10}: weights pull the left centroid.
TEST(KMeans, WeightsPullCentroids) {
  const float x[3] = {0.0f, 1.0f, 10.0f};
  const float w1[3] = {1.0f, 3.0f, 0.0f};
  calib::KMeansConfig one;
  one.clusters = 1;
  EXPECT_FLOAT_EQ(calib::weighted_kmeans(x, 3, 1, w1, one).centroids[0], 0.75f);
  calib::KMeansConfig two;
  two.clusters = 2;
  const float w2[3] = {1.0f, 9.0f, 1.0f};
  const calib::KMeansResult r = calib::weighted_kmeans(x, 3, 1, w2, two);
  EXPECT_FLOAT_EQ(r.centroids[0], 0.9f);
  EXPECT_FLOAT_EQ(r.centroids[1], 10.0f);
  const float w3[3] = {9.0f, 1.0f, 1.0f};
  EXPECT_FLOAT_EQ(calib::weighted_kmeans(x, 3, 1, w3, two).centroids[0], 0.1f);
  EXPECT_NEAR(r.inertia, 1.0 * 0.81 + 9.0 * 0.01, 1e-6);
}

TEST(KMeans, DeterministicAndEqualWeightsAreUnweighted) {
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(600 * 2);
  for (float& v : x) v = nd(rng);
  calib::KMeansConfig cfg;
  cfg.clusters = 8;
  const auto a = calib::weighted_kmeans(x.data(), 600, 2, nullptr, cfg);
  const auto b = calib::weighted_kmeans(x.data(), 600, 2, nullptr, cfg);
  EXPECT_EQ(a.centroids, b.centroids);
  EXPECT_EQ(a.assignment, b.assignment);
  const std::vector<float> ones(600, 1.0f), fours(600, 4.0f);
  const auto c = calib::weighted_kmeans(x.data(), 600, 2, ones.data(), cfg);
  const auto d = calib::weighted_kmeans(x.data(), 600, 2, fours.data(), cfg);
  EXPECT_EQ(a.centroids, c.centroids);
  EXPECT_EQ(a.centroids, d.centroids);  // scaling by a power of two changes no rounding
  EXPECT_EQ(a.assignment, d.assignment);
  cfg.seed = 12345;
  const auto e = calib::weighted_kmeans(x.data(), 600, 2, nullptr, cfg);
  EXPECT_EQ(e.centroids.size(), a.centroids.size());
}

// The reported inertia is Σ w·||x − C||² over the returned assignment, recomputed in double.
TEST(KMeans, InertiaAndAssignmentAreConsistent) {
  std::mt19937 rng(10);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  std::vector<float> x(300 * 3), w(300);
  for (float& v : x) v = u(rng);
  for (float& v : w) v = u(rng) + 3.5f;
  calib::KMeansConfig cfg;
  cfg.clusters = 5;
  cfg.max_iterations = 3;  // may stop before convergence: the assignment still matches
  const auto r = calib::weighted_kmeans(x.data(), 300, 3, w.data(), cfg);
  double inertia = 0;
  for (std::size_t i = 0; i < 300; ++i) {
    double best = INFINITY;
    std::uint32_t arg = 0;
    for (std::uint32_t j = 0; j < 5; ++j) {
      double s = 0;
      for (int t = 0; t < 3; ++t) {
        const double e = static_cast<double>(x[i * 3 + t]) - r.centroids[j * 3 + t];
        s += e * e;
      }
      if (s < best) {
        best = s;
        arg = j;
      }
    }
    ASSERT_EQ(r.assignment[i], arg) << i;
    inertia += w[i] * best;
  }
  EXPECT_NEAR(r.inertia, inertia, 1e-9 * inertia);
  EXPECT_LE(r.iterations, 3);
}

// Fewer distinct points than clusters: coinciding centroids, zero inertia, no crash.
TEST(KMeans, DegenerateDataGivesCoincidingCentroids) {
  const float x[5] = {1.0f, 1.0f, 1.0f, 5.0f, 5.0f};
  calib::KMeansConfig cfg;
  cfg.clusters = 3;
  cfg.max_iterations = 5;
  const auto r = calib::weighted_kmeans(x, 5, 1, nullptr, cfg);
  EXPECT_EQ(r.centroids, (std::vector<float>{1.0f, 1.0f, 5.0f}));
  EXPECT_EQ(r.inertia, 0.0);
}

TEST(KMeans, RejectsBadArguments) {
  const float x[4] = {0, 1, 2, 3};
  calib::KMeansConfig cfg;
  cfg.clusters = 2;
  kvtest::expect_invalid_argument([&] { calib::weighted_kmeans(x, 4, 0, nullptr, cfg); }, "dim");
  calib::KMeansConfig zero = cfg;
  zero.clusters = 0;
  kvtest::expect_invalid_argument([&] { calib::weighted_kmeans(x, 4, 1, nullptr, zero); }, "clusters");
  calib::KMeansConfig iters = cfg;
  iters.max_iterations = 0;
  kvtest::expect_invalid_argument([&] { calib::weighted_kmeans(x, 4, 1, nullptr, iters); }, "max_iterations");
  kvtest::expect_invalid_argument([&] { calib::weighted_kmeans(x, 1, 1, nullptr, cfg); }, "n");
  const float w[4] = {1, -1, 1, 1};
  kvtest::expect_invalid_argument([&] { calib::weighted_kmeans(x, 4, 1, w, cfg); }, "w[1]");
  const float wz[4] = {0, 0, 0, 1};
  kvtest::expect_invalid_argument([&] { calib::weighted_kmeans(x, 4, 1, wz, cfg); }, "n");
  const float xn[4] = {0, NAN, 2, 3};
  kvtest::expect_invalid_argument([&] { calib::weighted_kmeans(xn, 4, 1, nullptr, cfg); }, "x[1]");
}

}  // namespace
