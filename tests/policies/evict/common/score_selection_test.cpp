// SPDX-License-Identifier: Apache-2.0
// Protected sets (eviction spec §1.4) and top-k selection with protection (§1.5): hand-worked
// selections, the tie rule (lower position kept), k ≥ n, k ≤ 0, the three protected-overflow
// modes with the truncation priority, dead slots, NaN scores, monotonicity in k with a fixed
// protected set (§15.9), and keep_top_scores (H2O) against a brute-force double-loop oracle.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "kvcompress/policies/evict/common/protected_set.hpp"
#include "kvcompress/policies/evict/common/score_selection.hpp"

namespace {

using namespace kvcompress;
using namespace kvcompress::evict::common;

std::vector<std::size_t> select(const std::vector<float>& score, const std::vector<Protection>& prot, std::ptrdiff_t k,
                                ProtectedOverflow o = ProtectedOverflow::kError, const std::uint8_t* alive = nullptr,
                                Selection* info = nullptr) {
  const std::size_t n = score.size();
  std::vector<std::size_t> out(n), scratch(n);
  const Selection r = select_top_k(score.data(), nullptr, alive, prot.empty() ? nullptr : prot.data(), n, k, o,
                                   out.data(), scratch.data());
  if (info) *info = r;
  out.resize(r.count);
  return out;
}

using Idx = std::vector<std::size_t>;
constexpr Protection N = Protection::kNone, S = Protection::kSink, M = Protection::kMandatory,
                     R = Protection::kRecent, T = Protection::kModality;

TEST(ProtectedSet, MarksEachClassWithPriority) {
  const std::vector<Modality> mod = {Modality::kSystem, Modality::kImage, Modality::kText, Modality::kImage,
                                     Modality::kText,   Modality::kImage, Modality::kImage, Modality::kText};
  const std::uint8_t alive[] = {1, 1, 1, 0, 1, 1, 1, 1};
  ProtectionConfig c;
  c.sinks = 2;
  c.recent = 2;
  c.last_token = true;
  c.mandatory_begin = 4;
  c.mandatory_end = 5;
  c.modalities = modality_bit(Modality::kText);
  std::vector<Protection> p(8);
  mark_protected(c, 8, alive, mod.data(), p.data());
  // slot 0,1 sinks; 2 text; 3 dead; 4 mandatory (also text); 5 none; 6 recent; 7 last token
  // (mandatory beats recent and text).
  EXPECT_EQ(p, (std::vector<Protection>{S, S, T, N, M, N, R, M}));
  EXPECT_EQ(count_protected(p.data(), 8), 6u);
  // Counts are in live slots: 3 sinks skip the dead slot 3 only if reached; recent skips it too.
  c = ProtectionConfig{};
  c.recent = 5;
  mark_protected(c, 8, alive, nullptr, p.data());
  EXPECT_EQ(p, (std::vector<Protection>{N, N, R, N, R, R, R, R}));
  c.mandatory_end = 9;
  EXPECT_THROW(mark_protected(c, 8, alive, nullptr, p.data()), InvalidArgument);
  c = ProtectionConfig{};
  c.modalities = modality_bit(Modality::kImage);
  EXPECT_THROW(mark_protected(c, 8, alive, nullptr, p.data()), InvalidArgument);  // labels missing
}

TEST(SelectTopK, HandExampleAndTies) {
  // Recent slot 5 protected; the two best of the rest are 1 (2.0) and 3 (1.0).
  const std::vector<float> s = {0.5f, 2.0f, 0.3f, 1.0f, 0.1f, 0.4f};
  EXPECT_EQ(select(s, {N, N, N, N, N, R}, 3), (Idx{1, 3, 5}));
  // Ties keep the lower position.
  const std::vector<float> t = {1, 3, 3, 1, 3, 1};
  EXPECT_EQ(select(t, {}, 2), (Idx{1, 2}));
  EXPECT_EQ(select(t, {}, 4), (Idx{0, 1, 2, 4}));
  // NaN ranks below every number.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(select({nan, -5.0f, nan}, {}, 1), (Idx{1}));
}

TEST(SelectTopK, BudgetEdgeCases) {
  const std::vector<float> s = {3, 1, 2};
  EXPECT_EQ(select(s, {}, 3), (Idx{0, 1, 2}));
  EXPECT_EQ(select(s, {}, 10), (Idx{0, 1, 2}));
  EXPECT_THROW(select(s, {}, 0), InvalidArgument);
  EXPECT_THROW(select(s, {}, -2), InvalidArgument);
  // |P| == k is feasible: exactly P.
  EXPECT_EQ(select(s, {N, M, R}, 2), (Idx{1, 2}));
  // Dead slots are never returned; k ≥ live returns all live.
  const std::uint8_t alive[] = {1, 0, 1};
  EXPECT_EQ(select(s, {}, 2, ProtectedOverflow::kError, alive), (Idx{0, 2}));
  EXPECT_EQ(select(s, {}, 1, ProtectedOverflow::kError, alive), (Idx{0}));
}

TEST(SelectTopK, ProtectedOverflowModes) {
  // Sinks 0,1; mandatory 7 (last token); recent 5,6; modality 2 (score .9), 3 (score .2).
  const std::vector<float> s = {0, 0, .9f, .2f, 5, 0, 0, 0};
  const std::vector<Protection> p = {S, S, T, T, N, R, R, M};
  try {
    select(s, p, 4);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'k' = 4"), std::string::npos) << msg;
    EXPECT_NE(msg.find("7 slots"), std::string::npos) << msg;
  }
  Selection info;
  EXPECT_EQ(select(s, p, 4, ProtectedOverflow::kKeepAll, nullptr, &info), (Idx{0, 1, 2, 3, 5, 6, 7}));
  EXPECT_TRUE(info.over_budget);
  EXPECT_EQ(info.protected_count, 7u);
  // Truncate priority: sinks 0,1 → mandatory 7 → recent newest first 6, 5 → modality by score 2, 3.
  EXPECT_EQ(select(s, p, 3, ProtectedOverflow::kTruncate, nullptr, &info), (Idx{0, 1, 7}));
  EXPECT_TRUE(info.truncated);
  EXPECT_EQ(select(s, p, 4, ProtectedOverflow::kTruncate), (Idx{0, 1, 6, 7}));
  EXPECT_EQ(select(s, p, 6, ProtectedOverflow::kTruncate), (Idx{0, 1, 2, 5, 6, 7}));
  EXPECT_EQ(select(s, p, 1, ProtectedOverflow::kTruncate), (Idx{0}));
}

// §15.9: with a fixed protected set, a larger k never drops a slot kept at a smaller k.
TEST(SelectTopK, MonotoneInBudget) {
  std::mt19937 rng(9);
  std::uniform_int_distribution<int> u(0, 7);  // few distinct values: many ties
  std::vector<float> s(60);
  for (auto& x : s) x = float(u(rng));
  std::vector<Protection> p(60, N);
  p[0] = S, p[59] = R, p[58] = R;
  Idx prev;
  for (std::ptrdiff_t k = 3; k <= 60; ++k) {
    const Idx cur = select(s, p, k);
    EXPECT_EQ(cur.size(), std::size_t(k));
    EXPECT_TRUE(std::includes(cur.begin(), cur.end(), prev.begin(), prev.end())) << "k=" << k;
    EXPECT_TRUE(std::is_sorted(cur.begin(), cur.end()));
    prev = cur;
  }
}

// keep_top_scores (H2O prefill) against a brute-force oracle: a slot before the recent window is
// kept iff fewer than `budget` live candidates beat it (higher score, or equal score and lower
// position).
TEST(KeepTopScores, MatchesBruteForce) {
  std::mt19937 rng(17);
  std::uniform_int_distribution<int> u(0, 4);
  for (int trial = 0; trial < 50; ++trial) {
    const std::size_t n = 1 + rng() % 40, budget = rng() % 12, recent = rng() % 6;
    std::vector<float> score(n);
    std::vector<std::int32_t> pos(n);
    std::vector<std::uint8_t> alive(n);
    for (std::size_t j = 0; j < n; ++j) score[j] = float(u(rng)), pos[j] = std::int32_t(2 * j), alive[j] = rng() % 5 != 0;
    SlotView v;
    v.n = n;
    v.pos = pos.data();
    v.alive = alive.data();
    v.score = score.data();
    std::vector<std::uint8_t> keep(alive);
    keep_top_scores(v, budget, recent, keep.data());
    // Oracle.
    std::vector<std::size_t> live;
    for (std::size_t j = 0; j < n; ++j)
      if (alive[j]) live.push_back(j);
    const std::size_t n_recent = std::min(recent, live.size());
    std::vector<std::uint8_t> want(alive);
    for (std::size_t a = 0; a + n_recent < live.size(); ++a) {
      std::size_t beaten_by = 0;
      for (std::size_t b = 0; b + n_recent < live.size(); ++b) {
        const std::size_t i = live[a], j = live[b];
        beaten_by += (score[j] > score[i] || (score[j] == score[i] && pos[j] < pos[i])) ? 1 : 0;
      }
      if (beaten_by >= budget) want[live[a]] = 0;
    }
    EXPECT_EQ(keep, want) << "trial " << trial;
  }
}

}  // namespace
