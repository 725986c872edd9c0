// SPDX-License-Identifier: Apache-2.0
// AirCache (eviction spec §9) on hand-built PrefillContexts: the elite-set oracles of the spec on
// crafted keys, and a double-precision oracle of the elite-window visual importance, strength,
// skewness and mean-normalised budgets on random data; text slots are never evicted.

#include "kvcompress/policies/evict/air_cache.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kvcompress/kvcompress.hpp"
#include "mm_oracles.hpp"
#include "support/expect_invalid.hpp"

namespace {

using namespace kvcompress;
using kvtest::HandPrefill;

std::vector<Modality> labels() {  // sys 0..3, image 4..43, text 44..63
  std::vector<Modality> m(64, Modality::kText);
  for (int j = 0; j < 4; ++j) m[j] = Modality::kSystem;
  for (int j = 4; j < 44; ++j) m[j] = Modality::kImage;
  return m;
}

double g1(const std::vector<double>& x) {
  const double n = double(x.size());
  const double mu = std::accumulate(x.begin(), x.end(), 0.0) / n;
  double ss = 0, c3 = 0;
  for (double v : x) ss += (v - mu) * (v - mu);
  const double sd = std::sqrt(ss / (n - 1));
  if (!(sd > 0)) return 0.0;
  for (double v : x) c3 += std::pow((v - mu) / sd, 3);
  return n / ((n - 1) * (n - 2)) * c3;
}

// Crafted layer: 1 head, d = 64, three text slots 0..2 in the window whose keys make the last row's
// attention over them equal `p` (logit_j = log p_j via k_j = √d·log p_j·e0, q = e0); visual slots 3..5.
HandPrefill crafted(const std::vector<double>& p) {
  HandPrefill h(CacheShape{1, 1, 1, 64, 64}, 1, 7);
  h.mod = {Modality::kText,  Modality::kText,  Modality::kText, Modality::kImage,
           Modality::kImage, Modality::kImage, Modality::kText};
  auto& k = h.keys(0, 0);
  for (int j = 0; j < 3; ++j) k[j * 64] = float(8.0 * std::log(p[j]));
  k[6 * 64] = -1e4f;  // the last text slot itself takes no attention
  h.qpos[0] = {0, 1, 2, 6};
  h.q[0].assign(4 * 64, 0.0f);
  for (int i = 0; i < 4; ++i) h.q[0][i * 64] = 1.0f;
  return h;
}

TEST(AirCache, EliteSetSpecOracles) {
  {
    auto h = crafted({0.5, 0.46, 0.04});
    evict::AirCache::Config c;
    auto ctx = h.context();
    EXPECT_EQ(evict::AirCache::layer_stats(c, ctx, 0).elite, (std::vector<std::size_t>{0, 1}));
    c.elite_alpha = 1.0;
    EXPECT_EQ(evict::AirCache::layer_stats(c, ctx, 0).elite, (std::vector<std::size_t>{0}));
  }
  {
    auto h = crafted({0.4, 0.4, 0.2});  // α = 1 ⇒ every maximum
    evict::AirCache::Config c;
    c.elite_alpha = 1.0;
    auto ctx = h.context();
    EXPECT_EQ(evict::AirCache::layer_stats(c, ctx, 0).elite, (std::vector<std::size_t>{0, 1}));
  }
  const float iv[4] = {0.1f, 0.1f, 0.1f, 0.7f};
  EXPECT_NEAR(evict::common::sample_skewness(iv, 4), 2.0, 1e-6);
  const float flat[4] = {0.3f, 0.3f, 0.3f, 0.3f};
  EXPECT_EQ(evict::common::sample_skewness(flat, 4), 0.0);
}

struct LayerOracle {
  std::vector<std::size_t> elite;
  std::vector<double> iv;  // over slots 4..43
  double strength = 0, skew = 0;
};

LayerOracle oracle_layer(const HandPrefill& h, int l, double alpha) {
  const auto& s = h.shape;
  const auto L = kvtest::layer(h, l);
  const std::size_t rows = L.qpos.size(), d = s.head_dim;
  const double scale = 1.0 / std::sqrt(double(d));
  auto logit = [&](int g, std::size_t i, std::size_t j) {
    double dot = 0;
    for (std::size_t t = 0; t < d; ++t)
      dot += double(L.q[(g * rows + i) * d + t]) * L.k[((g / s.group_size()) * L.pos.size() + j) * d + t];
    return dot * scale;
  };
  LayerOracle o;
  // Window rows are all text here (positions 48..63); the last is row rows−1.
  std::vector<double> att(rows, 0.0);
  for (int g = 0; g < s.num_q_heads; ++g) {
    std::vector<double> z(rows);
    for (std::size_t t = 0; t < rows; ++t) z[t] = logit(g, rows - 1, L.qpos[t]);
    const double mx = *std::max_element(z.begin(), z.end());
    double sum = 0;
    for (double x : z) sum += std::exp(x - mx);
    for (std::size_t t = 0; t < rows; ++t) att[t] += std::exp(z[t] - mx) / sum / s.num_q_heads;
  }
  const double amax = *std::max_element(att.begin(), att.end());
  for (std::size_t t = 0; t < rows; ++t)
    if (att[t] >= alpha * amax) o.elite.push_back(t);
  o.iv.assign(40, 0.0);
  for (std::size_t e : o.elite)
    for (int g = 0; g < s.num_q_heads; ++g) {
      std::vector<std::size_t> keys;
      for (std::size_t j = 4; j < 44; ++j) keys.push_back(j);
      for (std::size_t e2 : o.elite)
        if (L.qpos[e2] <= L.qpos[e]) keys.push_back(L.qpos[e2]);
      double mx = -1e300, sum = 0;
      for (auto j : keys) mx = std::max(mx, logit(g, e, j));
      for (auto j : keys) sum += std::exp(logit(g, e, j) - mx);
      for (std::size_t j = 4; j < 44; ++j)
        o.iv[j - 4] += std::exp(logit(g, e, j) - mx) / sum / (s.num_q_heads * double(o.elite.size()));
    }
  o.strength = std::accumulate(o.iv.begin(), o.iv.end(), 0.0);
  o.skew = g1(o.iv);
  return o;
}

HandPrefill make(int L, std::uint32_t seed) {
  HandPrefill h(CacheShape{L, 4, 2, 64, 1024}, 1, 64);
  kvtest::fill_random(h, labels(), 16, seed, 1.5f);
  for (int l = 0; l < L; ++l)
    for (auto& x : h.q[l]) x *= 0.6f + 0.5f * l;
  return h;
}

TEST(AirCache, MatchesDoubleOracle) {
  const int L = 3;
  for (double alpha : {0.9, 0.3}) {
    auto h = make(L, 13);
    evict::AirCache::Config c;
    c.elite_alpha = alpha;
    c.ratio = 0.2;
    auto ctx = h.context();
    std::vector<evict::AirCache::LayerStats> st;
    std::vector<LayerOracle> o;
    for (int l = 0; l < L; ++l) {
      st.push_back(evict::AirCache::layer_stats(c, ctx, l));
      o.push_back(oracle_layer(h, l, alpha));
      EXPECT_EQ(st[l].elite, o[l].elite) << "layer " << l;
      ASSERT_EQ(st[l].importance.size(), 40u);
      for (std::size_t t = 0; t < 40; ++t) EXPECT_NEAR(st[l].importance[t], o[l].iv[t], 1e-6);
      EXPECT_NEAR(st[l].strength, o[l].strength, 1e-5);
      EXPECT_NEAR(st[l].skewness, o[l].skew, 1e-3);
    }
    // Budgets: mean-normalised strength and (shifted) skewness; Σ k_l = ⌊r·L·N_v⌋, |k_l − ideal| < 1
    // when no layer is clipped.
    double mt = 0, mk = 0, kmin = 1e300;
    for (auto& x : o) mt += x.strength / L, kmin = std::min(kmin, x.skew);
    std::vector<double> sk;
    for (auto& x : o) sk.push_back(kmin < 0 ? x.skew - kmin + 1e-6 : x.skew);
    for (double x : sk) mk += x / L;
    const auto b = evict::AirCache::budgets(c, st);
    std::size_t total = 0;
    for (int l = 0; l < L; ++l) {
      const double ideal = 0.5 * (o[l].strength / mt + sk[l] / mk) * c.ratio * 40;
      if (ideal >= 1.0 && ideal <= 40.0) {
        EXPECT_LT(std::abs(double(b.kept[l]) - ideal), 1.0 + 1e-6) << "layer " << l;
      }
      total += b.kept[l];
    }
    EXPECT_EQ(total, static_cast<std::size_t>(std::floor(0.2 * L * 40)));
    evict::AirCache::on_prefill_end(c, ctx);
    for (int l = 0; l < L; ++l) {
      std::vector<std::size_t> cand(40);
      std::iota(cand.begin(), cand.end(), 0);
      const auto top = kvtest::ref_top_k(o[l].iv, cand, b.kept[l]);
      std::vector<std::int32_t> expect{0, 1, 2, 3};
      for (auto t : top) expect.push_back(static_cast<std::int32_t>(t + 4));
      for (std::int32_t j = 44; j < 64; ++j) expect.push_back(j);
      EXPECT_EQ(kvtest::kept_positions(h, l), expect) << "layer " << l << " alpha " << alpha;
    }
  }
}

TEST(AirCache, IdenticalLayersGiveUniformBudgets) {
  auto h = make(3, 2);
  for (int l = 1; l < 3; ++l) {
    h.q[l] = h.q[0];
    h.qpos[l] = h.qpos[0];
    for (int kh = 0; kh < 2; ++kh) h.keys(l, kh) = h.keys(0, kh), h.values(l, kh) = h.values(0, kh);
  }
  evict::AirCache::Config c;
  auto ctx = h.context();
  evict::AirCache::on_prefill_end(c, ctx);
  for (int l = 0; l < 3; ++l)
    EXPECT_EQ(kvtest::kept_positions(h, l).size(), 24u + 4u) << "20 text + 4 sys + 10 % of 40 visual";
}

TEST(AirCache, IdentityAndNoVisualSlots) {
  auto h = make(2, 3);
  evict::AirCache::Config c;
  c.ratio = 1.0;
  auto ctx = h.context();
  evict::AirCache::on_prefill_end(c, ctx);
  EXPECT_EQ(kvtest::kept_positions(h, 0).size(), 64u);
  HandPrefill t(CacheShape{1, 2, 2, 64, 128}, 1, 30);
  kvtest::fill_random(t, std::vector<Modality>(30, Modality::kText), 8, 1);
  evict::AirCache::Config c2;
  auto ctx2 = t.context();
  evict::AirCache::on_prefill_end(c2, ctx2);
  EXPECT_EQ(kvtest::kept_positions(t, 0).size(), 30u) << "only visual KV is compressed";
}

TEST(AirCache, BadConfigsNameTheField) {
  const CacheShape s{1, 2, 2, 64, 64};
  evict::AirCache::Config c;
  c.ratio = 0.0;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "ratio");
  c.ratio = 0.1;
  c.elite_alpha = 1.5;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "elite_alpha");
  c.elite_alpha = 0.9;
  c.max_window = 0;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "max_window");
}

TEST(AirCache, EndToEndThroughKVCacheKeepsTextAndRanksVisual) {
  using Cache = KVCache<Policy<evict::AirCache, merge::None, quant::DenseF32>>;
  const CacheShape s{2, 4, 2, 64, 256};
  const auto p = kvtest::random_prompt(s, labels(), 15, 1.5f);
  Cache::Config cfg{};
  cfg.evict.ratio = 0.25;
  cfg.evict.max_window = 16;
  Cache c(s, cfg);
  kvtest::feed(c, p);
  c.end_prefill();
  const auto h = kvtest::to_hand(p, 1, 16);
  std::size_t visual_total = 0;
  for (int l = 0; l < 2; ++l) {
    const auto o = oracle_layer(h, l, 0.9);
    const auto pos = kvtest::cache_positions(c, l, 0);
    EXPECT_EQ(kvtest::cache_positions(c, l, 1), pos) << "one decision per layer";
    std::vector<std::size_t> vis;
    for (auto x : pos)
      if (x >= 4 && x < 44) vis.push_back(static_cast<std::size_t>(x - 4));
    EXPECT_EQ(pos.size() - vis.size(), 24u) << "every text slot kept";
    std::vector<std::size_t> cand(40);
    std::iota(cand.begin(), cand.end(), 0);
    EXPECT_EQ(vis, kvtest::ref_top_k(o.iv, cand, vis.size())) << "layer " << l;
    visual_total += vis.size();
  }
  EXPECT_EQ(visual_total, 20u) << "floor(r·L·N_v)";
}

}  // namespace
