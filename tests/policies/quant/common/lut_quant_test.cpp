// SPDX-License-Identifier: Apache-2.0
// BB-5 (quantization.md §0, KVQuant §2): LUT quantization — the spec's worked example (with the
// strict-threshold outlier), ties → lowest index, the half_range = 0 rule, brute-force nearest
// entry and the non-outlier error bound in double, argument checks.

#include "support/expect_invalid.hpp"
#include "kvcompress/policies/quant/common/lut_quant.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kvcompress/policies/quant/common/outliers.hpp"
#include "reference/float16_reference.hpp"

namespace {

namespace qc = kvcompress::quant::common;

// §2 worked example: LUT [−0.9, −0.3, 0.25, 0.85], t_lo = 0.8, t_hi = 3.2 → offset 2.0, hr 1.2:
// 1.0 → code 0 → 0.92; 3.0 → code 3 → 3.02; 2.2 → code 2 → 2.30; 9.0 is an outlier.
TEST(LutQuant, KvquantWorkedExample) {
  const float lut[4] = {-0.9f, -0.3f, 0.25f, 0.85f};
  const qc::LutNormalization nrm = qc::lut_normalization(0.8f, 3.2f);
  EXPECT_EQ(nrm.offset, 2.0f);
  EXPECT_EQ(nrm.half_range, static_cast<float>(kvref::round_to_f16(1.2)));
  const float x[4] = {1.0f, 3.0f, 2.2f, 9.0f};
  std::uint16_t out[4];
  ASSERT_EQ(qc::select_beyond(x, 4, 0.8f, 3.2f, qc::ThresholdRule::kStrict, out), 1u);
  EXPECT_EQ(out[0], 3);
  std::uint8_t q[3];
  float y[3];
  qc::lut_quantize(x, 3, 1, nrm, lut, 2, q);
  qc::lut_dequantize(q, 3, nrm, lut, 2, y, 1);
  EXPECT_EQ(q[0], 0);
  EXPECT_EQ(q[1], 3);
  EXPECT_EQ(q[2], 2);
  EXPECT_NEAR(y[0], 0.92, 1e-3);  // fp16 half_range = 1.2002
  EXPECT_NEAR(y[1], 3.02, 1e-3);
  EXPECT_NEAR(y[2], 2.30, 1e-3);
}

TEST(LutQuant, TiesGoToTheLowestIndex) {
  const float lut[4] = {-1.0f, 0.0f, 1.0f, 1.0f};
  EXPECT_EQ(qc::nearest_lut_index(lut, 4, 0.5f), 1);   // equidistant from 0 and 1
  EXPECT_EQ(qc::nearest_lut_index(lut, 4, 1.0f), 2);   // duplicate entries
  EXPECT_EQ(qc::nearest_lut_index(lut, 4, -0.5f), 0);  // equidistant from −1 and 0
  EXPECT_EQ(qc::nearest_lut_index(lut, 4, 7.0f), 2);
}

// half_range = 0: every value maps to the entry nearest 0 and reconstructs the offset.
TEST(LutQuant, ZeroHalfRange) {
  const float lut[4] = {-0.9f, -0.3f, 0.25f, 0.85f};
  const qc::LutNormalization nrm = qc::lut_normalization(1.5f, 1.5f);
  EXPECT_EQ(nrm.half_range, 0.0f);
  const float x[3] = {1.5f, 1.5f, -4.0f};
  std::uint8_t q[3];
  float y[3];
  qc::lut_quantize(x, 3, 1, nrm, lut, 2, q);
  qc::lut_dequantize(q, 3, nrm, lut, 2, y, 1);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(q[i], 2);  // |0.25| < |−0.3|
    EXPECT_EQ(y[i], 1.5f);
  }
}

// Random sorted and unsorted LUTs: the chosen entry is a nearest one (checked in double against
// all entries) and in-range values satisfy the §2 bound hr·max(gap/2, 1 + LUT[0], 1 − LUT[last]).
TEST(LutQuant, BruteForceNearestAndErrorBound) {
  std::mt19937 rng(21);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int bits = 1; bits <= 5; ++bits) {
    const int k = 1 << bits;
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<float> lut(k);
      for (float& v : lut) v = u(rng);
      std::vector<float> sorted = lut;
      std::sort(sorted.begin(), sorted.end());
      const bool use_sorted = rep % 2 == 0;
      const std::vector<float>& table = use_sorted ? sorted : lut;
      double gap = 0;
      for (int i = 1; i < k; ++i) gap = std::max(gap, static_cast<double>(sorted[i]) - sorted[i - 1]);
      const double bound_n = std::max({gap / 2, 1.0 + sorted.front(), 1.0 - sorted.back()});
      const float lo = -2.0f - rep * 0.1f, hi = 3.0f + rep * 0.05f;
      const qc::LutNormalization nrm = qc::lut_normalization(lo, hi);
      std::vector<float> x(200);
      std::uniform_real_distribution<float> ux(nrm.offset - nrm.half_range, nrm.offset + nrm.half_range);
      for (float& v : x) v = ux(rng);
      std::vector<std::uint8_t> q(x.size());
      std::vector<float> y(x.size());
      qc::lut_quantize(x.data(), x.size(), 1, nrm, table.data(), bits, q.data());
      qc::lut_dequantize(q.data(), x.size(), nrm, table.data(), bits, y.data(), 1);
      for (std::size_t i = 0; i < x.size(); ++i) {
        const double n = (static_cast<double>(x[i]) - nrm.offset) / nrm.half_range;
        const double chosen = std::fabs(table[q[i]] - n);
        for (int j = 0; j < k; ++j) ASSERT_LE(chosen, std::fabs(table[j] - n) + 1e-6) << bits << " " << i;
        ASSERT_LE(std::fabs(x[i] - static_cast<double>(y[i])), nrm.half_range * bound_n + 1e-5) << bits << " " << i;
      }
    }
  }
}

TEST(LutQuant, RejectsBadArguments) {
  const float lut[4] = {-0.9f, -0.3f, 0.25f, 0.85f};
  const float x[2] = {1.0f, 2.0f};
  std::uint8_t q[2] = {0, 5};
  float y[2];
  const qc::LutNormalization nrm{2.0f, 1.0f};
  kvtest::expect_invalid_argument([&] { qc::lut_quantize(x, 2, 1, nrm, lut, 0, q); }, "bits");
  kvtest::expect_invalid_argument([&] { qc::lut_quantize(x, 2, 1, nrm, lut, 9, q); }, "bits");
  kvtest::expect_invalid_argument([&] { qc::lut_quantize(x, 0, 1, nrm, lut, 2, q); }, "n");
  kvtest::expect_invalid_argument([&] { qc::lut_quantize(x, 2, 1, {2.0f, -1.0f}, lut, 2, q); }, "half_range");
  const float bad_lut[4] = {0.0f, NAN, 0.0f, 0.0f};
  kvtest::expect_invalid_argument([&] { qc::lut_quantize(x, 2, 1, nrm, bad_lut, 2, q); }, "lut[1]");
  kvtest::expect_invalid_argument([&] { qc::lut_dequantize(q, 2, nrm, lut, 2, y, 1); }, "codes[1]");
  kvtest::expect_invalid_argument([] { qc::lut_normalization(3.0f, 1.0f); }, "hi");
  kvtest::expect_invalid_argument([] { qc::lut_normalization(NAN, 1.0f); }, "lo");
}

}  // namespace
