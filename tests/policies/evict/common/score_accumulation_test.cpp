// SPDX-License-Identifier: Apache-2.0
// Score accumulation (eviction spec §1.2): hand-worked sums, means and the ZipVL causal-count
// mean, query-set choices, per-KV-head vs layer-shared head reduction, H2O decode accumulation,
// and §15.8 — with identical query heads inside each group, the GQA score equals the MHA score.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kvcompress/policies/evict/common/attention_provider.hpp"
#include "kvcompress/policies/evict/common/score_accumulation.hpp"

namespace {

using namespace kvcompress::evict::common;

// Two query heads (one KV head), three causal rows at positions 0..2 over keys 0..2.
//   head 0: [1, 0, 0] [.5, .5, 0] [.2, .3, .5]
//   head 1: [1, 0, 0] [.1, .9, 0] [.4, .4, .2]
const std::vector<float> kP = {1, 0, 0, .5f, .5f, 0, .2f, .3f, .5f, 1, 0, 0, .1f, .9f, 0, .4f, .4f, .2f};
const std::vector<std::int32_t> kPos = {0, 1, 2};
AttentionRows rows() { return {kP.data(), kPos.data(), kPos.data(), 2, 3, 3}; }

TEST(ScoreAccumulation, SumMeanAndCausalMeanByHand) {
  std::vector<float> s(3);
  column_scores(rows(), QuerySet::all(3), 1, RowReduce::kSum, HeadReduce::kPerKvHead, s.data());
  // head 0 sums [1.7, .8, .5], head 1 [1.5, 1.3, .2] → mean over the group [1.6, 1.05, .35].
  EXPECT_NEAR(s[0], 1.6, 1e-6);
  EXPECT_NEAR(s[1], 1.05, 1e-6);
  EXPECT_NEAR(s[2], 0.35, 1e-6);
  column_scores(rows(), QuerySet::all(3), 1, RowReduce::kMean, HeadReduce::kPerKvHead, s.data());
  EXPECT_NEAR(s[0], 1.6 / 3, 1e-6);
  EXPECT_NEAR(s[2], 0.35 / 3, 1e-6);
  // Key 0 is seen by 3 rows, key 1 by 2, key 2 by 1 (ZipVL Eq. 7).
  column_scores(rows(), QuerySet::all(3), 1, RowReduce::kCausalMean, HeadReduce::kPerKvHead, s.data());
  EXPECT_NEAR(s[0], 1.6 / 3, 1e-6);
  EXPECT_NEAR(s[1], 1.05 / 2, 1e-6);
  EXPECT_NEAR(s[2], 0.35, 1e-6);  // the last key's score = its single visible value
}

TEST(ScoreAccumulation, QuerySetsSelectRows) {
  std::vector<float> s(6);
  // Per KV head with Hkv = Hq = 2, last two rows only.
  column_scores(rows(), QuerySet::last(3, 2), 2, RowReduce::kSum, HeadReduce::kPerKvHead, s.data());
  const std::vector<float> want = {.7f, .8f, .5f, .5f, 1.3f, .2f};
  for (int t = 0; t < 6; ++t) EXPECT_NEAR(s[t], want[t], 1e-6) << t;
  // An explicit list {0, 2} with the causal mean: key 1 is seen by row 2 only, key 2 by row 2.
  const std::size_t list[] = {0, 2};
  column_scores(rows(), QuerySet::of(list, 2), 2, RowReduce::kCausalMean, HeadReduce::kPerKvHead, s.data());
  EXPECT_NEAR(s[0], (1 + .2) / 2, 1e-6);
  EXPECT_NEAR(s[1], .3, 1e-6);
  EXPECT_NEAR(s[5], .2, 1e-6);
  // Rows from 3 on (post-vision region at the very end): empty set, all zeros; causal mean of a
  // key no row sees is 0.
  column_scores(rows(), QuerySet::from(3, 3), 1, RowReduce::kCausalMean, HeadReduce::kLayerShared, s.data());
  for (int t = 0; t < 3; ++t) EXPECT_EQ(s[t], 0.0f);
  EXPECT_EQ(QuerySet::last(3, 10).size(), 3u);
}

TEST(ScoreAccumulation, LayerSharedIsMeanOverAllHeads) {
  // Hq = 2, Hkv = 2: per-KV-head keeps the heads apart, layer-shared averages them.
  std::vector<float> per(6), shared(3);
  column_scores(rows(), QuerySet::all(3), 2, RowReduce::kSum, HeadReduce::kPerKvHead, per.data());
  column_scores(rows(), QuerySet::all(3), 2, RowReduce::kSum, HeadReduce::kLayerShared, shared.data());
  for (int j = 0; j < 3; ++j) EXPECT_NEAR(shared[j], 0.5 * (per[j] + per[3 + j]), 1e-6);
  std::vector<float> reduced(3);
  reduce_query_heads(per.data(), 2, 2, 3, HeadReduce::kLayerShared, reduced.data());
  for (int j = 0; j < 3; ++j) EXPECT_NEAR(reduced[j], shared[j], 1e-6);
}

TEST(ScoreAccumulation, NormaliseByCausalCountOnLsePath) {
  std::vector<float> colsum = {3, 2, 1};
  normalise_by_causal_count(colsum.data(), 1, 3, kPos.data(), kPos.data(), QuerySet::all(3));
  EXPECT_NEAR(colsum[0], 1.0, 1e-7);
  EXPECT_NEAR(colsum[1], 1.0, 1e-7);
  EXPECT_NEAR(colsum[2], 1.0, 1e-7);
}

TEST(ScoreAccumulation, DecodeRowsAccumulate) {
  // Hq = 4, Hkv = 2; two decode steps over 3 then 4 slots; the new slot starts at 0.
  std::vector<float> score(2 * 4, 0.0f);
  std::vector<double> want(8, 0.0);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(0, 1);
  for (std::size_t n : {3u, 4u}) {
    std::vector<float> row(4 * n);
    for (auto& x : row) x = u(rng);
    // The caller's score array is [Hkv][n] for the current n: re-pack as the cache would.
    std::vector<float> cur(2 * n, 0.0f);
    for (int h = 0; h < 2; ++h)
      for (std::size_t j = 0; j < n && j < 3; ++j) cur[h * n + j] = score[h * 4 + j];
    accumulate_decode_row(row.data(), 4, 2, n, HeadReduce::kPerKvHead, cur.data());
    for (int h = 0; h < 2; ++h)
      for (std::size_t j = 0; j < n; ++j) {
        want[h * 4 + j] += 0.5 * (double(row[(2 * h) * n + j]) + row[(2 * h + 1) * n + j]);
        score[h * 4 + j] = cur[h * n + j];
      }
  }
  for (int t = 0; t < 8; ++t) EXPECT_NEAR(score[t], want[t], 1e-6) << t;
}

// §15.8: n_rep = 3 with identical query heads per group equals MHA on the group's queries.
TEST(ScoreAccumulation, GqaWithIdenticalHeadsEqualsMha) {
  const int hkv = 2, rep = 3, d = 8;
  const std::size_t rows_n = 5, n = 20;
  std::mt19937 rng(21);
  std::normal_distribution<float> g(0, 1);
  std::vector<float> k(hkv * n * d), q_mha(hkv * rows_n * d);
  for (auto& x : k) x = g(rng);
  for (auto& x : q_mha) x = g(rng);
  std::vector<float> q_gqa;
  for (int h = 0; h < hkv; ++h)
    for (int r = 0; r < rep; ++r) q_gqa.insert(q_gqa.end(), q_mha.begin() + h * rows_n * d, q_mha.begin() + (h + 1) * rows_n * d);
  std::vector<std::int32_t> kpos(n), qpos(rows_n);
  for (std::size_t j = 0; j < n; ++j) kpos[j] = std::int32_t(j);
  for (std::size_t i = 0; i < rows_n; ++i) qpos[i] = std::int32_t(n - rows_n + i);
  const KeyRows kr{k.data(), kpos.data(), hkv, n, d};
  const float scale = 1.0f / std::sqrt(float(d));
  for (RowReduce rr : {RowReduce::kSum, RowReduce::kMean, RowReduce::kCausalMean}) {
    std::vector<float> p_mha(hkv * rows_n * n), p_gqa(hkv * rep * rows_n * n), s_mha(hkv * n), s_gqa(hkv * n);
    attention_rows_from_window({q_mha.data(), qpos.data(), hkv, rows_n, d}, kr, scale, p_mha.data());
    attention_rows_from_window({q_gqa.data(), qpos.data(), hkv * rep, rows_n, d}, kr, scale, p_gqa.data());
    column_scores({p_mha.data(), qpos.data(), kpos.data(), hkv, rows_n, n}, QuerySet::all(rows_n), hkv, rr,
                  HeadReduce::kPerKvHead, s_mha.data());
    column_scores({p_gqa.data(), qpos.data(), kpos.data(), hkv * rep, rows_n, n}, QuerySet::all(rows_n), hkv, rr,
                  HeadReduce::kPerKvHead, s_gqa.data());
    for (std::size_t t = 0; t < s_mha.size(); ++t) EXPECT_NEAR(s_gqa[t], s_mha[t], 1e-6) << to_string(rr) << " " << t;
  }
}

TEST(ScoreAccumulation, RejectsBadArguments) {
  std::vector<float> s(6);
  EXPECT_THROW(column_scores(rows(), QuerySet::all(3), 3, RowReduce::kSum, HeadReduce::kPerKvHead, s.data()),
               kvcompress::InvalidArgument);  // Hq = 2 is not a multiple of 3
  EXPECT_THROW(column_scores(rows(), QuerySet::all(4), 1, RowReduce::kSum, HeadReduce::kPerKvHead, s.data()),
               kvcompress::InvalidArgument);  // row 3 out of range
  AttentionRows no_pos = rows();
  no_pos.key_pos = nullptr;
  EXPECT_THROW(column_scores(no_pos, QuerySet::all(3), 1, RowReduce::kCausalMean, HeadReduce::kPerKvHead, s.data()),
               kvcompress::InvalidArgument);
}

}  // namespace
