// SPDX-License-Identifier: Apache-2.0
// CQ kernels (kernels/cq.hpp) on every compiled ISA against the scalar reference on random
// shapes with tails: the centroid table and the value gather within the fp32 reordering bound,
// table logits bit-identical for equal tables (same group order), scatter and encode identical;
// plus the scalar kernels against double sums.

#include "kvcompress/kernels/cq.hpp"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cpu/isa_test_support.hpp"

namespace {

namespace kernels = kvcompress::kernels;
namespace isa = kvcompress::isa;

template <class Tag>
class CqKernels : public ::testing::Test {};
TYPED_TEST_SUITE(CqKernels, kvtest::IsaTags, kvtest::IsaName);

struct Shape {
  std::size_t d;
  int c;
  int bits;
};
const Shape kShapes[] = {{64, 8, 8}, {128, 4, 8}, {96, 2, 8}, {64, 8, 10}, {80, 4, 6}, {64, 4, 3}, {32, 2, 2}};

template <class Index>
std::vector<Index> random_idx(std::size_t n, std::size_t ncent, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<Index> v(n);
  for (auto& x : v) x = static_cast<Index>(rng() % ncent);
  return v;
}

template <class Tag, class Index>
void check_shape(const Shape& s, std::uint32_t seed) {
  const std::size_t K = std::size_t{1} << s.bits, G = s.d / s.c;
  const auto cbt = kvtest::random_floats(G * s.c * K, -1.0f, 1.0f, seed);
  const auto q = kvtest::random_floats(s.d, -1.0f, 1.0f, seed + 1);
  // centroid table
  std::vector<float> t0(G * K), t1(G * K);
  kernels::cq_centroid_table(q.data(), s.d, s.c, cbt.data(), K, t0.data(), isa::scalar{});
  kernels::cq_centroid_table(q.data(), s.d, s.c, cbt.data(), K, t1.data(), Tag{});
  for (std::size_t g = 0; g < G; ++g)
    for (std::size_t k = 0; k < K; ++k) {
      double ref = 0, a = 0;
      for (int t = 0; t < s.c; ++t) {
        ref += double(q[g * s.c + t]) * cbt[(g * s.c + t) * K + k];
        a += std::fabs(double(q[g * s.c + t]) * cbt[(g * s.c + t) * K + k]);
      }
      EXPECT_NEAR(t0[g * K + k], ref, kvtest::float_sum_bound(s.c, a));
      EXPECT_NEAR(t1[g * K + k], t0[g * K + k], kvtest::float_sum_bound(s.c, a));
    }
  // table logits, several n with tails (stride = block of 128)
  for (std::size_t n : {1u, 7u, 8u, 15u, 16u, 17u, 33u, 128u}) {
    const std::size_t stride = 128;
    const auto idx = random_idx<Index>(G * stride, K, seed + static_cast<std::uint32_t>(n));
    std::vector<float> l0(n), l1(n);
    kernels::cq_table_logits(idx.data(), stride, n, G, t0.data(), K, l0.data(), isa::scalar{});
    kernels::cq_table_logits(idx.data(), stride, n, G, t0.data(), K, l1.data(), Tag{});
    for (std::size_t j = 0; j < n; ++j) {
      EXPECT_EQ(l1[j], l0[j]) << "n " << n << " j " << j;
      double ref = 0;
      for (std::size_t g = 0; g < G; ++g) ref += t0[g * K + idx[g * stride + j]];
      EXPECT_NEAR(l0[j], ref, kvtest::float_sum_bound(G, G * 1.0 * s.c));
    }
    // probability scatter + gather
    const auto p = kvtest::random_floats(n, 0.0f, 1.0f, seed + 99);
    std::vector<float> ps0(G * K, 0.0f), ps1(G * K, 0.0f);
    kernels::cq_prob_scatter(idx.data(), stride, n, G, p.data(), ps0.data(), K, isa::scalar{});
    kernels::cq_prob_scatter(idx.data(), stride, n, G, p.data(), ps1.data(), K, Tag{});
    EXPECT_EQ(ps0, ps1);
    std::vector<float> o0(s.d, 0.5f), o1(s.d, 0.5f);
    kernels::cq_prob_gather(ps0.data(), s.d, s.c, cbt.data(), K, o0.data(), isa::scalar{});
    kernels::cq_prob_gather(ps0.data(), s.d, s.c, cbt.data(), K, o1.data(), Tag{});
    for (std::size_t g = 0; g < G; ++g)
      for (int t = 0; t < s.c; ++t) {
        double ref = 0.5, a = 0.5;
        for (std::size_t j = 0; j < n; ++j) {
          ref += double(p[j]) * cbt[(g * s.c + t) * K + idx[g * stride + j]];
          a += std::fabs(double(p[j]) * cbt[(g * s.c + t) * K + idx[g * stride + j]]);
        }
        const std::size_t ch = g * s.c + t;
        EXPECT_NEAR(o0[ch], ref, kvtest::float_sum_bound(n + K, a));
        EXPECT_NEAR(o1[ch], o0[ch], 2 * kvtest::float_sum_bound(n + K, a));
      }
  }
  // encode: same indices (natural layout = transpose of cbt)
  std::vector<float> cb(G * K * s.c);
  for (std::size_t g = 0; g < G; ++g)
    for (std::size_t k = 0; k < K; ++k)
      for (int t = 0; t < s.c; ++t) cb[(g * K + k) * s.c + t] = cbt[(g * s.c + t) * K + k];
  const auto x = kvtest::random_floats(s.d, -1.0f, 1.0f, seed + 5);
  std::vector<Index> e0(G), e1(G);
  kernels::cq_encode(x.data(), s.d, s.c, cb.data(), K, e0.data(), 1, isa::scalar{});
  kernels::cq_encode(x.data(), s.d, s.c, cb.data(), K, e1.data(), 1, Tag{});
  EXPECT_EQ(e0, e1);
}

TYPED_TEST(CqKernels, MatchScalarOnRandomShapes) {
  KVTEST_REQUIRE_ISA(TypeParam);
  std::uint32_t seed = 1;
  for (const Shape& s : kShapes) {
    if (s.bits <= 8) check_shape<TypeParam, std::uint8_t>(s, seed);
    else check_shape<TypeParam, std::uint16_t>(s, seed);
    seed += 10;
  }
}

}  // namespace
