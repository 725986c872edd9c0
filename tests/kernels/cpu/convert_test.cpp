// SPDX-License-Identifier: Apache-2.0
// Bulk fp16/bf16 conversion kernels: scalar against the independent IEEE oracle (exhaustive for
// 16-bit inputs, a dense strided sweep plus every rounding boundary for fp32 inputs), every SIMD
// level bit for bit against scalar, with tails and unaligned pointers.

#include "kvcompress/kernels/convert.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/isa_test_support.hpp"
#include "reference/float16_reference.hpp"

namespace {

using kvcompress::bfloat16;
using kvcompress::half;
namespace kernels = kvcompress::kernels;
namespace isa = kvcompress::isa;

float bits_to_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
std::uint32_t float_to_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

/// fp32 inputs: a strided sweep over all bit patterns, plus each binary16/bfloat16 rounding
/// boundary (halfway points ±1 ulp), specials and denormals.
std::vector<float> float_inputs() {
  std::vector<float> v;
  for (std::uint64_t u = 0; u < (1ull << 32); u += 65521) v.push_back(bits_to_float(static_cast<std::uint32_t>(u)));
  for (std::uint32_t h = 0; h < 0x7c00; ++h) {  // around every positive binary16 halfway point
    const double a = kvref::f16_value(static_cast<std::uint16_t>(h));
    const double b = kvref::f16_value(static_cast<std::uint16_t>(h + 1));
    const float mid = static_cast<float>((a + b) / 2);  // exact in fp32
    for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)}) {
      v.push_back(x);
      v.push_back(-x);
    }
  }
  for (std::uint32_t b = 0; b < 0x7f80; b += 7) {  // around bfloat16 halfway points
    const std::uint32_t mid = (b << 16) | 0x8000u;
    for (std::uint32_t u : {mid - 1, mid, mid + 1, mid + 0x10000u}) {
      v.push_back(bits_to_float(u));
      v.push_back(bits_to_float(u | 0x80000000u));
    }
  }
  const float specials[] = {0.0f, -0.0f, 65504.0f, -65504.0f, 65519.99f, 65520.0f, 1e-45f, -1e-45f,
                            1e-40f, 5.9604645e-08f, 2.9802322e-08f, 2.9802326e-08f,
                            std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min(),
                            bits_to_float(0x7fc00000u), bits_to_float(0x7f800001u), bits_to_float(0xffbfffffu),
                            bits_to_float(0x7fffffffu), bits_to_float(0x7f802000u)};
  v.insert(v.end(), std::begin(specials), std::end(specials));
  return v;
}

TEST(ConvertScalar, HalfToFloatExhaustiveMatchesIeee) {
  std::vector<half> src(65536);
  for (std::uint32_t i = 0; i < 65536; ++i) src[i].bits = static_cast<std::uint16_t>(i);
  std::vector<float> dst(65536);
  kernels::convert(src.data(), dst.data(), src.size(), isa::scalar{});
  for (std::uint32_t i = 0; i < 65536; ++i) {
    const double want = kvref::f16_value(static_cast<std::uint16_t>(i));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(dst[i])) << std::hex << i;
    } else {
      ASSERT_EQ(static_cast<double>(dst[i]), want) << std::hex << i;
      ASSERT_EQ(std::signbit(dst[i]), std::signbit(want)) << std::hex << i;
    }
  }
}

TEST(ConvertScalar, BfloatToFloatExhaustiveMatchesIeee) {
  std::vector<bfloat16> src(65536);
  for (std::uint32_t i = 0; i < 65536; ++i) src[i].bits = static_cast<std::uint16_t>(i);
  std::vector<float> dst(65536);
  kernels::convert(src.data(), dst.data(), src.size(), isa::scalar{});
  for (std::uint32_t i = 0; i < 65536; ++i) {
    const double want = kvref::bf16_value(static_cast<std::uint16_t>(i));
    if (std::isnan(want)) ASSERT_TRUE(std::isnan(dst[i]));
    else ASSERT_EQ(static_cast<double>(dst[i]), want) << std::hex << i;
  }
}

TEST(ConvertScalar, FloatToHalfAndBfloatRoundNearestEven) {
  const std::vector<float> in = float_inputs();
  std::vector<half> h(in.size());
  std::vector<bfloat16> b(in.size());
  kernels::convert(in.data(), h.data(), in.size(), isa::scalar{});
  kernels::convert(in.data(), b.data(), in.size(), isa::scalar{});
  for (std::size_t i = 0; i < in.size(); ++i) {
    const double x = in[i];
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(kvref::f16_value(h[i].bits))) << std::hex << float_to_bits(in[i]);
      EXPECT_TRUE(std::isnan(kvref::bf16_value(b[i].bits))) << std::hex << float_to_bits(in[i]);
      continue;
    }
    const double wh = kvref::round_to_f16(x), wb = kvref::round_to_bf16(x);
    ASSERT_EQ(kvref::f16_value(h[i].bits), wh) << std::hex << float_to_bits(in[i]);
    ASSERT_EQ(std::signbit(kvref::f16_value(h[i].bits)), std::signbit(x)) << std::hex << float_to_bits(in[i]);
    ASSERT_EQ(kvref::bf16_value(b[i].bits), wb) << std::hex << float_to_bits(in[i]);
  }
}

TEST(ConvertScalar, WorkedValues) {
  const float in[] = {1.0f, -2.0f, 65504.0f, 0.1f};
  half h[4];
  kernels::convert(in, h, 4, isa::scalar{});
  EXPECT_EQ(h[0].bits, 0x3c00);
  EXPECT_EQ(h[1].bits, 0xc000);
  EXPECT_EQ(h[2].bits, 0x7bff);
  EXPECT_EQ(h[3].bits, 0x2e66);  // 0.1 → 0.0999755859375
  bfloat16 b[4];
  kernels::convert(in, b, 4, isa::scalar{});
  EXPECT_EQ(b[0].bits, 0x3f80);
  EXPECT_EQ(b[3].bits, 0x3dcd);  // 0x3dcccccd rounds up
}

template <class Tag>
class ConvertIsa : public ::testing::Test {};
TYPED_TEST_SUITE(ConvertIsa, kvtest::IsaTags, kvtest::IsaName);

// Lengths with every tail and an offset (unaligned) start.
const std::size_t kLengths[] = {0, 1, 2, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 1000};

TYPED_TEST(ConvertIsa, HalfToFloatBitIdentical) {
  KVTEST_REQUIRE_ISA(TypeParam);
  std::vector<half> src(65536 + 3);
  for (std::uint32_t i = 0; i < 65536; ++i) src[i + 3].bits = static_cast<std::uint16_t>(i * 40503u);
  std::vector<float> got(src.size() + 1), want(src.size() + 1);
  for (std::size_t off : {0, 1, 3}) {
    const std::size_t n = 65536 + 3 - off;
    kernels::convert(src.data() + off, got.data() + 1, n, TypeParam{});
    kernels::convert(src.data() + off, want.data() + 1, n, isa::scalar{});
    ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0);
  }
  for (std::size_t n : kLengths) {
    std::vector<float> g(n + 2, -7.0f), w(n + 2, -7.0f);
    kernels::convert(src.data() + 1, g.data() + 1, n, TypeParam{});
    kernels::convert(src.data() + 1, w.data() + 1, n, isa::scalar{});
    ASSERT_EQ(std::memcmp(g.data(), w.data(), g.size() * 4), 0) << "n=" << n;
  }
}

TYPED_TEST(ConvertIsa, BfloatToFloatBitIdentical) {
  KVTEST_REQUIRE_ISA(TypeParam);
  std::vector<bfloat16> src(65536 + 1);
  for (std::uint32_t i = 0; i < 65536; ++i) src[i + 1].bits = static_cast<std::uint16_t>(i);
  for (std::size_t n : {std::size_t{65536}, std::size_t{1}, std::size_t{17}, std::size_t{33}}) {
    std::vector<float> g(n + 2, -7.0f), w(n + 2, -7.0f);
    kernels::convert(src.data() + 1, g.data() + 1, n, TypeParam{});
    kernels::convert(src.data() + 1, w.data() + 1, n, isa::scalar{});
    ASSERT_EQ(std::memcmp(g.data(), w.data(), g.size() * 4), 0) << "n=" << n;
  }
}

template <class Dst, class Tag>
void check_from_float(const std::vector<float>& in) {
  for (std::size_t off : {0, 1}) {
    const std::size_t n = in.size() - off;
    std::vector<Dst> g(n + 2), w(n + 2);
    for (std::size_t i = 0; i < n + 2; ++i) g[i].bits = w[i].bits = 0x5a5a;
    kernels::convert(in.data() + off, g.data() + 1, n, Tag{});
    kernels::convert(in.data() + off, w.data() + 1, n, isa::scalar{});
    for (std::size_t i = 0; i < n + 2; ++i)
      ASSERT_EQ(g[i].bits, w[i].bits) << "i=" << i << " x=" << std::hex
                                      << (i >= 1 && i <= n ? float_to_bits(in[off + i - 1]) : 0u);
  }
  for (std::size_t n : kLengths) {
    std::vector<Dst> g(n + 2), w(n + 2);
    for (std::size_t i = 0; i < n + 2; ++i) g[i].bits = w[i].bits = 0x5a5a;
    kernels::convert(in.data() + 3, g.data() + 1, n, Tag{});
    kernels::convert(in.data() + 3, w.data() + 1, n, isa::scalar{});
    for (std::size_t i = 0; i < n + 2; ++i) ASSERT_EQ(g[i].bits, w[i].bits) << "n=" << n << " i=" << i;
  }
}

TYPED_TEST(ConvertIsa, FloatToHalfBitIdentical) {
  KVTEST_REQUIRE_ISA(TypeParam);
  check_from_float<half, TypeParam>(float_inputs());
}

TYPED_TEST(ConvertIsa, FloatToBfloatBitIdentical) {
  KVTEST_REQUIRE_ISA(TypeParam);
  check_from_float<bfloat16, TypeParam>(float_inputs());
}

TYPED_TEST(ConvertIsa, FloatCopy) {
  KVTEST_REQUIRE_ISA(TypeParam);
  const std::vector<float> in = float_inputs();
  for (std::size_t n : kLengths) {
    std::vector<float> g(n + 2, -7.0f);
    kernels::convert(in.data() + 1, g.data() + 1, n, TypeParam{});
    ASSERT_EQ(std::memcmp(g.data() + 1, in.data() + 1, n * 4), 0);
    ASSERT_EQ(g[0], -7.0f);
    ASSERT_EQ(g[n + 1], -7.0f);
  }
}

}  // namespace
