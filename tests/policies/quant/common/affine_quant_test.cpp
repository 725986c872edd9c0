// SPDX-License-Identifier: Apache-2.0
// BB-1 (quantization.md §0): rounding rules, the float- and integer-zero-point min–max group
// quantizers against hand-worked examples (KIVI, CalibQuant, ggml q4_1), byte identity with the
// independent KIVI oracle (tests/reference/kivi_reference.hpp), the error bound in double, the
// zero-range [rec] rules, and argument checks.

#include "support/expect_invalid.hpp"
#include "kvcompress/policies/quant/common/affine_quant.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "reference/float16_reference.hpp"
#include "reference/kivi_reference.hpp"

namespace {

namespace qc = kvcompress::quant::common;
using kvcompress::to_float;

std::vector<float> random_values(std::size_t n, std::uint32_t seed, float lo = -3.0f, float hi = 3.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

TEST(Rounding, RulesOnTiesAndTheGgmlQuirk) {
  EXPECT_EQ(qc::round_with(2.5f, qc::Rounding::kHalfEven), 2.0f);
  EXPECT_EQ(qc::round_with(3.5f, qc::Rounding::kHalfEven), 4.0f);
  EXPECT_EQ(qc::round_with(-2.5f, qc::Rounding::kHalfEven), -2.0f);
  EXPECT_EQ(qc::round_with(2.5f, qc::Rounding::kHalfAwayFromZero), 3.0f);
  EXPECT_EQ(qc::round_with(-2.5f, qc::Rounding::kHalfAwayFromZero), -3.0f);
  EXPECT_EQ(qc::round_with(2.5f, qc::Rounding::kTruncAddHalf), 3.0f);
  EXPECT_EQ(qc::round_with(-2.5f, qc::Rounding::kTruncAddHalf), -2.0f);  // trunc(−2.0)
  // (int)(v + 0.5f) with v = 0.5 − 2^-25: the fp32 sum rounds up to 1.0, so ggml gives 1.
  EXPECT_EQ(qc::round_with(0.5f - 0x1p-25f, qc::Rounding::kTruncAddHalf), 1.0f);
  EXPECT_EQ(qc::round_with(0.5f - 0x1p-25f, qc::Rounding::kHalfEven), 0.0f);
  EXPECT_EQ(qc::round_clamp(7.6f, qc::Rounding::kHalfEven, 0.0f, 3.0f), 3.0f);
  EXPECT_EQ(qc::round_clamp(-0.6f, qc::Rounding::kHalfEven, 0.0f, 3.0f), 0.0f);
  EXPECT_STREQ(qc::to_string(qc::Rounding::kTruncAddHalf), "trunc_add_half");
}

// KIVI §1 worked example: x = [0.1, −0.3, 0.7, 0.25], 2 bits → q = [1, 0, 3, 2],
// x̂ ≈ [0.0333, −0.3, 0.7, 0.3667].
TEST(AffineQuant, KiviWorkedExample) {
  const float x[4] = {0.1f, -0.3f, 0.7f, 0.25f};
  std::uint8_t q[4];
  const qc::AffineParams p = qc::affine_quantize(x, 4, 1, {2}, q);
  EXPECT_EQ(q[0], 1);
  EXPECT_EQ(q[1], 0);
  EXPECT_EQ(q[2], 3);
  EXPECT_EQ(q[3], 2);
  EXPECT_EQ(to_float(p.scale), static_cast<float>(kvref::round_to_f16(1.0 / 3.0)));
  EXPECT_EQ(to_float(p.zero), static_cast<float>(kvref::round_to_f16(-0.3)));
  float y[4];
  qc::affine_dequantize(q, 4, p, y, 1);
  const double expect[4] = {0.0333333, -0.3, 0.7, 0.3666667};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[i], expect[i], 1e-3) << i;  // fp16 metadata
}

// CalibQuant §4 worked example: one channel, α = 0.5, 1 bit: v = [−2, −0.5, 1, 3] → lo = −1,
// hi = 1.5, s = 2.5, q = [0, 0, 1, 1], v̂ = [−1, −1, 1.5, 1.5] (all fp16-exact).
TEST(AffineQuant, CalibQuantClipExample) {
  const float v[4] = {-2.0f, -0.5f, 1.0f, 3.0f};
  std::uint8_t q[4];
  qc::AffineConfig cfg;
  cfg.bits = 1;
  cfg.clip = 0.5f;
  const qc::AffineParams p = qc::affine_quantize(v, 4, 1, cfg, q);
  EXPECT_EQ(to_float(p.scale), 2.5f);
  EXPECT_EQ(to_float(p.zero), -1.0f);
  const std::uint8_t expect_q[4] = {0, 0, 1, 1};
  const float expect_y[4] = {-1.0f, -1.0f, 1.5f, 1.5f};
  float y[4];
  qc::affine_dequantize(q, 4, p, y, 1);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(q[i], expect_q[i]) << i;
    EXPECT_EQ(y[i], expect_y[i]) << i;
  }
}

// ggml q4_1 worked example (§10): [0.5, −1, 0.25, 0, 0 × 28], truncating rounding →
// codes [15, 0, 13, 10, 10, …], d ≈ 0.1, m = −1.
TEST(AffineQuant, GgmlQ41CodesWithTruncAddHalf) {
  std::vector<float> x(32, 0.0f);
  x[0] = 0.5f;
  x[1] = -1.0f;
  x[2] = 0.25f;
  std::vector<std::uint8_t> q(32);
  qc::AffineConfig cfg;
  cfg.bits = 4;
  cfg.rounding = qc::Rounding::kTruncAddHalf;
  const qc::AffineParams p = qc::affine_quantize(x.data(), 32, 1, cfg, q.data());
  EXPECT_EQ(to_float(p.scale), static_cast<float>(kvref::round_to_f16(0.1)));  // 0.0999756
  EXPECT_EQ(to_float(p.zero), -1.0f);
  EXPECT_EQ(q[0], 15);
  EXPECT_EQ(q[1], 0);
  EXPECT_EQ(q[2], 13);
  for (int i = 3; i < 32; ++i) EXPECT_EQ(q[i], 10) << i;
}

// KIVI's scalar kernel rule, written independently in tests/reference/kivi_reference.hpp: this
// quantizer with α = 1 and half-to-even reproduces its metadata and codes byte for byte, also for
// strided (per-channel) groups.
TEST(AffineQuant, ByteIdenticalToKiviReference) {
  for (int bits : {2, 4, 8}) {
    for (std::uint32_t seed = 0; seed < 40; ++seed) {
      const std::size_t n = 32, stride = 3;
      auto x = random_values(n * stride, seed * 7 + bits, -4.0f, 5.0f);
      std::vector<std::uint8_t> q(n);
      const qc::AffineParams p = qc::affine_quantize(x.data(), n, stride, {bits}, q.data());
      const kvref::KiviGroupMeta m = kvref::kivi_meta(x.data(), n, stride, bits);
      ASSERT_EQ(static_cast<double>(to_float(p.scale)), m.s16);
      ASSERT_EQ(static_cast<double>(to_float(p.zero)), m.z16);
      for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(q[i], kvref::kivi_code(x[i * stride], m, bits)) << bits << " " << i;
    }
  }
}

// Every bit width: codes equal round((x − z16)/s16) evaluated in double (except within 1e-4 of a
// tie, where the fp32 product may land on either side), and the BB-1 error bound holds.
TEST(AffineQuant, CodesAndErrorBoundAgainstDouble) {
  for (int bits = 1; bits <= 8; ++bits) {
    const double L = (1 << bits) - 1;
    for (std::uint32_t seed = 0; seed < 30; ++seed) {
      const std::size_t n = 64;
      auto x = random_values(n, 1000 * bits + seed, -2.0f - seed % 5, 1.0f + seed % 7);
      std::vector<std::uint8_t> q(n);
      std::vector<float> y(n);
      const qc::AffineParams p = qc::affine_quantize(x.data(), n, 1, {bits}, q.data());
      qc::affine_dequantize(q.data(), n, p, y.data(), 1);
      double lo = x[0], hi = x[0];
      for (float v : x) {
        lo = std::min<double>(lo, v);
        hi = std::max<double>(hi, v);
      }
      const double s = static_cast<float>((static_cast<float>(hi) - static_cast<float>(lo)) / static_cast<float>(L));
      const double s16 = kvref::round_to_f16(s), z16 = kvref::round_to_f16(lo);
      ASSERT_EQ(static_cast<double>(to_float(p.scale)), s16);
      ASSERT_EQ(static_cast<double>(to_float(p.zero)), z16);
      const double bound = s16 / 2 + L * std::fabs(s - s16) + std::fabs(lo - z16) + 1e-6;
      for (std::size_t i = 0; i < n; ++i) {
        const double t = (x[i] - z16) / s16;
        if (std::fabs(t - std::floor(t) - 0.5) > 1e-4) {
          const double r = std::min(L, std::max(0.0, std::nearbyint(t)));
          ASSERT_EQ(q[i], static_cast<int>(r)) << "bits " << bits << " i " << i;
        }
        ASSERT_LE(std::fabs(x[i] - static_cast<double>(y[i])), bound) << "bits " << bits << " i " << i;
      }
      // The group extremes map to codes 0 and L.
      for (std::size_t i = 0; i < n; ++i) {
        if (x[i] == lo) {
          EXPECT_EQ(q[i], 0);
        }
        if (x[i] == hi) {
          EXPECT_EQ(q[i], static_cast<int>(L));
        }
      }
    }
  }
}

TEST(AffineQuant, ZeroRangeIsExact) {
  for (float c : {1.5f, -2.25f, 0.0f, 65504.0f}) {
    const float x[5] = {c, c, c, c, c};
    std::uint8_t q[5];
    float y[5];
    const qc::AffineParams p = qc::affine_quantize(x, 5, 1, {2}, q);
    EXPECT_EQ(to_float(p.scale), 0.0f);
    qc::affine_dequantize(q, 5, p, y, 1);
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(q[i], 0);
      EXPECT_EQ(y[i], c);
    }
  }
}

// Integer zero point, hand-worked: x = [−1, 0, 0.5, 2], 2 bits: s = 1, z = 1,
// half-to-even q = [0, 1, 1, 3] (round(0.5) = 0), away-from-zero q = [0, 1, 2, 3].
TEST(AffineIntQuant, HandWorkedExampleAndRounding) {
  const float x[4] = {-1.0f, 0.0f, 0.5f, 2.0f};
  std::uint8_t q[4];
  float y[4];
  qc::AffineConfig cfg;
  const qc::AffineIntParams p = qc::affine_int_quantize(x, 4, 1, cfg, q);
  EXPECT_EQ(to_float(p.scale), 1.0f);
  EXPECT_EQ(p.zero, 1);
  const std::uint8_t even[4] = {0, 1, 1, 3};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(q[i], even[i]) << i;
  qc::affine_int_dequantize(q, 4, p, y, 1);
  const float y_even[4] = {-1.0f, 0.0f, 0.0f, 2.0f};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(y[i], y_even[i]) << i;
  cfg.rounding = qc::Rounding::kHalfAwayFromZero;
  qc::affine_int_quantize(x, 4, 1, cfg, q);
  EXPECT_EQ(q[2], 2);
}

// Zero-range [rec]: (q, z) = (1, 0) with s = |lo| for lo > 0, (0, 1) for lo < 0, all 0 for 0.
TEST(AffineIntQuant, ZeroRangeRules) {
  struct Case {
    float c;
    float s;
    int q, z;
  } cases[] = {{3.0f, 3.0f, 1, 0}, {-2.5f, 2.5f, 0, 1}, {0.0f, 0.0f, 0, 0}};
  for (const Case& k : cases) {
    const float x[3] = {k.c, k.c, k.c};
    std::uint8_t q[3];
    float y[3];
    const qc::AffineIntParams p = qc::affine_int_quantize(x, 3, 1, {4}, q);
    EXPECT_EQ(to_float(p.scale), k.s) << k.c;
    EXPECT_EQ(p.zero, k.z) << k.c;
    qc::affine_int_dequantize(q, 3, p, y, 1);
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(q[i], k.q) << k.c;
      EXPECT_EQ(y[i], k.c) << k.c;
    }
  }
}

// A group that does not straddle 0 saturates z at 0 and clamps its top (KVQuant behaviour):
// x = [1, 2, 3, 4], 2 bits: s = 1, z = 0, q = [1, 2, 3, 3].
TEST(AffineIntQuant, OneSidedGroupClampsAsKvquant) {
  const float x[4] = {1.0f, 2.0f, 3.0f, 4.0f};
  std::uint8_t q[4];
  const qc::AffineIntParams p = qc::affine_int_quantize(x, 4, 1, {2}, q);
  EXPECT_EQ(p.zero, 0);
  const std::uint8_t expect[4] = {1, 2, 3, 3};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(q[i], expect[i]) << i;
}

// Straddling groups: an unsaturated code reconstructs within s16/2, every code within s16.
TEST(AffineIntQuant, ErrorBoundOnStraddlingGroups) {
  for (int bits = 2; bits <= 8; ++bits) {
    const int L = (1 << bits) - 1;
    for (std::uint32_t seed = 0; seed < 30; ++seed) {
      auto x = random_values(128, 77 * bits + seed, -3.0f, 2.0f);
      x[0] = -3.0f;  // straddles 0
      x[1] = 2.0f;
      std::vector<std::uint8_t> q(x.size());
      std::vector<float> y(x.size());
      const qc::AffineIntParams p = qc::affine_int_quantize(x.data(), x.size(), 1, {bits}, q.data());
      qc::affine_int_dequantize(q.data(), x.size(), p, y.data(), 1);
      const double s16 = to_float(p.scale);
      for (std::size_t i = 0; i < x.size(); ++i) {
        const double err = std::fabs(x[i] - static_cast<double>(y[i]));
        ASSERT_LE(err, s16 + 1e-6) << bits << " " << i;
        if (q[i] != 0 && q[i] != L) {
          ASSERT_LE(err, s16 / 2 + 1e-6) << bits << " " << i;
        }
      }
    }
  }
}

TEST(AffineQuant, RejectsBadArguments) {
  const float x[4] = {0.0f, 1.0f, 2.0f, 3.0f};
  std::uint8_t q[4];
  kvtest::expect_invalid_argument([&] { qc::affine_quantize(x, 4, 1, {0}, q); }, "bits");
  kvtest::expect_invalid_argument([&] { qc::affine_quantize(x, 4, 1, {9}, q); }, "bits");
  kvtest::expect_invalid_argument([&] { qc::affine_int_quantize(x, 4, 1, {9}, q); }, "bits");
  kvtest::expect_invalid_argument([&] { qc::affine_quantize(x, 0, 1, {2}, q); }, "n");
  kvtest::expect_invalid_argument([&] { qc::affine_quantize(x, 4, 0, {2}, q); }, "stride");
  qc::AffineConfig bad_clip;
  bad_clip.clip = 0.0f;
  kvtest::expect_invalid_argument([&] { qc::affine_quantize(x, 4, 1, bad_clip, q); }, "clip");
  bad_clip.clip = 1.5f;
  kvtest::expect_invalid_argument([&] { qc::affine_quantize(x, 4, 1, bad_clip, q); }, "clip");
  const float nan_x[3] = {0.0f, std::nanf(""), 1.0f};
  kvtest::expect_invalid_argument([&] { qc::affine_quantize(nan_x, 3, 1, {2}, q); }, "x[1]");
  const float big[2] = {-60000.0f, 60000.0f};
  kvtest::expect_invalid_argument([&] { qc::affine_quantize(big, 2, 1, {1}, q); }, "max(x) - min(x)");
}

}  // namespace
