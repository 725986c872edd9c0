// SPDX-License-Identifier: Apache-2.0
// Dense decode-attention kernels (float and half caches): every ISA against an independent
// double-precision reference and against scalar, over shapes with tails (n = 1, n not a multiple
// of the vector width), d ∈ {64, 80, 96, 128, 256} and a few odd d, rows ∈ {1,3,4,8,16}, padded
// leading dimensions and unaligned base pointers.

#include "kvcompress/kernels/dense_attention.hpp"

#include <cmath>
#include <sstream>
#include <vector>

#include "kernels/cpu/isa_test_support.hpp"
#include "reference/float16_reference.hpp"

namespace {

using kvcompress::half;
namespace kernels = kvcompress::kernels;
namespace isa = kvcompress::isa;

struct Shape {
  std::size_t n;
  int d;
  int rows;
};

std::vector<Shape> shapes() {
  std::vector<Shape> s;
  for (int d : {64, 80, 96, 128, 256})
    for (int rows : {1, 3, 4, 8, 16})
      for (std::size_t n : {std::size_t{1}, std::size_t{17}, std::size_t{100}}) s.push_back({n, d, rows});
  for (int d : {1, 5, 33, 130}) s.push_back({37, d, 5});
  s.push_back({1000, 128, 4});
  return s;
}

std::string describe(const Shape& s) {
  std::ostringstream os;
  os << "n=" << s.n << " d=" << s.d << " rows=" << s.rows;
  return os.str();
}

template <class T>
double value(T x) {
  if constexpr (std::is_same_v<T, float>) return x;
  else return kvref::f16_value(x.bits);
}

/// Cache of n rows at stride ld = d + pad, one element of offset so rows are unaligned.
template <class T>
struct Cache {
  std::vector<T> storage;
  std::size_t ld;
  const T* data() const { return storage.data() + 1; }
};

template <class T>
Cache<T> make_cache(std::size_t n, int d, std::uint32_t seed) {
  Cache<T> c;
  c.ld = static_cast<std::size_t>(d) + 3;
  const std::size_t total = n * c.ld + 1;
  c.storage.resize(total);
  if constexpr (std::is_same_v<T, float>) {
    const std::vector<float> raw = kvtest::random_floats(total, -2.0f, 2.0f, seed);
    for (std::size_t i = 0; i < total; ++i) c.storage[i] = raw[i];
  } else {
    // Random binary16 bit patterns with the top exponent bit clear: finite, |x| < 2, including
    // zeros and denormals.
    std::mt19937 gen(seed);
    for (std::size_t i = 0; i < total; ++i) c.storage[i] = half{static_cast<std::uint16_t>(gen() & 0xbfffu)};
  }
  return c;
}

template <class Tag, class T>
void run_logits(const Shape& s) {
  SCOPED_TRACE(describe(s));
  const Cache<T> k = make_cache<T>(s.n, s.d, static_cast<std::uint32_t>(s.n * 7 + s.d + s.rows));
  std::vector<float> qbuf = kvtest::random_floats(static_cast<std::size_t>(s.rows) * s.d + 1, -1.0f, 1.0f, 99);
  const float* q = qbuf.data() + 1;  // unaligned
  const std::size_t ldl = s.n + 5;
  std::vector<float> got(static_cast<std::size_t>(s.rows) * ldl + 1, -123.0f), ref_s = got;
  kernels::dense_logits(k.data(), k.ld, s.n, s.d, q, s.rows, got.data() + 1, ldl, Tag{});
  kernels::dense_logits(k.data(), k.ld, s.n, s.d, q, s.rows, ref_s.data() + 1, ldl, isa::scalar{});
  for (int r = 0; r < s.rows; ++r)
    for (std::size_t t = 0; t < ldl; ++t) {
      const std::size_t i = 1 + r * ldl + t;
      if (t >= s.n) {
        ASSERT_EQ(got[i], -123.0f) << "wrote past n";
        continue;
      }
      double exact = 0, abs_sum = 0;
      for (int c = 0; c < s.d; ++c) {
        const double prod = static_cast<double>(q[r * s.d + c]) * value(k.data()[t * k.ld + c]);
        exact += prod;
        abs_sum += std::fabs(prod);
      }
      const double bound = kvtest::float_sum_bound(s.d, abs_sum) / 2;  // one fp32 evaluation
      ASSERT_LE(std::fabs(got[i] - exact), bound) << "r=" << r << " t=" << t;
      ASSERT_LE(std::fabs(got[i] - ref_s[i]), 2 * bound) << "vs scalar r=" << r << " t=" << t;
    }
  EXPECT_EQ(got[0], -123.0f);
}

template <class Tag, class T>
void run_accumulate(const Shape& s) {
  SCOPED_TRACE(describe(s));
  const Cache<T> v = make_cache<T>(s.n, s.d, static_cast<std::uint32_t>(s.n * 3 + s.d * 5 + s.rows));
  const std::size_t ldp = s.n + 2;
  std::vector<float> pbuf = kvtest::random_floats(static_cast<std::size_t>(s.rows) * ldp + 1, 0.0f, 1.0f, 7);
  const float* p = pbuf.data() + 1;
  std::vector<float> init = kvtest::random_floats(static_cast<std::size_t>(s.rows) * s.d + 2, -1.0f, 1.0f, 8);
  std::vector<float> got = init, ref_s = init;
  kernels::dense_accumulate(v.data(), v.ld, s.n, s.d, p, ldp, s.rows, got.data() + 1, Tag{});
  kernels::dense_accumulate(v.data(), v.ld, s.n, s.d, p, ldp, s.rows, ref_s.data() + 1, isa::scalar{});
  EXPECT_EQ(got[0], init[0]);
  EXPECT_EQ(got.back(), init.back());
  for (int r = 0; r < s.rows; ++r)
    for (int c = 0; c < s.d; ++c) {
      const std::size_t i = 1 + static_cast<std::size_t>(r) * s.d + c;
      double exact = init[i], abs_sum = std::fabs(init[i]);
      for (std::size_t t = 0; t < s.n; ++t) {
        const double prod = static_cast<double>(p[r * ldp + t]) * value(v.data()[t * v.ld + c]);
        exact += prod;
        abs_sum += std::fabs(prod);
      }
      const double bound = kvtest::float_sum_bound(s.n + 1, abs_sum) / 2;
      ASSERT_LE(std::fabs(got[i] - exact), bound) << "r=" << r << " c=" << c;
      ASSERT_LE(std::fabs(got[i] - ref_s[i]), 2 * bound) << "vs scalar r=" << r << " c=" << c;
    }
}

template <class Tag>
class DenseAttentionIsa : public ::testing::Test {};
TYPED_TEST_SUITE(DenseAttentionIsa, kvtest::IsaTags, kvtest::IsaName);

TYPED_TEST(DenseAttentionIsa, LogitsFloat) {
  KVTEST_REQUIRE_ISA(TypeParam);
  for (const Shape& s : shapes()) run_logits<TypeParam, float>(s);
}
TYPED_TEST(DenseAttentionIsa, LogitsHalf) {
  KVTEST_REQUIRE_ISA(TypeParam);
  for (const Shape& s : shapes()) run_logits<TypeParam, half>(s);
}
TYPED_TEST(DenseAttentionIsa, AccumulateFloat) {
  KVTEST_REQUIRE_ISA(TypeParam);
  for (const Shape& s : shapes()) run_accumulate<TypeParam, float>(s);
}
TYPED_TEST(DenseAttentionIsa, AccumulateHalf) {
  KVTEST_REQUIRE_ISA(TypeParam);
  for (const Shape& s : shapes()) run_accumulate<TypeParam, half>(s);
}

TYPED_TEST(DenseAttentionIsa, ExtremeHalfValues) {
  KVTEST_REQUIRE_ISA(TypeParam);
  // ±65504 and denormals in the cache; zero queries give exactly zero.
  const int d = 96;
  const std::size_t n = 19;
  std::vector<half> k(n * d);
  for (std::size_t i = 0; i < k.size(); ++i)
    k[i].bits = static_cast<std::uint16_t>(i % 3 == 0 ? 0x7bff : (i % 3 == 1 ? 0xfbff : 0x0001 + (i & 0x3ff)));
  std::vector<float> q(2 * d, 0.0f), logits(2 * n, 5.0f);
  kernels::dense_logits(k.data(), d, n, d, q.data(), 2, logits.data(), n, TypeParam{});
  for (float x : logits) EXPECT_EQ(x, 0.0f);
  q[3] = 1.0f;  // picks channel 3 of every row
  q[d + 4] = -0.5f;
  kernels::dense_logits(k.data(), d, n, d, q.data(), 2, logits.data(), n, TypeParam{});
  for (std::size_t t = 0; t < n; ++t) {
    EXPECT_EQ(logits[t], kvref::f16_value(k[t * d + 3].bits));
    EXPECT_EQ(logits[n + t], -0.5 * kvref::f16_value(k[t * d + 4].bits));
  }
  std::vector<float> p(n, 0.0f), out(d, 1.0f);
  p[n - 1] = 1.0f;
  kernels::dense_accumulate(k.data(), d, n, d, p.data(), n, 1, out.data(), TypeParam{});
  for (int c = 0; c < d; ++c) EXPECT_EQ(out[c], static_cast<float>(1.0 + kvref::f16_value(k[(n - 1) * d + c].bits)));
}

}  // namespace
