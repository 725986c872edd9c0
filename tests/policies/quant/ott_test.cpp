// SPDX-License-Identifier: Apache-2.0
// OTT in the cache (quantization.md §8): the §8 test oracles (pool = N_o smallest-magnitude
// tokens seen by tracing, pool tokens bit exact, placeholders carry no mass, token count
// invariant, N_o = 0 is KIVI with G-of-(G+R) flushing), freezing, fused attention against the
// double-precision oracle over what the store holds, exact memory accounting, bad configs,
// truncate and composition with H2O / StreamingLLM.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "kvcompress/policies/quant/ott.hpp"
#include "reference/kivi_reference.hpp"
#include "support/cache_test_support.hpp"
#include "support/expect_invalid.hpp"

namespace {

using namespace kvcompress;
using O2 = quant::Ott2;
using Cache = KVCache<Policy<evict::None, merge::None, O2>>;

float f16(float x) { return f16_bits_to_f32(f32_to_f16_bits(x)); }

// Keys with structure plus planted low-magnitude tokens (OTT's outlier tokens).
std::vector<float> ott_keys(std::size_t T, int heads, int d, std::uint32_t seed) {
  auto k = kvtest::random_kv(T, heads, d, seed);
  std::mt19937 g(seed + 1);
  for (std::size_t t = 0; t < T; ++t)
    if (g() % 37 == 0)
      for (int h = 0; h < heads; ++h)
        for (int c = 0; c < d; ++c) k[(t * heads + h) * d + c] *= 0.02f + 0.01f * static_cast<float>(g() % 5);
  for (auto& x : k) x = f16(x);
  return k;
}

double l1(const float* x, int d) {
  double s = 0;
  for (int c = 0; c < d; ++c) s += std::fabs(double(f16(x[c])));
  return s;
}

// §8 oracle: while tracing is active the pool holds the N_o smallest-magnitude tokens among all
// tokens tracing has seen (every quantized slot); pool and extra tokens read back bit exact.
TEST(OttTracing, PoolHoldsSmallestMagnitudesAndCopiesAreExact) {
  const int d = 64;
  const CacheShape s{1, 2, 1, d, 2000};
  Cache::Config cfg{};
  cfg.quant.plain_layers = 0;  // one-layer caches: trace in layer 0
  cfg.quant.group = 32;
  cfg.quant.residual = 16;
  Cache c(s, cfg);
  const std::size_t T = 1500;
  // Every 20th token is an outlier token with a magnitude shrinking over time, so each one
  // enters the pool and pushes an older member out: the extra pool fills and tracing freezes.
  auto k = kvtest::random_kv(T, 1, d, 5);
  for (std::size_t t = 7; t < T; t += 20)
    for (int x = 0; x < d; ++x) k[t * d + x] *= 0.05f * std::pow(0.95f, static_cast<float>(t / 20));
  for (auto& x : k) x = f16(x);
  std::vector<double> mag(T);
  for (std::size_t t = 0; t < T; ++t) mag[t] = l1(&k[t * d], d);
  const auto v = kvtest::random_kv(T, 1, d, 6);
  c.append(0, k.data(), v.data(), 200);
  const auto& st = c.stream(0, 0);
  bool saw_frozen = false;
  std::size_t checked_nq = SIZE_MAX;
  for (std::size_t t = 200; t <= T; ++t) {
    const std::size_t nq = st.quantized();
    ASSERT_EQ(st.quantized() + st.window(), st.size());  // count invariant
    ASSERT_LE(st.window(), 16u + 32u);
    ASSERT_GE(st.window(), std::min<std::size_t>(16, st.size()));
    const auto& tab = st.protected_tokens();
    ASSERT_LE(tab.size(), 35u);
    if (st.hooks().tracing() && nq != checked_nq) {
      checked_nq = nq;
      std::vector<std::size_t> order(nq);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](std::size_t a, std::size_t b) { return mag[a] < mag[b]; });
      std::vector<std::size_t> want(order.begin(), order.begin() + std::min<std::size_t>(3, nq)), got;
      for (std::size_t i = 0; i < tab.size(); ++i)
        if (tab.category(i) == O2::kPool) got.push_back(tab.slot(i));
      std::sort(want.begin(), want.end());
      ASSERT_EQ(got, want) << "after " << t << " tokens";
    } else if (!st.hooks().tracing()) {
      saw_frozen = true;
    }
    if (t == T) break;
    c.append(0, k.data() + t * d, v.data() + t * d, 1);
  }
  EXPECT_TRUE(saw_frozen);  // ~70 shrinking outlier tokens overflow the 32-token extra pool
  const auto live = kvtest::live_slots(c, 0, 0);
  const auto& tab = st.protected_tokens();
  EXPECT_GT(tab.count(O2::kExtra), 20u);
  for (std::size_t i = 0; i < tab.size(); ++i) {
    const std::size_t j = tab.slot(i);
    for (int x = 0; x < d; ++x) {
      ASSERT_EQ(live.k[j * d + x], k[j * d + x]);
      ASSERT_EQ(live.v[j * d + x], f16(v[j * d + x]));
    }
  }
}

// §8 oracle: N_o = 0 is exactly KIVI with G-of-(G+R) flushing (independent re-quantization).
TEST(OttBackbone, NoOutlierTokensIsKiviWithGofGRFlush) {
  const int d = 128;
  const CacheShape s{1, 1, 1, d, 1000};
  Cache::Config cfg{};
  cfg.quant.plain_layers = 0;  // one-layer caches: trace in layer 0
  cfg.quant.outlier_tokens = 0;
  Cache c(s, cfg);
  const auto k = ott_keys(700, 1, d, 9);
  auto v = kvtest::random_kv(700, 1, d, 10);
  for (auto& x : v) x = f16(x);
  c.append(0, k.data(), v.data(), 300);
  const auto& st = c.stream(0, 0);
  EXPECT_EQ(st.quantized(), 256u);  // 300 ≥ 128 + 32 twice, and 44 < 160 remain
  for (std::size_t t = 300; t < 700; ++t) {
    c.append(0, k.data() + t * d, v.data() + t * d, 1);
    const std::size_t n = t + 1;
    ASSERT_EQ(st.quantized(), n < 160 ? 0 : (n - 32) / 128 * 128) << n;
  }
  const auto live = kvtest::live_slots(c, 0, 0);
  for (std::size_t g = 0; g < st.quantized() / 128; ++g) {
    const auto kq = kvref::kivi_quantize_keys(k.data() + g * 128 * d, d, 128, d, 2);
    const auto vq = kvref::kivi_quantize_values(v.data() + g * 128 * d, d, 128, d, 128, 2);
    for (int t = 0; t < 128; ++t)
      for (int x = 0; x < d; ++x) {
        ASSERT_NEAR(live.k[(g * 128 + t) * d + x], kq.dequant(t, x), 1e-6);
        ASSERT_NEAR(live.v[(g * 128 + t) * d + x], vq.dequant(t, x), 1e-6);
      }
  }
  for (std::size_t j = st.quantized(); j < 700; ++j) ASSERT_EQ(live.k[j * d + 5], k[j * d + 5]);
}

// Pool members are quantized as the group mean: the other tokens of their group match KIVI on the
// mean-replaced block (so the outlier no longer stretches the ranges).
TEST(OttBackbone, PoolTokensAreMeanReplacedBeforeQuantizing) {
  const int d = 64;
  const CacheShape s{1, 1, 1, d, 400};
  Cache::Config cfg{};
  cfg.quant.plain_layers = 0;  // one-layer caches: trace in layer 0
  cfg.quant.group = 32;
  cfg.quant.residual = 16;
  Cache c(s, cfg);
  const auto k = ott_keys(48, 1, d, 13);
  auto v = kvtest::random_kv(48, 1, d, 14);
  for (auto& x : v) x = f16(x);
  c.append(0, k.data(), v.data(), 48);
  const auto& tab = c.stream(0, 0).protected_tokens();
  ASSERT_EQ(tab.size(), 3u);
  std::vector<float> kw(k.begin(), k.begin() + 32 * d), vw(v.begin(), v.begin() + 32 * d);
  for (float* x : {kw.data(), vw.data()})
    for (int ch = 0; ch < d; ++ch) {
      double sum = 0;
      for (int t = 0; t < 32; ++t) sum += x[t * d + ch];
      for (std::size_t i = 0; i < 3; ++i) x[tab.slot(i) * d + ch] = static_cast<float>(sum / 32);
    }
  const auto kq = kvref::kivi_quantize_keys(kw.data(), d, 32, d, 2);
  const auto vq = kvref::kivi_quantize_values(vw.data(), d, 32, d, 64, 2);
  const auto live = kvtest::live_slots(c, 0, 0);
  for (int t = 0; t < 32; ++t) {
    if (tab.find(t) != tab.size()) continue;
    for (int x = 0; x < d; ++x) {
      ASSERT_NEAR(live.k[t * d + x], kq.dequant(t, x), 1e-6);
      ASSERT_NEAR(live.v[t * d + x], vq.dequant(t, x), 1e-6);
    }
  }
}

// Fused attention: placeholders take the pool copy's logit and contribute no value row of their
// own (the oracle over read() — exact pool copies — would differ otherwise).
struct AttnCase {
  int q_heads, kv_heads, d, group;
};
class OttAttention : public testing::TestWithParam<AttnCase> {};
TEST_P(OttAttention, MatchesOracleOverStoredContents) {
  const AttnCase p = GetParam();
  const CacheShape s{1, p.q_heads, p.kv_heads, p.d, 900};
  Cache::Config cfg{};
  cfg.quant.plain_layers = 0;  // one-layer caches: trace in layer 0
  cfg.quant.group = p.group;
  Cache c(s, cfg);
  std::uint32_t seed = 50;
  for (int chunk = 0; chunk < 2; ++chunk) {
    auto k = ott_keys(150, p.kv_heads, p.d, seed++);
    auto v = kvtest::random_kv(150, p.kv_heads, p.d, seed++, false);
    auto q = kvtest::random_kv(150, p.q_heads, p.d, seed++);
    std::vector<float> out(q.size());
    c.append(0, k.data(), v.data(), 150);
    c.attend(0, q.data(), 150, out.data());
    kvtest::expect_attention_matches(c, 0, q, 150, out, 2e-3, 2e-3);
  }
  for (int step = 0; step < 200; ++step) {
    auto k = ott_keys(1, p.kv_heads, p.d, seed++);
    auto v = kvtest::random_kv(1, p.kv_heads, p.d, seed++, false);
    auto q = kvtest::random_kv(1, p.q_heads, p.d, seed++);
    std::vector<float> out(q.size());
    c.append(0, k.data(), v.data(), 1);
    c.attend(0, q.data(), 1, out.data());
    if (step % 40 == 0 || step == 199) kvtest::expect_attention_matches(c, 0, q, 1, out, 2e-3, 2e-3);
  }
  EXPECT_GT(c.stream(0, 0).protected_tokens().size(), 0u);
}
INSTANTIATE_TEST_SUITE_P(Shapes, OttAttention,
                         testing::Values(AttnCase{8, 2, 128, 128}, AttnCase{4, 4, 64, 32}, AttnCase{6, 2, 96, 64},
                                         AttnCase{4, 1, 80, 16}),
                         [](const testing::TestParamInfo<AttnCase>& i) {
                           return "q" + std::to_string(i.param.q_heads) + "_kv" + std::to_string(i.param.kv_heads) +
                                  "_d" + std::to_string(i.param.d) + "_g" + std::to_string(i.param.group);
                         });

// Storage (§8): KIVI blocks at G = 128 — keys 2 + 32/128 = 2.25 bpe, values (Gv = 128 at d = 128)
// 2.25 bpe; fp16 window of R + G rows and 35 fp16 pool rows (+ free list, slot, category, row
// index) per stream.
// The paper traces no outlier tokens in layers 0–1 (plain_layers = 2 by default): the cache hands
// every store its layer, so only layer 2 builds a pool on the same keys.
TEST(OttTracing, FirstLayersTraceNoOutlierTokens) {
  const int d = 64;
  const CacheShape s{3, 2, 1, d, 600};
  Cache c(s, Cache::Config{});
  const auto k = ott_keys(500, 1, d, 41), v = kvtest::random_kv(500, 1, d, 42);
  for (int l = 0; l < 3; ++l) c.append(l, k.data(), v.data(), 500);
  for (int l = 0; l < 3; ++l) {
    const auto& tab = c.stream(l, 0).protected_tokens();
    std::size_t pool = 0;
    for (std::size_t i = 0; i < tab.size(); ++i) pool += tab.category(i) == O2::kPool ? 1 : 0;
    EXPECT_EQ(pool, l < 2 ? 0u : 3u) << "layer " << l;
  }
}

TEST(OttStorage, BitsPerElementAndMemoryBytes) {
  const CacheShape s{1, 1, 1, 128, 4096};
  EXPECT_EQ(O2::Store::block_bytes(128, {}), 128u * 128 * 2 / 8 + 4 * 128 + 128 * (32 + 4));
  EXPECT_DOUBLE_EQ(Cache::bytes_per_token(s) * 8 / (2 * 128), 2.25);
  const CacheShape s2{2, 4, 2, 128, 4096};
  Cache c(s2);
  auto k = ott_keys(1000, 2, 128, 3);
  for (int l = 0; l < 2; ++l) c.append(l, k.data(), k.data(), 1000);
  // 1000 tokens: 7 groups of 128 quantized (1000 − 896 = 104 < 160 in the window).
  const std::size_t fixed = 2 * 160 * 128 * 2 + 35 * (4 * 128 + 2 + 4 + 1 + 2);  // rows + free list + slot, category, row
  EXPECT_EQ(c.memory_bytes(), 4 * (7 * 9216 + fixed) + 2 * 1000 * Cache::kMetadataBytesPerSlot);
}

TEST(OttConfig, BadConfigsAreRejected) {
  const CacheShape s{1, 2, 1, 128, 256};
  auto bad = [&](auto mutate, const char* arg) {
    Cache::Config cfg{};
    cfg.quant.plain_layers = 0;  // one-layer caches: trace in layer 0
    mutate(cfg.quant);
    kvtest::expect_invalid_argument([&] { Cache c(s, cfg); }, arg);
  };
  bad([](O2::Config& q) { q.group = 24; }, "group");
  bad([](O2::Config& q) { q.group = 512; }, "group");
  bad([](O2::Config& q) { q.residual = 0; }, "residual");
  bad([](O2::Config& q) { q.outlier_tokens = -1; }, "outlier_tokens");
  bad([](O2::Config& q) { q.outlier_tokens = 65; }, "outlier_tokens");
  bad([](O2::Config& q) { q.extra_tokens = -2; }, "extra_tokens");
  bad([](O2::Config& q) { q.value_group = 4; }, "value_group");
  kvtest::expect_invalid_argument([&] { Cache c(CacheShape{1, 2, 1, 72, 256}); }, "head_dim");
}

TEST(OttTruncate, IntoGroupRestoresSurvivorsAndDropsTheirPoolEntries) {
  for (std::size_t m : {100u, 128u, 300u, 10u}) {
    const CacheShape s{1, 4, 2, 64, 900};
    Cache::Config cfg{};
    cfg.quant.plain_layers = 0;  // one-layer caches: trace in layer 0
    cfg.quant.group = 64;
    Cache c(s, cfg);
    auto k = ott_keys(400, 2, 64, 21);
    auto v = kvtest::random_kv(400, 2, 64, 22);
    c.append(0, k.data(), v.data(), 400);
    const auto before = kvtest::live_slots(c, 0, 1);
    c.truncate(m);
    const auto after = kvtest::live_slots(c, 0, 1);
    ASSERT_EQ(after.pos.size(), m);
    for (std::size_t i = 0; i < c.stream(0, 1).protected_tokens().size(); ++i)
      ASSERT_LT(c.stream(0, 1).protected_tokens().slot(i), c.stream(0, 1).quantized());
    for (std::size_t j = 0; j < m * 64; ++j) {
      ASSERT_TRUE(after.k[j] == before.k[j] || after.k[j] == f16(before.k[j])) << m << " " << j;
      ASSERT_TRUE(after.v[j] == before.v[j] || after.v[j] == f16(before.v[j])) << m << " " << j;
    }
    auto k2 = ott_keys(150, 2, 64, 23);
    auto q = kvtest::random_kv(1, 4, 64, 24);
    std::vector<float> out(q.size());
    for (int t = 0; t < 150; ++t) c.append(0, k2.data() + t * 128, k2.data() + t * 128, 1);
    c.attend(0, q.data(), 1, out.data());
    kvtest::expect_attention_matches(c, 0, q, 1, out, 2e-3, 2e-3);
  }
}

TEST(OttComposition, StreamingLLMDropsWholeGroupsWithTheirPoolTokens) {
  using C = KVCache<Policy<evict::StreamingLLM, merge::None, O2>>;
  const CacheShape s{1, 4, 2, 64, 1024};
  C::Config cfg{};
  cfg.quant.plain_layers = 0;  // one-layer caches: trace in layer 0
  cfg.evict.sink_tokens = 4;
  cfg.evict.window_tokens = 300;
  cfg.quant.group = 64;
  C c(s, cfg);
  auto k = ott_keys(1500, 2, 64, 31);
  auto q = kvtest::random_kv(1500, 4, 64, 32);
  std::vector<float> out(4 * 64);
  for (std::size_t t = 0; t < 1500; ++t) {
    c.append(0, k.data() + t * 128, k.data() + t * 128, 1);
    c.attend(0, q.data() + t * 256, 1, out.data());
    if (t % 300 == 299)
      kvtest::expect_attention_matches(c, 0, std::vector<float>(q.begin() + t * 256, q.begin() + (t + 1) * 256), 1,
                                       out, 2e-3, 2e-3);
  }
  EXPECT_EQ(c.size(0, 0), 304u);
  std::vector<std::int32_t> pos(304);
  c.positions(0, 1, pos.data());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(pos[i], i);
  for (int i = 4; i < 304; ++i) EXPECT_EQ(pos[i], 1500 - 304 + i);
  const auto& st = c.stream(0, 0);
  for (std::size_t i = 0; i < st.protected_tokens().size(); ++i) ASSERT_LT(st.protected_tokens().slot(i), st.quantized());
  EXPECT_LE(st.quantized(), 6u * 64);  // 1 sink group + ≤ 5 window groups
}

TEST(OttComposition, H2OSelectsAtPrefillEndThenQuantizesKeptSlots) {
  using C = KVCache<Policy<evict::H2O, merge::None, O2>>;
  const CacheShape s{2, 4, 2, 64, 1024};
  C::Config cfg{};
  cfg.quant.plain_layers = 0;  // one-layer caches: trace in layer 0
  cfg.evict.heavy_budget = 150;
  cfg.evict.recent_budget = 100;
  cfg.quant.group = 64;
  C c(s, cfg);
  auto k = ott_keys(400, 2, 64, 41);
  auto v = kvtest::random_kv(400, 2, 64, 42, false);
  auto q = kvtest::random_kv(400, 4, 64, 43);
  std::vector<float> out(q.size());
  for (int l = 0; l < 2; ++l) {
    c.append(l, k.data(), v.data(), 400);
    c.attend(l, q.data(), 400, out.data());
  }
  c.end_prefill();
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 2; ++h) {
      ASSERT_EQ(c.size(l, h), 250u);
      std::vector<std::int32_t> pos(250);
      c.positions(l, h, pos.data());
      for (int i = 0; i < 100; ++i) EXPECT_EQ(pos[150 + i], 300 + i);
      EXPECT_EQ(c.stream(l, h).quantized(), 192u);  // 250 kept: flush while window ≥ 64 + 32
    }
  auto k2 = ott_keys(60, 2, 64, 44);
  auto q2 = kvtest::random_kv(60, 4, 64, 45);
  for (int t = 0; t < 60; ++t)
    for (int l = 0; l < 2; ++l) {
      c.append(l, k2.data() + t * 128, k2.data() + t * 128, 1);
      std::vector<float> o(4 * 64);
      c.attend(l, q2.data() + t * 256, 1, o.data());
      if (t == 59)
        kvtest::expect_attention_matches(c, l, std::vector<float>(q2.begin() + t * 256, q2.begin() + (t + 1) * 256),
                                         1, o, 2e-3, 2e-3);
    }
}

}  // namespace
