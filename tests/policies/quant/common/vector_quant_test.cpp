// SPDX-License-Identifier: Apache-2.0
// BB-6 (quantization.md §0, CQ §3): nearest-centroid vector quantization — the spec's worked
// example, ties → lowest index, exactness on centroids, brute force in double over random
// per-group codebooks, a shared codebook, argument checks.

#include "support/expect_invalid.hpp"
#include "kvcompress/policies/quant/common/vector_quant.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace {

namespace qc = kvcompress::quant::common;

// §3: c = 2, b = 2, centroids [(.5,.5), (−.5,−.5), (.5,−.5), (−.5,.5)]; (0.4, 0.7) has squared
// distances [0.05, 2.25, 1.45, 0.85] → index 0 → (0.5, 0.5).
TEST(VectorQuant, CqWorkedExample) {
  const float cb[8] = {0.5f, 0.5f, -0.5f, -0.5f, 0.5f, -0.5f, -0.5f, 0.5f};
  const float x[2] = {0.4f, 0.7f};
  EXPECT_NEAR(qc::squared_distance(x, cb + 2, 2), 2.25f, 1e-6f);
  EXPECT_NEAR(qc::squared_distance(x, cb + 6, 2), 0.85f, 1e-6f);
  std::uint16_t idx[1];
  qc::vq_encode(x, 2, 2, cb, 0, 2, idx);
  EXPECT_EQ(idx[0], 0);
  float y[2];
  qc::vq_decode(idx, 2, 2, cb, 0, 2, y);
  EXPECT_EQ(y[0], 0.5f);
  EXPECT_EQ(y[1], 0.5f);
}

TEST(VectorQuant, TiesAndExactCentroids) {
  const float cb[8] = {1.0f, 1.0f, 0.0f, 2.0f, 2.0f, 0.0f, 0.0f, 2.0f};
  const float mid[2] = {1.0f, 1.0f};  // centroid 0 exactly
  EXPECT_EQ(qc::nearest_centroid(mid, cb, 4, 2), 0u);
  const float tie[2] = {1.0f, 2.0f};  // distance 1 to centroids 0, 1 and 3
  EXPECT_EQ(qc::nearest_centroid(tie, cb, 4, 2), 0u);
  const float tie2[2] = {0.0f, 3.0f};  // distance 1 to centroids 1 and 3 (duplicates)
  EXPECT_EQ(qc::nearest_centroid(tie2, cb, 4, 2), 1u);
}

// Per-group codebooks [d/c][2^b][c]: every index is a nearest centroid of its own group's
// codebook (double brute force) and decoding returns that centroid.
TEST(VectorQuant, BruteForceAgainstDouble) {
  std::mt19937 rng(8);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int c : {1, 2, 4, 8}) {
    for (int bits : {1, 4, 8}) {
      const std::size_t d = 32, k = std::size_t{1} << bits, groups = d / c;
      std::vector<float> cb(groups * k * c);
      for (float& v : cb) v = nd(rng);
      for (int rep = 0; rep < 5; ++rep) {
        std::vector<float> x(d), y(d);
        for (float& v : x) v = nd(rng);
        std::vector<std::uint16_t> idx(groups);
        qc::vq_encode(x.data(), d, c, cb.data(), k * c, bits, idx.data());
        qc::vq_decode(idx.data(), d, c, cb.data(), k * c, bits, y.data());
        for (std::size_t g = 0; g < groups; ++g) {
          auto dist = [&](std::size_t j) {
            double s = 0;
            for (int t = 0; t < c; ++t) {
              const double e = static_cast<double>(x[g * c + t]) - cb[(g * k + j) * c + t];
              s += e * e;
            }
            return s;
          };
          const double chosen = dist(idx[g]);
          for (std::size_t j = 0; j < k; ++j) ASSERT_LE(chosen, dist(j) + 1e-5) << c << " " << bits << " " << g;
          for (int t = 0; t < c; ++t) ASSERT_EQ(y[g * c + t], cb[(g * k + idx[g]) * c + t]);
        }
      }
    }
  }
}

TEST(VectorQuant, SharedCodebookWithZeroStride) {
  const float cb[4] = {-1.0f, 1.0f, 1.0f, -1.0f};  // 2 centroids of width 2
  const float x[6] = {-0.9f, 0.8f, 0.7f, -1.2f, -1.0f, 1.0f};
  std::uint16_t idx[3];
  qc::vq_encode(x, 6, 2, cb, 0, 1, idx);
  EXPECT_EQ(idx[0], 0);
  EXPECT_EQ(idx[1], 1);
  EXPECT_EQ(idx[2], 0);
}

TEST(VectorQuant, RejectsBadArguments) {
  const float cb[8] = {};
  const float x[8] = {};
  std::uint16_t idx[8] = {0, 4};
  float y[8];
  kvtest::expect_invalid_argument([&] { qc::vq_encode(x, 6, 4, cb, 0, 1, idx); }, "d");
  kvtest::expect_invalid_argument([&] { qc::vq_encode(x, 8, 0, cb, 0, 1, idx); }, "c");
  kvtest::expect_invalid_argument([&] { qc::vq_encode(x, 8, 2, cb, 0, 0, idx); }, "bits");
  kvtest::expect_invalid_argument([&] { qc::vq_encode(x, 8, 2, cb, 0, 17, idx); }, "bits");
  kvtest::expect_invalid_argument([&] { qc::vq_decode(idx, 4, 2, cb, 0, 2, y); }, "idx[1]");
  const float nan_x[2] = {0.0f, NAN};
  kvtest::expect_invalid_argument([&] { qc::vq_encode(nan_x, 2, 2, cb, 0, 1, idx); }, "x[1]");
}

}  // namespace
