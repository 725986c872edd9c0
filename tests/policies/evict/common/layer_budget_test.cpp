// SPDX-License-Identifier: Apache-2.0
// Layer-budget allocators (eviction spec §1.6) and their integer realisation: hand-worked
// apportionment and water-filling, the spec's worked examples (PyramidKV 936/64/500, MEDA
// softmax ratios, VL-Cache β, PrefixKV bisection, ZipVL prefix count, VLA-Cache schedule),
// §15.1 budget invariants (Σ k_l = B, 1 ≤ k_l ≤ n_l) on random inputs, and monotonicity per
// layer (in the global ratio, and across layers in the statistic).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "kvcompress/policies/evict/common/apportion.hpp"
#include "kvcompress/policies/evict/common/cdf_budget.hpp"
#include "kvcompress/policies/evict/common/layer_budget.hpp"
#include "kvcompress/policies/evict/common/reuse_schedule.hpp"

namespace {

using namespace kvcompress;
using namespace kvcompress::evict::common;
using Sizes = std::vector<std::size_t>;

std::size_t sum(const Sizes& v) { return std::accumulate(v.begin(), v.end(), std::size_t{0}); }

void expect_invariants(const LayerBudgets& b, const Sizes& n) {
  ASSERT_EQ(b.kept.size(), n.size());
  EXPECT_EQ(b.total, sum(b.kept));
  for (std::size_t l = 0; l < n.size(); ++l) {
    EXPECT_GE(b.kept[l], 1u) << "layer " << l;
    EXPECT_LE(b.kept[l], n[l]) << "layer " << l;
  }
}

TEST(Apportion, LargestRemainderTiesToLowerLayer) {
  EXPECT_EQ(apportion({1.5, 1.5, 1.0}, {0, 0, 0}, {10, 10, 10}, 4), (Sizes{2, 1, 1}));
  EXPECT_EQ(apportion({1.2, 1.7, 1.1}, {0, 0, 0}, {10, 10, 10}, 4), (Sizes{1, 2, 1}));
  EXPECT_EQ(apportion({2.0, 3.0}, {0, 0}, {5, 5}, 5), (Sizes{2, 3}));
}

TEST(Apportion, WaterFillsClippedSurplus) {
  // Layer 0 wants 10 but is capped at 5: the 2 missing slots go to the free layers in
  // proportion to their values (1 : 1).
  EXPECT_EQ(apportion({10, 1, 1}, {0, 0, 0}, {5, 5, 5}, 9), (Sizes{5, 2, 2}));
  // Deficit side: layer 2 is pinned at its lower bound 4, the others shrink proportionally.
  EXPECT_EQ(apportion({6, 3, 0}, {0, 0, 4}, {10, 10, 10}, 7), (Sizes{2, 1, 4}));
  // All free layers at 0 share equally.
  EXPECT_EQ(apportion({0, 0, 9}, {0, 0, 0}, {10, 10, 3}, 5), (Sizes{1, 1, 3}));
}

TEST(Apportion, RandomInvariantsAndQuota) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> u(0, 50);
  for (int trial = 0; trial < 200; ++trial) {
    const std::size_t L = 1 + rng() % 12;
    std::vector<double> x(L);
    Sizes lo(L), hi(L);
    for (std::size_t l = 0; l < L; ++l) x[l] = u(rng), lo[l] = rng() % 5, hi[l] = lo[l] + rng() % 40;
    const std::size_t B = sum(lo) + rng() % (sum(hi) - sum(lo) + 1);
    const Sizes k = apportion(x, lo, hi, B);
    EXPECT_EQ(sum(k), B);
    for (std::size_t l = 0; l < L; ++l) EXPECT_TRUE(k[l] >= lo[l] && k[l] <= hi[l]);
  }
  // Unconstrained bounds: the quota property |k_l − x_l| < 1 when Σ x = B.
  const std::vector<double> x = {3.3, 7.25, 0.45, 9.0};
  const Sizes k = apportion(x, {0, 0, 0, 0}, {100, 100, 100, 100}, 20);
  for (std::size_t l = 0; l < 4; ++l) EXPECT_LT(std::abs(double(k[l]) - x[l]), 1.0);
}

TEST(Apportion, RejectsInfeasibleTotals) {
  try {
    apportion({1, 1}, {2, 2}, {3, 3}, 7);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'total' = 7"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[4, 6]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(apportion({1}, {0, 0}, {3, 3}, 1), InvalidArgument);
  EXPECT_THROW(apportion({-1}, {0}, {3}, 1), InvalidArgument);
}

TEST(UniformBudgets, FloorAndRatioChecks) {
  const LayerBudgets b = uniform_budgets({10, 25, 3}, 0.5);
  EXPECT_EQ(b.kept, (Sizes{5, 12, 1}));
  EXPECT_EQ(b.target, 18u);
  EXPECT_EQ(b.total, 18u);
  EXPECT_EQ(uniform_budgets({10, 1}, 0.05).kept, (Sizes{1, 1}));  // at least one slot
  for (double bad : {0.0, -0.1, 1.5}) {
    try {
      uniform_budgets({10}, bad);
      FAIL() << "expected InvalidArgument for " << bad;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("'ratio'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("(0, 1]"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(uniform_budgets({10, 0}, 0.5), InvalidArgument);
}

TEST(PyramidBudgets, SpecExample) {
  for (BudgetRealisation mode : {BudgetRealisation::kClipOnly, BudgetRealisation::kApportion}) {
    const LayerBudgets b = pyramid_budgets(1000, 0.5, 64, 32, 20.0, mode);
    EXPECT_EQ(b.kept.front(), 936u) << to_string(mode);
    EXPECT_EQ(b.kept.back(), 64u) << to_string(mode);
    EXPECT_EQ(b.total, 16000u) << to_string(mode);  // mean 500
    EXPECT_TRUE(std::is_sorted(b.kept.rbegin(), b.kept.rend())) << "non-increasing in depth";
    expect_invariants(b, Sizes(32, 1000));
  }
  // Layer 1 by hand: 936 − 872/31 = 907.87 → 908.
  EXPECT_EQ(pyramid_budgets(1000, 0.5, 64, 32).kept[1], 908u);
  // Fallback (min < W): every layer keeps m·r.
  const LayerBudgets f = pyramid_budgets(1000, 0.3, 64, 4);
  EXPECT_EQ(f.kept, (Sizes{300, 300, 300, 300}));
}

TEST(ProportionalBudgets, VlCacheExampleAndClipping) {
  const LayerBudgets b = proportional_budgets({0.6, 0.2}, 0.1, {1000, 1000});
  EXPECT_NEAR(b.ratio[0], 0.15, 1e-12);
  EXPECT_NEAR(b.ratio[1], 0.05, 1e-12);
  EXPECT_EQ(b.kept, (Sizes{150, 50}));
  EXPECT_EQ(b.total, b.target);
  // One dominant layer is clipped at 1: clip-only reports the shortfall, apportion refills.
  const std::vector<double> w = {10, 1, 1, 1};
  const Sizes n(4, 100);
  const LayerBudgets clip = proportional_budgets(w, 0.5, n);
  EXPECT_NEAR(clip.ratio[0], 1.0, 1e-12);
  EXPECT_EQ(clip.kept[0], 100u);
  EXPECT_EQ(clip.target, 200u);
  EXPECT_EQ(clip.total, 100u + 3 * 15);  // floor(2/13·100) = 15 each, not redistributed
  const LayerBudgets app = proportional_budgets(w, 0.5, n, 0.01, 1.0, BudgetRealisation::kApportion);
  EXPECT_EQ(app.kept, (Sizes{100, 34, 33, 33}));
  EXPECT_EQ(app.total, 200u);
  EXPECT_THROW(proportional_budgets({1, 2}, 0.5, {10}), InvalidArgument);
  EXPECT_THROW(proportional_budgets({1, -2}, 0.5, {10, 10}), InvalidArgument);
  EXPECT_THROW(proportional_budgets({1, 2}, 1.5, {10, 10}), InvalidArgument);
}

// §15.1 on random statistics: Σ k_l = B exactly and 1 ≤ k_l ≤ n_l under apportionment; a layer
// with a larger statistic never gets a smaller ratio (monotone across layers).
TEST(ProportionalBudgets, RandomInvariantsAndCrossLayerMonotonicity) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> u(0, 1);
  for (int trial = 0; trial < 200; ++trial) {
    const std::size_t L = 2 + rng() % 30;
    std::vector<double> w(L);
    for (auto& x : w) x = u(rng) * u(rng);
    const std::size_t m = 50 + rng() % 500;
    const Sizes n(L, m);
    const double alpha = 0.02 + 0.9 * u(rng);
    const LayerBudgets b = proportional_budgets(w, alpha, n, 0.01, 1.0, BudgetRealisation::kApportion);
    expect_invariants(b, n);
    EXPECT_EQ(b.total, std::size_t(std::floor(alpha * double(L * m))));
    for (std::size_t a = 0; a < L; ++a)
      for (std::size_t c = 0; c < L; ++c)
        if (w[a] > w[c]) {
          EXPECT_GE(b.kept[a], b.kept[c]);
          EXPECT_GE(b.ratio[a], b.ratio[c]);
        }
  }
}

TEST(SoftmaxBudgets, MedaExample) {
  const LayerBudgets b = softmax_budgets({2.0, 1.0, 0.5, 0.5}, 0.2, Sizes(4, 1000));
  const double want[] = {0.44098, 0.16223, 0.09840, 0.09840};
  for (int l = 0; l < 4; ++l) EXPECT_NEAR(b.ratio[l], want[l], 1e-5);
  EXPECT_NEAR(b.ratio[0] + b.ratio[1] + b.ratio[2] + b.ratio[3], 0.8, 1e-12);
  EXPECT_EQ(b.kept, (Sizes{440, 162, 98, 98}));
  // Equal entropies → uniform ρ.
  const LayerBudgets e = softmax_budgets({1.3, 1.3, 1.3}, 0.25, Sizes(3, 40));
  for (double r : e.ratio) EXPECT_NEAR(r, 0.25, 1e-12);
  EXPECT_EQ(e.kept, (Sizes{10, 10, 10}));
}

TEST(StaticProfileBudgets, ForgetFractionsRoundHalfToEven) {
  const LayerBudgets b = static_profile_budgets({0.5, 0.25, 0.35, 0.0}, {10, 10, 10, 7});
  EXPECT_EQ(b.kept, (Sizes{5, 8, 6, 7}));  // round(2.5) = 2, round(3.5) = 4
  EXPECT_NEAR(b.ratio[1], 0.75, 1e-12);
  EXPECT_THROW(static_profile_budgets({1.0}, {10}), InvalidArgument);
}

// Per-layer monotonicity in the global ratio for the ratio-driven allocators.
TEST(LayerBudgets, MonotoneInRatioPerLayer) {
  const Sizes n = {100, 37, 512, 9};
  const std::vector<double> w = {0.3, 0.9, 0.1, 0.5};
  LayerBudgets prev_u, prev_c;
  for (int step = 1; step <= 100; ++step) {
    const double r = step / 100.0;
    const LayerBudgets u = uniform_budgets(n, r);
    const LayerBudgets c = proportional_budgets(w, r, n);  // clip-only
    if (step > 1)
      for (std::size_t l = 0; l < n.size(); ++l) {
        EXPECT_GE(u.kept[l], prev_u.kept[l]) << "uniform r=" << r << " l=" << l;
        EXPECT_GE(c.kept[l], prev_c.kept[l]) << "proportional r=" << r << " l=" << l;
      }
    prev_u = u, prev_c = c;
  }
  // Pyramid inside its linear regime (m=1000, W=64: r ∈ [0.5, 0.95]).
  LayerBudgets prev_p = pyramid_budgets(1000, 0.5, 64, 32);
  for (int step = 51; step <= 95; ++step) {
    const LayerBudgets p = pyramid_budgets(1000, step / 100.0, 64, 32);
    for (std::size_t l = 0; l < 32; ++l) EXPECT_GE(p.kept[l], prev_p.kept[l]) << "pyramid r=" << step << " l=" << l;
    prev_p = p;
  }
}

TEST(CdfBudgets, PrefixKvWorkedExample) {
  const CdfBudgets b = cdf_threshold_budgets({{0.1f, 0.7f, 0.1f, 0.1f}, {0.25f, 0.25f, 0.25f, 0.25f}}, {0, 0}, 0.5);
  EXPECT_EQ(b.prefix, (Sizes{1, 3}));
  EXPECT_GT(b.threshold, 0.5);
  EXPECT_LE(b.threshold, 0.7 + 1e-6);
  EXPECT_EQ(b.budgets.total, 4u);
  // With protected slots (2 and 3) the prefixes are the same and kept = prefix + protected:
  // floor(0.7·13) = 9 = 4 + 5.
  const CdfBudgets p = cdf_threshold_budgets({{0.7f, 0.1f, 0.1f, 0.1f}, {0.25f, 0.25f, 0.25f, 0.25f}}, {2, 3}, 0.7);
  EXPECT_EQ(p.prefix, (Sizes{1, 3}));
  EXPECT_EQ(p.budgets.kept, (Sizes{3, 6}));
  EXPECT_EQ(p.budgets.total, 9u);
}

TEST(CdfBudgets, OneHotUniformZeroMassAndApportionedTies) {
  // One-hot layer needs 1; the uniform layer takes the rest.
  EXPECT_EQ(cdf_threshold_budgets({{0, 1, 0, 0}, {1, 1, 1, 1}}, {0, 0}, 0.5).prefix, (Sizes{1, 3}));
  // Target above what any p reaches (trailing zeros): filled up to all slots.
  EXPECT_EQ(cdf_threshold_budgets({{1, 0, 0, 0}}, {0}, 0.75).prefix, (Sizes{3}));
  // A zero-mass layer uses the uniform CDF.
  EXPECT_EQ(cdf_threshold_budgets({{0, 0, 0, 0}, {0, 1, 0, 0}}, {0, 0}, 0.5).prefix, (Sizes{3, 1}));
  // Two identical uniform layers jump together (2, 4, 6, 8): target 3 is apportioned, tie → layer 0.
  EXPECT_EQ(cdf_threshold_budgets({{1, 1, 1, 1}, {1, 1, 1, 1}}, {0, 0}, 0.375).prefix, (Sizes{2, 1}));
}

TEST(CdfBudgets, RandomInvariantsAndMonotoneInRatio) {
  std::mt19937 rng(7);
  std::exponential_distribution<float> e(1.0f);
  std::vector<std::vector<float>> s(5);
  const Sizes prot = {5, 5, 5, 5, 5};
  std::size_t n_total = 0;
  for (std::size_t l = 0; l < s.size(); ++l) {
    s[l].resize(40 + 10 * l);
    for (auto& x : s[l]) x = std::pow(e(rng), float(l + 1));  // deeper layers more concentrated
    n_total += s[l].size() + prot[l];
  }
  Sizes prev(5, 0);
  for (int step = 10; step <= 100; ++step) {
    const double r = step / 100.0;
    const CdfBudgets b = cdf_threshold_budgets(s, prot, r);
    EXPECT_EQ(b.budgets.total, std::size_t(std::floor(r * double(n_total)))) << r;
    for (std::size_t l = 0; l < s.size(); ++l) {
      EXPECT_GE(b.prefix[l], 1u);
      EXPECT_LE(b.prefix[l], s[l].size());
      EXPECT_GE(b.prefix[l], prev[l]) << "r=" << r << " layer " << l;
      EXPECT_EQ(b.budgets.kept[l], b.prefix[l] + prot[l]);
    }
    prev = b.prefix;
  }
  // Below the protected set: error naming the ratio.
  EXPECT_THROW(cdf_threshold_budgets({{1, 1, 1, 1}, {1, 1, 1, 1}}, {2, 2}, 0.3), InvalidArgument);
}

TEST(MassPrefixCount, ZipVlExample) {
  const std::vector<float> a = {0.05f, 0.3f, 0.05f, 0.5f, 0.1f};
  std::vector<float> scratch(a.size());
  EXPECT_EQ(mass_prefix_count(a.data(), a.size(), 0.85, scratch.data()), 3u);
  const std::vector<float> z = {0.2f, 0.0f, 0.3f, 0.0f};
  EXPECT_EQ(mass_prefix_count(z.data(), 4, 1.0, scratch.data()), 2u);  // tokens with non-zero mass
  std::size_t prev = 0;
  for (int t = 1; t <= 100; ++t) {
    const std::size_t p = mass_prefix_count(a.data(), a.size(), t / 100.0, scratch.data());
    EXPECT_GE(p, prev);
    prev = p;
  }
  EXPECT_THROW(mass_prefix_count(a.data(), a.size(), 0.0, scratch.data()), InvalidArgument);
}

TEST(ReuseSchedule, VlaCacheExamples) {
  const auto up = entropy_reuse_schedule({1, 2, 3});
  EXPECT_NEAR(up[0], 1.0, 1e-12);
  EXPECT_NEAR(up[1], 0.5, 1e-12);
  EXPECT_NEAR(up[2], 0.0, 1e-12);
  const auto down = entropy_reuse_schedule({3, 2, 1});
  EXPECT_NEAR(down[0], 0.0, 1e-12);
  EXPECT_NEAR(down[1], 0.275, 1e-12);
  EXPECT_NEAR(down[2], 0.67375, 1e-12);
  EXPECT_EQ(entropy_reuse_schedule({2, 2}), (std::vector<double>{0, 0}));
  EXPECT_EQ(reuse_count(0.5, 11), 5u);
  EXPECT_EQ(reuse_count(0.0, 11), 1u);
  EXPECT_EQ(reuse_count(0.7, 0), 0u);
  EXPECT_THROW(entropy_reuse_schedule({1, 2}, 1.5), InvalidArgument);
}

}  // namespace
