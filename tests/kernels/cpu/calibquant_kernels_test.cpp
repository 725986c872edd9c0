// SPDX-License-Identifier: Apache-2.0
// CalibQuant decode kernels (kernels/calibquant.hpp) on every compiled ISA against an independent
// double-precision dequantize-then-dot reference (BB-15 post-scaling identity), random shapes with
// tails (n not a multiple of any vector width, every supported head_dim, 1..16 rows).

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "isa_test_support.hpp"
#include "kvcompress/kernels/calibquant.hpp"

namespace {

namespace kv = kvcompress;

template <class Tag>
class CalibQuantKernels : public ::testing::Test {};
TYPED_TEST_SUITE(CalibQuantKernels, kvtest::IsaTags, kvtest::IsaName);

struct Case {
  int d;
  std::size_t n;
  int rows;
};

const Case kCases[] = {{64, 1, 1}, {64, 37, 3}, {80, 19, 16}, {96, 65, 5}, {128, 131, 4},
                       {128, 7, 16}, {256, 33, 2}, {80, 200, 9}};

// Bits are MSB first within each byte (P-CALIB) — the reference decodes them independently.
int ref_bit(const std::vector<std::uint8_t>& codes, std::size_t stride, std::size_t t, int c) {
  return (codes[t * stride + static_cast<std::size_t>(c) / 8] >> (7 - c % 8)) & 1;
}

TYPED_TEST(CalibQuantKernels, KeyLogitsMatchDequantizedDot) {
  KVTEST_REQUIRE_ISA(TypeParam);
  std::uint32_t seed = 1;
  for (const Case& cs : kCases) {
    const std::size_t stride = static_cast<std::size_t>(cs.d) / 4 + 3;  // a unit wider than the key bits
    std::mt19937 gen(seed++);
    std::vector<std::uint8_t> codes(cs.n * stride);
    for (auto& b : codes) b = static_cast<std::uint8_t>(gen());
    const auto s = kvtest::random_floats(cs.d, 0.0f, 2.0f, seed++);
    const auto z = kvtest::random_floats(cs.d, -1.5f, 1.0f, seed++);
    const auto q = kvtest::random_floats(static_cast<std::size_t>(cs.rows * cs.d), -1.0f, 1.0f, seed++);
    const std::size_t ldl = cs.n + 5;
    std::vector<float> out(static_cast<std::size_t>(cs.rows) * ldl, -7.0f);
    kv::kernels::calibquant_key_logits(codes.data(), stride, cs.n, cs.d, s.data(), z.data(), q.data(), cs.rows,
                                       out.data(), ldl, TypeParam{});
    for (int r = 0; r < cs.rows; ++r)
      for (std::size_t t = 0; t < cs.n; ++t) {
        double ref = 0.0, mag = 0.0;
        for (int c = 0; c < cs.d; ++c) {
          const double x = static_cast<double>(s[c]) * ref_bit(codes, stride, t, c) + z[c];
          ref += static_cast<double>(q[r * cs.d + c]) * x;
          mag += std::fabs(q[r * cs.d + c]) * (std::fabs(s[c]) + std::fabs(z[c]));
        }
        EXPECT_NEAR(out[r * ldl + t], ref, kvtest::float_sum_bound(2 * cs.d, mag))
            << TypeParam::kName << " d=" << cs.d << " t=" << t << " r=" << r;
      }
    for (int r = 0; r < cs.rows; ++r)
      for (std::size_t t = cs.n; t < ldl; ++t) EXPECT_EQ(out[r * ldl + t], -7.0f) << "wrote past n";
  }
}

TYPED_TEST(CalibQuantKernels, ValueAccumulateMatchesDequantizedSum) {
  KVTEST_REQUIRE_ISA(TypeParam);
  std::uint32_t seed = 100;
  for (const Case& cs : kCases) {
    const std::size_t stride = static_cast<std::size_t>(cs.d) / 4;
    std::mt19937 gen(seed++);
    std::vector<std::uint8_t> codes(cs.n * stride);
    for (auto& b : codes) b = static_cast<std::uint8_t>(gen());
    const auto s = kvtest::random_floats(cs.d, 0.0f, 2.0f, seed++);
    const auto z = kvtest::random_floats(cs.d, -1.5f, 1.0f, seed++);
    const std::size_t ldp = cs.n + 3;
    const auto p = kvtest::random_floats(static_cast<std::size_t>(cs.rows) * ldp, 0.0f, 1.0f, seed++);
    const auto init = kvtest::random_floats(static_cast<std::size_t>(cs.rows * cs.d), -1.0f, 1.0f, seed++);
    std::vector<float> out = init;
    kv::kernels::calibquant_value_accumulate(codes.data(), stride, cs.n, cs.d, s.data(), z.data(), p.data(), ldp,
                                             cs.rows, out.data(), TypeParam{});
    for (int r = 0; r < cs.rows; ++r)
      for (int c = 0; c < cs.d; ++c) {
        double ref = init[r * cs.d + c], mag = std::fabs(init[r * cs.d + c]);
        for (std::size_t t = 0; t < cs.n; ++t) {
          const double x = static_cast<double>(s[c]) * ref_bit(codes, stride, t, c) + z[c];
          ref += static_cast<double>(p[r * ldp + t]) * x;
          mag += std::fabs(p[r * ldp + t]) * (std::fabs(s[c]) + std::fabs(z[c]));
        }
        EXPECT_NEAR(out[r * cs.d + c], ref, kvtest::float_sum_bound(2 * cs.n + 2, mag))
            << TypeParam::kName << " d=" << cs.d << " c=" << c << " r=" << r;
      }
  }
}

// SIMD vs scalar on the same inputs (differences only from summation order).
TYPED_TEST(CalibQuantKernels, AgreesWithScalar) {
  KVTEST_REQUIRE_ISA(TypeParam);
  const int d = 128;
  const std::size_t n = 77, stride = d / 4;
  std::mt19937 gen(9);
  std::vector<std::uint8_t> codes(n * stride);
  for (auto& b : codes) b = static_cast<std::uint8_t>(gen());
  const auto s = kvtest::random_floats(d, 0.0f, 1.0f, 10);
  const auto z = kvtest::random_floats(d, -1.0f, 1.0f, 11);
  const auto q = kvtest::random_floats(4 * d, -1.0f, 1.0f, 12);
  std::vector<float> a(4 * n), b(4 * n);
  kv::kernels::calibquant_key_logits(codes.data(), stride, n, d, s.data(), z.data(), q.data(), 4, a.data(), n,
                                     TypeParam{});
  kv::kernels::calibquant_key_logits(codes.data(), stride, n, d, s.data(), z.data(), q.data(), 4, b.data(), n,
                                     kv::isa::scalar{});
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4f) << i;
}

}  // namespace
