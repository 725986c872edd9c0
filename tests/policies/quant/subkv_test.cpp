// SPDX-License-Identifier: Apache-2.0
// SubKV in the cache (quantization.md §9; our interpretation, see quant/subkv.hpp): the §9
// oracles — KIVI's (codec contents against an independent re-quantization, attention against
// the double-precision oracle), sink exactness, and the window-length invariant of our
// dynamic-window law W(T) = clamp(round(ρ·T), W_min, W_max) — plus memory accounting, bad
// configs and composition with StreamingLLM / H2O.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "kvcompress/policies/quant/subkv.hpp"
#include "reference/kivi_reference.hpp"
#include "support/cache_test_support.hpp"
#include "support/expect_invalid.hpp"

namespace {

using namespace kvcompress;
using S2 = quant::SubKV2;
using Cache = KVCache<Policy<evict::None, merge::None, S2>>;

float f16(float x) { return f16_bits_to_f32(f32_to_f16_bits(x)); }

// Independent statement of the law (ρ = 1/16, W_min = 32, W_max = 128 by default).
std::size_t law(std::size_t t, double rho = 0.0625, double wmin = 32, double wmax = 128) {
  return static_cast<std::size_t>(std::min(wmax, std::max(wmin, std::nearbyint(rho * double(t)))));
}

TEST(SubKVWindow, LengthFollowsTheDynamicLaw) {
  for (std::size_t prompt : {1u, 40u, 64u, 500u, 3000u}) {
    const CacheShape s{1, 2, 1, 64, 5000};
    Cache c(s);
    auto k = kvtest::random_kv(prompt + 1000, 1, 64, 3);
    c.append(0, k.data(), k.data(), prompt);
    const auto& st = c.stream(0, 0);
    for (std::size_t t = prompt;; ++t) {
      const std::size_t n = st.size(), w = st.window(), W = law(n);
      ASSERT_EQ(n, t);
      ASSERT_EQ(st.quantized() % 32, 0u);
      if (n < W + 32) {
        ASSERT_EQ(w, n) << n;  // nothing flushed before G + W(T) tokens
      }
      ASSERT_LT(w, W + 32) << n;
      if (n >= W) {
        ASSERT_GE(w, W) << n;
      }
      if (t == prompt + 1000) break;
      c.append(0, k.data() + t * 64, k.data() + t * 64, 1);
    }
  }
  EXPECT_EQ(S2::window_for({}, 1000), 62u);  // 62.5 rounds half to even
  EXPECT_EQ(S2::window_for({}, 1016), 64u);  // 63.5 → 64
  EXPECT_EQ(S2::window_for({}, 100), 32u);
  EXPECT_EQ(S2::window_for({}, 100000), 128u);
}

// Sinks bit exact; every other quantized slot equals KIVI on its group with the sinks replaced
// by the group mean; window slots are the fp16 inputs.
TEST(SubKVContents, SinksExactRestIsKivi) {
  const int d = 128;
  const CacheShape s{1, 1, 1, d, 2000};
  Cache::Config cfg{};
  cfg.quant.sink_tokens = 3;
  Cache c(s, cfg);
  auto k = kvtest::random_kv(1200, 1, d, 7), v = kvtest::random_kv(1200, 1, d, 8);
  for (int x = 0; x < d; ++x) k[x] *= 40.0f;  // a sink with huge keys (why it is protected)
  for (auto& x : k) x = f16(x);
  for (auto& x : v) x = f16(x);
  c.append(0, k.data(), v.data(), 700);
  for (std::size_t t = 700; t < 1200; ++t) c.append(0, k.data() + t * d, v.data() + t * d, 1);
  const auto& st = c.stream(0, 0);
  ASSERT_EQ(st.protected_tokens().size(), 3u);
  const auto live = kvtest::live_slots(c, 0, 0);
  for (std::size_t g = 0; g < st.quantized() / 32; ++g) {
    std::vector<float> kw(k.begin() + g * 32 * d, k.begin() + (g + 1) * 32 * d);
    std::vector<float> vw(v.begin() + g * 32 * d, v.begin() + (g + 1) * 32 * d);
    if (g == 0)
      for (float* x : {kw.data(), vw.data()})
        for (int ch = 0; ch < d; ++ch) {
          double sum = 0;
          for (int t = 0; t < 32; ++t) sum += x[t * d + ch];
          for (int t = 0; t < 3; ++t) x[t * d + ch] = static_cast<float>(sum / 32);
        }
    const auto kq = kvref::kivi_quantize_keys(kw.data(), d, 32, d, 2);
    const auto vq = kvref::kivi_quantize_values(vw.data(), d, 32, d, 32, 2);
    for (int t = 0; t < 32; ++t)
      for (int x = 0; x < d; ++x) {
        const std::size_t i = (g * 32 + t) * d + x;
        if (g == 0 && t < 3) {
          ASSERT_EQ(live.k[i], k[i]);
          ASSERT_EQ(live.v[i], v[i]);
        } else {
          ASSERT_NEAR(live.k[i], kq.dequant(t, x), 1e-6) << g << " " << t;
          ASSERT_NEAR(live.v[i], vq.dequant(t, x), 1e-6) << g << " " << t;
        }
      }
  }
  for (std::size_t j = st.quantized(); j < 1200; ++j) ASSERT_EQ(live.k[j * d + 9], k[j * d + 9]);
}

struct AttnCase {
  int q_heads, kv_heads, d, sinks;
};
class SubKVAttention : public testing::TestWithParam<AttnCase> {};
TEST_P(SubKVAttention, MatchesOracleOverStoredContents) {
  const AttnCase p = GetParam();
  const CacheShape s{1, p.q_heads, p.kv_heads, p.d, 900};
  Cache::Config cfg{};
  cfg.quant.sink_tokens = p.sinks;
  Cache c(s, cfg);
  std::uint32_t seed = 70;
  for (int chunk = 0; chunk < 2; ++chunk) {
    auto k = kvtest::random_kv(150, p.kv_heads, p.d, seed++);
    auto v = kvtest::random_kv(150, p.kv_heads, p.d, seed++, false);
    auto q = kvtest::random_kv(150, p.q_heads, p.d, seed++);
    if (chunk == 0)
      for (int x = 0; x < p.kv_heads * p.d; ++x) k[x] *= 30.0f;
    std::vector<float> out(q.size());
    c.append(0, k.data(), v.data(), 150);
    c.attend(0, q.data(), 150, out.data());
    kvtest::expect_attention_matches(c, 0, q, 150, out, 2e-3, 2e-3);
  }
  for (int step = 0; step < 100; ++step) {
    auto k = kvtest::random_kv(1, p.kv_heads, p.d, seed++);
    auto v = kvtest::random_kv(1, p.kv_heads, p.d, seed++, false);
    auto q = kvtest::random_kv(1, p.q_heads, p.d, seed++);
    std::vector<float> out(q.size());
    c.append(0, k.data(), v.data(), 1);
    c.attend(0, q.data(), 1, out.data());
    if (step % 25 == 0 || step == 99) kvtest::expect_attention_matches(c, 0, q, 1, out, 2e-3, 2e-3);
  }
}
INSTANTIATE_TEST_SUITE_P(Shapes, SubKVAttention,
                         testing::Values(AttnCase{8, 2, 128, 1}, AttnCase{4, 4, 64, 4}, AttnCase{6, 2, 96, 0},
                                         AttnCase{4, 1, 80, 2}),
                         [](const testing::TestParamInfo<AttnCase>& i) {
                           return "q" + std::to_string(i.param.q_heads) + "_kv" + std::to_string(i.param.kv_heads) +
                                  "_d" + std::to_string(i.param.d) + "_sinks" + std::to_string(i.param.sinks);
                         });

// KIVI-2 storage at G = Gv = 32: 3.0 bpe for the quantized part; window of W_max + G fp16 rows
// and the sink table on top.
TEST(SubKVStorage, BitsPerElementAndMemoryBytes) {
  const CacheShape s{1, 1, 1, 128, 4096};
  EXPECT_DOUBLE_EQ(Cache::bytes_per_token(s) * 8 / (2 * 128), 3.0);
  const CacheShape s2{2, 4, 2, 128, 4096};
  Cache c(s2);
  auto k = kvtest::random_kv(1000, 2, 128, 3);
  for (int l = 0; l < 2; ++l) c.append(l, k.data(), k.data(), 1000);
  // T = 1000 → W = 62: flushed while window ≥ 94 → 29 groups (928 slots), 72 in the window.
  EXPECT_EQ(c.stream(0, 0).quantized(), 928u);
  const std::size_t block = 32 * 128 * 2 / 8 + 4 * 128 + 32 * (32 + 16);
  const std::size_t fixed = 2 * 160 * 128 * 2 + 1 * (4 * 128 + 2 + 4 + 1 + 2);  // window + one sink entry
  EXPECT_EQ(c.memory_bytes(), 4 * (29 * block + fixed) + 2 * 1000 * Cache::kMetadataBytesPerSlot);
}

TEST(SubKVConfig, BadConfigsAreRejected) {
  const CacheShape s{1, 2, 1, 128, 256};
  auto bad = [&](auto mutate, const char* arg) {
    Cache::Config cfg{};
    mutate(cfg.quant);
    kvtest::expect_invalid_argument([&] { Cache c(s, cfg); }, arg);
  };
  bad([](S2::Config& q) { q.group = 20; }, "group");
  bad([](S2::Config& q) { q.sink_tokens = -1; }, "sink_tokens");
  bad([](S2::Config& q) { q.sink_tokens = 33; }, "sink_tokens");
  bad([](S2::Config& q) { q.window_ratio = -0.5f; }, "window_ratio");
  bad([](S2::Config& q) { q.window_min = -1; }, "window_min");
  bad([](S2::Config& q) { q.window_max = 16; }, "window_max");
  bad([](S2::Config& q) { q.value_group = 8; }, "value_group");
}

TEST(SubKVComposition, StreamingLLMKeepsSinksExact) {
  using C = KVCache<Policy<evict::StreamingLLM, merge::None, S2>>;
  const CacheShape s{1, 4, 2, 64, 1024};
  C::Config cfg{};
  cfg.evict.sink_tokens = 4;
  cfg.evict.window_tokens = 300;
  cfg.quant.sink_tokens = 4;
  C c(s, cfg);
  auto k = kvtest::random_kv(1200, 2, 64, 31);
  for (auto& x : k) x = f16(x);
  auto q = kvtest::random_kv(1200, 4, 64, 32);
  std::vector<float> out(4 * 64);
  for (std::size_t t = 0; t < 1200; ++t) {
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
  for (int i = 4; i < 304; ++i) EXPECT_EQ(pos[i], 1200 - 304 + i);
  const auto live = kvtest::live_slots(c, 0, 1);
  for (int i = 0; i < 4; ++i)
    for (int x = 0; x < 64; ++x) ASSERT_EQ(live.k[i * 64 + x], k[(i * 2 + 1) * 64 + x]);
  EXPECT_EQ(c.stream(0, 1).protected_tokens().size(), 4u);
}

TEST(SubKVComposition, H2OSelectsAtPrefillEndThenQuantizesKeptSlots) {
  using C = KVCache<Policy<evict::H2O, merge::None, S2>>;
  const CacheShape s{2, 4, 2, 64, 1024};
  C::Config cfg{};
  cfg.evict.heavy_budget = 150;
  cfg.evict.recent_budget = 100;
  C c(s, cfg);
  auto k = kvtest::random_kv(400, 2, 64, 41);
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
      EXPECT_EQ(c.stream(l, h).quantized(), 192u);  // W(250) = 32: flush while window ≥ 64
    }
  auto k2 = kvtest::random_kv(60, 2, 64, 44);
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
