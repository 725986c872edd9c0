// SPDX-License-Identifier: Apache-2.0
// Small math utilities (eviction spec §1.9) against hand-worked values from the spec and
// independent double loops: VL-Cache threshold filter, entropy, AirCache G1 skewness, CSP
// n-softmax (incl. extreme logits), cosine with ε guard.

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kvcompress/policies/evict/common/score_math.hpp"

namespace {

using namespace kvcompress::evict::common;

TEST(ScoreMath, ThresholdFilterSpecExample) {
  std::vector<float> row = {0.5f, 0.3f, 0.004f, 0.196f};
  EXPECT_EQ(threshold_filter(row.data(), 4, 0.01f), 1u);  // sparsity 1/4
  EXPECT_EQ(row, (std::vector<float>{0.5f, 0.3f, 0.0f, 0.196f}));
  std::vector<float> with_zero = {0.0f, 1.0f, 0.5f};
  EXPECT_EQ(threshold_filter(with_zero.data(), 3, 0.6f), 2u);  // existing zero counted, 0.5 < 0.6
  EXPECT_THROW(threshold_filter(row.data(), 4, 1.5f), kvcompress::InvalidArgument);
}

TEST(ScoreMath, EntropyOfUniformRowIsLogK) {
  for (int k : {1, 2, 7, 64}) {
    std::vector<float> row(k, 1.0f / float(k));
    EXPECT_NEAR(row_entropy(row.data(), k), std::log(double(k)), 1e-6) << k;
  }
  const std::vector<float> onehot = {0, 1, 0};
  EXPECT_NEAR(row_entropy(onehot.data(), 3), 0.0, 1e-9);
  // Mean over rows: uniform over 4 (ln 4) and one-hot (0).
  const std::vector<float> m = {.25f, .25f, .25f, .25f, 0, 0, 1, 0};
  EXPECT_NEAR(mean_row_entropy(m.data(), 2, 4), 0.5 * std::log(4.0), 1e-6);
}

TEST(ScoreMath, SkewnessSpecExampleAndFormula) {
  const std::vector<float> x = {0.1f, 0.1f, 0.1f, 0.7f};
  EXPECT_NEAR(sample_skewness(x.data(), 4), 2.0, 1e-5);
  const std::vector<float> c = {0.3f, 0.3f, 0.3f};
  EXPECT_EQ(sample_skewness(c.data(), 3), 0.0);
  EXPECT_EQ(sample_skewness(x.data(), 2), 0.0);
  // Independent G1 = sqrt(N(N−1))/(N−2) · m3 / m2^{3/2} (population moments), equal to the
  // spec's N/((N−1)(N−2)) Σ z³ with the sample std.
  std::mt19937 rng(5);
  std::exponential_distribution<float> e(1.0f);
  std::vector<float> r(50);
  for (auto& v : r) v = e(rng);
  double mean = 0, m2 = 0, m3 = 0;
  for (float v : r) mean += v;
  mean /= r.size();
  for (float v : r) m2 += (v - mean) * (v - mean), m3 += (v - mean) * (v - mean) * (v - mean);
  m2 /= r.size(), m3 /= r.size();
  const double N = r.size();
  EXPECT_NEAR(sample_skewness(r.data(), r.size()), std::sqrt(N * (N - 1)) / (N - 2) * m3 / std::pow(m2, 1.5), 1e-6);
}

TEST(ScoreMath, NSoftmax) {
  const std::vector<float> zeros = {0, 0};
  std::vector<float> out(2);
  n_softmax(zeros.data(), 2, 1.0f, out.data());
  EXPECT_NEAR(out[0], 1.0 / 3, 1e-7);
  EXPECT_NEAR(out[1], 1.0 / 3, 1e-7);
  // n = 0 is the softmax.
  const std::vector<float> o = {1.0f, 2.0f, -0.5f};
  std::vector<float> a(3);
  n_softmax(o.data(), 3, 0.0f, a.data());
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(-0.5);
  EXPECT_NEAR(a[0], std::exp(1.0) / z, 1e-7);
  EXPECT_NEAR(a[1], std::exp(2.0) / z, 1e-7);
  // Huge logits: exp(1000) overflows the naive form; the stable form gives 1/2 each (n negligible).
  const std::vector<float> big = {1000.0f, 1000.0f};
  n_softmax(big.data(), 2, 1.0f, out.data());
  EXPECT_NEAR(out[0], 0.5, 1e-7);
  // Very negative logits: n dominates, probabilities ≈ exp(o)/n ≈ 0, never NaN.
  const std::vector<float> tiny = {-1000.0f, -1000.0f};
  n_softmax(tiny.data(), 2, 1.0f, out.data());
  EXPECT_EQ(out[0], 0.0f);
  // Masked entries and fully masked rows.
  const float ninf = -std::numeric_limits<float>::infinity();
  const std::vector<float> masked = {0.0f, ninf};
  n_softmax(masked.data(), 2, 1.0f, out.data());
  EXPECT_NEAR(out[0], 0.5, 1e-7);
  EXPECT_EQ(out[1], 0.0f);
  const std::vector<float> all_masked = {ninf, ninf};
  n_softmax(all_masked.data(), 2, 1.0f, out.data());
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_THROW(n_softmax(o.data(), 3, -1.0f, a.data()), kvcompress::InvalidArgument);
}

TEST(ScoreMath, CosineWithEpsilonGuard) {
  const float a[] = {1, 0}, b[] = {0.8f, 0.6f}, c[] = {0, 3}, z[] = {0, 0}, m[] = {-2, 0};
  EXPECT_NEAR(cosine_similarity(a, b, 2), 0.8, 1e-6);
  EXPECT_NEAR(cosine_similarity(a, c, 2), 0.0, 1e-7);
  EXPECT_NEAR(cosine_similarity(a, m, 2), -1.0, 1e-7);
  EXPECT_EQ(cosine_similarity(a, z, 2), 0.0f);  // zero norm: 0 / ε, not NaN
  EXPECT_EQ(cosine_similarity(z, z, 2), 0.0f);
}

// dot_f64's eight partial sums against a sequential long-double sum, with and without tails.
TEST(ScoreMath, DotF64MatchesSequentialSum) {
  std::mt19937 g(11);
  std::normal_distribution<float> n(0.0f, 3.0f);
  for (std::size_t d : {1u, 7u, 8u, 9u, 64u, 100u, 128u, 259u}) {
    std::vector<float> a(d), b(d);
    for (std::size_t t = 0; t < d; ++t) a[t] = n(g), b[t] = n(g);
    long double ref = 0, mag = 0;
    for (std::size_t t = 0; t < d; ++t) {
      ref += static_cast<long double>(a[t]) * b[t];
      mag += std::fabs(static_cast<long double>(a[t]) * b[t]);
    }
    EXPECT_NEAR(dot_f64(a.data(), b.data(), d), static_cast<double>(ref), 1e-14 * static_cast<double>(mag)) << "d " << d;
    const double na = std::sqrt(dot_f64(a.data(), a.data(), d)), nb = std::sqrt(dot_f64(b.data(), b.data(), d));
    EXPECT_EQ(cosine_from_dot(dot_f64(a.data(), b.data(), d), na, nb), cosine_similarity(a.data(), b.data(), d));
  }
}

}  // namespace
