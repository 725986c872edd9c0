// SPDX-License-Identifier: Apache-2.0
// BB-14 (quantization.md §0): RoPE in both pair layouts against the double-precision formula,
// linear and NTK scaling, the exact inverse (rotate by Δ then −Δ), relative-position invariance
// of q·k, the rows API with original positions, argument checks.

#include "support/expect_invalid.hpp"
#include "kvcompress/policies/quant/common/rope.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace {

namespace qc = kvcompress::quant::common;

// Double-precision RoPE from the definition.
std::vector<double> rope_double(const std::vector<float>& x, std::size_t d, double base, bool interleaved,
                                double pos) {
  std::vector<double> y(x.begin(), x.end());
  for (std::size_t i = 0; i < d / 2; ++i) {
    const double ang = pos * std::pow(base, -2.0 * i / d);
    const std::size_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + d / 2;
    y[a] = x[a] * std::cos(ang) - x[b] * std::sin(ang);
    y[b] = x[a] * std::sin(ang) + x[b] * std::cos(ang);
  }
  return y;
}

std::vector<float> random_vec(std::size_t d, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(d);
  for (float& x : v) x = nd(rng);
  return v;
}

TEST(Rope, MatchesDoubleFormulaBothLayouts) {
  for (auto layout : {qc::RopeLayout::kRotateHalf, qc::RopeLayout::kInterleaved}) {
    for (std::size_t d : {64u, 128u}) {
      for (std::int64_t pos : {0, 1, 17, 4095, 100000}) {
        qc::RopeParams p;
        p.head_dim = d;
        p.layout = layout;
        auto x = random_vec(d, static_cast<std::uint32_t>(pos + d));
        const auto ref = rope_double(x, d, 10000.0, layout == qc::RopeLayout::kInterleaved, static_cast<double>(pos));
        qc::rope_apply(x.data(), p, pos);
        for (std::size_t i = 0; i < d; ++i) ASSERT_NEAR(x[i], ref[i], 1e-5) << qc::to_string(layout) << " " << pos << " " << i;
      }
    }
  }
}

TEST(Rope, ScalingRules) {
  const std::size_t d = 128;
  auto x = random_vec(d, 3);
  // Linear: position 2p with factor 2 is position p unscaled (2p/2 = p exactly).
  qc::RopeParams lin;
  lin.head_dim = d;
  lin.scaling = qc::RopeScaling::kLinear;
  lin.factor = 2.0;
  qc::RopeParams plain;
  plain.head_dim = d;
  auto a = x, b = x;
  qc::rope_apply(a.data(), lin, 2 * 777);
  qc::rope_apply(b.data(), plain, 777);
  for (std::size_t i = 0; i < d; ++i) EXPECT_EQ(a[i], b[i]);
  // NTK: base' = base·factor^(d/(d−2)).
  qc::RopeParams ntk;
  ntk.head_dim = d;
  ntk.base = 500000.0;
  ntk.scaling = qc::RopeScaling::kNtk;
  ntk.factor = 4.0;
  auto c = x;
  qc::rope_apply(c.data(), ntk, 12345);
  const auto ref = rope_double(x, d, 500000.0 * std::pow(4.0, 128.0 / 126.0), false, 12345.0);
  for (std::size_t i = 0; i < d; ++i) EXPECT_NEAR(c[i], ref[i], 1e-5) << i;
}

// Rotate by Δ then by −Δ: identity within 1e-6 (the inverse is the exact transpose).
TEST(Rope, InverseIsIdentity) {
  for (auto layout : {qc::RopeLayout::kRotateHalf, qc::RopeLayout::kInterleaved}) {
    qc::RopeParams p;
    p.head_dim = 128;
    p.layout = layout;
    for (std::int64_t delta : {1, 37, 8191, 1000000}) {
      auto x = random_vec(128, static_cast<std::uint32_t>(delta));
      auto y = x;
      qc::rope_apply(y.data(), p, delta);
      qc::rope_unapply(y.data(), p, delta);
      for (std::size_t i = 0; i < 128; ++i) ASSERT_NEAR(y[i], x[i], 1e-6) << delta << " " << i;
    }
  }
}

// q·k after RoPE depends only on the position difference.
TEST(Rope, LogitDependsOnRelativePosition) {
  qc::RopeParams p;
  p.head_dim = 128;
  const auto q = random_vec(128, 1), k = random_vec(128, 2);
  auto dot_at = [&](std::int64_t m, std::int64_t n) {
    auto a = q, b = k;
    qc::rope_apply(a.data(), p, m);
    qc::rope_apply(b.data(), p, n);
    double s = 0;
    for (std::size_t i = 0; i < 128; ++i) s += static_cast<double>(a[i]) * b[i];
    return s;
  };
  EXPECT_NEAR(dot_at(100, 40), dot_at(1100, 1040), 1e-4);
  EXPECT_NEAR(dot_at(100, 40), dot_at(60, 0), 1e-4);
}

TEST(Rope, RowsWithOriginalPositions) {
  qc::RopeParams p;
  p.head_dim = 64;
  const std::size_t ld = 70;
  std::vector<float> rows(3 * ld, 9.0f);
  const std::int32_t pos[3] = {5, 900, 17};  // non-contiguous after eviction
  std::vector<std::vector<float>> orig;
  for (int r = 0; r < 3; ++r) {
    auto v = random_vec(64, 50 + r);
    std::copy(v.begin(), v.end(), rows.begin() + r * ld);
    orig.push_back(v);
  }
  qc::rope_apply_rows(rows.data(), 3, ld, pos, p);
  for (int r = 0; r < 3; ++r) {
    auto one = orig[r];
    qc::rope_apply(one.data(), p, pos[r]);
    for (int i = 0; i < 64; ++i) EXPECT_EQ(rows[r * ld + i], one[i]);
    for (std::size_t i = 64; i < ld; ++i) EXPECT_EQ(rows[r * ld + i], 9.0f);  // padding untouched
  }
  qc::rope_unapply_rows(rows.data(), 3, ld, pos, p);
  for (int r = 0; r < 3; ++r)
    for (int i = 0; i < 64; ++i) EXPECT_NEAR(rows[r * ld + i], orig[r][i], 1e-6);
}

TEST(Rope, RejectsBadArguments) {
  float x[8] = {};
  auto expect_invalid = [&](qc::RopeParams p, const std::string& arg) {
    kvtest::expect_invalid_argument([&] { qc::rope_apply(x, p, 3); }, arg);
  };
  qc::RopeParams p;
  p.head_dim = 7;
  expect_invalid(p, "head_dim");
  p.head_dim = 0;
  expect_invalid(p, "head_dim");
  p.head_dim = 8;
  p.base = 1.0;
  expect_invalid(p, "base");
  p.base = 10000.0;
  p.factor = 0.0;
  expect_invalid(p, "factor");
}

}  // namespace
