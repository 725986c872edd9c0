// SPDX-License-Identifier: Apache-2.0
// BB-10 (quantization.md §0): outlier extraction (top-k per side, thresholds) and the TokenSparse
// store — row lookup across token blocks, exact reconstruction of fp16 inputs, erase, the exact
// memory_bytes()/bpe accounting of the [rec] layout, argument checks.

#include "support/expect_invalid.hpp"
#include "kvcompress/policies/quant/common/token_sparse.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kvcompress/policies/quant/common/outliers.hpp"

namespace {

namespace qc = kvcompress::quant::common;

TEST(Outliers, ExtremesPerSide) {
  const float x[6] = {5, -3, 0, 9, -7, 1};
  std::uint16_t idx[6];
  ASSERT_EQ(qc::select_extremes(x, 6, 1, idx), 2u);
  EXPECT_EQ(idx[0], 3);
  EXPECT_EQ(idx[1], 4);
  ASSERT_EQ(qc::select_extremes(x, 6, 2, idx), 4u);
  const std::uint16_t two[4] = {0, 1, 3, 4};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(idx[i], two[i]);
  EXPECT_EQ(qc::select_extremes(x, 6, 0, idx), 0u);
  EXPECT_EQ(qc::select_extremes(x, 6, 5, idx), 6u);  // 2·per_side ≥ n: everything
}

// Equal values: the largest side takes the lowest indices, the smallest side the lowest of the
// rest, so the count is always min(n, 2·per_side).
TEST(Outliers, ExtremesWithTiesFillTheBuffer) {
  const float x[5] = {1, 1, 1, 1, 1};
  std::uint16_t idx[5];
  ASSERT_EQ(qc::select_extremes(x, 5, 2, idx), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(idx[i], i);
}

// Against a brute-force rank count on distinct values.
TEST(Outliers, ExtremesMatchRanks) {
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> u(-5, 5);
  std::vector<float> x(128);
  for (float& v : x) v = u(rng);
  std::vector<std::uint16_t> idx(128);
  const std::size_t k = 3;
  ASSERT_EQ(qc::select_extremes(x.data(), 128, k, idx.data()), 2 * k);
  for (std::size_t i = 0; i < 128; ++i) {
    std::size_t above = 0, below = 0;
    for (float v : x) {
      above += v > x[i];
      below += v < x[i];
    }
    const bool expect = above < k || below < k;
    const bool got = std::find(idx.begin(), idx.begin() + 2 * k, i) != idx.begin() + 2 * k;
    EXPECT_EQ(got, expect) << i;
  }
}

TEST(Outliers, ThresholdRules) {
  const float x[5] = {-1.0f, 0.8f, 2.0f, 3.2f, 9.0f};
  std::uint16_t idx[5];
  ASSERT_EQ(qc::select_beyond(x, 5, 0.8f, 3.2f, qc::ThresholdRule::kStrict, idx), 2u);
  EXPECT_EQ(idx[0], 0);
  EXPECT_EQ(idx[1], 4);
  ASSERT_EQ(qc::select_beyond(x, 5, 0.8f, 3.2f, qc::ThresholdRule::kInclusive, idx), 4u);
  EXPECT_EQ(idx[1], 1);
  EXPECT_EQ(idx[2], 3);
}

// Rows of different lengths across blocks of B = 4 tokens: lookup, exact scatter, erase.
TEST(TokenSparse, RowsBlocksScatterErase) {
  const std::size_t d = 16;
  qc::TokenSparse s(d, 4);
  EXPECT_EQ(s.count_bytes(), 1u);
  std::vector<std::vector<float>> rows;
  std::vector<std::vector<std::uint16_t>> sel;
  std::mt19937 rng(2);
  for (std::size_t t = 0; t < 11; ++t) {
    std::vector<float> row(d);
    for (std::size_t c = 0; c < d; ++c) row[c] = static_cast<float>(static_cast<int>(rng() % 2001) - 1000) / 64.0f;
    std::vector<std::uint16_t> idx;
    for (std::size_t c = 0; c < d; ++c)
      if ((t * 7 + c * 3) % 5 == 0 && idx.size() < t % 4) idx.push_back(static_cast<std::uint16_t>(c));
    s.append_token(row.data(), idx.data(), idx.size());
    rows.push_back(row);
    sel.push_back(idx);
  }
  auto check = [&] {
    ASSERT_EQ(s.tokens(), rows.size());
    std::size_t begin = 0;
    for (std::size_t t = 0; t < rows.size(); ++t) {
      ASSERT_EQ(s.token_count(t), sel[t].size()) << t;
      ASSERT_EQ(s.token_begin(t), begin) << t;
      for (std::size_t k = 0; k < sel[t].size(); ++k) {
        EXPECT_EQ(s.index(begin + k), sel[t][k]);
        EXPECT_EQ(s.value(begin + k), rows[t][sel[t][k]]);  // multiples of 1/64: fp16-exact
      }
      std::vector<float> dense(d, -12345.0f);
      s.scatter(t, dense.data());
      for (std::size_t c = 0; c < d; ++c) {
        const bool out = std::find(sel[t].begin(), sel[t].end(), c) != sel[t].end();
        EXPECT_EQ(dense[c], out ? rows[t][c] : -12345.0f) << t << " " << c;
      }
      begin += sel[t].size();
    }
    EXPECT_EQ(s.nnz(), begin);
  };
  check();
  s.erase_token(5);
  rows.erase(rows.begin() + 5);
  sel.erase(sel.begin() + 5);
  check();
  s.erase_token(0);
  rows.erase(rows.begin());
  sel.erase(sel.begin());
  check();
}

// memory_bytes() = T·count_bytes + 4·⌈T/B⌉ + 4·nnz. d = 128, B = 16, T = 64, 1 outlier per
// token: 8/128 + 32/(16·128) + 32·64/(64·128) = 0.0625 + 0.015625 + 0.25 bits per element.
TEST(TokenSparse, MemoryBytesAndBpe) {
  const std::size_t d = 128, B = 16, T = 64;
  qc::TokenSparse s(d, B);
  std::vector<float> row(d, 0.5f);
  const std::uint16_t one = 7;
  for (std::size_t t = 0; t < T; ++t) s.append_token(row.data(), &one, 1);
  EXPECT_EQ(s.memory_bytes(), T * 1 + 4 * (T / B) + 4 * T);
  EXPECT_EQ(8.0 * s.memory_bytes() / (T * d), 0.0625 + 0.015625 + 0.25);
  const std::uint16_t none = 0;
  s.append_token(row.data(), &none, 0);  // token 65 opens a fifth block
  EXPECT_EQ(s.memory_bytes(), (T + 1) * 1 + 4 * 5 + 4 * T);
  // head_dim > 255: uint16 counts.
  qc::TokenSparse wide(300, 8);
  std::vector<float> wrow(300, 1.0f);
  const std::uint16_t idx[2] = {3, 299};
  for (int t = 0; t < 9; ++t) wide.append_token(wrow.data(), idx, 2);
  EXPECT_EQ(wide.count_bytes(), 2u);
  EXPECT_EQ(wide.memory_bytes(), 9u * 2 + 4 * 2 + 4 * 18);
  EXPECT_EQ(wide.token_begin(8), 16u);
  wide.clear();
  EXPECT_EQ(wide.memory_bytes(), 0u);
}

TEST(TokenSparse, RejectsBadArguments) {
  kvtest::expect_invalid_argument([] { qc::TokenSparse(0, 4); }, "head_dim");
  kvtest::expect_invalid_argument([] { qc::TokenSparse(70000, 4); }, "head_dim");
  kvtest::expect_invalid_argument([] { qc::TokenSparse(8, 0); }, "tokens_per_block");
  qc::TokenSparse s(8, 4);
  float row[8] = {0, 1, 2, 3, 4, 5, 6, NAN};
  const std::uint16_t unsorted[2] = {3, 1};
  kvtest::expect_invalid_argument([&] { s.append_token(row, unsorted, 2); }, "idx[1]");
  const std::uint16_t big[1] = {8};
  kvtest::expect_invalid_argument([&] { s.append_token(row, big, 1); }, "idx[0]");
  const std::uint16_t nan_pos[1] = {7};
  kvtest::expect_invalid_argument([&] { s.append_token(row, nan_pos, 1); }, "row[idx]");
  const std::uint16_t all[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
  kvtest::expect_invalid_argument([&] { s.append_token(row, all, 9); }, "count");
  EXPECT_EQ(s.tokens(), 0u);  // rejected appends leave the store unchanged
  EXPECT_EQ(s.memory_bytes(), 0u);
  kvtest::expect_invalid_argument([&] { s.token_count(0); }, "t");
  std::uint16_t idx[4];
  kvtest::expect_invalid_argument([&] { qc::select_extremes(row, 8, 1, idx); }, "x[7]");
  kvtest::expect_invalid_argument([&] { qc::select_beyond(row, 7, 2.0f, 1.0f, qc::ThresholdRule::kStrict, idx); }, "t_hi");
  kvtest::expect_invalid_argument([&] { qc::select_beyond(row, 0, 0.0f, 1.0f, qc::ThresholdRule::kStrict, idx); }, "n");
}

}  // namespace
