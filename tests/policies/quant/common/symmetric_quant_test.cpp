// SPDX-License-Identifier: Apache-2.0
// BB-2 (quantization.md §0) and the ggml q8_0 settings of §10: worked example, codes against a
// double oracle, error bound, zero group, argument checks.

#include "support/expect_invalid.hpp"
#include "kvcompress/policies/quant/common/symmetric_quant.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "reference/float16_reference.hpp"

namespace {

namespace qc = kvcompress::quant::common;
using kvcompress::to_float;

// §10 q8_0 example: [0.5, −1, 0.25, 0, 0 × 28] → d = 1/127, codes [64, −127, 32, 0],
// dequant ≈ [0.50394, −1.0, 0.25197, 0] (d stored as fp16).
TEST(SymmetricQuant, GgmlQ80WorkedExample) {
  std::vector<float> x(32, 0.0f);
  x[0] = 0.5f;
  x[1] = -1.0f;
  x[2] = 0.25f;
  std::vector<std::int8_t> q(32);
  qc::SymmetricConfig cfg;
  cfg.bits = 8;
  cfg.rounding = qc::Rounding::kHalfAwayFromZero;
  cfg.scale_precision = qc::ScalePrecision::kFp32Codes;
  const kvcompress::half d = qc::symmetric_quantize(x.data(), 32, 1, cfg, q.data());
  EXPECT_EQ(to_float(d), static_cast<float>(kvref::round_to_f16(1.0 / 127.0)));
  EXPECT_EQ(q[0], 64);
  EXPECT_EQ(q[1], -127);
  EXPECT_EQ(q[2], 32);
  for (int i = 3; i < 32; ++i) EXPECT_EQ(q[i], 0);
  std::vector<float> y(32);
  qc::symmetric_dequantize(q.data(), 32, d, y.data(), 1);
  EXPECT_NEAR(y[0], 0.50394, 1e-3);
  EXPECT_NEAR(y[1], -1.0, 1e-3);
  EXPECT_NEAR(y[2], 0.25197, 1e-3);
  EXPECT_EQ(y[3], 0.0f);
}

// Default settings: codes = round-half-even(x / d16) in double (away from ties), error bound
// |x − x̂| ≤ d16/2 + qmax·|d − d16|.
TEST(SymmetricQuant, CodesAndBoundAgainstDouble) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  for (int bits = 2; bits <= 8; ++bits) {
    const double qmax = (1 << (bits - 1)) - 1;
    for (int rep = 0; rep < 30; ++rep) {
      std::vector<float> x(48);
      for (float& v : x) v = u(rng) * (1 + rep % 3);
      std::vector<std::int8_t> q(x.size());
      std::vector<float> y(x.size());
      const kvcompress::half d16h = qc::symmetric_quantize(x.data(), x.size(), 1, {bits}, q.data());
      qc::symmetric_dequantize(q.data(), x.size(), d16h, y.data(), 1);
      double amax = 0;
      for (float v : x) amax = std::max(amax, std::fabs(static_cast<double>(v)));
      const double d = static_cast<float>(static_cast<float>(amax) / static_cast<float>(qmax));
      const double d16 = kvref::round_to_f16(d);
      ASSERT_EQ(static_cast<double>(to_float(d16h)), d16);
      for (std::size_t i = 0; i < x.size(); ++i) {
        const double t = x[i] / d16;
        if (std::fabs(std::fabs(t - std::trunc(t)) - 0.5) > 1e-4) {
          const double r = std::max(-qmax, std::min(qmax, std::nearbyint(t)));
          ASSERT_EQ(q[i], static_cast<int>(r)) << bits << " " << i;
        }
        ASSERT_LE(std::fabs(x[i] - static_cast<double>(y[i])), d16 / 2 + qmax * std::fabs(d - d16) + 1e-6)
            << bits << " " << i;
      }
    }
  }
}

TEST(SymmetricQuant, ZeroGroupIsExact) {
  const float x[4] = {0.0f, -0.0f, 0.0f, 0.0f};
  std::int8_t q[4];
  float y[4];
  const kvcompress::half d = qc::symmetric_quantize(x, 4, 1, {4}, q);
  EXPECT_EQ(to_float(d), 0.0f);
  qc::symmetric_dequantize(q, 4, d, y, 1);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(q[i], 0);
    EXPECT_EQ(y[i], 0.0f);
  }
}

TEST(SymmetricQuant, RejectsBadArguments) {
  const float x[2] = {1.0f, -1.0f};
  std::int8_t q[2];
  kvtest::expect_invalid_argument([&] { qc::symmetric_quantize(x, 2, 1, {1}, q); }, "bits");
  kvtest::expect_invalid_argument([&] { qc::symmetric_quantize(x, 2, 1, {9}, q); }, "bits");
  kvtest::expect_invalid_argument([&] { qc::symmetric_quantize(x, 0, 1, {8}, q); }, "n");
  kvtest::expect_invalid_argument([&] { qc::symmetric_quantize(x, 2, 0, {8}, q); }, "stride");
  const float inf[2] = {1.0f, INFINITY};
  kvtest::expect_invalid_argument([&] { qc::symmetric_quantize(inf, 2, 1, {8}, q); }, "x[1]");
}

}  // namespace
