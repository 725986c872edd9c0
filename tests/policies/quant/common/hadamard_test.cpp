// SPDX-License-Identifier: Apache-2.0
// BB-9 (quantization.md §0, AKVQ-VL §5): normalized Walsh–Hadamard transform — the spec's
// examples, the block-diagonal layout for 80/96/112, the transform's matrix against the
// definition H[i][j] = (−1)^popcount(i & j)/√m built in double, orthogonality, symmetry,
// self-inverse, the logit identity, argument checks.

#include "kvcompress/policies/quant/common/hadamard.hpp"

#include <gtest/gtest.h>

#include <bitset>
#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace {

namespace qc = kvcompress::quant::common;
using kvcompress::InvalidArgument;

TEST(Hadamard, SpecExamples) {
  float a[4] = {8, 0, 0, 0};
  qc::walsh_hadamard_transform(a, 4);
  for (float v : a) EXPECT_EQ(v, 4.0f);
  float b[4] = {1, 1, 1, 1};
  qc::walsh_hadamard_transform(b, 4);
  EXPECT_EQ(b[0], 2.0f);
  for (int i = 1; i < 4; ++i) EXPECT_EQ(b[i], 0.0f);
  float c[4] = {3, 1, -2, 5};
  qc::walsh_hadamard_transform(c, 4);
  qc::walsh_hadamard_transform(c, 4);
  const float expect[4] = {3, 1, -2, 5};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(c[i], expect[i]);  // power-of-4 sizes scale by exact 1/2
}

TEST(Hadamard, BlockLayouts) {
  using V = std::vector<std::size_t>;
  EXPECT_EQ(qc::wht_block_sizes(128), (V{128}));
  EXPECT_EQ(qc::wht_block_sizes(96), (V{64, 32}));
  EXPECT_EQ(qc::wht_block_sizes(80), (V{64, 16}));
  EXPECT_EQ(qc::wht_block_sizes(112), (V{64, 32, 16}));
  EXPECT_EQ(qc::wht_block_sizes(6), (V{4, 2}));
}

// Column j of the transform = WHT(e_j); compare with the definition, then check H·Hᵀ = I and
// H = Hᵀ in double.
TEST(Hadamard, MatrixMatchesDefinitionAndIsOrthogonalSymmetric) {
  for (std::size_t n : {2u, 4u, 8u, 16u, 64u, 128u, 256u, 6u, 10u, 80u, 96u, 112u}) {
    std::vector<double> ref(n * n, 0.0);
    std::size_t off = 0;
    for (std::size_t m = std::size_t{1} << 20; m != 0; m >>= 1) {
      if (!(n & m)) continue;
      for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = 0; j < m; ++j)
          ref[(off + i) * n + off + j] = (std::bitset<32>(i & j).count() % 2 ? -1.0 : 1.0) / std::sqrt(double(m));
      off += m;
    }
    std::vector<double> h(n * n);
    for (std::size_t j = 0; j < n; ++j) {
      std::vector<float> e(n, 0.0f);
      e[j] = 1.0f;
      qc::walsh_hadamard_transform(e.data(), n);
      for (std::size_t i = 0; i < n; ++i) h[i * n + j] = e[i];
    }
    for (std::size_t i = 0; i < n * n; ++i) ASSERT_NEAR(h[i], ref[i], 1e-6) << n << " " << i;
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t j = 0; j < n; ++j) {
        double dot = 0;
        for (std::size_t t = 0; t < n; ++t) dot += h[i * n + t] * h[j * n + t];
        ASSERT_NEAR(dot, i == j ? 1.0 : 0.0, 1e-6) << n;
        ASSERT_EQ(h[i * n + j], h[j * n + i]) << n;
      }
    }
  }
}

TEST(Hadamard, SelfInverseAndLogitIdentity) {
  std::mt19937 rng(4);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  for (std::size_t n : {64u, 80u, 96u, 112u, 128u}) {
    std::vector<float> q(n), k(n);
    for (std::size_t i = 0; i < n; ++i) {
      q[i] = nd(rng);
      k[i] = nd(rng);
    }
    k[3] = 40.0f;  // an outlier channel
    double qk = 0;
    for (std::size_t i = 0; i < n; ++i) qk += static_cast<double>(q[i]) * k[i];
    auto hq = q, hk = k;
    qc::walsh_hadamard_transform(hq.data(), n);
    qc::walsh_hadamard_transform(hk.data(), n);
    double hqhk = 0;
    for (std::size_t i = 0; i < n; ++i) hqhk += static_cast<double>(hq[i]) * hk[i];
    EXPECT_NEAR(hqhk, qk, 1e-4 * (1 + std::fabs(qk))) << n;
    qc::walsh_hadamard_transform(hk.data(), n);
    for (std::size_t i = 0; i < n; ++i) EXPECT_NEAR(hk[i], k[i], 1e-5 * (1 + std::fabs(k[i]))) << n;
  }
}

TEST(Hadamard, RejectsOddOrZeroLength) {
  float x[8] = {};
  for (std::size_t n : {0u, 1u, 7u}) {
    try {
      qc::walsh_hadamard_transform(x, n);
      ADD_FAILURE() << n;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("'n'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("even"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
