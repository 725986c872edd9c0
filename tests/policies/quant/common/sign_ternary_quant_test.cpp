// SPDX-License-Identifier: Apache-2.0
// BB-3 (quantization.md §0, VidKV §6): 1-bit sign and ternary quantization with abs-mean scale —
// the spec's worked examples, both reconstruction conventions, γ, a double oracle, argument
// checks.

#include "support/expect_invalid.hpp"
#include "kvcompress/policies/quant/common/sign_ternary_quant.hpp"

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

// VidKV ternary example (γ = 0.7): v = [0.9, −0.1, −0.6, 0.2] → α = 0.45, τ = 0.315,
// t = [1, 0, −1, 0], v̂ = [0.45, 0, −0.45, 0]; the reference dequantizer gives t itself.
TEST(Ternary, VidKvWorkedExample) {
  const float v[4] = {0.9f, -0.1f, -0.6f, 0.2f};
  std::uint8_t q[4];
  const kvcompress::half a = qc::ternary_quantize(v, 4, 1, 0.7f, q);
  EXPECT_EQ(to_float(a), static_cast<float>(kvref::round_to_f16(0.45)));
  const std::uint8_t codes[4] = {2, 1, 0, 1};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(q[i], codes[i]) << i;
  float y[4];
  qc::ternary_dequantize(q, 4, a, qc::TernaryScale::kAlpha, y, 1);
  const float t[4] = {1, 0, -1, 0};
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(y[i], 0.45 * t[i], 1e-3) << i;
    EXPECT_EQ(y[i], to_float(a) * t[i]) << i;
  }
  qc::ternary_dequantize(q, 4, a, qc::TernaryScale::kNone, y, 1);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(y[i], t[i]) << i;
}

// γ matters: v = [1, −1, 0.35, 0.05], α = 0.6: 0.35 is below τ(0.7) = 0.42 but above τ(0.5) = 0.3.
TEST(Ternary, GammaSelectsTheThreshold) {
  const float v[4] = {1.0f, -1.0f, 0.35f, 0.05f};
  std::uint8_t q[4];
  qc::ternary_quantize(v, 4, 1, 0.7f, q);
  EXPECT_EQ(q[2], 1);
  qc::ternary_quantize(v, 4, 1, 0.5f, q);
  EXPECT_EQ(q[2], 2);
  EXPECT_EQ(q[3], 1);
}

// VidKV 1-bit example: y = [1.5, −0.5, 0.25, −2.0] → s = 1.0625, codes [1, 0, 1, 0],
// faithful [1.0625, 0, 1.0625, 0], symmetric ±1.0625.
TEST(Sign, VidKvWorkedExample) {
  const float x[4] = {1.5f, -0.5f, 0.25f, -2.0f};
  std::uint8_t q[4];
  const kvcompress::half s = qc::sign_quantize(x, 4, 1, q);
  EXPECT_EQ(to_float(s), 1.0625f);
  const std::uint8_t codes[4] = {1, 0, 1, 0};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(q[i], codes[i]) << i;
  float y[4];
  qc::sign_dequantize(q, 4, s, qc::SignLevels::kZeroOrScale, y, 1);
  const float faithful[4] = {1.0625f, 0.0f, 1.0625f, 0.0f};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(y[i], faithful[i]) << i;
  qc::sign_dequantize(q, 4, s, qc::SignLevels::kPlusMinusScale, y, 1);
  const float symmetric[4] = {1.0625f, -1.0625f, 1.0625f, -1.0625f};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(y[i], symmetric[i]) << i;
}

TEST(Sign, NegativeZeroCountsAsNonNegativeAndStridesWork) {
  const float x[6] = {-0.0f, 99.0f, -1.0f, 99.0f, 3.0f, 99.0f};  // stride 2 skips the 99s
  std::uint8_t q[3];
  const kvcompress::half s = qc::sign_quantize(x, 3, 2, q);
  EXPECT_EQ(to_float(s), static_cast<float>(kvref::round_to_f16(4.0 / 3.0)));
  EXPECT_EQ(q[0], 1);
  EXPECT_EQ(q[1], 0);
  EXPECT_EQ(q[2], 1);
}

// Random groups against a double oracle: α16 = fp16(mean |x|), t from τ = γ·α16.
TEST(Ternary, MatchesDoubleOracle) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int rep = 0; rep < 50; ++rep) {
    std::vector<float> x(32);
    double sum = 0;
    for (float& v : x) {
      v = nd(rng);
      sum += std::fabs(static_cast<double>(v));
    }
    std::vector<std::uint8_t> q(x.size());
    const kvcompress::half a = qc::ternary_quantize(x.data(), x.size(), 1, 0.7f, q.data());
    const double a16 = kvref::round_to_f16(sum / 32.0);
    ASSERT_EQ(static_cast<double>(to_float(a)), a16);
    const double tau = static_cast<float>(0.7f * static_cast<float>(a16));
    for (std::size_t i = 0; i < x.size(); ++i) {
      const int t = x[i] > tau ? 1 : (x[i] < -tau ? -1 : 0);
      ASSERT_EQ(q[i], t + 1) << rep << " " << i;
    }
  }
}

TEST(SignTernary, RejectsBadArguments) {
  const float x[2] = {1.0f, -1.0f};
  std::uint8_t q[2];
  kvtest::expect_invalid_argument([&] { qc::ternary_quantize(x, 2, 1, -0.1f, q); }, "gamma");
  kvtest::expect_invalid_argument([&] { qc::ternary_quantize(x, 2, 1, NAN, q); }, "gamma");
  kvtest::expect_invalid_argument([&] { qc::ternary_quantize(x, 0, 1, 0.7f, q); }, "n");
  kvtest::expect_invalid_argument([&] { qc::sign_quantize(x, 2, 0, q); }, "stride");
  const float nan_x[2] = {NAN, 1.0f};
  kvtest::expect_invalid_argument([&] { qc::sign_quantize(nan_x, 2, 1, q); }, "x[0]");
}

}  // namespace
