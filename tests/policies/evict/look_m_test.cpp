// SPDX-License-Identifier: Apache-2.0
// LOOK-M eviction (eviction spec §2) on hand-built prefill states against an independent
// double-precision oracle of the paper rule: A_s[text] += max A_s, recent M always kept, top-N of
// the rest by boosted score (ties: text first, then lower position).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <vector>

#include "kvcompress/policies/evict/h2o.hpp"
#include "kvcompress/policies/evict/look_m.hpp"
#include "support/expect_invalid.hpp"
#include "support/hand_prefill.hpp"

namespace {

using namespace kvcompress;
using kvtest::HandPrefill;

bool visual(Modality m) { return m == Modality::kImage || m == Modality::kVideo; }

// Oracle: kept slot indices of one view (all slots live).
std::set<std::size_t> oracle(const std::vector<float>& score, const std::vector<Modality>& mod, std::size_t N,
                             std::size_t M, evict::TextPrior prior) {
  const std::size_t m = score.size();
  std::set<std::size_t> keep;
  if (N + M >= m) {
    for (std::size_t j = 0; j < m; ++j) keep.insert(j);
    return keep;
  }
  double tp = 0.0;
  for (float s : score) tp = std::max(tp, double(s));
  std::vector<double> boosted(m);
  for (std::size_t j = 0; j < m; ++j)
    boosted[j] = double(score[j]) + (prior != evict::TextPrior::kNone && !visual(mod[j]) ? tp : 0.0);
  for (std::size_t j = m - M; j < m; ++j) keep.insert(j);
  std::vector<std::size_t> cand(m - M);
  std::iota(cand.begin(), cand.end(), std::size_t{0});
  std::sort(cand.begin(), cand.end(), [&](std::size_t a, std::size_t b) {
    if (boosted[a] != boosted[b]) return boosted[a] > boosted[b];
    if (prior != evict::TextPrior::kNone && visual(mod[a]) != visual(mod[b])) return !visual(mod[a]);
    return a < b;
  });
  std::size_t take = N;
  if (prior == evict::TextPrior::kHard) {
    std::size_t text = 0;
    for (std::size_t j : cand) text += visual(mod[j]) ? 0 : 1;
    take = std::max(N, text);
  }
  for (std::size_t t = 0; t < take; ++t) keep.insert(cand[t]);
  return keep;
}

std::set<std::size_t> kept_set(const std::vector<std::uint8_t>& keep) {
  std::set<std::size_t> s;
  for (std::size_t j = 0; j < keep.size(); ++j)
    if (keep[j]) s.insert(j);
  return s;
}

// Spec §2 text-prior oracle: A_s = [0.5 T, 2.0 I, 0.3 I, 1.0 T, 0.1 I, 0.4 I], M = 1, N = 2 →
// T_p = 2.0, boosted text 2.5 and 3.0 → keep {0, 3} ∪ {5}; image slot 1 (raw 2.0) is evicted.
TEST(LookM, SpecTextPriorExample) {
  HandPrefill hp(CacheShape{1, 1, 1, 64, 16}, 1, 6);
  hp.scores(0, 0) = {0.5f, 2.0f, 0.3f, 1.0f, 0.1f, 0.4f};
  hp.mod = {Modality::kText, Modality::kImage, Modality::kImage, Modality::kText, Modality::kImage, Modality::kImage};
  evict::LookM::Config c;
  c.recent_ratio = 0.2;      // floor(0.2·6) = 1 = M
  c.important_ratio = 0.34;  // floor(0.34·6) = 2 = N
  auto ctx = hp.context();
  evict::LookM::on_prefill_end(c, ctx);
  EXPECT_EQ(hp.kept(0, 0), (std::vector<std::uint8_t>{1, 0, 0, 1, 0, 1}));
  // Without the prior it is plain top-2 + recent: slots 1 (2.0) and 3 (1.0).
  c.text_prior = evict::TextPrior::kNone;
  ctx = hp.context();
  evict::LookM::on_prefill_end(c, ctx);
  EXPECT_EQ(hp.kept(0, 0), (std::vector<std::uint8_t>{0, 1, 0, 1, 0, 1}));
}

struct Random {
  HandPrefill hp;
  Random(int layers, int views, std::size_t n, std::uint32_t seed, double p_visual = 0.6)
      : hp(CacheShape{layers, views * 2, views, 64, 512}, views, n) {
    std::mt19937 g(seed);
    std::bernoulli_distribution vis(p_visual);
    std::uniform_real_distribution<float> u(0.0f, 3.0f);
    for (std::size_t j = 0; j < n; ++j) hp.mod[j] = vis(g) ? (j % 7 == 0 ? Modality::kVideo : Modality::kImage)
                                                          : (j % 5 == 0 ? Modality::kSystem : Modality::kText);
    for (auto& s : hp.score)
      for (auto& x : s) x = std::round(u(g) * 8.0f) / 8.0f;  // coarse values: many exact ties
  }
};

// §2 oracles on random prompts: kept per head = N + M exactly, recent window kept, the kept set
// equals the double oracle; several layers and heads, every ratio combination.
TEST(LookM, MatchesOracleAndKeepsExactlyNPlusM) {
  for (std::uint32_t seed = 1; seed <= 6; ++seed)
    for (double a1 : {0.0, 0.1, 0.25})
      for (double a2 : {0.05, 0.1, 0.3}) {
        Random r(2, 3, 97 + seed * 13, seed);
        evict::LookM::Config c;
        c.recent_ratio = a1;
        c.important_ratio = a2;
        auto ctx = r.hp.context();
        evict::LookM::on_prefill_end(c, ctx);
        const std::size_t m = r.hp.n, M = std::size_t(a1 * m), N = std::size_t(a2 * m);
        for (int l = 0; l < 2; ++l)
          for (int h = 0; h < 3; ++h) {
            const auto k = kept_set(r.hp.kept(l, h));
            EXPECT_EQ(k.size(), N + M);
            for (std::size_t j = m - M; j < m; ++j) EXPECT_TRUE(k.count(j)) << "recent " << j;
            EXPECT_EQ(k, oracle(r.hp.scores(l, h), r.hp.mod, N, M, evict::TextPrior::kSoft))
                << "seed " << seed << " a1 " << a1 << " a2 " << a2 << " l " << l << " h " << h;
          }
      }
}

// If the text slots outside the window are at most N, all of them are kept (soft prior); the
// hard (code) prior keeps max(N, #text_nonrecent) + M and every non-recent text slot.
TEST(LookM, TextSlotsSurviveAndHardPriorCount) {
  for (std::uint32_t seed = 1; seed <= 5; ++seed)
    for (double p_visual : {0.95, 0.5, 0.1}) {
      Random r(1, 2, 120, seed, p_visual);
      for (auto prior : {evict::TextPrior::kSoft, evict::TextPrior::kHard}) {
        evict::LookM::Config c;
        c.text_prior = prior;
        auto ctx = r.hp.context();
        evict::LookM::on_prefill_end(c, ctx);
        const std::size_t m = 120, M = 12, N = 12;
        std::size_t text = 0;
        for (std::size_t j = 0; j < m - M; ++j) text += visual(r.hp.mod[j]) ? 0 : 1;
        for (int h = 0; h < 2; ++h) {
          const auto k = kept_set(r.hp.kept(0, h));
          EXPECT_EQ(k, oracle(r.hp.scores(0, h), r.hp.mod, N, M, prior));
          if (prior == evict::TextPrior::kHard) {
            EXPECT_EQ(k.size(), std::max(N, text) + M);
          } else {
            EXPECT_EQ(k.size(), N + M);
          }
          if (prior == evict::TextPrior::kHard || text <= N)
            for (std::size_t j = 0; j < m - M; ++j) {
              if (!visual(r.hp.mod[j])) {
                EXPECT_TRUE(k.count(j)) << "text slot " << j;
              }
            }
        }
      }
    }
}

// Exact tie between a boosted text slot (raw 0) and the top image slot (raw = T_p): text wins.
TEST(LookM, ExactTiePrefersText) {
  HandPrefill hp(CacheShape{1, 1, 1, 64, 16}, 1, 5);
  hp.scores(0, 0) = {2.0f, 0.0f, 1.0f, 0.5f, 0.0f};
  hp.mod = {Modality::kImage, Modality::kText, Modality::kImage, Modality::kImage, Modality::kText};
  evict::LookM::Config c;
  auto ctx = hp.context();
  evict::LookM::select(c, ctx.slots(0, 0), 1, 1, ctx.keep(0, 0));
  EXPECT_EQ(hp.kept(0, 0), (std::vector<std::uint8_t>{0, 1, 0, 0, 1}));
}

// §2: with the text prior disabled (and no merge) the policy is H2O-prefill one-shot selection.
TEST(LookM, WithoutTextPriorEqualsH2OPrefill) {
  for (std::uint32_t seed = 1; seed <= 4; ++seed) {
    Random r(2, 2, 80, seed);
    evict::LookM::Config c;
    c.text_prior = evict::TextPrior::kNone;
    auto ctx = r.hp.context();
    evict::LookM::on_prefill_end(c, ctx);
    const auto look = r.hp.keep;
    evict::H2O::Config hc;
    hc.heavy_budget = 8;
    hc.recent_budget = 8;
    ctx = r.hp.context();
    evict::H2O::on_prefill_end(hc, ctx);
    EXPECT_EQ(look, r.hp.keep);
    for (int l = 0; l < 2; ++l)
      for (int h = 0; h < 2; ++h)
        EXPECT_EQ(kept_set(r.hp.kept(l, h)), oracle(r.hp.scores(l, h), r.hp.mod, 8, 8, evict::TextPrior::kNone));
  }
}

// §15.3 identity at ratio 1.0 and whenever N + M ≥ m; §15.4 determinism; all-equal scores keep
// the lowest positions (§0 rule 2).
TEST(LookM, IdentityDeterminismAndTieRule) {
  Random r(1, 2, 50, 3);
  evict::LookM::Config c;
  c.recent_ratio = 0.5;
  c.important_ratio = 0.5;
  auto ctx = r.hp.context();
  evict::LookM::on_prefill_end(c, ctx);
  EXPECT_EQ(r.hp.keep, std::vector<std::uint8_t>(r.hp.keep.size(), 1));

  evict::LookM::Config d;
  ctx = r.hp.context();
  evict::LookM::on_prefill_end(d, ctx);
  const auto first = r.hp.keep;
  ctx = r.hp.context();
  evict::LookM::on_prefill_end(d, ctx);
  EXPECT_EQ(first, r.hp.keep);

  HandPrefill flat(CacheShape{1, 1, 1, 64, 64}, 1, 40);  // all text, all scores 1
  for (auto& x : flat.scores(0, 0)) x = 1.0f;
  ctx = flat.context();
  evict::LookM::on_prefill_end(d, ctx);  // N = M = 4
  std::vector<std::uint8_t> expect(40, 0);
  for (int j : {0, 1, 2, 3, 36, 37, 38, 39}) expect[j] = 1;
  EXPECT_EQ(flat.kept(0, 0), expect);
}

// Dead slots are neither counted nor kept; m counts live slots only.
TEST(LookM, IgnoresDeadSlots) {
  Random r(1, 1, 60, 9);
  for (std::size_t j = 0; j < 60; j += 3) r.hp.alive[j] = 0;  // 40 live
  evict::LookM::Config c;
  c.recent_ratio = 0.1;
  c.important_ratio = 0.25;  // M = 4, N = 10 of 40 live
  auto ctx = r.hp.context();
  evict::LookM::on_prefill_end(c, ctx);
  std::vector<float> sc;
  std::vector<Modality> md;
  std::vector<std::size_t> idx;
  for (std::size_t j = 0; j < 60; ++j)
    if (r.hp.alive[j]) sc.push_back(r.hp.scores(0, 0)[j]), md.push_back(r.hp.mod[j]), idx.push_back(j);
  std::set<std::size_t> expect;
  for (std::size_t t : oracle(sc, md, 10, 4, evict::TextPrior::kSoft)) expect.insert(idx[t]);
  EXPECT_EQ(kept_set(r.hp.kept(0, 0)), expect);
}

// Code-parity option: a prompt without visual slots is left intact; paper mode compresses it
// (the prior then reduces to H2O-prefill selection).
TEST(LookM, PromptWithoutVisualSlots) {
  Random r(1, 1, 50, 4, 0.0);
  evict::LookM::Config c;
  c.skip_without_visual = true;
  auto ctx = r.hp.context();
  evict::LookM::on_prefill_end(c, ctx);
  EXPECT_EQ(kept_set(r.hp.kept(0, 0)).size(), 50u);
  c.skip_without_visual = false;
  ctx = r.hp.context();
  evict::LookM::on_prefill_end(c, ctx);
  EXPECT_EQ(kept_set(r.hp.kept(0, 0)), oracle(r.hp.scores(0, 0), r.hp.mod, 5, 5, evict::TextPrior::kNone));
}

// §15.9: with the recent window fixed, a larger important ratio never removes a kept slot.
TEST(LookM, MonotoneInImportantRatio) {
  Random r(1, 2, 200, 12);
  std::vector<std::set<std::size_t>> prev(2);
  for (double a2 : {0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.9}) {
    evict::LookM::Config c;
    c.important_ratio = a2;
    auto ctx = r.hp.context();
    evict::LookM::on_prefill_end(c, ctx);
    for (int h = 0; h < 2; ++h) {
      const auto k = kept_set(r.hp.kept(0, h));
      EXPECT_TRUE(std::includes(k.begin(), k.end(), prev[h].begin(), prev[h].end())) << a2;
      prev[h] = k;
    }
  }
}

TEST(LookM, RejectsBadConfig) {
  const CacheShape s{1, 1, 1, 64, 16};
  evict::LookM::Config c;
  c.recent_ratio = -0.1;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "recent_ratio");
  c.recent_ratio = 0.1;
  c.important_ratio = 1.5;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "important_ratio");
  c.important_ratio = 0.0;
  c.recent_ratio = 0.0;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "recent_ratio + important_ratio");
  c.important_ratio = 0.6;
  c.recent_ratio = 0.6;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "recent_ratio + important_ratio");
  // A prompt too short for the ratios would keep nothing: error, keep masks untouched.
  HandPrefill hp(CacheShape{1, 1, 1, 64, 16}, 1, 4);
  evict::LookM::Config d;
  auto ctx = hp.context();
  kvtest::expect_invalid_argument([&] { evict::LookM::on_prefill_end(d, ctx); }, "recent_ratio + important_ratio");
  EXPECT_EQ(hp.kept(0, 0), std::vector<std::uint8_t>(4, 1));
}

}  // namespace
