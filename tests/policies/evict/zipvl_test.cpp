// SPDX-License-Identifier: Apache-2.0
// ZipVL (eviction spec §7, eviction form) on hand-built PrefillContexts against a double-precision
// oracle: probe attention averaged over query heads, the τ mass-prefix count of Eq. 6, the
// causal-count normalised score of Eq. 7 and top-p selection; plus the decode re-rank of the last
// `interval` slots with the latest query's attention.

#include "kvcompress/policies/evict/zipvl.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "kvcompress/kvcompress.hpp"
#include "mm_oracles.hpp"
#include "support/expect_invalid.hpp"

namespace {

using namespace kvcompress;
using kvtest::HandPrefill;

HandPrefill make(std::size_t n, std::size_t rows, std::uint32_t seed) {
  HandPrefill h(CacheShape{2, 4, 2, 64, 1024}, 1, n);
  std::vector<Modality> mod(n, Modality::kText);
  for (std::size_t j = 5; j < n / 2; ++j) mod[j] = Modality::kImage;
  kvtest::fill_random(h, mod, rows, seed, 2.5f);
  return h;
}

std::size_t ref_mass_count(std::vector<double> a, double tau) {
  std::sort(a.begin(), a.end(), std::greater<double>());
  const double tot = std::accumulate(a.begin(), a.end(), 0.0);
  double acc = 0;
  for (std::size_t t = 0; t < a.size(); ++t)
    if ((acc += a[t]) >= tau * tot - 1e-12) return t + 1;
  return a.size();
}

TEST(ZipVL, RatioSpecOracle) {
  const float a[5] = {0.5f, 0.3f, 0.1f, 0.05f, 0.05f};
  float scratch[5];
  EXPECT_EQ(evict::common::mass_prefix_count(a, 5, 0.85, scratch), 3u);
  const float z[4] = {0.4f, 0.0f, 0.6f, 0.0f};
  EXPECT_EQ(evict::common::mass_prefix_count(z, 4, 1.0, scratch), 2u) << "τ = 1: tokens with non-zero mass";
}

TEST(ZipVL, ProbeRowsAreRecentPlusSeededRandom) {
  evict::ZipVL::Config c;
  c.probe_recent = 8;
  c.probe_random = 8;
  const auto p = evict::ZipVL::probe_rows(c, 40);
  ASSERT_EQ(p.size(), 16u);
  EXPECT_TRUE(std::is_sorted(p.begin(), p.end()));
  EXPECT_EQ(std::set<std::size_t>(p.begin(), p.end()).size(), 16u);
  for (std::size_t i = 32; i < 40; ++i) EXPECT_TRUE(std::binary_search(p.begin(), p.end(), i));
  EXPECT_LT(p[7], 32u);
  EXPECT_EQ(evict::ZipVL::probe_rows(c, 40), p) << "deterministic";
  c.seed = 7;
  EXPECT_NE(evict::ZipVL::probe_rows(c, 40), p) << "the seed matters";
  EXPECT_EQ(evict::ZipVL::probe_rows(c, 12).size(), 12u) << "short window: every row";
}

TEST(ZipVL, MatchesDoubleOracle) {
  const std::size_t n = 90, rows = 40;
  for (double tau : {0.6, 0.9, 0.975}) {
    auto h = make(n, rows, 31);
    evict::ZipVL::Config c;
    c.tau = tau;
    c.probe_recent = 8;
    c.probe_random = 8;
    c.validate(h.shape);
    const auto probes = evict::ZipVL::probe_rows(c, rows);
    auto ctx = h.context();
    std::vector<evict::ZipVL::LayerScores> sc;
    for (int l = 0; l < 2; ++l) sc.push_back(evict::ZipVL::layer_scores(c, ctx, l));
    evict::ZipVL::on_prefill_end(c, ctx);
    for (int l = 0; l < 2; ++l) {
      const auto L = kvtest::layer(h, l);
      std::vector<double> a(n, 0.0), cnt(n, 0.0);
      for (int g = 0; g < 4; ++g)
        for (auto i : probes) {
          const auto p = kvtest::ref_softmax_row(L, h.shape, g, i);
          for (std::size_t j = 0; j < n; ++j) a[j] += p[j] / 4.0;
        }
      for (auto i : probes)
        for (std::size_t j = 0; j < n; ++j) cnt[j] += L.qpos[i] >= L.pos[j] ? 1 : 0;
      std::vector<double> an(n);
      for (std::size_t j = 0; j < n; ++j) an[j] = cnt[j] ? a[j] / cnt[j] : 0.0;
      for (std::size_t j = 0; j < n; ++j) {
        EXPECT_NEAR(sc[l].mass[j], a[j], 1e-5);
        EXPECT_NEAR(sc[l].normalised[j], an[j], 1e-5);
      }
      const std::size_t p = ref_mass_count(a, tau);
      EXPECT_EQ(sc[l].important, p) << "layer " << l << " tau " << tau;
      std::vector<std::size_t> cand(n);
      std::iota(cand.begin(), cand.end(), 0);
      const auto top = kvtest::ref_top_k(an, cand, p);
      EXPECT_EQ(kvtest::kept_positions(h, l), std::vector<std::int32_t>(top.begin(), top.end()))
          << "layer " << l << " tau " << tau;
      // Normalised score of the last key = its single visible probe value (the last row's, head mean).
      double last = 0;
      for (int g = 0; g < 4; ++g) last += kvtest::ref_softmax_row(L, h.shape, g, rows - 1)[n - 1] / 4.0;
      EXPECT_NEAR(sc[l].normalised[n - 1], last, 1e-6);
    }
  }
}

TEST(ZipVL, ImportantCountNonDecreasingInTau) {
  auto h = make(80, 30, 4);
  std::size_t prev = 0;
  for (double tau = 0.3; tau <= 1.0001; tau += 0.05) {
    evict::ZipVL::Config c;
    c.tau = std::min(tau, 1.0);
    c.probe_recent = 10;
    c.probe_random = 10;
    auto ctx = h.context();
    const auto sc = evict::ZipVL::layer_scores(c, ctx, 0);
    EXPECT_GE(sc.important, prev);
    prev = sc.important;
  }
  EXPECT_EQ(prev, 80u) << "τ = 1 keeps every slot with non-zero mass";
}

TEST(ZipVL, DecodeReRankTouchesOnlyTheLastInterval) {
  auto h = make(60, 20, 9);
  evict::ZipVL::Config c;
  c.tau = 0.8;
  c.interval = 100;
  c.probe_recent = 8;
  c.probe_random = 4;
  auto ctx = h.context();
  evict::ZipVL::on_prefill_end(c, ctx);
  // Layer 0 after prefill, then 100 generated slots with latest-query scores.
  std::vector<std::int32_t> pos = kvtest::kept_positions(h, 0);
  const std::size_t prompt_kept = pos.size();
  std::mt19937 rng(3);
  std::exponential_distribution<float> e(1.0f);
  std::vector<float> score(pos.size(), 0.5f);
  for (std::int32_t t = 60; t < 160; ++t) pos.push_back(t), score.push_back(std::pow(e(rng), 3.0f));
  std::vector<std::uint8_t> alive(pos.size(), 1);
  SlotView s;
  s.n = pos.size();
  s.n_alive = pos.size();
  s.pos = pos.data();
  s.alive = alive.data();
  s.score = score.data();
  s.layer = 0;
  s.prefill_tokens = 60;  // what the cache records at end_prefill
  s.prefill_slots = prompt_kept;
  for (std::int64_t seen : {150, 159}) {  // not a multiple of the interval: nothing happens
    s.tokens_seen = seen;
    std::vector<std::uint8_t> keep(alive);
    evict::ZipVL::make_room(c, s, 1, keep.data());
    EXPECT_EQ(keep, alive);
  }
  s.tokens_seen = 160;
  std::vector<std::uint8_t> keep(alive);
  evict::ZipVL::make_room(c, s, 1, keep.data());
  std::vector<double> tail(score.begin() + prompt_kept, score.end());
  const std::size_t p = ref_mass_count(tail, 0.8);
  std::vector<std::size_t> cand(100);
  std::iota(cand.begin(), cand.end(), 0);
  const auto top = kvtest::ref_top_k(tail, cand, p);
  for (std::size_t j = 0; j < prompt_kept; ++j) EXPECT_TRUE(keep[j]) << "prompt slot " << j << " touched";
  std::vector<std::size_t> got;
  for (std::size_t t = 0; t < 100; ++t)
    if (keep[prompt_kept + t]) got.push_back(t);
  EXPECT_EQ(got, top);
  EXPECT_LT(p, 100u);
}

TEST(ZipVL, BadConfigsNameTheField) {
  const CacheShape s{1, 2, 2, 64, 64};
  evict::ZipVL::Config c;
  c.tau = 0.0;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "tau");
  c.tau = 1.1;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "tau");
  c.tau = 0.9;
  c.interval = 5000;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "interval");
  c.interval = 100;
  c.max_window = 10;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "max_window");
}

TEST(ZipVL, EndToEndThroughKVCacheWithDecodeReRank) {
  using Cache = KVCache<Policy<evict::ZipVL, merge::None, quant::DenseF32>>;
  const CacheShape s{2, 4, 2, 64, 512};
  std::vector<Modality> mod(80, Modality::kText);
  for (std::size_t j = 4; j < 50; ++j) mod[j] = Modality::kImage;
  const auto p = kvtest::random_prompt(s, mod, 16, 2.5f);
  Cache::Config cfg{};
  cfg.evict.tau = 0.9;
  cfg.evict.probe_recent = 8;
  cfg.evict.probe_random = 8;
  cfg.evict.max_window = 32;
  cfg.evict.interval = 20;
  Cache c(s, cfg);
  kvtest::feed(c, p);
  c.end_prefill();
  const auto h = kvtest::to_hand(p, 1, 32);
  const auto probes = evict::ZipVL::probe_rows(cfg.evict, 32);
  std::vector<std::size_t> prompt_kept(2);
  for (int l = 0; l < 2; ++l) {
    std::vector<double> a(80, 0.0), cnt(80, 0.0);
    for (int g = 0; g < 4; ++g)
      for (auto i : probes) {
        const auto pr = kvtest::ref_softmax_row(kvtest::layer(h, l), s, g, i);
        for (std::size_t j = 0; j < 80; ++j) a[j] += pr[j] / 4.0;
      }
    for (auto i : probes)
      for (std::size_t j = 0; j < 80; ++j) cnt[j] += h.qpos[l][i] >= static_cast<std::int32_t>(j) ? 1 : 0;
    std::vector<double> an(80);
    for (std::size_t j = 0; j < 80; ++j) an[j] = a[j] / cnt[j];
    std::vector<std::size_t> cand(80);
    std::iota(cand.begin(), cand.end(), 0);
    const auto top = kvtest::ref_top_k(an, cand, ref_mass_count(a, 0.9));
    for (int hh = 0; hh < 2; ++hh)
      EXPECT_EQ(kvtest::cache_positions(c, l, hh), std::vector<std::int32_t>(top.begin(), top.end())) << "layer " << l;
    prompt_kept[l] = top.size();
  }
  // 20 decode tokens, then the next append re-ranks them with the 20th token's attention.
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> k(2 * 64), v(2 * 64), q(4 * 64), out(4 * 64);
  for (int step = 0; step <= 20; ++step)
    for (int l = 0; l < 2; ++l) {
      for (auto* b : {&k, &v, &q})
        for (auto& x : *b) x = 2.0f * g(rng);
      const auto before = kvtest::cache_positions(c, l, 0);
      c.append(l, k.data(), v.data(), 1, Modality::kGenerated);
      const auto after = kvtest::cache_positions(c, l, 0);
      if (step < 20) {
        EXPECT_EQ(after.size(), before.size() + 1);
      } else {
        EXPECT_LE(after.size(), before.size());
        EXPECT_TRUE(std::equal(before.begin(), before.begin() + prompt_kept[l], after.begin())) << "prompt untouched";
      }
      c.attend(l, q.data(), 1, out.data());
    }
}

}  // namespace
