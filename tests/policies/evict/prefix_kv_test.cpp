// SPDX-License-Identifier: Apache-2.0
// PrefixKV (eviction spec §5) on hand-built PrefillContexts, against independent oracles: the
// spec's worked example, an exhaustive threshold enumeration in double (instead of bisection) for
// the per-layer prefix sizes, protection and budget invariants, monotonicity in r, the offline
// profile, and a double-precision simulation of the fixed-offset decode eviction.

#include "kvcompress/policies/evict/prefix_kv.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>

#include "kvcompress/kvcompress.hpp"
#include "mm_oracles.hpp"
#include "support/expect_invalid.hpp"

namespace {

using namespace kvcompress;
using kvtest::HandPrefill;

// Fills every layer of a per-layer context with n live slots and the given scores.
HandPrefill make(const std::vector<std::vector<float>>& scores) {
  CacheShape s{static_cast<int>(scores.size()), 2, 2, 64, 1024};
  HandPrefill h(s, 1, scores[0].size());
  for (std::size_t l = 0; l < scores.size(); ++l) h.scores(static_cast<int>(l), 0) = scores[l];
  return h;
}

std::vector<std::vector<float>> random_scores(int L, std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::exponential_distribution<float> e(1.0f);
  std::vector<std::vector<float>> s(L, std::vector<float>(n));
  for (int l = 0; l < L; ++l) {
    const float sharp = 1.0f + 2.0f * l;  // layers differ in concentration
    for (auto& x : s[l]) x = std::pow(e(rng), sharp);
  }
  return s;
}

// Oracle: per layer, the CDF of the descending normalised unprotected scores; enumerate every
// distinct CDF value as a threshold and return the R_l(p) = max(1, min{o : P^o ≥ p}) whose sum
// hits `target`.
std::vector<std::size_t> oracle_prefix(const std::vector<std::vector<double>>& free_scores, std::size_t target) {
  const std::size_t L = free_scores.size();
  std::vector<std::vector<double>> cdf(L);
  std::vector<double> cands{0.0};
  for (std::size_t l = 0; l < L; ++l) {
    auto s = free_scores[l];
    std::sort(s.begin(), s.end(), std::greater<double>());
    const double tot = std::accumulate(s.begin(), s.end(), 0.0);
    double acc = 0.0;
    for (double x : s) {
      acc += x / tot;
      cdf[l].push_back(acc);
      cands.push_back(acc);
    }
  }
  std::sort(cands.begin(), cands.end());
  for (double p : cands) {
    std::vector<std::size_t> R(L);
    std::size_t sum = 0;
    for (std::size_t l = 0; l < L; ++l) {
      std::size_t o = 0;
      while (o < cdf[l].size() && cdf[l][o] < p - 1e-12) ++o;
      R[l] = std::max<std::size_t>(1, std::min(o + 1, cdf[l].size()));
      sum += R[l];
    }
    if (sum == target) return R;
  }
  return {};
}

TEST(PrefixKV, SpecWorkedExampleFourOfEight) {
  // Layer A [0.7,0.1,0.1,0.1], layer B [0.25]*4, keep 4 of 8, no protection → A 1, B 3.
  auto h = make({{0.7f, 0.1f, 0.1f, 0.1f}, {0.25f, 0.25f, 0.25f, 0.25f}});
  evict::PrefixKV::Config c;
  c.ratio = 0.5;
  c.sink_tokens = 0;
  c.protect_last_token = false;
  auto ctx = h.context();
  evict::PrefixKV::on_prefill_end(c, ctx);
  EXPECT_EQ(kvtest::kept_positions(h, 0), (std::vector<std::int32_t>{0}));
  EXPECT_EQ(kvtest::kept_positions(h, 1), (std::vector<std::int32_t>{0, 1, 2}));  // ties → lower positions
}

TEST(PrefixKV, MatchesThresholdEnumerationWithProtection) {
  const int L = 4;
  const std::size_t n = 40;
  for (double r : {0.2, 0.35, 0.5, 0.8}) {
    auto sc = random_scores(L, n, 11);
    auto h = make(sc);
    evict::PrefixKV::Config c;
    c.ratio = r;
    auto ctx = h.context();
    evict::PrefixKV::on_prefill_end(c, ctx);
    // Protected: 4 sinks + last slot. Free scores = slots 4..n−2.
    std::vector<std::vector<double>> free(L);
    for (int l = 0; l < L; ++l)
      for (std::size_t j = 4; j + 1 < n; ++j) free[l].push_back(sc[l][j]);
    const std::size_t B = static_cast<std::size_t>(std::floor(r * L * n));
    const auto R = oracle_prefix(free, B - 5 * L);
    ASSERT_EQ(R.size(), std::size_t(L)) << "oracle found no exact threshold at r=" << r;
    std::size_t total = 0;
    for (int l = 0; l < L; ++l) {
      std::vector<double> sd(sc[l].begin(), sc[l].end());
      std::vector<std::size_t> cand;
      for (std::size_t j = 4; j + 1 < n; ++j) cand.push_back(j);
      auto top = kvtest::ref_top_k(sd, cand, R[l]);
      std::set<std::int32_t> expect{0, 1, 2, 3, static_cast<std::int32_t>(n - 1)};
      for (auto j : top) expect.insert(static_cast<std::int32_t>(j));
      const auto kept = kvtest::kept_positions(h, l);
      EXPECT_EQ(kept, std::vector<std::int32_t>(expect.begin(), expect.end())) << "layer " << l << " r=" << r;
      EXPECT_GE(kept.size(), 6u);  // R_l ≥ 1
      total += kept.size();
    }
    EXPECT_EQ(total, B) << "Σ (R_l + |protected_l|) = floor(r·Σ n_l)";
  }
}

TEST(PrefixKV, MonotoneInRatioAndDeterministic) {
  const int L = 5;
  auto sc = random_scores(L, 60, 3);
  std::vector<std::size_t> prev(L, 0);
  for (double r = 0.15; r <= 1.0001; r += 0.05) {
    std::vector<std::vector<std::int32_t>> first;
    for (int rep = 0; rep < 2; ++rep) {
      auto h = make(sc);
      evict::PrefixKV::Config c;
      c.ratio = std::min(r, 1.0);
      auto ctx = h.context();
      evict::PrefixKV::on_prefill_end(c, ctx);
      std::vector<std::vector<std::int32_t>> got;
      for (int l = 0; l < L; ++l) got.push_back(kvtest::kept_positions(h, l));
      if (rep == 0)
        first = got;
      else
        EXPECT_EQ(got, first) << "determinism";
    }
    for (int l = 0; l < L; ++l) {
      EXPECT_GE(first[l].size(), prev[l]) << "layer " << l << " shrank at r=" << r;
      prev[l] = first[l].size();
    }
  }
  for (int l = 0; l < L; ++l) EXPECT_EQ(prev[l], 60u) << "identity at r = 1";
}

TEST(PrefixKV, OneHotLayerKeepsOneUniformLayerScalesWithP) {
  std::vector<float> onehot(20, 0.0f), uniform(20, 1.0f);
  onehot[7] = 5.0f;
  auto h = make({onehot, uniform});
  evict::PrefixKV::Config c;
  c.sink_tokens = 0;
  c.protect_last_token = false;
  c.ratio = 0.5;  // target 20: one-hot needs 1 → uniform takes the other 19
  auto ctx = h.context();
  evict::PrefixKV::on_prefill_end(c, ctx);
  EXPECT_EQ(kvtest::kept_positions(h, 0), (std::vector<std::int32_t>{7}));
  EXPECT_EQ(kvtest::kept_positions(h, 1).size(), 19u);
}

TEST(PrefixKV, ShortPromptIsIdentity) {
  auto h = make({{1, 2, 3, 4, 5, 6}, {6, 5, 4, 3, 2, 1}});  // m = 6 ≤ |protected| + 1
  evict::PrefixKV::Config c;
  c.ratio = 0.1;
  auto ctx = h.context();
  evict::PrefixKV::on_prefill_end(c, ctx);
  EXPECT_EQ(kvtest::kept_positions(h, 0).size(), 6u);
  EXPECT_EQ(kvtest::kept_positions(h, 1).size(), 6u);
}

TEST(PrefixKV, OfflineProfileKeepsMMinusRoundedForget) {
  auto sc = random_scores(2, 30, 9);
  auto h = make(sc);
  evict::PrefixKV::Config c;
  c.forget_profile = {0.5, 0.25};  // keep 30 − 15 = 15 and 30 − round(7.5)=30−8 = 22
  c.validate(h.shape);
  auto ctx = h.context();
  evict::PrefixKV::on_prefill_end(c, ctx);
  const std::size_t expect_k[2] = {15, 22};
  for (int l = 0; l < 2; ++l) {
    std::vector<double> sd(sc[l].begin(), sc[l].end());
    std::vector<std::size_t> cand;
    for (std::size_t j = 4; j + 1 < 30; ++j) cand.push_back(j);
    auto top = kvtest::ref_top_k(sd, cand, expect_k[l] - 5);
    std::set<std::int32_t> expect{0, 1, 2, 3, 29};
    for (auto j : top) expect.insert(static_cast<std::int32_t>(j));
    EXPECT_EQ(kvtest::kept_positions(h, l), std::vector<std::int32_t>(expect.begin(), expect.end())) << "layer " << l;
  }
  // Profile from calibration: mean of the runs' retained ratios.
  const auto f = evict::PrefixKV::calibrate_forget_profile({{0.2, 0.6}, {0.4, 0.8}});
  EXPECT_NEAR(f[0], 0.7, 1e-12);
  EXPECT_NEAR(f[1], 0.3, 1e-12);
}

TEST(PrefixKV, BadConfigsNameTheField) {
  const CacheShape s{2, 2, 2, 64, 64};
  evict::PrefixKV::Config c;
  c.ratio = 0.0;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "ratio");
  c.ratio = 1.5;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "ratio");
  c.ratio = 0.5;
  c.forget_profile = {0.1};
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "forget_profile.size()");
  c.forget_profile = {0.1, 1.0};
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "forget_profile[l]");
  // Budget below the protected set: r·Σn = 0.1·40 = 4 < 2·(5 + 1).
  auto h = make(random_scores(2, 20, 1));
  evict::PrefixKV::Config tiny;
  tiny.ratio = 0.1;
  auto ctx = h.context();
  kvtest::expect_invalid_argument([&] { evict::PrefixKV::on_prefill_end(tiny, ctx); }, "ratio");
  auto h2 = make(random_scores(2, 20, 1));
  evict::PrefixKV::Config prof;
  prof.forget_profile = {0.9, 0.1};  // keeps 2 < 5 protected
  auto ctx2 = h2.context();
  kvtest::expect_invalid_argument([&] { evict::PrefixKV::on_prefill_end(prof, ctx2); }, "forget_profile[l]");
}

TEST(PrefixKV, FixedOffsetDecodeEviction) {
  // One layer of m = 200 slots; after selection simulate 300 decode steps through make_room.
  const std::size_t m = 200;
  auto sc = random_scores(2, m, 5);
  auto h = make(sc);
  evict::PrefixKV::Config c;
  c.ratio = 0.3;
  auto ctx = h.context();
  evict::PrefixKV::on_prefill_end(c, ctx);
  for (int l = 0; l < 2; ++l) {
    std::vector<std::int32_t> live = kvtest::kept_positions(h, l);
    const std::size_t kept = live.size();
    const double r_l = double(kept) / double(m);
    const std::size_t t_l = kept > 25 ? kept - 25 : kept / 2;
    const std::vector<std::int32_t> head(live.begin(), live.begin() + t_l);
    std::int64_t seen = m;
    // Physical table with a dead slot kept around to check alive handling.
    std::vector<std::int32_t> pos = live;
    std::vector<std::uint8_t> alive(pos.size(), 1);
    for (int step = 0; step < 300; ++step) {
      SlotView s;
      s.n = pos.size();
      s.n_alive = std::count(alive.begin(), alive.end(), 1);
      s.pos = pos.data();
      s.alive = alive.data();
      s.tokens_seen = seen;
      s.layer = l;
      s.prefill_tokens = static_cast<std::int64_t>(m);  // what the cache records at end_prefill
      s.prefill_slots = kept;
      std::vector<std::uint8_t> keep(alive);
      evict::PrefixKV::make_room(c, s, 1, keep.data());
      // Oracle: after the step, remove one slot at live index t_l if ⌊len − seen·r_l⌋ ≥ 1, with
      // r_l = kept/m evaluated exactly: (len·m − seen·kept) vs m. At exact equality the code's
      // floating-point r_l·n_seen may fall on either side, so both outcomes are accepted there.
      const std::int64_t num = std::int64_t(s.n_alive + 1) * std::int64_t(m) - (seen + 1) * std::int64_t(kept);
      std::vector<std::int32_t> stay, removed;
      for (std::size_t j = 0; j < pos.size(); ++j)
        if (alive[j]) stay.push_back(pos[j]);
      removed = stay;
      removed.erase(removed.begin() + t_l);
      std::vector<std::int32_t> got_live;
      for (std::size_t j = 0; j < pos.size(); ++j) {
        alive[j] = alive[j] && keep[j];
        if (alive[j]) got_live.push_back(pos[j]);
      }
      if (num > std::int64_t(m)) {
        ASSERT_EQ(got_live, removed) << "layer " << l << " step " << step;
      } else if (num < std::int64_t(m)) {
        ASSERT_EQ(got_live, stay) << "layer " << l << " step " << step;
      } else {
        ASSERT_TRUE(got_live == removed || got_live == stay) << "layer " << l << " step " << step;
      }
      pos.push_back(static_cast<std::int32_t>(seen));
      alive.push_back(1);
      ++seen;
      const std::size_t len = std::count(alive.begin(), alive.end(), 1);
      EXPECT_LT(double(len), double(seen) * r_l + 2.0);
      EXPECT_TRUE(std::equal(head.begin(), head.end(), got_live.begin())) << "slots before t_l changed";
    }
  }
}

// ---- End to end through KVCache ------------------------------------------------------------

// Oracle kept positions of every layer: all-row column sums averaged over all query heads
// (double), protection 4 sinks + last, prefix sizes by threshold enumeration.
std::vector<std::vector<std::int32_t>> e2e_oracle(const kvtest::Prompt& p, double r) {
  const auto h = kvtest::to_hand(p, 1, p.m());
  const std::size_t m = p.m();
  const int L = p.shape.num_layers;
  std::vector<std::vector<double>> score(L, std::vector<double>(m, 0.0)), free(L);
  for (int l = 0; l < L; ++l) {
    for (int g = 0; g < p.shape.num_q_heads; ++g)
      for (std::size_t i = 0; i < m; ++i) {
        const auto a = kvtest::ref_softmax_row(kvtest::layer(h, l), p.shape, g, i);
        for (std::size_t j = 0; j < m; ++j) score[l][j] += a[j] / p.shape.num_q_heads;
      }
    for (std::size_t j = 4; j + 1 < m; ++j) free[l].push_back(score[l][j]);
  }
  const std::size_t B = static_cast<std::size_t>(std::floor(r * L * m));
  const auto R = oracle_prefix(free, B - 5 * L);
  std::vector<std::vector<std::int32_t>> out;
  for (int l = 0; l < L; ++l) {
    std::vector<std::size_t> cand;
    for (std::size_t j = 4; j + 1 < m; ++j) cand.push_back(j);
    std::set<std::int32_t> keep{0, 1, 2, 3, static_cast<std::int32_t>(m - 1)};
    for (auto j : kvtest::ref_top_k(score[l], cand, R.empty() ? 0 : R[l])) keep.insert(static_cast<std::int32_t>(j));
    out.emplace_back(keep.begin(), keep.end());
  }
  return out;
}

std::vector<Modality> mixed(std::size_t m) {
  std::vector<Modality> mod(m, Modality::kText);
  for (std::size_t j = 0; j < 6; ++j) mod[j] = Modality::kSystem;
  for (std::size_t j = 6; j < m / 2; ++j) mod[j] = Modality::kImage;
  return mod;
}

template <class Quant>
void run_end_to_end(std::uint32_t seed) {
  using Cache = KVCache<Policy<evict::PrefixKV, merge::None, Quant>>;
  const CacheShape s{3, 4, 2, 64, 512};
  auto p = kvtest::random_prompt(s, mixed(160), seed, 1.5f);
  for (auto* t : {&p.k, &p.v, &p.q})  // fp16-exact inputs: lossless in a staging or fp16 store
    for (auto& layer : *t)
      for (auto& x : layer) x = to_float(from_float<half>(x));
  typename Cache::Config cfg{};
  cfg.evict.ratio = 0.3;
  Cache c(s, cfg);
  kvtest::feed(c, p);
  c.end_prefill();
  const auto expect = e2e_oracle(p, 0.3);
  std::size_t total = 0;
  std::vector<std::size_t> kept(3);
  for (int l = 0; l < 3; ++l) {
    for (int h = 0; h < 2; ++h)
      EXPECT_EQ(kvtest::cache_positions(c, l, h), expect[l]) << "layer " << l << " head " << h;
    kept[l] = c.size(l, 0);
    total += kept[l];
  }
  EXPECT_EQ(total, static_cast<std::size_t>(std::floor(0.3 * 3 * 160)));
  // Decode: one token per step; fixed-offset removal keeps len < n_seen·r_l + 2 and the slots before
  // t_l untouched.
  std::mt19937 rng(seed + 1);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> k(2 * 64), v(2 * 64), q(4 * 64), out(4 * 64);
  for (int step = 0; step < 120; ++step) {
    for (int l = 0; l < 3; ++l) {
      for (auto* b : {&k, &v, &q})
        for (auto& x : *b) x = g(rng);
      c.append(l, k.data(), v.data(), 1, Modality::kGenerated);
      c.attend(l, q.data(), 1, out.data());
      for (float x : out) ASSERT_TRUE(std::isfinite(x));
      const auto pos = kvtest::cache_positions(c, l, 1);
      const double r_l = double(kept[l]) / 160.0;
      const std::size_t t_l = kept[l] > 25 ? kept[l] - 25 : kept[l] / 2;
      EXPECT_LT(double(pos.size()), double(c.tokens_seen(l)) * r_l + 2.0);
      EXPECT_TRUE(std::equal(expect[l].begin(), expect[l].begin() + t_l, pos.begin())) << "layer " << l;
      EXPECT_EQ(pos.back(), 160 + step) << "next position = n_seen";
      EXPECT_TRUE(std::is_sorted(pos.begin(), pos.end()));
    }
  }
}

TEST(PrefixKV, EndToEndDenseMixedModalities) { run_end_to_end<quant::DenseF32>(41); }

TEST(PrefixKV, EndToEndWithKivi2) { run_end_to_end<quant::Kivi2>(43); }

TEST(PrefixKV, EndToEndIdentityAtFullRatio) {
  using Cache = KVCache<Policy<evict::PrefixKV, merge::None, quant::DenseF32>>;
  const CacheShape s{2, 4, 2, 64, 256};
  auto p = kvtest::random_prompt(s, mixed(50), 3);
  Cache::Config cfg{};
  cfg.evict.ratio = 1.0;
  Cache c(s, cfg);
  kvtest::feed(c, p);
  c.end_prefill();
  for (int l = 0; l < 2; ++l) EXPECT_EQ(c.size(l, 0), 50u);
}

TEST(PrefixKV, OfflineProfileFromCalibrationRuns) {
  using Cache = KVCache<Policy<evict::PrefixKV, merge::None, quant::DenseF32>>;
  const CacheShape s{3, 4, 2, 64, 256};
  std::vector<std::vector<double>> ratios;
  for (std::uint32_t seed : {50u, 51u}) {
    Cache::Config cfg{};
    cfg.evict.ratio = 0.3;
    Cache c(s, cfg);
    kvtest::feed(c, kvtest::random_prompt(s, mixed(100), seed, 1.5f));
    c.end_prefill();
    std::vector<double> r;
    for (int l = 0; l < 3; ++l) r.push_back(double(c.size(l, 0)) / 100.0);
    ratios.push_back(r);
  }
  const auto f = evict::PrefixKV::calibrate_forget_profile(ratios);
  Cache::Config cfg{};
  cfg.evict.forget_profile = f;
  Cache c(s, cfg);
  kvtest::feed(c, kvtest::random_prompt(s, mixed(120), 52, 1.5f));
  c.end_prefill();
  for (int l = 0; l < 3; ++l) {
    const double mean_r = 0.5 * (ratios[0][l] + ratios[1][l]);
    EXPECT_NEAR(f[l], 1.0 - mean_r, 1e-12);
    EXPECT_EQ(c.size(l, 0), 120u - static_cast<std::size_t>(std::nearbyint(f[l] * 120.0))) << "layer " << l;
  }
}

}  // namespace
