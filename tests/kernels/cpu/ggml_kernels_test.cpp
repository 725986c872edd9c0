// SPDX-License-Identifier: Apache-2.0
// ggml block-format kernels (kernels/ggml.hpp): every compiled ISA against the scalar reference on
// random shapes (head_dim multiples of 32 incl. 96 and 160, token counts with tails, 1..16 query
// rows, all three formats). Dequantization is bit-identical on every ISA; logits and value
// accumulation are exact-fp32 kernels that may only reorder sums, so they are checked against a
// double-precision evaluation over the dequantized rows with the fp32 summation bound.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cpu/isa_test_support.hpp"
#include "kvcompress/kernels/ggml.hpp"

namespace {

using namespace kvcompress;
using quant::formats::GgmlType;

template <class Tag>
class GgmlKernels : public ::testing::Test {};
TYPED_TEST_SUITE(GgmlKernels, kvtest::IsaTags, kvtest::IsaName);

constexpr GgmlType kTypes[] = {GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ4_1};

// Random packed rows: quantized from Gaussian data with a few outlier channels and a few rows
// scaled down/up, so scales span a wide range (zero blocks included).
std::vector<std::uint8_t> random_rows(GgmlType type, std::size_t n, int d, std::uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(n * static_cast<std::size_t>(d));
  for (std::size_t t = 0; t < n; ++t) {
    const float scale = t % 11 == 5 ? 0.0f : (t % 7 == 3 ? 30.0f : 1.0f);
    for (int c = 0; c < d; ++c) x[t * d + c] = nd(g) * scale * (c % 19 == 2 ? 6.0f : 1.0f);
  }
  std::vector<std::uint8_t> rows(n * quant::formats::ggml_row_bytes(type, d) + 1);
  kernels::ggml_quantize_rows(type, x.data(), static_cast<std::size_t>(d), n, d, rows.data(), isa::scalar{});
  return rows;
}

std::vector<float> dequant_all(GgmlType type, const std::vector<std::uint8_t>& rows, std::size_t n, int d) {
  std::vector<float> x(n * static_cast<std::size_t>(d));
  kernels::ggml_dequantize_rows(type, rows.data(), n, d, x.data(), static_cast<std::size_t>(d), isa::scalar{});
  return x;
}

struct Shape {
  int d;
  std::size_t n;
  int rows;
};
const Shape kShapes[] = {{32, 1, 1},   {64, 7, 3},   {96, 33, 4},  {128, 64, 4}, {128, 17, 8},
                         {160, 5, 9},  {256, 64, 16}, {256, 3, 2},  {128, 64, 1}, {64, 40, 12},
                         {96, 64, 5},  {128, 1, 16}};

TYPED_TEST(GgmlKernels, DequantizeIsBitIdenticalToScalar) {
  KVTEST_REQUIRE_ISA(TypeParam);
  for (GgmlType type : kTypes)
    for (int d : {32, 64, 96, 128, 160, 256}) {
      const std::size_t n = 37;
      const auto rows = random_rows(type, n, d, 3 + static_cast<std::uint32_t>(d));
      std::vector<float> a(n * (d + 3), -1.0f), b(n * (d + 3), -1.0f);
      kernels::ggml_dequantize_rows(type, rows.data(), n, d, a.data(), d + 3, isa::scalar{});
      kernels::ggml_dequantize_rows(type, rows.data(), n, d, b.data(), d + 3, TypeParam{});
      ASSERT_EQ(a, b) << quant::formats::ggml_type_name(type) << " d " << d;
    }
}

TYPED_TEST(GgmlKernels, LogitsMatchExactWithinFp32SumBound) {
  KVTEST_REQUIRE_ISA(TypeParam);
  std::uint32_t seed = 1;
  for (GgmlType type : kTypes)
    for (const Shape& s : kShapes) {
      const auto rows = random_rows(type, s.n, s.d, seed++);
      const auto x = dequant_all(type, rows, s.n, s.d);
      std::mt19937 g(seed++);
      std::normal_distribution<float> nd(0.0f, 1.0f);
      std::vector<float> q(static_cast<std::size_t>(s.rows) * s.d);
      for (float& v : q) v = nd(g);
      const std::size_t ldl = s.n + 5;
      std::vector<float> ls(s.rows * ldl, 7.0f), lv(s.rows * ldl, 7.0f);
      kernels::ggml_logits(type, rows.data(), s.n, s.d, q.data(), s.rows, ls.data(), ldl, isa::scalar{});
      kernels::ggml_logits(type, rows.data(), s.n, s.d, q.data(), s.rows, lv.data(), ldl, TypeParam{});
      for (int r = 0; r < s.rows; ++r) {
        for (std::size_t t = 0; t < s.n; ++t) {
          double exact = 0, mag = 0;
          for (int c = 0; c < s.d; ++c) {
            exact += static_cast<double>(q[r * s.d + c]) * x[t * s.d + c];
            mag += std::fabs(static_cast<double>(q[r * s.d + c]) * x[t * s.d + c]);
          }
          const double bound = 1.01 * s.d * 0x1p-24 * mag + 1e-30;  // γ_d·Σ|q·x̂|
          ASSERT_LE(std::fabs(ls[r * ldl + t] - exact), bound) << "scalar " << r << " " << t;
          ASSERT_LE(std::fabs(lv[r * ldl + t] - exact), bound)
              << TypeParam::kName << " " << quant::formats::ggml_type_name(type) << " d " << s.d << " n " << s.n
              << " rows " << s.rows << " r " << r << " t " << t;
        }
        for (std::size_t t = s.n; t < ldl; ++t) ASSERT_EQ(lv[r * ldl + t], 7.0f);  // untouched
      }
    }
}

TYPED_TEST(GgmlKernels, AccumulateMatchesExactWithinFp32SumBound) {
  KVTEST_REQUIRE_ISA(TypeParam);
  std::uint32_t seed = 100;
  for (GgmlType type : kTypes)
    for (const Shape& s : kShapes) {
      const auto rows = random_rows(type, s.n, s.d, seed++);
      const auto x = dequant_all(type, rows, s.n, s.d);
      std::mt19937 g(seed++);
      std::uniform_real_distribution<float> ud(0.0f, 1.0f);
      const std::size_t ldp = s.n + 3;
      std::vector<float> p(s.rows * ldp);
      for (float& v : p) v = ud(g);
      std::vector<float> init(static_cast<std::size_t>(s.rows) * s.d);
      for (float& v : init) v = ud(g) - 0.5f;
      auto os = init, ov = init;
      kernels::ggml_accumulate(type, rows.data(), s.n, s.d, p.data(), ldp, s.rows, os.data(), isa::scalar{});
      kernels::ggml_accumulate(type, rows.data(), s.n, s.d, p.data(), ldp, s.rows, ov.data(), TypeParam{});
      for (int r = 0; r < s.rows; ++r)
        for (int c = 0; c < s.d; ++c) {
          double exact = init[r * s.d + c], mag = std::fabs(exact);
          for (std::size_t t = 0; t < s.n; ++t) {
            exact += static_cast<double>(p[r * ldp + t]) * x[t * s.d + c];
            mag += std::fabs(static_cast<double>(p[r * ldp + t]) * x[t * s.d + c]);
          }
          const double bound = 1.01 * (s.n + 1) * 0x1p-24 * mag + 1e-30;
          ASSERT_LE(std::fabs(os[r * s.d + c] - exact), bound) << "scalar";
          ASSERT_LE(std::fabs(ov[r * s.d + c] - exact), bound)
              << TypeParam::kName << " " << quant::formats::ggml_type_name(type) << " d " << s.d << " n " << s.n
              << " rows " << s.rows << " r " << r << " c " << c;
        }
    }
}

// The quantizer is shared by every ISA: quantize → dequantize → quantize is a fixed point for
// q8_0 (codes from amax/127 reproduce), and row bytes of consecutive rows never overlap.
TEST(GgmlKernelsScalar, RowsAreIndependentAndContiguous) {
  for (GgmlType type : kTypes) {
    const int d = 96;
    const auto all = random_rows(type, 9, d, 77);
    const std::size_t rb = quant::formats::ggml_row_bytes(type, d);
    EXPECT_EQ(rb, 3 * quant::formats::ggml_block_bytes(type));
    // Row 4 quantized alone gives the same bytes as row 4 of the batch.
    std::mt19937 g(77);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(9 * d);
    for (std::size_t t = 0; t < 9; ++t) {
      const float scale = t % 11 == 5 ? 0.0f : (t % 7 == 3 ? 30.0f : 1.0f);
      for (int c = 0; c < d; ++c) x[t * d + c] = nd(g) * scale * (c % 19 == 2 ? 6.0f : 1.0f);
    }
    std::vector<std::uint8_t> one(rb);
    kernels::ggml_quantize_rows(type, x.data() + 4 * d, d, 1, d, one.data(), isa::scalar{});
    EXPECT_TRUE(std::equal(one.begin(), one.end(), all.begin() + 4 * rb));
  }
}

}  // namespace
