// SPDX-License-Identifier: Apache-2.0
// H2O (eviction spec §13.2) against an independent simulation: accumulated attention computed in
// double from the oracle's probabilities over the cache's live slots (mean over the query heads
// of a KV head, summed over every query), top-k_h + k_r recent at prefill end, then one eviction
// per decode step of the lowest-scoring non-recent slot. Scores never decrease.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "kvcompress/kvcompress.hpp"
#include "support/cache_test_support.hpp"

namespace {

using namespace kvcompress;
using Cache = KVCache<Policy<evict::H2O, merge::None, quant::DenseF32>>;

// Adds the oracle's attention of queries q ([n_q][Hq][d], the last n_q tokens) to score[h][pos].
void accumulate_oracle(Cache& c, int layer, const float* q, std::size_t n_q,
                       std::vector<std::map<std::int32_t, double>>& score) {
  const auto& s = c.shape();
  const int d = s.head_dim, rep = s.group_size();
  const std::int64_t seen = c.tokens_seen(layer);
  for (int h = 0; h < s.num_kv_heads; ++h) {
    const auto slots = kvtest::live_slots(c, layer, h);
    for (std::size_t i = 0; i < n_q; ++i) {
      std::vector<float> qh(static_cast<std::size_t>(rep) * d);
      for (int g = 0; g < rep; ++g)
        std::copy(q + (i * s.num_q_heads + h * rep + g) * d, q + (i * s.num_q_heads + h * rep + g + 1) * d,
                  qh.begin() + g * d);
      std::vector<std::int64_t> qpos(rep, seen - static_cast<std::int64_t>(n_q) + static_cast<std::int64_t>(i));
      const auto p = kvref::probabilities(slots, d, qh.data(), rep, qpos.data(), 1.0 / std::sqrt(double(d)));
      for (int g = 0; g < rep; ++g)
        for (std::size_t j = 0; j < slots.pos.size(); ++j) score[h][slots.pos[j]] += p[g * slots.pos.size() + j] / rep;
    }
  }
}

std::vector<std::int32_t> live_positions(Cache& c, int h) {
  std::vector<std::int32_t> p(c.size(0, h));
  c.positions(0, h, p.data());
  return p;
}

TEST(H2O, PrefillKeepsTopHeavyPlusRecentThenEvictsArgminEachStep) {
  const CacheShape s{1, 4, 2, 64, 256};
  Cache::Config cfg{};
  cfg.evict.heavy_budget = 8;
  cfg.evict.recent_budget = 8;
  Cache c(s, cfg);
  std::vector<std::map<std::int32_t, double>> score(2);
  const std::size_t m = 48;
  auto k = kvtest::random_kv(m + 40, 2, 64, 5);
  auto v = kvtest::random_kv(m + 40, 2, 64, 6);
  auto q = kvtest::random_kv(m + 40, 4, 64, 7);
  std::vector<float> out(m * 4 * 64);
  c.append(0, k.data(), v.data(), m);
  c.attend(0, q.data(), m, out.data());
  accumulate_oracle(c, 0, q.data(), m, score);
  c.end_prefill();
  for (int h = 0; h < 2; ++h) {
    std::vector<std::int32_t> cand;
    for (std::int32_t p = 0; p < static_cast<std::int32_t>(m - 8); ++p) cand.push_back(p);
    std::stable_sort(cand.begin(), cand.end(), [&](int a, int b) { return score[h][a] > score[h][b]; });
    std::vector<std::int32_t> expect(cand.begin(), cand.begin() + 8);
    for (std::int32_t p = m - 8; p < static_cast<std::int32_t>(m); ++p) expect.push_back(p);
    std::sort(expect.begin(), expect.end());
    EXPECT_EQ(live_positions(c, h), expect) << "head " << h;
  }
  for (std::size_t t = m; t < m + 40; ++t) {
    // Predict the eviction this append makes: the lowest score among live slots before the 7
    // most recent ones (ties → the later position goes).
    std::vector<std::vector<std::int32_t>> expect(2);
    for (int h = 0; h < 2; ++h) {
      auto live = live_positions(c, h);
      const std::size_t cut = live.size() - 7;
      auto worst = std::min_element(live.begin(), live.begin() + cut, [&](int a, int b) {
        return score[h][a] < score[h][b] || (score[h][a] == score[h][b] && a > b);
      });
      live.erase(worst);
      live.push_back(static_cast<std::int32_t>(t));
      expect[h] = live;
    }
    c.append(0, k.data() + t * 128, v.data() + t * 128, 1);
    for (int h = 0; h < 2; ++h) ASSERT_EQ(live_positions(c, h), expect[h]) << "token " << t << " head " << h;
    c.attend(0, q.data() + t * 256, 1, out.data());
    accumulate_oracle(c, 0, q.data() + t * 256, 1, score);
    kvtest::expect_attention_matches(c, 0, std::vector<float>(q.begin() + t * 256, q.begin() + (t + 1) * 256), 1,
                                     std::vector<float>(out.begin(), out.begin() + 256), 1e-5, 1e-5);
    for (int h = 0; h < 2; ++h) {
      const SlotView sv = c.slots(0, h);
      for (std::size_t j = 0; j < sv.n; ++j) {
        if (sv.alive[j]) {
          EXPECT_NEAR(sv.score[j], score[h][sv.pos[j]], 1e-4) << "pos " << sv.pos[j];
        }
      }
    }
  }
  EXPECT_EQ(c.size(0, 0), 16u);
}

TEST(H2O, ScoresNeverDecreaseAndRecentWindowIsAlwaysKept) {
  const CacheShape s{1, 8, 2, 64, 128};
  Cache::Config cfg{};
  cfg.evict.heavy_budget = 10;
  cfg.evict.recent_budget = 6;
  Cache c(s, cfg);
  c.end_prefill();  // empty prompt: every append below is a decode step (H2O evicts from now on)
  auto k = kvtest::random_kv(200, 2, 64, 8);
  auto q = kvtest::random_kv(200, 8, 64, 9);
  std::vector<float> out(8 * 64);
  std::map<std::int32_t, float> prev;
  for (std::size_t t = 0; t < 200; ++t) {
    c.append(0, k.data() + t * 128, k.data() + t * 128, 1);
    c.attend(0, q.data() + t * 512, 1, out.data());
    const SlotView sv = c.slots(0, 1);
    std::map<std::int32_t, float> now;
    for (std::size_t j = 0; j < sv.n; ++j)
      if (sv.alive[j]) now[sv.pos[j]] = sv.score[j];
    for (auto [p, sc] : now)
      if (prev.count(p)) {
        EXPECT_GE(sc, prev[p]) << "pos " << p;
      }
    for (std::int32_t p = std::max<std::int32_t>(0, static_cast<std::int32_t>(t) - 5); p <= static_cast<std::int32_t>(t); ++p)
      EXPECT_TRUE(now.count(p)) << "recent pos " << p << " at " << t;
    EXPECT_LE(c.size(0, 1), 16u);
    prev = now;
  }
}

// Spec §15 item 8: with identical query heads in a group, GQA gives the MHA result.
TEST(H2O, GqaWithIdenticalQueryHeadsEqualsMha) {
  const CacheShape gqa{1, 4, 1, 64, 128}, mha{1, 1, 1, 64, 128};
  Cache::Config cfg{};
  cfg.evict.heavy_budget = 6;
  cfg.evict.recent_budget = 4;
  Cache a(gqa, cfg), b(mha, cfg);
  auto k = kvtest::random_kv(60, 1, 64, 10);
  auto q1 = kvtest::random_kv(60, 1, 64, 11);
  std::vector<float> q4(60 * 4 * 64), o4(60 * 4 * 64), o1(60 * 64);
  for (std::size_t t = 0; t < 60; ++t)
    for (int g = 0; g < 4; ++g) std::copy(q1.begin() + t * 64, q1.begin() + (t + 1) * 64, q4.begin() + (t * 4 + g) * 64);
  a.append(0, k.data(), k.data(), 30);
  b.append(0, k.data(), k.data(), 30);
  a.attend(0, q4.data(), 30, o4.data());
  b.attend(0, q1.data(), 30, o1.data());
  a.end_prefill();
  b.end_prefill();
  for (std::size_t t = 30; t < 60; ++t) {
    a.append(0, k.data() + t * 64, k.data() + t * 64, 1);
    b.append(0, k.data() + t * 64, k.data() + t * 64, 1);
    a.attend(0, q4.data() + t * 256, 1, o4.data());
    b.attend(0, q1.data() + t * 64, 1, o1.data());
    ASSERT_EQ(live_positions(a, 0), live_positions(b, 0)) << t;
  }
}

}  // namespace

namespace {

// observe() (engines with their own attention hand a window of queries) accumulates exactly the
// scores attend() would, and changes nothing else.
TEST(H2O, ObserveAccumulatesLikeAttend) {
  const CacheShape s{1, 4, 2, 64, 128};
  Cache::Config cfg{};
  cfg.evict.heavy_budget = 8;
  cfg.evict.recent_budget = 8;
  Cache a(s, cfg), b(s, cfg);
  auto k = kvtest::random_kv(40, 2, 64, 12);
  auto q = kvtest::random_kv(40, 4, 64, 13);
  std::vector<float> out(q.size());
  a.append(0, k.data(), k.data(), 40);
  b.append(0, k.data(), k.data(), 40);
  a.attend(0, q.data() + 24 * 256, 16, out.data());  // the last 16 queries as a window
  b.observe(0, q.data() + 24 * 256, 16);
  for (int h = 0; h < 2; ++h) {
    const SlotView va = a.slots(0, h), vb = b.slots(0, h);
    ASSERT_EQ(va.n, vb.n);
    for (std::size_t j = 0; j < va.n; ++j) EXPECT_EQ(va.score[j], vb.score[j]);
  }
  a.end_prefill();
  b.end_prefill();
  EXPECT_TRUE(kvtest::snapshot(a) == kvtest::snapshot(b));
  EXPECT_EQ(a.size(0, 0), 16u);
}

}  // namespace
