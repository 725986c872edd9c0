// SPDX-License-Identifier: Apache-2.0
// VidKV code-plane kernels (kernels/vidkv.hpp) on every compiled ISA against an independent
// double-precision reference that decodes the P-KIVI token planes itself; 1- and 2-bit planes,
// plane counts with tails, 1..16 rows.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "isa_test_support.hpp"
#include "kvcompress/kernels/vidkv.hpp"

namespace {

namespace kv = kvcompress;

template <class Tag>
class VidKVKernels : public ::testing::Test {};
TYPED_TEST_SUITE(VidKVKernels, kvtest::IsaTags, kvtest::IsaName);

int ref_code(const std::vector<std::uint32_t>& w, int bits, int plane, int t) {
  if (bits == 1) return static_cast<int>((w[static_cast<std::size_t>(plane)] >> t) & 1u);
  return static_cast<int>((w[static_cast<std::size_t>(2 * plane + t / 16)] >> (2 * (t % 16))) & 3u);
}

TYPED_TEST(VidKVKernels, PlaneLogitsMatchReference) {
  KVTEST_REQUIRE_ISA(TypeParam);
  std::uint32_t seed = 1;
  for (int bits : {1, 2})
    for (int planes : {1, 7, 64, 128, 256})
      for (int rows : {1, 2, 3, 16}) {
        std::mt19937 gen(seed++);
        std::vector<std::uint32_t> words(static_cast<std::size_t>(planes * bits));
        for (auto& x : words) x = gen();
        const std::size_t ldw = static_cast<std::size_t>(planes) + 3, ldl = 40;
        const auto w = kvtest::random_floats(rows * ldw, -1.0f, 1.0f, seed++);
        const auto init = kvtest::random_floats(rows * ldl, -1.0f, 1.0f, seed++);
        std::vector<float> out = init;
        kv::kernels::vidkv_plane_logits(words.data(), bits, planes, w.data(), ldw, rows, out.data(), ldl, TypeParam{});
        for (int r = 0; r < rows; ++r) {
          for (int t = 0; t < 32; ++t) {
            double ref = init[r * ldl + t], mag = std::fabs(ref);
            for (int p = 0; p < planes; ++p) {
              ref += static_cast<double>(w[r * ldw + p]) * ref_code(words, bits, p, t);
              mag += std::fabs(w[r * ldw + p]) * 3.0;
            }
            EXPECT_NEAR(out[r * ldl + t], ref, kvtest::float_sum_bound(planes + 1, mag))
                << TypeParam::kName << " bits=" << bits << " planes=" << planes << " r=" << r << " t=" << t;
          }
          for (std::size_t t = 32; t < ldl; ++t) EXPECT_EQ(out[r * ldl + t], init[r * ldl + t]) << "wrote past 32";
        }
      }
}

TYPED_TEST(VidKVKernels, PlaneDotMatchesReference) {
  KVTEST_REQUIRE_ISA(TypeParam);
  std::uint32_t seed = 500;
  for (int bits : {1, 2})
    for (int planes : {1, 9, 80, 128})
      for (int rows : {1, 4, 16}) {
        std::mt19937 gen(seed++);
        std::vector<std::uint32_t> words(static_cast<std::size_t>(planes * bits));
        for (auto& x : words) x = gen();
        const std::size_t ldp = 37, ldo = static_cast<std::size_t>(planes) + 1;
        const auto p = kvtest::random_floats(rows * ldp, 0.0f, 1.0f, seed++);
        std::vector<float> out(rows * ldo, -9.0f);
        kv::kernels::vidkv_plane_dot(words.data(), bits, planes, p.data(), ldp, rows, out.data(), ldo, TypeParam{});
        for (int r = 0; r < rows; ++r)
          for (int q = 0; q < planes; ++q) {
            double ref = 0, mag = 0;
            for (int t = 0; t < 32; ++t) {
              ref += static_cast<double>(p[r * ldp + t]) * ref_code(words, bits, q, t);
              mag += std::fabs(p[r * ldp + t]) * 3.0;
            }
            EXPECT_NEAR(out[r * ldo + q], ref, kvtest::float_sum_bound(32, mag)) << TypeParam::kName;
          }
      }
}

}  // namespace
