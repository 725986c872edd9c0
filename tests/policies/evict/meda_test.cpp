// SPDX-License-Identifier: Apache-2.0
// MEDA (eviction spec §3) on hand-built prefill states: the cross-modal entropy against an
// independent double-precision recomputation of A_TV / A_VT (causal, renormalised over the
// block, heads averaged before or after the entropy), the softmax layer allocator against the
// spec's worked example and its invariants, and the per-layer LOOK-M selection.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "kvcompress/policies/evict/meda.hpp"
#include "support/expect_invalid.hpp"
#include "support/hand_prefill.hpp"

namespace {

using namespace kvcompress;
using kvtest::HandPrefill;

bool visual(Modality m) { return m == Modality::kImage || m == Modality::kVideo; }

// E(A_block) of one layer in double: query rows of modality `qvis` over keys of the other one.
double oracle_block(HandPrefill& hp, int layer, bool qvis, bool mean_probabilities) {
  const auto& s = hp.shape;
  const int d = s.head_dim, rep = s.num_q_heads / s.num_kv_heads;
  const auto& q = hp.q[static_cast<std::size_t>(layer)];
  const auto& qp = hp.qpos[static_cast<std::size_t>(layer)];
  const std::size_t rows = qp.size();
  const double scale = 1.0 / std::sqrt(double(d));
  double sum = 0.0;
  std::size_t counted = 0;
  for (std::size_t i = 0; i < rows; ++i) {
    const std::size_t slot = static_cast<std::size_t>(std::find(hp.pos.begin(), hp.pos.end(), qp[i]) - hp.pos.begin());
    if (visual(hp.mod[slot]) != qvis) continue;
    std::vector<std::size_t> keys;
    for (std::size_t j = 0; j < hp.n; ++j)
      if (visual(hp.mod[j]) != qvis && hp.pos[j] <= qp[i]) keys.push_back(j);
    if (keys.empty()) continue;
    std::vector<double> mean(keys.size(), 0.0);
    double mean_h = 0.0;
    for (int g = 0; g < s.num_q_heads; ++g) {
      const auto& K = hp.keys(layer, g / rep);
      std::vector<double> z(keys.size());
      for (std::size_t t = 0; t < keys.size(); ++t) {
        double dot = 0;
        for (int u = 0; u < d; ++u) dot += double(q[(std::size_t(g) * rows + i) * d + u]) * K[keys[t] * d + u];
        z[t] = dot * scale;
      }
      const double mx = *std::max_element(z.begin(), z.end());
      double den = 0;
      for (double& x : z) den += (x = std::exp(x - mx));
      double h = 0;
      for (std::size_t t = 0; t < keys.size(); ++t) {
        const double p = z[t] / den;
        mean[t] += p / s.num_q_heads;
        h -= p * std::log(p + 1e-12);
      }
      mean_h += h / s.num_q_heads;
    }
    double h = 0;
    for (double p : mean) h -= p * std::log(p + 1e-12);
    sum += mean_probabilities ? h : mean_h;
    ++counted;
  }
  return counted ? sum / double(counted) : 0.0;
}

// A prompt [text × a][image × b][text × c][video × e][text × f] with random K/Q in every layer.
HandPrefill random_prompt(CacheShape shape, std::uint32_t seed, float q_gain = 1.0f) {
  const std::size_t n = 72;
  HandPrefill hp(shape, shape.num_kv_heads, n);
  for (std::size_t j = 0; j < n; ++j)
    hp.mod[j] = j < 6 ? Modality::kSystem : j < 30 ? Modality::kImage : j < 40 ? Modality::kText
              : j < 58 ? Modality::kVideo : Modality::kText;
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(0.0f, 2.0f);
  for (int l = 0; l < shape.num_layers; ++l) {
    for (int h = 0; h < shape.num_kv_heads; ++h) {
      hp.keys(l, h) = kvtest::uniform(n * shape.head_dim, seed * 100 + l * 10 + h);
      hp.values(l, h) = kvtest::uniform(n * shape.head_dim, seed * 100 + l * 10 + h + 5);
    }
    auto q = kvtest::uniform(std::size_t(shape.num_q_heads) * n * shape.head_dim, seed * 1000 + l, -1.0f, 1.0f);
    for (auto& x : q) x *= q_gain * float(1 + l);  // sharper attention in deeper layers
    hp.set_all_row_queries(l, q);
  }
  for (auto& s : hp.score)
    for (auto& x : s) x = std::round(u(g) * 8.0f) / 8.0f;
  return hp;
}

TEST(Meda, CrossModalEntropyMatchesDoubleOracle) {
  for (auto shape : {CacheShape{3, 4, 2, 64, 256}, CacheShape{2, 2, 2, 64, 256}})
    for (auto mode : {evict::HeadEntropy::kMeanProbabilities, evict::HeadEntropy::kMeanEntropies}) {
      HandPrefill hp = random_prompt(shape, 3, 4.0f);
      evict::Meda::Config c;
      c.head_entropy = mode;
      auto ctx = hp.context();
      const auto e = evict::Meda::cross_modal_entropy(c, ctx);
      ASSERT_EQ(e.size(), std::size_t(shape.num_layers));
      const bool mp = mode == evict::HeadEntropy::kMeanProbabilities;
      for (int l = 0; l < shape.num_layers; ++l) {
        const double tv = oracle_block(hp, l, false, mp), vt = oracle_block(hp, l, true, mp);
        EXPECT_NEAR(evict::Meda::block_entropy(c, ctx, l, false), tv, 1e-5);
        EXPECT_NEAR(evict::Meda::block_entropy(c, ctx, l, true), vt, 1e-5);
        EXPECT_NEAR(e[l], tv + vt, 2e-5) << "layer " << l;
      }
      // Only the last 20 rows in the window: the measure over those rows.
      for (int l = 0; l < shape.num_layers; ++l) {
        auto& q = hp.q[l];
        const std::size_t rows = hp.n, keep_rows = 20, d = shape.head_dim;
        std::vector<float> w;
        for (int g = 0; g < shape.num_q_heads; ++g)
          w.insert(w.end(), q.begin() + (g * rows + rows - keep_rows) * d, q.begin() + (g * rows + rows) * d);
        q = w;
        hp.qpos[l].erase(hp.qpos[l].begin(), hp.qpos[l].end() - keep_rows);
      }
      ctx = hp.context();
      const auto ew = evict::Meda::cross_modal_entropy(c, ctx);
      for (int l = 0; l < shape.num_layers; ++l)
        EXPECT_NEAR(ew[l], oracle_block(hp, l, false, mp) + oracle_block(hp, l, true, mp), 2e-5);
    }
}

// Zero queries give uniform rows: a text row at position i sees the visual keys before it, so
// its entropy is ln(#visual ≤ i) (spec §3: uniform row over k keys = ln k); text rows before the
// first visual slot see nothing and are skipped; likewise A_VT over the text keys.
TEST(Meda, UniformRowsGiveLogCountAndInvisibleRowsAreSkipped) {
  const CacheShape shape{1, 2, 1, 64, 64};
  HandPrefill hp(shape, 1, 10);
  hp.mod = {Modality::kText,  Modality::kText,  Modality::kImage, Modality::kImage, Modality::kImage,
            Modality::kText,  Modality::kText,  Modality::kImage, Modality::kImage, Modality::kText};
  hp.keys(0, 0) = kvtest::uniform(10 * 64, 1);
  hp.set_all_row_queries(0, std::vector<float>(2 * 10 * 64, 0.0f));
  evict::Meda::Config c;
  auto ctx = hp.context();
  // A_TV rows: text at 5, 6 (3 visual keys), 9 (5); rows 0, 1 skipped.
  const double tv = (2 * std::log(3.0) + std::log(5.0)) / 3.0;
  // A_VT rows: image at 2, 3, 4 (2 text keys), 7, 8 (4 text keys).
  const double vt = (3 * std::log(2.0) + 2 * std::log(4.0)) / 5.0;
  EXPECT_NEAR(evict::Meda::block_entropy(c, ctx, 0, false), tv, 1e-6);
  EXPECT_NEAR(evict::Meda::block_entropy(c, ctx, 0, true), vt, 1e-6);
  EXPECT_NEAR(evict::Meda::cross_modal_entropy(c, ctx)[0], tv + vt, 1e-6);
}

// §15.8: GQA with identical query heads in each group gives the MHA entropies.
TEST(Meda, GqaWithIdenticalQueryHeadsEqualsMha) {
  const CacheShape mha{2, 2, 2, 64, 128}, gqa{2, 6, 2, 64, 128};
  HandPrefill a = random_prompt(mha, 7, 3.0f);
  HandPrefill b(gqa, 2, a.n);
  b.mod = a.mod;
  b.k = a.k;
  b.v = a.v;
  for (int l = 0; l < 2; ++l) {
    std::vector<float> q;
    for (int g = 0; g < 6; ++g) {
      const auto& src = a.q[l];
      const std::size_t per = a.n * 64;
      q.insert(q.end(), src.begin() + (g / 3) * per, src.begin() + (g / 3 + 1) * per);
    }
    b.set_all_row_queries(l, q);
  }
  for (auto mode : {evict::HeadEntropy::kMeanProbabilities, evict::HeadEntropy::kMeanEntropies}) {
    evict::Meda::Config c;
    c.head_entropy = mode;
    auto ca = a.context();
    auto cb = b.context();
    const auto ea = evict::Meda::cross_modal_entropy(c, ca), eb = evict::Meda::cross_modal_entropy(c, cb);
    for (int l = 0; l < 2; ++l) EXPECT_NEAR(ea[l], eb[l], 1e-5);
  }
}

// Spec §3 allocator example: E_CM = [2, 1, 0.5, 0.5], ρ = 0.2, L = 4 →
// α = [0.44098, 0.16223, 0.09840, 0.09840] (Σ = 0.8 = L·ρ); M_l = N_l = ⌊α_l·m/2⌋.
TEST(Meda, AllocatorSpecExample) {
  evict::Meda::Config c;
  c.rho = 0.2;
  const auto p = evict::Meda::plan_from_entropy(c, {2.0, 1.0, 0.5, 0.5}, {1000, 1000, 1000, 1000});
  const double alpha[4] = {0.44098, 0.16223, 0.09840, 0.09840};
  double sum = 0;
  for (int l = 0; l < 4; ++l) {
    EXPECT_NEAR(p.budgets.ratio[l], alpha[l], 1e-5);
    sum += p.budgets.ratio[l];
  }
  EXPECT_NEAR(sum, 0.8, 1e-12);
  EXPECT_EQ(p.recent, (std::vector<std::size_t>{220, 81, 49, 49}));
  EXPECT_EQ(p.important, p.recent);
}

// Σ α_l = L·ρ without clamping, α monotone in E_CM, equal entropies → α_l = ρ; the apportioned
// mode realises Σ k_l = ⌊ρ·L·m⌋ with M_l = ⌊k_l/2⌋, N_l = k_l − M_l; the faithful mode clamps to
// [0.01, 1] without redistribution.
TEST(Meda, AllocatorInvariants) {
  std::mt19937 g(3);
  std::uniform_real_distribution<double> u(0.0, 3.0);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<double> e(8);
    for (auto& x : e) x = u(g);
    evict::Meda::Config c;
    c.rho = 0.1;
    const std::vector<std::size_t> m(8, 500);
    const auto p = evict::Meda::plan_from_entropy(c, e, m);
    double sum = 0, z = 0;
    for (double x : e) z += std::exp(x);
    for (int l = 0; l < 8; ++l) {
      const double expect = std::clamp(std::exp(e[l]) / z * 8 * 0.1, 0.01, 1.0);
      EXPECT_NEAR(p.budgets.ratio[l], expect, 1e-12);
      sum += p.budgets.ratio[l];
      EXPECT_EQ(p.recent[l], std::size_t(expect * 500 / 2));
      for (int o = 0; o < 8; ++o)
        if (e[o] > e[l]) {
          EXPECT_GE(p.budgets.ratio[o], p.budgets.ratio[l]);
        }
    }
    bool clamped = false;
    for (double r : p.budgets.ratio) clamped |= r <= 0.01 || r >= 1.0;
    if (!clamped) {
      EXPECT_NEAR(sum, 0.8, 1e-9);
    }
    c.realisation = evict::common::BudgetRealisation::kApportion;
    const auto q = evict::Meda::plan_from_entropy(c, e, m);
    std::size_t total = 0;
    for (int l = 0; l < 8; ++l) {
      const std::size_t k = q.budgets.kept[l];
      total += k;
      EXPECT_EQ(q.recent[l], k / 2);
      EXPECT_EQ(q.important[l], k - k / 2);
    }
    EXPECT_EQ(total, 400u);
  }
  evict::Meda::Config c;
  const auto p = evict::Meda::plan_from_entropy(c, {1.3, 1.3, 1.3}, {200, 200, 200});
  for (double r : p.budgets.ratio) EXPECT_NEAR(r, 0.1, 1e-12);
  const auto hot = evict::Meda::plan_from_entropy(c, {40.0, 0.0, 0.0}, {200, 200, 200});
  EXPECT_DOUBLE_EQ(hot.budgets.ratio[0], 0.3);  // 1·3·0.1, below the clamp
  EXPECT_DOUBLE_EQ(hot.budgets.ratio[1], 0.01); // clamped up, nothing redistributed
}

// No visual (or no text) slot: E_CM = 0 in every layer, α_l = ρ.
TEST(Meda, PromptWithoutVisualSlotsIsUniform) {
  HandPrefill hp = random_prompt(CacheShape{3, 2, 2, 64, 128}, 5);
  for (auto& m : hp.mod) m = Modality::kText;
  evict::Meda::Config c;
  auto ctx = hp.context();
  const auto p = evict::Meda::plan(c, ctx);
  for (int l = 0; l < 3; ++l) {
    EXPECT_EQ(p.entropy[l], 0.0);
    EXPECT_NEAR(p.budgets.ratio[l], 0.1, 1e-12);
  }
}

// Per layer and head: kept = M_l + N_l, the recent M_l are kept, and every kept non-recent slot
// outranks every evicted one under the text prior (text first, then raw score, then position).
TEST(Meda, SelectsPerLayerBudgetsWithTextPrior) {
  HandPrefill hp = random_prompt(CacheShape{3, 4, 2, 64, 256}, 9, 4.0f);
  evict::Meda::Config c;
  c.rho = 0.3;
  auto ctx = hp.context();
  const auto p = evict::Meda::plan(c, ctx);
  evict::Meda::on_prefill_end(c, ctx);
  bool differ = false;
  for (int l = 0; l < 3; ++l) {
    differ |= p.recent[l] != p.recent[0];
    for (int h = 0; h < 2; ++h) {
      const auto keep = hp.kept(l, h);
      const std::size_t M = p.recent[l], N = p.important[l];
      EXPECT_EQ(std::size_t(std::count(keep.begin(), keep.end(), 1)), M + N) << l;
      for (std::size_t j = hp.n - M; j < hp.n; ++j) EXPECT_EQ(keep[j], 1);
      const auto& s = hp.scores(l, h);
      auto rank_above = [&](std::size_t a, std::size_t b) {  // a strictly preferred to b
        if (visual(hp.mod[a]) != visual(hp.mod[b])) return !visual(hp.mod[a]);
        if (s[a] != s[b]) return s[a] > s[b];
        return a < b;
      };
      for (std::size_t a = 0; a + M < hp.n; ++a)
        for (std::size_t b = 0; b + M < hp.n; ++b)
          if (keep[a] && !keep[b]) {
            EXPECT_TRUE(rank_above(a, b)) << a << " vs " << b;
          }
    }
  }
  EXPECT_TRUE(differ) << "layers with different entropies should get different budgets";
  // Determinism (§15.4).
  const auto first = hp.keep;
  ctx = hp.context();
  evict::Meda::on_prefill_end(c, ctx);
  EXPECT_EQ(first, hp.keep);
}

TEST(Meda, RejectsBadConfig) {
  const CacheShape s{1, 1, 1, 64, 16};
  evict::Meda::Config c;
  c.rho = 0.0;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "rho");
  c.rho = 1.01;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "rho");
  c.rho = 0.1;
  c.query_window = 0;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "query_window");
  c.query_window = 77;
  EXPECT_EQ(evict::Meda::query_window(c), 77u);
  // A prompt so short that ⌊α·m/2⌋ = 0 would keep nothing: error, keep masks untouched.
  HandPrefill hp = random_prompt(CacheShape{2, 2, 2, 64, 128}, 2);
  hp.n = 12;
  hp.pos.resize(12);
  hp.mod.resize(12);
  hp.alive.resize(12);
  for (auto& sc : hp.score) sc.resize(12);
  for (auto& k : hp.k) k.resize(12 * 64);
  for (auto& v : hp.v) v.resize(12 * 64);
  for (int l = 0; l < 2; ++l) hp.set_all_row_queries(l, std::vector<float>(2 * 12 * 64, 0.0f));
  evict::Meda::Config d;
  auto ctx = hp.context();
  kvtest::expect_invalid_argument([&] { evict::Meda::on_prefill_end(d, ctx); }, "rho");
  EXPECT_EQ(hp.keep, std::vector<std::uint8_t>(hp.keep.size(), 1));
}

}  // namespace
