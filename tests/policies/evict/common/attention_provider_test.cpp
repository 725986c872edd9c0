// SPDX-License-Identifier: Apache-2.0
// AttentionProvider back-ends (eviction spec §1.1) against an independent double-precision
// softmax written here: recomputed rows, row LSE, and the §15.7 back-end equivalence — column
// sums from materialised rows, from recomputed rows and from LSE agree to 1e-5 on random inputs,
// GQA included, with evicted gaps in the key positions.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "kvcompress/policies/evict/common/attention_provider.hpp"
#include "kvcompress/policies/evict/common/score_accumulation.hpp"

namespace {

using namespace kvcompress::evict::common;

struct Problem {
  int hq, hkv, d;
  std::size_t rows, n;
  std::vector<float> q, k;
  std::vector<std::int32_t> qpos, kpos;
  float scale;
  QueryRows qr() const { return {q.data(), qpos.data(), hq, rows, d}; }
  KeyRows kr() const { return {k.data(), kpos.data(), hkv, n, d}; }
};

// Keys at positions with gaps (evicted slots); queries at the last `rows` positions seen.
Problem make_problem(int hq, int hkv, int d, std::size_t rows, std::size_t n, unsigned seed) {
  Problem p{hq, hkv, d, rows, n, {}, {}, {}, {}, 1.0f / std::sqrt(float(d))};
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.5f);
  p.q.resize(std::size_t(hq) * rows * d);
  p.k.resize(std::size_t(hkv) * n * d);
  for (auto& x : p.q) x = g(rng);
  for (auto& x : p.k) x = g(rng);
  std::int32_t pos = 0;
  for (std::size_t j = 0; j < n; ++j) {
    pos += (j % 5 == 3) ? 2 : 1;  // every fifth step skips a position
    p.kpos.push_back(pos);
  }
  for (std::size_t i = 0; i < rows; ++i) p.qpos.push_back(p.kpos[n - rows + i]);
  return p;
}

// Double-precision causal softmax: [hq][rows][n].
std::vector<double> reference_probs(const Problem& p) {
  const int rep = p.hq / p.hkv;
  std::vector<double> out(std::size_t(p.hq) * p.rows * p.n, 0.0);
  for (int g = 0; g < p.hq; ++g)
    for (std::size_t i = 0; i < p.rows; ++i) {
      std::vector<double> logit(p.n, -std::numeric_limits<double>::infinity());
      double m = -std::numeric_limits<double>::infinity();
      for (std::size_t j = 0; j < p.n; ++j) {
        if (p.kpos[j] > p.qpos[i]) continue;
        double s = 0;
        for (int t = 0; t < p.d; ++t)
          s += double(p.q[(std::size_t(g) * p.rows + i) * p.d + t]) * p.k[(std::size_t(g / rep) * p.n + j) * p.d + t];
        logit[j] = s * p.scale;
        m = std::max(m, logit[j]);
      }
      double z = 0;
      for (std::size_t j = 0; j < p.n; ++j) z += std::isfinite(logit[j]) ? std::exp(logit[j] - m) : 0.0;
      for (std::size_t j = 0; j < p.n; ++j)
        out[(std::size_t(g) * p.rows + i) * p.n + j] = std::isfinite(logit[j]) ? std::exp(logit[j] - m) / z : 0.0;
    }
  return out;
}

std::vector<double> reference_lse(const Problem& p) {
  const int rep = p.hq / p.hkv;
  std::vector<double> out;
  for (int g = 0; g < p.hq; ++g)
    for (std::size_t i = 0; i < p.rows; ++i) {
      double z = 0;
      for (std::size_t j = 0; j < p.n; ++j) {
        if (p.kpos[j] > p.qpos[i]) continue;
        double s = 0;
        for (int t = 0; t < p.d; ++t)
          s += double(p.q[(std::size_t(g) * p.rows + i) * p.d + t]) * p.k[(std::size_t(g / rep) * p.n + j) * p.d + t];
        z += std::exp(s * p.scale);
      }
      out.push_back(z > 0 ? std::log(z) : -std::numeric_limits<double>::infinity());
    }
  return out;
}

TEST(AttentionProvider, RecomputedRowsMatchDoubleSoftmax) {
  const Problem p = make_problem(4, 2, 16, 9, 40, 1);
  std::vector<float> rows(std::size_t(p.hq) * p.rows * p.n);
  attention_rows_from_window(p.qr(), p.kr(), p.scale, rows.data());
  const auto ref = reference_probs(p);
  for (std::size_t t = 0; t < ref.size(); ++t) EXPECT_NEAR(rows[t], ref[t], 1e-6) << "entry " << t;
}

TEST(AttentionProvider, RowLogSumExpMatchesDouble) {
  const Problem p = make_problem(6, 3, 8, 12, 30, 2);
  std::vector<float> lse(std::size_t(p.hq) * p.rows);
  row_log_sum_exp(p.qr(), p.kr(), p.scale, lse.data());
  const auto ref = reference_lse(p);
  for (std::size_t t = 0; t < ref.size(); ++t) EXPECT_NEAR(lse[t], ref[t], 1e-5 * std::max(1.0, std::abs(ref[t])));
}

// §15.7: the three back-ends give the same column sums (all prompt rows, GQA, per KV head).
TEST(AttentionProvider, ThreeBackEndsAgree) {
  for (unsigned seed : {3u, 4u, 5u}) {
    const Problem p = make_problem(8, 2, 32, 57, 57, seed);  // every prompt row is a query
    const auto ref = reference_probs(p);
    // (a) materialised rows handed by the engine (here the double reference rounded to fp32).
    std::vector<float> materialised(ref.begin(), ref.end());
    std::vector<float> score_a(std::size_t(p.hkv) * p.n);
    column_scores({materialised.data(), p.qpos.data(), p.kpos.data(), p.hq, p.rows, p.n}, QuerySet::all(p.rows),
                  p.hkv, RowReduce::kSum, HeadReduce::kPerKvHead, score_a.data());
    // (b) rows recomputed from the window of queries.
    std::vector<float> rows(ref.size()), score_b(score_a.size());
    attention_rows_from_window(p.qr(), p.kr(), p.scale, rows.data());
    column_scores({rows.data(), p.qpos.data(), p.kpos.data(), p.hq, p.rows, p.n}, QuerySet::all(p.rows), p.hkv,
                  RowReduce::kSum, HeadReduce::kPerKvHead, score_b.data());
    // (c) column sums from the per-row LSE (independent double LSE, rounded to fp32).
    const auto lse_d = reference_lse(p);
    std::vector<float> lse(lse_d.begin(), lse_d.end()), colsum(std::size_t(p.hq) * p.n), score_c(score_a.size());
    column_sums_from_lse(p.qr(), lse.data(), p.kr(), p.scale, colsum.data());
    reduce_query_heads(colsum.data(), p.hq, p.hkv, p.n, HeadReduce::kPerKvHead, score_c.data());
    // Independent double column sums.
    const int rep = p.hq / p.hkv;
    for (int h = 0; h < p.hkv; ++h)
      for (std::size_t j = 0; j < p.n; ++j) {
        double want = 0;
        for (int g = h * rep; g < (h + 1) * rep; ++g)
          for (std::size_t i = 0; i < p.rows; ++i) want += ref[(std::size_t(g) * p.rows + i) * p.n + j] / rep;
        const std::size_t t = std::size_t(h) * p.n + j;
        EXPECT_NEAR(score_a[t], want, 1e-5) << "materialised h=" << h << " j=" << j;
        EXPECT_NEAR(score_b[t], want, 1e-5) << "window h=" << h << " j=" << j;
        EXPECT_NEAR(score_c[t], want, 1e-5) << "lse h=" << h << " j=" << j;
      }
  }
}

// LSE tiling must not depend on the tile size: more rows and keys than one tile.
TEST(AttentionProvider, LseColumnSumsSpanSeveralTiles) {
  const Problem p = make_problem(2, 1, 8, 70, 300, 6);
  const auto ref = reference_probs(p);
  const auto lse_d = reference_lse(p);
  std::vector<float> lse(lse_d.begin(), lse_d.end()), colsum(std::size_t(p.hq) * p.n);
  column_sums_from_lse(p.qr(), lse.data(), p.kr(), p.scale, colsum.data());
  for (int g = 0; g < p.hq; ++g)
    for (std::size_t j = 0; j < p.n; ++j) {
      double want = 0;
      for (std::size_t i = 0; i < p.rows; ++i) want += ref[(std::size_t(g) * p.rows + i) * p.n + j];
      EXPECT_NEAR(colsum[std::size_t(g) * p.n + j], want, 1e-5);
    }
}

// A query that precedes every key sees nothing: zero row, LSE −inf, no column-sum contribution.
TEST(AttentionProvider, RowThatSeesNoKeyIsZero) {
  Problem p = make_problem(1, 1, 4, 1, 3, 7);
  p.qpos = {0};
  p.kpos = {5, 6, 7};
  std::vector<float> rows(3, -1.0f), lse(1), colsum(3, -1.0f);
  attention_rows_from_window(p.qr(), p.kr(), p.scale, rows.data());
  for (float x : rows) EXPECT_EQ(x, 0.0f);
  row_log_sum_exp(p.qr(), p.kr(), p.scale, lse.data());
  EXPECT_EQ(lse[0], -std::numeric_limits<float>::infinity());
  column_sums_from_lse(p.qr(), lse.data(), p.kr(), p.scale, colsum.data());
  for (float x : colsum) EXPECT_EQ(x, 0.0f);
}

TEST(AttentionProvider, RejectsMismatchedShapes) {
  const Problem p = make_problem(4, 2, 8, 2, 4, 8);
  std::vector<float> out(64);
  QueryRows q = p.qr();
  q.num_heads = 3;  // not a multiple of Hkv = 2
  EXPECT_THROW(attention_rows_from_window(q, p.kr(), p.scale, out.data()), kvcompress::InvalidArgument);
  q = p.qr();
  q.head_dim = 4;
  try {
    attention_rows_from_window(q, p.kr(), p.scale, out.data());
    FAIL() << "expected InvalidArgument";
  } catch (const kvcompress::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("q.head_dim"), std::string::npos) << e.what();
  }
  EXPECT_THROW(column_sums_from_lse(p.qr(), nullptr, p.kr(), p.scale, out.data()), kvcompress::InvalidArgument);
}

}  // namespace
