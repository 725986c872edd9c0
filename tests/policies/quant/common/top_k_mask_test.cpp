// SPDX-License-Identifier: Apache-2.0
// Deterministic top-k masks (policies/quant/common/top_k_mask.hpp) against a brute-force
// ranking (stable sort by score descending, index ascending), with many ties.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "kvcompress/policies/quant/common/top_k_mask.hpp"

namespace {

namespace qc = kvcompress::quant::common;

std::vector<std::uint8_t> brute(const std::vector<float>& s, std::size_t k) {
  std::vector<std::size_t> order(s.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return s[a] > s[b]; });
  std::vector<std::uint8_t> m(s.size(), 0);
  for (std::size_t i = 0; i < k; ++i) m[order[i]] = 1;
  return m;
}

TEST(TopKMask, MatchesBruteForceWithTies) {
  std::mt19937 g(5);
  for (int trial = 0; trial < 200; ++trial) {
    const std::size_t n = 1 + g() % 300;
    std::vector<float> s(n);
    for (auto& x : s) x = static_cast<float>(g() % 7);  // heavy ties
    const std::size_t k = g() % (n + 1);
    std::vector<std::uint8_t> mask(n);
    std::vector<std::uint32_t> idx(n);
    qc::top_k_mask(s.data(), n, k, mask.data(), idx.data());
    EXPECT_EQ(mask, brute(s, k)) << "n=" << n << " k=" << k;
  }
}

TEST(TopKMask, RangeChannelsPickLargestRangesLowerIndexOnTies) {
  // 4 tokens × 6 channels; ranges = [2, 5, 5, 1, 5, 0] → top 2 = channels 1, 2.
  const float x[4][6] = {{0, 0, 1, 0, -1, 3}, {2, 5, 6, 1, 4, 3}, {1, 1, 2, 0.5f, 0, 3}, {0, 2, 3, 1, 1, 3}};
  std::uint8_t mask[6];
  float range[6];
  std::uint32_t idx[6];
  qc::select_range_channels(&x[0][0], 4, 6, 6, 2, mask, range, idx);
  const std::uint8_t want[6] = {0, 1, 1, 0, 0, 0};
  for (int c = 0; c < 6; ++c) EXPECT_EQ(mask[c], want[c]) << c;
  qc::select_range_channels(&x[0][0], 4, 6, 6, 3, mask, range, idx);
  EXPECT_EQ(mask[4], 1);
  EXPECT_EQ(std::count(mask, mask + 6, 1), 3);
}

TEST(TopKMask, RejectsKAboveN) {
  float s[2] = {1, 2};
  std::uint8_t m[2];
  std::uint32_t i[2];
  EXPECT_THROW(qc::top_k_mask(s, 2, 3, m, i), kvcompress::InvalidArgument);
}

}  // namespace
