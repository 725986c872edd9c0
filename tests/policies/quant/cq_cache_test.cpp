// SPDX-License-Identifier: Apache-2.0
// CQ through KVCache<Policy<Evict, Merge, quant::Cq…>>: attention (prefill chunks with causal
// masks and decode steps) against the double-precision oracle over the cache's own dequantized
// contents (materialize), positions after eviction, and composition with evict::StreamingLLM
// (decode-time FIFO eviction, pre-RoPE keys) and evict::H2O (prefill-end selection + decode
// eviction; post-RoPE keys, see the DISABLED test for the pre-RoPE staging gap).

#include "kvcompress/kvcompress.hpp"
#include "kvcompress/policies/quant/cq.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "support/cache_test_support.hpp"

namespace {

using namespace kvcompress;

template <class Q>
typename Q::Config cq_config(int d, quant::common::KeySpace ks, std::size_t window) {
  typename Q::Config c;
  c.codebooks = quant::cq_gaussian_codebooks(d, Q::kChannels, Q::kBits, 1.0f, 1.0f);
  c.key_space = ks;
  c.recent_window = window;
  c.rope.head_dim = static_cast<std::size_t>(d);
  return c;
}

/// Prefill in chunks (each chunk attends), then decode steps; every attention is checked.
template <class Cache>
void run(Cache& c, std::size_t prefill, std::size_t decode, std::uint32_t seed, bool end_prefill,
         std::size_t max_live = 0) {
  const auto& s = c.shape();
  const int d = s.head_dim;
  auto step = [&](std::size_t n, std::uint32_t sd) {
    const auto k = kvtest::random_kv(n, s.num_kv_heads, d, sd, false);
    const auto v = kvtest::random_kv(n, s.num_kv_heads, d, sd + 1, false);
    auto q = kvtest::random_kv(n, s.num_q_heads, d, sd + 2, false);
    for (float& x : q) x *= 0.3f;
    std::vector<Modality> mod(n, Modality::kText);
    for (int l = 0; l < s.num_layers; ++l) {
      c.append(l, k.data(), v.data(), n, mod.data());
      std::vector<float> out(q.size());
      c.attend(l, q.data(), n, out.data());
      kvtest::expect_attention_matches(c, l, q, n, out, 2e-5, 2e-5);
    }
  };
  for (std::size_t t = 0; t < prefill; t += 64) step(std::min<std::size_t>(64, prefill - t), seed + 10 * static_cast<std::uint32_t>(t));
  if (end_prefill) c.end_prefill();
  for (std::size_t t = 0; t < decode; ++t) {
    step(1, seed + 7777 + 3 * static_cast<std::uint32_t>(t));
    if (max_live) {
      for (int h = 0; h < s.num_kv_heads; ++h) EXPECT_LE(c.size(0, h), max_live);
    }
  }
}

TEST(CqCache, PreRopeNoEvictionMatchesOracle) {
  using Cache = KVCache<Policy<evict::None, merge::None, quant::Cq8c8b>>;
  const CacheShape shape{2, 4, 2, 64, 512};
  Cache::Config cfg;
  cfg.quant = cq_config<quant::Cq8c8b>(64, quant::common::KeySpace::kPreRope, 16);
  Cache c(shape, cfg);
  run(c, 150, 20, 1, true);
  std::vector<std::int32_t> pos(c.size(0, 0));
  c.positions(0, 0, pos.data());
  for (std::size_t j = 0; j < pos.size(); ++j) EXPECT_EQ(c.stream(0, 0).position(j), pos[j]);
  // memory_bytes of a stream: its blocks + the fixed part
  EXPECT_EQ(c.stream(0, 1).memory_bytes(),
            2 * quant::Cq8c8b::Store::block_bytes(64, cfg.quant) + quant::Cq8c8b::Store::fixed_bytes(64, cfg.quant));
}

TEST(CqCache, StreamingLlmPreRopeKeepsOriginalPositions) {
  using Cache = KVCache<Policy<evict::StreamingLLM, merge::None, quant::Cq4c8b>>;
  const CacheShape shape{1, 4, 1, 64, 256};
  Cache::Config cfg;
  cfg.evict.sink_tokens = 4;
  cfg.evict.window_tokens = 60;
  cfg.quant = cq_config<quant::Cq4c8b>(64, quant::common::KeySpace::kPreRope, 8);
  Cache c(shape, cfg);
  run(c, 100, 150, 3, true, 64);
  std::vector<std::int32_t> pos(c.size(0, 0));
  c.positions(0, 0, pos.data());
  ASSERT_EQ(pos.size(), 64u);
  EXPECT_EQ(pos[0], 0);
  EXPECT_EQ(pos[4], static_cast<std::int32_t>(c.tokens_seen(0) - 60));  // a gap after the sinks
  // The store keeps every physical slot's original position (dead slots are compacted lazily).
  const SlotView sv = c.slots(0, 0);
  ASSERT_EQ(c.stream(0, 0).size(), sv.n);
  for (std::size_t j = 0; j < sv.n; ++j) EXPECT_EQ(c.stream(0, 0).position(j), sv.pos[j]);
}

TEST(CqCache, H2OPostRopeSelectsThenQuantizes) {
  using Cache = KVCache<Policy<evict::H2O, merge::None, quant::Cq8c8b>>;
  const CacheShape shape{2, 4, 2, 64, 512};
  Cache::Config cfg;
  cfg.evict.heavy_budget = 40;
  cfg.evict.recent_budget = 40;
  cfg.quant = cq_config<quant::Cq8c8b>(64, quant::common::KeySpace::kPostRope, 0);
  Cache c(shape, cfg);
  run(c, 200, 30, 5, true, 80);
}

// With a prefill-end selector (H2O) the cache stages the prompt in fp16 after rotating pre-RoPE
// keys with Cq::rope_keys (BB-16 rule 4), so until end_prefill attention, scores and
// PrefillContext::read see post-RoPE keys: materialize returns fp16(RoPE(k)).
TEST(CqCache, H2OPreRopeStagedKeysAreRotated) {
  using Cache = KVCache<Policy<evict::H2O, merge::None, quant::Cq8c8b>>;
  const CacheShape shape{1, 2, 1, 64, 256};
  Cache::Config cfg;
  cfg.evict.heavy_budget = 40;
  cfg.evict.recent_budget = 40;
  cfg.quant = cq_config<quant::Cq8c8b>(64, quant::common::KeySpace::kPreRope, 256);
  Cache c(shape, cfg);
  const std::size_t n = 50;
  const auto k = kvtest::random_kv(n, 1, 64, 3, false), v = kvtest::random_kv(n, 1, 64, 4, false);
  c.append(0, k.data(), v.data(), n);
  std::vector<float> km(n * 64), vm(n * 64);
  c.materialize(0, km.data(), vm.data());
  for (std::size_t t = 0; t < n; ++t) {
    std::vector<float> want(k.begin() + t * 64, k.begin() + (t + 1) * 64);
    quant::common::rope_apply(want.data(), cfg.quant.rope, static_cast<std::int64_t>(t));
    for (float& x : want) x = f16_bits_to_f32(f32_to_f16_bits(x));
    for (int i = 0; i < 64; ++i) ASSERT_NEAR(km[t * 64 + i], want[i], 1e-5) << "token " << t;
  }
}

}  // namespace
