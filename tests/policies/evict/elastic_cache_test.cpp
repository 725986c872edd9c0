// SPDX-License-Identifier: Apache-2.0
// Elastic Cache eviction (eviction spec §6) on hand-built per-layer prefill states against an
// independent oracle: protected = 4 sinks + last prompt slot, anchors = true top-N_I of the
// layer importance (ties → lower position) with N_I = T − ⌊(1−γ)T⌋ − |P|; then a step-by-step
// simulation of the fixed-offset decode eviction (delete slot N_tl = P − 25 while
// int(len − γ·n_seen) ≥ 1).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "kvcompress/policies/evict/elastic_cache.hpp"
#include "support/expect_invalid.hpp"
#include "support/hand_prefill.hpp"

namespace {

using namespace kvcompress;
using kvtest::HandPrefill;

std::set<std::size_t> oracle(const std::vector<float>& score, double gamma, bool paper) {
  const std::size_t T = score.size();
  std::set<std::size_t> keep;
  for (std::size_t j = 0; j < std::min<std::size_t>(4, T); ++j) keep.insert(j);
  keep.insert(T - 1);
  const std::size_t budget = paper ? std::size_t(std::floor(gamma * T)) + keep.size()
                                   : T - std::size_t(std::floor((1.0 - gamma) * double(T)));
  if (budget >= T) {
    for (std::size_t j = 0; j < T; ++j) keep.insert(j);
    return keep;
  }
  std::vector<std::size_t> cand;
  for (std::size_t j = 4; j + 1 < T; ++j) cand.push_back(j);
  std::stable_sort(cand.begin(), cand.end(), [&](std::size_t a, std::size_t b) { return score[a] > score[b]; });
  const std::size_t anchors = budget - keep.size();
  for (std::size_t t = 0; t < anchors; ++t) keep.insert(cand[t]);
  return keep;
}

std::set<std::size_t> kept_set(const std::vector<std::uint8_t>& keep) {
  std::set<std::size_t> s;
  for (std::size_t j = 0; j < keep.size(); ++j)
    if (keep[j]) s.insert(j);
  return s;
}

HandPrefill random_layers(int layers, std::size_t T, std::uint32_t seed) {
  HandPrefill hp(CacheShape{layers, 4, 2, 64, 4096}, 1, T);
  std::mt19937 g(seed);
  std::uniform_int_distribution<int> u(0, 12);
  for (auto& s : hp.score)
    for (auto& x : s) x = 0.25f * float(u(g));  // many exact ties
  return hp;
}

// Anchors = true top-N_I (not the reference's argsort-index bug), protected slots ⊆ kept, kept
// count = the budget, for both anchor-count rules and several γ.
TEST(ElasticCache, SelectionMatchesOracle) {
  for (std::uint32_t seed = 1; seed <= 6; ++seed)
    for (double gamma : {0.1, 0.2, 0.5, 0.9})
      for (bool paper : {false, true}) {
        const std::size_t T = 60 + 17 * seed;
        HandPrefill hp = random_layers(3, T, seed);
        evict::ElasticCache::Config c;
        c.ratio = gamma;
        c.anchor_count = paper ? evict::ElasticCache::AnchorCount::kPaper : evict::ElasticCache::AnchorCount::kBudget;
        auto ctx = hp.context();
        evict::ElasticCache::on_prefill_end(c, ctx);
        for (int l = 0; l < 3; ++l) {
          const auto k = kept_set(hp.kept(l, 0));
          const auto expect = oracle(hp.scores(l, 0), gamma, paper);
          EXPECT_EQ(k, expect) << "seed " << seed << " gamma " << gamma << " paper " << paper << " layer " << l;
          if (!paper) {
            EXPECT_EQ(k.size(), T - std::size_t(std::floor((1.0 - gamma) * double(T))));
          }
          for (std::size_t j : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{3}, T - 1})
            EXPECT_TRUE(k.count(j)) << "protected " << j;
        }
      }
}

// §15.9: with the protected set fixed, a larger γ never removes a slot kept at a smaller γ.
TEST(ElasticCache, MonotoneInRatio) {
  HandPrefill hp = random_layers(1, 150, 8);
  std::set<std::size_t> prev;
  for (double gamma : {0.05, 0.1, 0.2, 0.35, 0.6, 0.9, 1.0}) {
    evict::ElasticCache::Config c;
    c.ratio = gamma;
    auto ctx = hp.context();
    evict::ElasticCache::on_prefill_end(c, ctx);
    const auto k = kept_set(hp.kept(0, 0));
    EXPECT_TRUE(std::includes(k.begin(), k.end(), prev.begin(), prev.end())) << gamma;
    prev = k;
  }
}

// §15.3: γ = 1 keeps everything, and decode never evicts.
TEST(ElasticCache, IdentityAtRatioOne) {
  HandPrefill hp = random_layers(2, 50, 3);
  evict::ElasticCache::Config c;
  c.ratio = 1.0;
  auto ctx = hp.context();
  evict::ElasticCache::on_prefill_end(c, ctx);
  EXPECT_EQ(hp.keep, std::vector<std::uint8_t>(hp.keep.size(), 1));
  std::vector<std::int32_t> pos(51);
  std::iota(pos.begin(), pos.end(), 0);
  std::vector<Modality> mod(51, Modality::kGenerated);
  std::vector<std::uint8_t> alive(51, 1), keep(51, 1);
  SlotView s{51, 51, pos.data(), mod.data(), alive.data(), nullptr, 51, 0};
  s.prefill_tokens = 50;
  s.prefill_slots = 50;
  evict::ElasticCache::make_room(c, s, 1, keep.data());
  EXPECT_EQ(keep, std::vector<std::uint8_t>(51, 1));
}

// A budget below the protected set: InvalidArgument naming `ratio`, keep masks untouched;
// keep_all keeps exactly the protected set.
TEST(ElasticCache, BudgetBelowProtectedSet) {
  HandPrefill hp = random_layers(2, 10, 4);  // budget 10 − 8 = 2 < 5 protected
  evict::ElasticCache::Config c;
  auto ctx = hp.context();
  kvtest::expect_invalid_argument([&] { evict::ElasticCache::on_prefill_end(c, ctx); }, "ratio");
  EXPECT_EQ(hp.keep, std::vector<std::uint8_t>(hp.keep.size(), 1));
  c.on_protected_overflow = evict::common::ProtectedOverflow::kKeepAll;
  ctx = hp.context();
  evict::ElasticCache::on_prefill_end(c, ctx);
  EXPECT_EQ(kept_set(hp.kept(1, 0)), (std::set<std::size_t>{0, 1, 2, 3, 9}));
  evict::ElasticCache::Config bad;
  bad.ratio = 0.0;
  kvtest::expect_invalid_argument([&] { bad.validate(hp.shape); }, "ratio");
  bad.ratio = 1.2;
  kvtest::expect_invalid_argument([&] { bad.validate(hp.shape); }, "ratio");
  bad.ratio = 0.2;
  bad.truncation_distance = 0;
  kvtest::expect_invalid_argument([&] { bad.validate(hp.shape); }, "truncation_distance");
}

// Decode (§6 step 5): one token per step; oracle removes the slot at index N_tl = P − 25 while
// int(len − γ·n_seen) ≥ 1. Slots before N_tl never change; len < γ·n_seen + 2.
void decode_case(std::size_t T, double gamma, std::size_t chunk) {
  HandPrefill hp = random_layers(1, T, 11);
  evict::ElasticCache::Config c;
  c.ratio = gamma;
  auto ctx = hp.context();
  evict::ElasticCache::on_prefill_end(c, ctx);
  std::vector<std::int32_t> live;
  for (std::size_t j = 0; j < T; ++j)
    if (hp.keep[j]) live.push_back(static_cast<std::int32_t>(j));
  const std::size_t P = live.size(), ntl = P > 25 ? P - 25 : P / 2;
  const std::vector<std::int32_t> frozen(live.begin(), live.begin() + static_cast<std::ptrdiff_t>(ntl));
  std::vector<std::int32_t> expect = live;
  std::int64_t seen = static_cast<std::int64_t>(T);
  for (int step = 0; step < 400; ++step) {
    // Oracle, token by token.
    for (std::size_t i = 0; i < chunk; ++i) {
      expect.push_back(static_cast<std::int32_t>(seen + static_cast<std::int64_t>(i)));
      if (std::trunc(double(expect.size()) - gamma * double(seen + static_cast<std::int64_t>(i) + 1)) >= 1.0)
        expect.erase(expect.begin() + static_cast<std::ptrdiff_t>(ntl));
    }
    // Policy.
    std::vector<Modality> mod(live.size(), Modality::kGenerated);
    std::vector<std::uint8_t> alive(live.size(), 1), keep(live.size(), 1);
    SlotView s{live.size(), live.size(), live.data(), mod.data(), alive.data(), nullptr, seen, 0};
    s.prefill_tokens = static_cast<std::int64_t>(T);  // what the cache records at end_prefill
    s.prefill_slots = P;
    evict::ElasticCache::make_room(c, s, chunk, keep.data());
    std::vector<std::int32_t> next;
    for (std::size_t j = 0; j < live.size(); ++j)
      if (keep[j]) next.push_back(live[j]);
    for (std::size_t i = 0; i < chunk; ++i) next.push_back(static_cast<std::int32_t>(seen + static_cast<std::int64_t>(i)));
    live = next;
    seen += static_cast<std::int64_t>(chunk);
    ASSERT_EQ(live, expect) << "step " << step;
    ASSERT_TRUE(std::equal(frozen.begin(), frozen.end(), live.begin())) << "step " << step;
    ASSERT_LT(double(live.size()), gamma * double(seen) + 2.0) << "step " << step;
  }
}

TEST(ElasticCache, FixedOffsetDecodeEviction) {
  decode_case(300, 0.2, 1);
  decode_case(500, 0.5, 1);
  decode_case(90, 0.2, 1);  // P = 18 ≤ 25: N_tl = P/2
  decode_case(300, 0.3, 3);
}

// Before end_prefill (no compressed prompt recorded in the view) decode eviction does nothing.
TEST(ElasticCache, NoDecodeEvictionBeforeEndPrefill) {
  evict::ElasticCache::Config c;
  std::vector<std::int32_t> pos(120);
  std::iota(pos.begin(), pos.end(), 0);
  std::vector<Modality> mod(120, Modality::kText);
  std::vector<std::uint8_t> alive(120, 1), keep(120, 1);
  SlotView s{120, 120, pos.data(), mod.data(), alive.data(), nullptr, 400, 0};
  evict::ElasticCache::make_room(c, s, 1, keep.data());
  EXPECT_EQ(keep, std::vector<std::uint8_t>(120, 1));
}

}  // namespace
