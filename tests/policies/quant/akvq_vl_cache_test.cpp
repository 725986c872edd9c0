// SPDX-License-Identifier: Apache-2.0
// AKVQ-VL through KVCache<Policy<Evict, Merge, quant::AkvqVl>>: attention (prefill chunks and
// decode steps, mixed modalities) against the double-precision oracle over the cache's own
// dequantized contents, with evict::None, evict::StreamingLLM and evict::H2O.

#include "kvcompress/kvcompress.hpp"
#include "kvcompress/policies/quant/akvq_vl.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "support/cache_test_support.hpp"

namespace {

using namespace kvcompress;

quant::AkvqVl::Config akvq_config(int layers, quant::AkvqLayerType t) {
  quant::AkvqVl::Config c;
  c.recent_window = 24;
  c.pivots = 5;
  c.layer_types.assign(static_cast<std::size_t>(layers), t);
  return c;
}

template <class Cache>
void run(Cache& c, std::size_t prefill, std::size_t decode, std::uint32_t seed, std::size_t max_live = 0) {
  const auto& s = c.shape();
  const int d = s.head_dim;
  std::size_t seen = 0;
  auto step = [&](std::size_t n, std::uint32_t sd, bool generated) {
    const auto k = kvtest::random_kv(n, s.num_kv_heads, d, sd);
    const auto v = kvtest::random_kv(n, s.num_kv_heads, d, sd + 1);
    auto q = kvtest::random_kv(n, s.num_q_heads, d, sd + 2, false);
    for (float& x : q) x *= 0.2f;
    std::vector<Modality> mod(n);
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t t = seen + i;
      mod[i] = generated ? Modality::kGenerated : (t >= 10 && t < 90 ? Modality::kImage : Modality::kText);
    }
    for (int l = 0; l < s.num_layers; ++l) {
      c.append(l, k.data(), v.data(), n, mod.data());
      std::vector<float> out(q.size());
      c.attend(l, q.data(), n, out.data());
      kvtest::expect_attention_matches(c, l, q, n, out, 3e-5, 3e-5);
    }
    seen += n;
  };
  for (std::size_t t = 0; t < prefill; t += 50) step(std::min<std::size_t>(50, prefill - t), seed + static_cast<std::uint32_t>(t), false);
  c.end_prefill();
  for (std::size_t t = 0; t < decode; ++t) {
    step(1, seed + 5000 + 3 * static_cast<std::uint32_t>(t), true);
    if (max_live) {
      for (int h = 0; h < s.num_kv_heads; ++h) EXPECT_LE(c.size(0, h), max_live);
    }
  }
}

TEST(AkvqVlCache, PsaAndTsaWithoutEviction) {
  using Cache = KVCache<Policy<evict::None, merge::None, quant::AkvqVl>>;
  for (auto t : {quant::AkvqLayerType::kPsa, quant::AkvqLayerType::kTsa}) {
    const CacheShape shape{2, 4, 2, 128, 512};
    Cache::Config cfg;
    cfg.quant = akvq_config(2, t);
    Cache c(shape, cfg);
    run(c, 160, 20, 11);
    EXPECT_EQ(c.stream(0, 0).is_tsa(), t == quant::AkvqLayerType::kTsa);
    EXPECT_EQ(c.stream(1, 1).window(), 24u);
    EXPECT_EQ(c.stream(1, 1).num_pivots(), t == quant::AkvqLayerType::kPsa ? 5u : 0u);
  }
}

// The paper's layer table (first tsa_layers layers TSA, the rest PSA) through the cache: each
// store learns its layer from the cache.
TEST(AkvqVlCache, PaperDefaultMixedLayerTable) {
  using Cache = KVCache<Policy<evict::None, merge::None, quant::AkvqVl>>;
  const CacheShape shape{3, 4, 2, 64, 512};
  Cache::Config cfg;
  cfg.quant.recent_window = 24;
  cfg.quant.pivots = 5;
  cfg.quant.tsa_layers = 2;
  Cache c(shape, cfg);
  run(c, 120, 10, 21);
  for (int h = 0; h < 2; ++h) {
    EXPECT_TRUE(c.stream(0, h).is_tsa());
    EXPECT_TRUE(c.stream(1, h).is_tsa());
    EXPECT_FALSE(c.stream(2, h).is_tsa());
    EXPECT_EQ(c.stream(2, h).num_pivots(), 5u);
  }
}

TEST(AkvqVlCache, StreamingLlmNonPowerOfTwoHeadDim) {
  using Cache = KVCache<Policy<evict::StreamingLLM, merge::None, quant::AkvqVl>>;
  const CacheShape shape{1, 2, 1, 96, 256};
  Cache::Config cfg;
  cfg.evict.sink_tokens = 4;
  cfg.evict.window_tokens = 70;
  cfg.quant = akvq_config(1, quant::AkvqLayerType::kPsa);
  Cache c(shape, cfg);
  run(c, 120, 140, 13, 74);
}

TEST(AkvqVlCache, H2OSelectsAtPrefillEndThenQuantizes) {
  using Cache = KVCache<Policy<evict::H2O, merge::None, quant::AkvqVl>>;
  const CacheShape shape{2, 4, 2, 64, 512};
  Cache::Config cfg;
  cfg.evict.heavy_budget = 40;
  cfg.evict.recent_budget = 40;
  cfg.quant = akvq_config(2, quant::AkvqLayerType::kPsa);
  Cache c(shape, cfg);
  run(c, 200, 30, 17, 80);
}

}  // namespace
