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

// Mixed-precision form (spec §7 step 5): with a tiered store the same split demotes U instead of
// evicting it. The eviction form's kept set is checked against the double oracle above.
TEST(ZipVL, TieredStoreDemotesTheSlotsTheEvictionFormDrops) {
  for (double tau : {0.6, 0.9, 1.0}) {
    evict::ZipVL::Config c;
    c.tau = tau;
    c.probe_recent = 8;
    c.probe_random = 8;
    auto evicting = make(90, 40, 31);
    auto ctx_e = evicting.context();
    evict::ZipVL::on_prefill_end(c, ctx_e);
    auto tiered = make(90, 40, 31);
    tiered.with_tiers = true;
    auto ctx_t = tiered.context();
    evict::ZipVL::on_prefill_end(c, ctx_t);
    for (int l = 0; l < 2; ++l) {
      EXPECT_EQ(tiered.kept(l, 0), tiered.alive) << "nothing evicted, layer " << l;
      const auto kept = evicting.kept(l, 0);
      for (std::size_t j = 0; j < 90; ++j)
        EXPECT_EQ(tiered.tier[static_cast<std::size_t>(l) * 90 + j],
                  kept[j] ? PrecisionTier::kHigh : PrecisionTier::kLow)
            << "layer " << l << " slot " << j << " tau " << tau;
    }
  }
}

TEST(ZipVL, DecodeReRankDemotesOnlyTheLastInterval) {
  evict::ZipVL::Config c;
  c.tau = 0.8;
  c.interval = 100;
  const std::size_t prompt = 40;
  std::vector<std::int32_t> pos(prompt);
  std::iota(pos.begin(), pos.end(), 0);
  std::mt19937 rng(3);
  std::exponential_distribution<float> e(1.0f);
  std::vector<float> score(prompt, 0.5f);
  for (std::int32_t t = 60; t < 160; ++t) pos.push_back(t), score.push_back(std::pow(e(rng), 3.0f));
  std::vector<std::uint8_t> alive(pos.size(), 1);
  std::vector<PrecisionTier> tier(pos.size(), PrecisionTier::kPending);
  std::fill(tier.begin(), tier.begin() + prompt, PrecisionTier::kLow);
  SlotView s;
  s.n = s.n_alive = pos.size();
  s.pos = pos.data();
  s.alive = alive.data();
  s.score = score.data();
  s.tier = tier.data();
  s.prefill_tokens = 60;
  s.prefill_slots = prompt;
  s.tokens_seen = 159;  // not a multiple of the interval: nothing happens
  std::vector<std::uint8_t> keep(alive);
  evict::ZipVL::make_room(c, s, 1, keep.data());
  EXPECT_TRUE(std::all_of(tier.begin() + prompt, tier.end(), [](PrecisionTier t) { return t == PrecisionTier::kPending; }));
  s.tokens_seen = 160;
  evict::ZipVL::make_room(c, s, 1, keep.data());
  EXPECT_EQ(keep, alive) << "the tiered form evicts nothing";
  std::vector<double> tail(score.begin() + prompt, score.end());
  std::vector<std::size_t> cand(100);
  std::iota(cand.begin(), cand.end(), 0);
  const auto top = kvtest::ref_top_k(tail, cand, ref_mass_count(tail, 0.8));
  for (std::size_t j = 0; j < prompt; ++j) EXPECT_EQ(tier[j], PrecisionTier::kLow) << "prompt slot " << j << " touched";
  std::vector<std::size_t> high;
  for (std::size_t t = 0; t < 100; ++t) {
    EXPECT_NE(tier[prompt + t], PrecisionTier::kPending);
    if (tier[prompt + t] == PrecisionTier::kHigh) high.push_back(t);
  }
  EXPECT_EQ(high, top);
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

// The paper's composition (spec §7 steps 5–6) through the cache: the 4-bit slots of ZipVLPolicy<>
// are exactly the slots the eviction form keeps (checked against the double oracle above), nothing
// is evicted, decode tokens wait in fp16 until the re-rank decides them, and memory is below
// the same store with every slot at 4 bits.
TEST(ZipVL, MixedPrecisionCompositionThroughKVCache) {
  const CacheShape s{2, 4, 2, 64, 512};
  std::vector<Modality> mod(300, Modality::kText);
  for (std::size_t j = 4; j < 200; ++j) mod[j] = Modality::kImage;
  const auto p = kvtest::random_prompt(s, mod, 16, 2.5f);
  auto configure = [](auto& cfg) {
    cfg.evict.tau = 0.6;
    cfg.evict.probe_recent = 8;
    cfg.evict.probe_random = 8;
    cfg.evict.max_window = 32;
    cfg.evict.interval = 20;
  };
  using Mixed = KVCache<ZipVLPolicy<>>;
  using Evicting = KVCache<Policy<evict::ZipVL, merge::None, quant::DenseF32>>;
  using AllHigh = KVCache<Policy<evict::None, merge::None, quant::ZipVLMixed>>;
  Mixed::Config mc{};
  Evicting::Config ec{};
  configure(mc);
  configure(ec);
  Mixed mixed(s, mc);
  Evicting evicting(s, ec);
  AllHigh all_high(s, AllHigh::Config{});
  kvtest::feed(mixed, p);
  kvtest::feed(evicting, p);
  kvtest::feed(all_high, p);
  mixed.end_prefill();
  evicting.end_prefill();
  auto high_positions = [&](int l, int h) {
    const auto& st = mixed.stream(l, h);
    std::vector<std::int32_t> pos = kvtest::cache_positions(mixed, l, h), high;
    for (std::size_t j = 0; j < st.size(); ++j)
      if (st.tier(j) == PrecisionTier::kHigh) high.push_back(pos[j]);
    return high;
  };
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 2; ++h) {
      EXPECT_EQ(mixed.size(l, h), 300u) << "nothing evicted";
      EXPECT_EQ(mixed.stream(l, h).encoded(), 300u) << "every prompt slot decided at prefill end";
      const auto kept = kvtest::cache_positions(evicting, l, h);
      EXPECT_LT(kept.size(), 300u);
      EXPECT_EQ(high_positions(l, h), kept) << "layer " << l << " head " << h;
    }
  // The same store with every prompt slot at 4 bits (128 more tokens push the prompt out of its
  // window; truncate drops them again) must take more blocks.
  std::vector<float> k(2 * 64, 0.5f), v(2 * 64, -0.25f), q(4 * 64, 0.1f), out(4 * 64);
  for (int t = 0; t < 128; ++t)
    for (int l = 0; l < 2; ++l) all_high.append(l, k.data(), v.data(), 1, Modality::kGenerated);
  for (int l = 0; l < 2; ++l) all_high.truncate(300);
  std::size_t high_slots = 0;
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 2; ++h) {
      EXPECT_EQ(all_high.stream(l, h).encoded(), 300u);
      high_slots += high_positions(l, h).size();
      EXPECT_LT(mixed.stream(l, h).memory_bytes(), all_high.stream(l, h).memory_bytes()) << "layer " << l;
    }
  EXPECT_LT(high_slots, 4u * 300u / 2u) << "tau 0.6: most slots at 2 bits";

  // Decode: 20 tokens wait in fp16; the 21st append re-ranks them and they leave the window.
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (int step = 0; step <= 20; ++step)
    for (int l = 0; l < 2; ++l) {
      for (auto* b : {&k, &v, &q})
        for (auto& x : *b) x = 2.0f * g(rng);
      mixed.append(l, k.data(), v.data(), 1, Modality::kGenerated);
      mixed.attend(l, q.data(), 1, out.data());
      const auto& st = mixed.stream(l, 0);
      EXPECT_EQ(st.size(), 301u + static_cast<std::size_t>(step));
      EXPECT_EQ(st.encoded(), step < 20 ? 300u : 320u) << "step " << step;
      if (step == 20) {
        std::size_t high = 0;
        for (std::size_t j = 300; j < 320; ++j) {
          EXPECT_NE(st.tier(j), PrecisionTier::kPending);
          high += st.tier(j) == PrecisionTier::kHigh ? 1 : 0;
        }
        EXPECT_GE(high, 1u);
      }
    }
}

}  // namespace
