// SPDX-License-Identifier: Apache-2.0
// Softmax reductions: max_value exact on every ISA; exp_shift_sum within 1e-6 relative (plus one
// denormal quantum) of exp in double, −inf → 0 exactly, sums within the fp32 summation bound.

#include "kvcompress/kernels/softmax.hpp"

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/isa_test_support.hpp"

namespace {

namespace kernels = kvcompress::kernels;
constexpr float kInf = std::numeric_limits<float>::infinity();

template <class Tag>
class SoftmaxIsa : public ::testing::Test {};
TYPED_TEST_SUITE(SoftmaxIsa, kvtest::IsaTags, kvtest::IsaName);

const std::size_t kLengths[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 257, 1000};

TYPED_TEST(SoftmaxIsa, MaxValue) {
  KVTEST_REQUIRE_ISA(TypeParam);
  EXPECT_EQ(kernels::max_value(nullptr, 0, TypeParam{}), -kInf);
  for (std::size_t n : kLengths) {
    for (std::size_t pos : {std::size_t{0}, n / 2, n - 1}) {
      std::vector<float> x = kvtest::random_floats(n + 1, -50.0f, 50.0f, static_cast<std::uint32_t>(n * 31 + pos));
      for (std::size_t i = 0; i < n + 1; i += 3) x[i] = -kInf;
      x[1 + pos] = 77.25f;
      EXPECT_EQ(kernels::max_value(x.data() + 1, n, TypeParam{}), 77.25f) << "n=" << n << " pos=" << pos;
      std::vector<float> all(n, -kInf);
      EXPECT_EQ(kernels::max_value(all.data(), n, TypeParam{}), -kInf);
    }
  }
}

/// |got − exp(x)| ≤ 1e-6·exp(x) + 2^-149 (one denormal quantum).
void expect_exp_close(float got, double x, const char* what, std::size_t i) {
  const double want = std::exp(x);
  ASSERT_LE(std::fabs(got - want), 1e-6 * want + 0x1p-149) << what << " i=" << i << " x=" << x;
}

TYPED_TEST(SoftmaxIsa, ExpShiftSumRandom) {
  KVTEST_REQUIRE_ISA(TypeParam);
  for (std::size_t n : kLengths) {
    std::vector<float> x = kvtest::random_floats(n + 1, -30.0f, 10.0f, static_cast<std::uint32_t>(n));
    const std::vector<float> orig = x;
    const float m = kernels::max_value(x.data() + 1, n, TypeParam{});
    const float sum = kernels::exp_shift_sum(x.data() + 1, n, m, TypeParam{});
    double want_sum = 0.0, abs_sum = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      const double arg = static_cast<double>(orig[1 + i] - m);  // the kernel's fp32 difference
      expect_exp_close(x[1 + i], arg, "random", i);
      want_sum += std::exp(arg);
      abs_sum += std::exp(arg);
    }
    EXPECT_EQ(x[0], orig[0]) << "wrote before the start";
    EXPECT_LE(std::fabs(sum - want_sum), 1e-6 * want_sum + kvtest::float_sum_bound(n, abs_sum)) << "n=" << n;
  }
}

TYPED_TEST(SoftmaxIsa, ExpFullRangeAndSpecials) {
  KVTEST_REQUIRE_ISA(TypeParam);
  // Sweep the whole argument range including the denormal-result and underflow regions.
  std::vector<float> args;
  for (float a = -110.0f; a <= 88.5f; a += 0.0137f) args.push_back(a);
  const float edges[] = {0.0f, -0.0f, -87.33654f, -87.34f, -103.28f, -103.97f, -104.0f, -150.0f, -1e30f,
                         88.72f, 1e-10f, -1e-40f, 0.34657359f, -0.34657359f};
  args.insert(args.end(), std::begin(edges), std::end(edges));
  std::vector<float> x = args;
  kernels::exp_shift_sum(x.data(), x.size(), 0.0f, TypeParam{});
  for (std::size_t i = 0; i < x.size(); ++i) expect_exp_close(x[i], args[i], "sweep", i);
  // −inf entries map to exactly +0; a finite shift on a masked row still gives 0.
  std::vector<float> masked(37, -kInf);
  masked[5] = 1.0f;
  masked[36] = 2.0f;
  const float s = kernels::exp_shift_sum(masked.data(), masked.size(), 2.0f, TypeParam{});
  for (std::size_t i = 0; i < masked.size(); ++i) {
    if (i == 5 || i == 36) continue;
    EXPECT_EQ(masked[i], 0.0f);
    EXPECT_FALSE(std::signbit(masked[i]));
  }
  EXPECT_EQ(masked[36], 1.0f);
  EXPECT_NEAR(s, 1.0 + std::exp(-1.0), 1e-6);
  // Fully masked row: m = −inf gives zeros and a zero sum, not NaN.
  std::vector<float> dead(19, -kInf);
  EXPECT_EQ(kernels::exp_shift_sum(dead.data(), dead.size(), -kInf, TypeParam{}), 0.0f);
  for (float v : dead) EXPECT_EQ(v, 0.0f);
  // n = 0 touches nothing.
  float one = 3.0f;
  EXPECT_EQ(kernels::exp_shift_sum(&one, 0, 0.0f, TypeParam{}), 0.0f);
  EXPECT_EQ(one, 3.0f);
}

TYPED_TEST(SoftmaxIsa, AgreesWithScalar) {
  KVTEST_REQUIRE_ISA(TypeParam);
  for (std::size_t n : kLengths) {
    std::vector<float> a = kvtest::random_floats(n, -20.0f, 0.0f, static_cast<std::uint32_t>(7 * n));
    std::vector<float> b = a;
    const float sa = kernels::exp_shift_sum(a.data(), n, 0.0f, TypeParam{});
    const float sb = kernels::exp_shift_sum(b.data(), n, 0.0f, kvcompress::isa::scalar{});
    double abs_sum = 0;
    for (std::size_t i = 0; i < n; ++i) {
      ASSERT_LE(std::fabs(a[i] - b[i]), 2e-6 * b[i] + 0x1p-149);
      abs_sum += b[i];
    }
    EXPECT_LE(std::fabs(sa - sb), 2e-6 * abs_sum + kvtest::float_sum_bound(n, abs_sum));
  }
}

}  // namespace
