// SPDX-License-Identifier: Apache-2.0
// CalibQuant logit-range calibration (policies/quant/common/logit_calibration.hpp): the spec's
// worked example, the affine-map properties (min → m + δ_min, max → M + δ_max, order kept) on
// random rows checked in double, and the [rec] guard vs the reference's calib_always.

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "kvcompress/policies/quant/common/logit_calibration.hpp"

namespace {

namespace qc = kvcompress::quant::common;

TEST(LogitCalibration, WorkedExample) {
  const auto f = qc::logit_remap(-4.0f, 6.0f, 0.0f, -3.0f, false);
  const float in[4] = {-4, 0, 2, 6}, want[4] = {-4.0f, -1.2f, 0.2f, 3.0f};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(f(in[i]), want[i], 1e-5f);
}

TEST(LogitCalibration, AffineEndpointsAndOrderOnRandomRows) {
  std::mt19937 g(3);
  std::uniform_real_distribution<float> u(-20.0f, 20.0f), dl(-2.0f, 2.0f);
  for (int trial = 0; trial < 100; ++trial) {
    std::vector<float> row(50);
    for (auto& x : row) x = u(g);
    const float m = *std::min_element(row.begin(), row.end()), M = *std::max_element(row.begin(), row.end());
    const float dmin = dl(g), dmax = -3.0f + dl(g);
    const auto f = qc::logit_remap(m, M, dmin, dmax, false);
    ASSERT_TRUE(f.active);  // M − m ≫ 5 here
    const double mm = m, MM = M;
    EXPECT_NEAR(f(m), mm + dmin, 1e-4);
    EXPECT_NEAR(f(M), MM + dmax, 1e-4);
    for (float x : row) {
      const double ref = (x - mm) / (MM - mm + 1e-8) * ((MM + dmax) - (mm + dmin)) + (mm + dmin);
      EXPECT_NEAR(f(x), ref, 1e-4 * (1 + std::fabs(ref)));
    }
    std::vector<float> s = row;
    std::sort(s.begin(), s.end());
    for (std::size_t i = 1; i < s.size(); ++i) EXPECT_LE(f(s[i - 1]), f(s[i]));
  }
}

TEST(LogitCalibration, GuardSkipsRankReversalUnlessAlways) {
  const auto skip = qc::logit_remap(1.0f, 3.5f, 0.0f, -3.0f, false);  // width (3.5−3) − 1 < 0
  EXPECT_FALSE(skip.active);
  EXPECT_EQ(skip(2.0f), 2.0f);
  const auto ref = qc::logit_remap(1.0f, 3.5f, 0.0f, -3.0f, true);
  EXPECT_TRUE(ref.active);
  EXPECT_GT(ref(1.0f), ref(3.5f));  // the reference's reversed ranking
  const auto edge = qc::logit_remap(0.0f, 3.0f, 0.0f, -3.0f, false);  // width exactly 0: skipped
  EXPECT_FALSE(edge.active);
}

}  // namespace
