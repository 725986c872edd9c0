// SPDX-License-Identifier: Apache-2.0
// VL-Cache (eviction spec §4) on hand-built PrefillContexts against a double-precision oracle:
// post-vision rows from the modality labels, causal softmax per query head, threshold-filter
// sparsity with causal counting, density-proportional clipped budgets, ⌊0.1·k_l⌋ recent + top-k
// of the post-vision column sums (mean over the GQA group) per KV head.

#include "kvcompress/policies/evict/vl_cache.hpp"

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

std::vector<Modality> labels(std::size_t sys, std::size_t img, std::size_t txt) {
  std::vector<Modality> m(sys, Modality::kSystem);
  m.insert(m.end(), img, Modality::kImage);
  m.insert(m.end(), txt, Modality::kText);
  return m;
}

HandPrefill make(int L, const std::vector<Modality>& mod, std::size_t rows, std::uint32_t seed, int hq = 4,
                 int hkv = 2) {
  HandPrefill h(CacheShape{L, hq, hkv, 64, 1024}, hkv, mod.size());
  kvtest::fill_random(h, mod, rows, seed, 2.0f);
  for (int l = 0; l < L; ++l)
    for (auto& x : h.q[l]) x *= 0.5f + 0.6f * l;  // layers differ in sparsity
  return h;
}

struct Oracle {
  std::vector<double> density;
  std::vector<std::vector<std::vector<double>>> score;  // [L][Hkv][n]
};

Oracle oracle(const HandPrefill& h, double p) {
  const auto& s = h.shape;
  Oracle o;
  for (int l = 0; l < s.num_layers; ++l) {
    const auto L = kvtest::layer(h, l);
    const std::size_t n = L.pos.size(), rows = L.qpos.size();
    std::int64_t last_vis = -1;
    for (std::size_t j = 0; j < n; ++j)
      if (kvtest::is_visual(L.mod[j])) last_vis = L.pos[j];
    std::size_t i0 = 0;
    if (last_vis >= 0) {
      while (i0 < rows && L.qpos[i0] <= last_vis) ++i0;
      if (i0 == rows) i0 = rows - 1;
    }
    std::vector<std::vector<double>> sc(s.num_kv_heads, std::vector<double>(n, 0.0));
    double gamma = 0.0;
    for (int g = 0; g < s.num_q_heads; ++g) {
      double zeros = 0, causal = 0;
      for (std::size_t i = i0; i < rows; ++i) {
        const auto a = kvtest::ref_softmax_row(L, s, g, i);
        double mx = 0.0;
        for (std::size_t j = 0; j <= static_cast<std::size_t>(L.qpos[i]); ++j) mx = std::max(mx, a[j]);
        for (std::size_t j = 0; j <= static_cast<std::size_t>(L.qpos[i]); ++j) {
          causal += 1;  // row at position q contributes q + 1 entries
          zeros += a[j] < p * mx ? 1 : 0;
          sc[g / s.group_size()][j] += a[j] / s.group_size();
        }
      }
      gamma += zeros / causal;
    }
    o.density.push_back(1.0 - gamma / s.num_q_heads);
    o.score.push_back(sc);
  }
  return o;
}

TEST(VLCache, SpecOraclesForFilterAndAllocation) {
  float row[4] = {0.5f, 0.3f, 0.004f, 0.196f};
  EXPECT_EQ(evict::common::threshold_filter(row, 4, 0.01f), 1u);  // sparsity 0.25
  EXPECT_EQ(row[2], 0.0f);
  const auto b = evict::common::proportional_budgets({0.6, 0.2}, 0.1, {1000, 1000});
  EXPECT_NEAR(b.ratio[0], 0.15, 1e-12);
  EXPECT_NEAR(b.ratio[1], 0.05, 1e-12);
  EXPECT_NEAR(b.ratio[0] + b.ratio[1], 0.1 * 2, 1e-12);
}

TEST(VLCache, MatchesDoubleOracleWithGqa) {
  const int L = 3;
  const std::size_t n = 60, rows = 24;
  auto mod = labels(4, 30, 26);  // post-vision rows: positions 34..59 ∩ window 36..59 → all rows
  mod[40] = Modality::kVideo;    // a second visual span: v = 41, so rows 36..40 are not in P
  for (double alpha : {0.2, 0.35}) {
    auto h = make(L, mod, rows, 17);
    evict::VLCache::Config c;
    c.alpha = alpha;
    c.validate(h.shape);
    const Oracle o = oracle(h, 0.01);
    std::vector<std::vector<std::vector<std::int32_t>>> first;
    for (int rep = 0; rep < 2; ++rep) {
      auto ctx = h.context();
      const auto a = evict::VLCache::analyse(c, ctx);
      EXPECT_EQ(a.first_row[0], 5u);
      double dsum = std::accumulate(o.density.begin(), o.density.end(), 0.0);
      for (int l = 0; l < L; ++l) {
        EXPECT_NEAR(a.density[l], o.density[l], 1e-6) << "layer " << l;
        const double beta = std::clamp(o.density[l] / dsum * alpha * L, 0.01, 1.0);
        EXPECT_NEAR(a.budgets.ratio[l], beta, 1e-6);
        EXPECT_EQ(a.budgets.kept[l], std::max<std::size_t>(1, static_cast<std::size_t>(std::floor(beta * n))));
      }
      // Denser layer ⇒ budget no smaller.
      for (int l1 = 0; l1 < L; ++l1)
        for (int l2 = 0; l2 < L; ++l2)
          if (o.density[l1] > o.density[l2]) {
            EXPECT_GE(a.budgets.kept[l1], a.budgets.kept[l2]);
          }
      evict::VLCache::on_prefill_end(c, ctx);
      std::vector<std::vector<std::vector<std::int32_t>>> got(L);
      for (int l = 0; l < L; ++l) {
        const std::size_t k = a.budgets.kept[l], w = k / 10;
        for (int hh = 0; hh < 2; ++hh) {
          std::vector<std::size_t> cand(n - w);
          std::iota(cand.begin(), cand.end(), 0);
          auto top = kvtest::ref_top_k(o.score[l][hh], cand, k - w);
          std::vector<std::int32_t> expect(top.begin(), top.end());
          for (std::size_t j = n - w; j < n; ++j) expect.push_back(static_cast<std::int32_t>(j));
          const auto kept = kvtest::kept_positions(h, l, hh);
          EXPECT_EQ(kept, expect) << "layer " << l << " head " << hh << " alpha " << alpha;
          EXPECT_EQ(kept.size(), k) << "total kept per layer = k_l";
          got[l].push_back(kept);
        }
      }
      if (rep == 0)
        first = got;
      else
        EXPECT_EQ(got, first) << "determinism";
    }
  }
}

TEST(VLCache, ApportionRealisationHitsTheGlobalBudget) {
  auto h = make(4, labels(2, 40, 38), 30, 5);
  evict::VLCache::Config c;
  c.alpha = 0.25;
  c.realisation = evict::common::BudgetRealisation::kApportion;
  auto ctx = h.context();
  evict::VLCache::on_prefill_end(c, ctx);
  std::size_t total = 0;
  for (int l = 0; l < 4; ++l) total += kvtest::kept_positions(h, l, 0).size();
  EXPECT_EQ(total, static_cast<std::size_t>(std::floor(0.25 * 4 * 80)));
}

TEST(VLCache, NoVisualTokensUsesAllRowsVisualAtEndUsesLastRow) {
  auto text = make(1, labels(3, 0, 37), 12, 2);
  evict::VLCache::Config c;
  auto ctx = text.context();
  EXPECT_EQ(evict::VLCache::analyse(c, ctx).first_row[0], 0u);
  auto tail = make(1, labels(3, 37, 0), 12, 2);
  auto ctx2 = tail.context();
  EXPECT_EQ(evict::VLCache::analyse(c, ctx2).first_row[0], 11u);
  // The text-only case is density-allocated H2O-prefill over every window row: compare the scores.
  const Oracle o = oracle(text, 0.01);
  const auto a = evict::VLCache::analyse(c, ctx);
  for (int hh = 0; hh < 2; ++hh)
    for (std::size_t j = 0; j < 40; ++j) EXPECT_NEAR(a.score[0][hh * 40 + j], o.score[0][hh][j], 1e-5);
}

TEST(VLCache, IdentityAtFullRatio) {
  auto h = make(2, labels(4, 20, 16), 10, 3);
  evict::VLCache::Config c;
  c.alpha = 1.0;
  auto ctx = h.context();
  evict::VLCache::on_prefill_end(c, ctx);
  for (int l = 0; l < 2; ++l)
    for (int hh = 0; hh < 2; ++hh) EXPECT_EQ(kvtest::kept_positions(h, l, hh).size(), 40u);
}

TEST(VLCache, GqaWithIdenticalQueryHeadsEqualsMha) {
  // Hq = 4, Hkv = 2 with both query heads of a group identical ⇒ same kept sets as MHA Hq = Hkv = 2.
  auto gqa = make(2, labels(4, 20, 16), 10, 8, 4, 2);
  auto mha = make(2, labels(4, 20, 16), 10, 8, 2, 2);
  for (int l = 0; l < 2; ++l) {
    for (int kh = 0; kh < 2; ++kh) {
      gqa.keys(l, kh) = mha.keys(l, kh);
      gqa.values(l, kh) = mha.values(l, kh);
    }
    const auto& M = mha.q[l];
    for (int g = 0; g < 4; ++g)
      std::copy(M.begin() + (g / 2) * 10 * 64, M.begin() + (g / 2 + 1) * 10 * 64, gqa.q[l].begin() + g * 10 * 64);
  }
  evict::VLCache::Config c;
  c.alpha = 0.3;
  auto c1 = gqa.context();
  auto c2 = mha.context();
  evict::VLCache::on_prefill_end(c, c1);
  evict::VLCache::on_prefill_end(c, c2);
  for (int l = 0; l < 2; ++l)
    for (int hh = 0; hh < 2; ++hh) EXPECT_EQ(kvtest::kept_positions(gqa, l, hh), kvtest::kept_positions(mha, l, hh));
}

TEST(VLCache, BadInputsNameTheField) {
  const CacheShape s{1, 2, 2, 64, 64};
  evict::VLCache::Config c;
  c.alpha = 0.0;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "alpha");
  c.alpha = 1.2;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "alpha");
  c.alpha = 0.1;
  c.recent_fraction = 1.0;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "recent_fraction");
  c.recent_fraction = 0.1;
  c.max_post_vision_queries = 0;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "max_post_vision_queries");
  auto h = make(1, labels(2, 10, 10), 0, 1);  // no query window
  evict::VLCache::Config ok;
  auto ctx = h.context();
  kvtest::expect_invalid_argument([&] { evict::VLCache::on_prefill_end(ok, ctx); }, "queries(layer).rows");
  EXPECT_EQ(evict::VLCache::query_window(ok), 256u);
}

// Expected kept positions [L][Hkv] under clip-only budgets.
std::vector<std::vector<std::vector<std::int32_t>>> expected_kept(const HandPrefill& h, double alpha) {
  const Oracle o = oracle(h, 0.01);
  const int L = h.shape.num_layers;
  const double dsum = std::accumulate(o.density.begin(), o.density.end(), 0.0);
  std::vector<std::vector<std::vector<std::int32_t>>> out(L);
  for (int l = 0; l < L; ++l) {
    const std::size_t n = h.n;
    const double beta = std::clamp(o.density[l] / dsum * alpha * L, 0.01, 1.0);
    const std::size_t k = std::max<std::size_t>(1, static_cast<std::size_t>(std::floor(beta * n))), w = k / 10;
    for (int hh = 0; hh < h.shape.num_kv_heads; ++hh) {
      std::vector<std::size_t> cand(n - w);
      std::iota(cand.begin(), cand.end(), 0);
      auto top = kvtest::ref_top_k(o.score[l][hh], cand, k - w);
      std::vector<std::int32_t> e(top.begin(), top.end());
      for (std::size_t j = n - w; j < n; ++j) e.push_back(static_cast<std::int32_t>(j));
      out[l].push_back(e);
    }
  }
  return out;
}

template <class Quant>
void end_to_end(std::uint32_t seed) {
  using Cache = KVCache<Policy<evict::VLCache, merge::None, Quant>>;
  const CacheShape s{2, 4, 2, 64, 256};
  auto mod = labels(4, 30, 26);
  mod[45] = Modality::kVideo;
  mod[46] = Modality::kSpecial;
  auto p = kvtest::random_prompt(s, mod, seed, 2.0f);
  for (auto* t : {&p.k, &p.v})  // fp16-exact keys: the prefill staging of a lossy store is lossless
    for (auto& layer : *t)
      for (auto& x : layer) x = to_float(from_float<half>(x));
  typename Cache::Config cfg{};
  cfg.evict.alpha = 0.3;
  cfg.evict.max_post_vision_queries = 24;
  Cache c(s, cfg);
  kvtest::feed(c, p);
  c.end_prefill();
  const auto expect = expected_kept(kvtest::to_hand(p, 2, 24), 0.3);
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 2; ++h)
      EXPECT_EQ(kvtest::cache_positions(c, l, h), expect[l][h]) << "layer " << l << " head " << h;
  // Decode appends at position n_seen; no decode-time eviction.
  std::vector<float> k(2 * 64, 0.1f), v(2 * 64, 0.2f);
  const std::size_t before = c.size(0, 0);
  c.append(0, k.data(), v.data(), 1, Modality::kGenerated);
  EXPECT_EQ(c.size(0, 0), before + 1);
  EXPECT_EQ(kvtest::cache_positions(c, 0, 0).back(), 60);
}

TEST(VLCache, EndToEndThroughKVCacheWithMixedModalities) { end_to_end<quant::DenseF32>(12); }

TEST(VLCache, EndToEndWithKivi2) { end_to_end<quant::Kivi2>(13); }

TEST(VLCache, CausalCountingRowAtPositionQHasQPlusOneEntries) {
  // One head, d = 64; slots 0–1 image, 2–4 text; the only window row is at position 2, with
  // attention [0.6, 0.397, 0.003] over keys 0..2 (logit = log p via k = √d·log p·e0, q = e0).
  // Keys 3 and 4 lie in the row's future and are not counted: γ = 1/3 (not 3/5), density 2/3.
  HandPrefill h(CacheShape{1, 1, 1, 64, 16}, 1, 5);
  h.mod = {Modality::kImage, Modality::kImage, Modality::kText, Modality::kText, Modality::kText};
  const double p[3] = {0.6, 0.397, 0.003};
  for (int j = 0; j < 3; ++j) h.keys(0, 0)[j * 64] = float(8.0 * std::log(p[j]));
  h.q[0].assign(64, 0.0f);
  h.q[0][0] = 1.0f;
  h.qpos[0] = {2};
  evict::VLCache::Config c;
  auto ctx = h.context();
  const auto a = evict::VLCache::analyse(c, ctx);
  EXPECT_EQ(a.first_row[0], 0u);
  EXPECT_NEAR(a.density[0], 2.0 / 3.0, 1e-9);
  EXPECT_NEAR(a.score[0][0], 0.6, 1e-5);
  EXPECT_EQ(a.score[0][3], 0.0f);
}

}  // namespace
