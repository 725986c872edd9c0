// SPDX-License-Identifier: Apache-2.0
// PyramidKV (eviction spec §13.4): the kvpress pyramid budgets, recomputed here in double
// (std::nearbyint = Python's round half to even), and per layer the SnapKV selection of the
// independent oracle (support/snapkv_oracle.hpp) with that layer's budget. Spec example and
// oracles: m = 1000, r = 0.5, W = 64, L = 32 → 936 … 64, mean 500; Σ k_l ≈ L·m·r; k_l
// non-increasing in l.

#include "kvcompress/policies/evict/pyramidkv.hpp"

#include <gtest/gtest.h>

#include <cfenv>
#include <cmath>
#include <numeric>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "support/cache_test_support.hpp"
#include "support/expect_invalid.hpp"
#include "support/prefill_fixture.hpp"
#include "support/snapkv_oracle.hpp"

namespace {

using namespace kvcompress;
using kvtest::PrefillFixture;

// kvpress PyramidKVPress.get_layer_budget, in double.
std::vector<std::size_t> pyramid(double m, double r, double W, int L, double beta) {
  const double cap = W + m * r;
  double lo = (cap - W) / beta, hi = 2 * (cap - W) - lo;
  if (hi >= m - W) {
    hi = m - W;
    lo = 2 * (cap - W) - hi;
  }
  std::vector<std::size_t> k;
  for (int l = 0; l < L; ++l) {
    const bool linear = m >= hi && hi >= lo && lo >= W && L > 1;
    k.push_back(static_cast<std::size_t>(std::nearbyint(linear ? hi - l * (hi - lo) / (L - 1) : m * r)));
  }
  return k;
}

evict::PyramidKV::Config make_config(double ratio, std::size_t window) {
  evict::PyramidKV::Config c;
  c.budget = {ratio, 0};
  c.window = window;
  return c;
}

TEST(PyramidKV, SpecExampleBudgets) {
  ASSERT_EQ(std::fegetround(), FE_TONEAREST);
  const auto b = evict::PyramidKV::budgets(make_config(0.5, 64), 1000, 32);
  EXPECT_EQ(b.kept.front(), 936u);
  EXPECT_EQ(b.kept.back(), 64u);
  EXPECT_EQ(b.kept, pyramid(1000, 0.5, 64, 32, 20));
  const double total = std::accumulate(b.kept.begin(), b.kept.end(), 0.0);
  EXPECT_NEAR(total / 32, 500.0, 0.5);  // Σ k_l ≈ L·m(1 − c)
  for (std::size_t l = 1; l < 32; ++l) EXPECT_LE(b.kept[l], b.kept[l - 1]);
}

TEST(PyramidKV, DefaultsAreKvpress) {
  const evict::PyramidKV::Config c;
  EXPECT_EQ(c.window, 64u);
  EXPECT_EQ(c.kernel, 5);
  EXPECT_EQ(c.pool, evict::common::PoolKind::kAvg);
  EXPECT_DOUBLE_EQ(c.beta, 20.0);
  EXPECT_EQ(evict::PyramidKV::query_window(c), 64u);
}

TEST(PyramidKV, PerLayerSnapKVSelectionWithPyramidBudgets) {
  const CacheShape s{4, 4, 2, 64, 512};
  PrefillFixture f(s, true, 400, 8, 41);
  auto c = make_config(0.5, 8);
  auto ctx = f.context();
  evict::PyramidKV::on_prefill_end(c, ctx);
  const auto k = pyramid(400, 0.5, 8, 4, 20);  // 390, 263, 137, 10
  kvtest::snapkv::Oracle o;
  o.window = 8;
  for (int l = 0; l < 4; ++l) {
    if (l > 0) {
      EXPECT_LT(k[l], k[l - 1]);
    }
    for (int h = 0; h < 2; ++h) EXPECT_EQ(f.kept(l, h), kvtest::snapkv::oracle_keep(f, l, h, o, k[l])) << l << "/" << h;
  }
}

TEST(PyramidKV, FallsBackToUniformWhenThePyramidDoesNotFit) {
  // m = 100, r = 0.3, W = 20: cap − W = 30, min = 1.5 < W → every layer keeps round(m·r) = 30.
  const auto b = evict::PyramidKV::budgets(make_config(0.3, 20), 100, 6);
  for (auto k : b.kept) EXPECT_EQ(k, 30u);
  EXPECT_EQ(b.kept, pyramid(100, 0.3, 20, 6, 20));
}

TEST(PyramidKV, ApportionRealisesTheExactTotal) {
  auto c = make_config(0.37, 16);
  c.realisation = evict::common::BudgetRealisation::kApportion;
  const auto b = evict::PyramidKV::budgets(c, 333, 7);
  EXPECT_EQ(std::accumulate(b.kept.begin(), b.kept.end(), std::size_t{0}),
            static_cast<std::size_t>(std::floor(7 * 333 * 0.37)));
  for (std::size_t l = 1; l < 7; ++l) EXPECT_LE(b.kept[l], b.kept[l - 1]);
}

TEST(PyramidKV, AbsoluteBudgetIsTheMeanPerLayerCapacity) {
  auto c = make_config(1.0, 16);
  c.budget = {1.0, 200};
  EXPECT_EQ(evict::PyramidKV::budgets(c, 800, 8).kept, pyramid(800, 0.25, 16, 8, 20));
}

TEST(PyramidKV, IdentityAtRatioOne) {
  const CacheShape s{3, 4, 2, 64, 512};
  PrefillFixture f(s, true, 90, 8, 42);
  auto ctx = f.context();
  evict::PyramidKV::on_prefill_end(make_config(1.0, 8), ctx);
  for (int l = 0; l < 3; ++l)
    for (int h = 0; h < 2; ++h) EXPECT_EQ(f.kept(l, h).size(), 90u);
}

TEST(PyramidKV, AllocatorMonotoneInTheRatioPerLayer) {
  // §15.9: for adaptive allocators, per-layer monotonicity of the budgets — within the linear
  // regime (the switch from the uniform fallback at r = 0.1 to the pyramid at r = 0.2 moves the
  // bottom layers down; a property of the kvpress form, checked against it here).
  std::vector<std::size_t> prev(8, 0);
  for (double r : {0.2, 0.3, 0.5, 0.7, 0.9, 1.0}) {
    const auto b = evict::PyramidKV::budgets(make_config(r, 8), 1000, 8);
    EXPECT_EQ(b.kept, pyramid(1000, r, 8, 8, 20));
    for (std::size_t l = 0; l < 8; ++l) EXPECT_GE(b.kept[l], prev[l]) << "r " << r << " layer " << l;
    prev = b.kept;
  }
  EXPECT_EQ(evict::PyramidKV::budgets(make_config(0.1, 8), 1000, 8).kept, pyramid(1000, 0.1, 8, 8, 20));
}

TEST(PyramidKV, BadConfigsNameTheField) {
  const CacheShape s{2, 4, 2, 64, 512};
  auto c = make_config(0.0, 8);
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "budget.ratio");
  c = make_config(1.01, 8);
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "budget.ratio");
  c = make_config(0.5, 0);
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "window");
  c = make_config(0.5, 8);
  c.beta = 0.5;
  kvtest::expect_invalid_argument([&] { c.validate(s); }, "beta");
}

TEST(PyramidKV, LayerBudgetBelowTheWindowThrows) {
  // m = 60, r = 0.1, W = 16: fallback k = 6 < window.
  const CacheShape s{2, 4, 2, 64, 512};
  PrefillFixture f(s, true, 60, 16, 43);
  auto ctx = f.context();
  kvtest::expect_invalid_argument([&] { evict::PyramidKV::on_prefill_end(make_config(0.1, 16), ctx); }, "budget.ratio");
}

TEST(PyramidKV, EndToEndDenseCache) {
  using Cache = KVCache<Policy<evict::PyramidKV, merge::None, quant::DenseF32>>;
  const CacheShape s{3, 4, 2, 64, 512};
  Cache::Config cfg{};
  cfg.evict = make_config(0.5, 4);
  Cache c(s, cfg);
  const auto prompt = kvtest::random_prompt(s, 240, 44);
  kvtest::feed_prompt(c, prompt);
  c.end_prefill();
  auto f = kvtest::oracle_view(s, true, prompt, 4);
  const auto k = pyramid(240, 0.5, 4, 3, 20);  // 234, 120, 6
  kvtest::snapkv::Oracle o;
  o.window = 4;
  for (int l = 0; l < 3; ++l)
    for (int h = 0; h < 2; ++h)
      EXPECT_EQ(kvtest::cache_positions(c, l, h), kvtest::snapkv::oracle_keep(f, l, h, o, k[l])) << l << "/" << h;
  const auto kv = kvtest::random_kv(1, 2, 64, 45, false);
  const auto q = kvtest::random_kv(1, 4, 64, 46, false);
  std::vector<float> out(4 * 64);
  for (int l = 0; l < 3; ++l) {
    c.append(l, kv.data(), kv.data(), 1);
    c.attend(l, q.data(), 1, out.data());
    kvtest::expect_attention_matches(c, l, q, 1, out, 1e-5, 1e-5);
    EXPECT_EQ(c.size(l, 0), k[l] + 1);
  }
}

}  // namespace
