// SPDX-License-Identifier: Apache-2.0
// common/rope_angles.hpp: RopeAngles::rotate is bit-identical to rope_apply (every layout and
// scaling); RopeCursor over ascending positions with unit steps and gaps stays within fp32
// rounding of rope_apply, and matches a double-precision RoPE.

#include "kvcompress/policies/quant/common/rope_angles.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace {

namespace qc = kvcompress::quant::common;

std::vector<float> randv(std::size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd;
  std::vector<float> v(n);
  for (auto& x : v) x = nd(g);
  return v;
}

TEST(RopeAngles, RotateIsBitIdenticalToRopeApply) {
  for (auto layout : {qc::RopeLayout::kRotateHalf, qc::RopeLayout::kInterleaved})
    for (auto scaling : {qc::RopeScaling::kNone, qc::RopeScaling::kLinear, qc::RopeScaling::kNtk}) {
      qc::RopeParams p;
      p.head_dim = 96;
      p.layout = layout;
      p.scaling = scaling;
      p.factor = 4.0;
      const qc::RopeAngles a(p);
      for (std::int64_t pos : {0, 1, 17, 4095, 100000, -33}) {
        auto x = randv(96, static_cast<unsigned>(pos + 50)), y = x;
        qc::rope_apply(x.data(), p, pos);
        a.rotate(y.data(), static_cast<double>(pos));
        EXPECT_EQ(x, y) << pos;
      }
    }
}

TEST(RopeAngles, CursorMatchesRopeApplyOverStepsAndGaps) {
  qc::RopeParams p;
  p.head_dim = 128;
  p.base = 500000.0;
  p.scaling = qc::RopeScaling::kLinear;
  p.factor = 2.0;
  const qc::RopeAngles a(p);
  qc::RopeCursor<> cur(a);
  std::int64_t pos = 1000;
  for (int i = 0; i < 600; ++i) {
    pos += (i % 97 == 5) ? 13 : (i % 150 == 0 ? 0 : 1);  // unit steps, gaps, a repeat
    auto x = randv(128, static_cast<unsigned>(i)), y = x;
    qc::rope_apply(x.data(), p, pos);
    cur.rotate(y.data(), pos);
    for (int c = 0; c < 128; ++c) EXPECT_NEAR(y[c], x[c], 1e-6 * (1 + std::fabs(x[c]))) << i;
  }
  // double-precision RoPE at the last position (rotate-half, linear scaling)
  auto x = randv(128, 7);
  std::vector<double> ref(x.begin(), x.end());
  for (int i = 0; i < 64; ++i) {
    const double th = std::pow(500000.0, -2.0 * i / 128.0), ang = pos / 2.0 * th;
    const double u = ref[i], w = ref[i + 64];
    ref[i] = u * std::cos(ang) - w * std::sin(ang);
    ref[i + 64] = u * std::sin(ang) + w * std::cos(ang);
  }
  cur.rotate(x.data(), pos);
  for (int c = 0; c < 128; ++c) EXPECT_NEAR(x[c], ref[c], 1e-5);
}

}  // namespace
