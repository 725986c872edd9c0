// SPDX-License-Identifier: Apache-2.0
// StreamingLLM (eviction spec §13.1): kept = {0..S−1} ∪ {n−W..n−1}, original positions kept,
// one decision per layer shared by every KV head, memory bounded (blocks freed), attention over
// the kept slots equals the oracle.

#include <gtest/gtest.h>

#include <set>

#include "kvcompress/kvcompress.hpp"
#include "support/cache_test_support.hpp"

namespace {

using namespace kvcompress;
using Cache = KVCache<Policy<evict::StreamingLLM>>;

std::vector<std::int32_t> live_positions(Cache& c, int layer, int head) {
  std::vector<std::int32_t> p(c.size(layer, head));
  c.positions(layer, head, p.data());
  return p;
}

TEST(StreamingLLM, KeepsSinksAndRecentWindow) {
  const CacheShape s{2, 4, 2, 64, 128};
  Cache::Config cfg{};
  cfg.evict.sink_tokens = 4;
  cfg.evict.window_tokens = 16;
  Cache c(s, cfg);
  auto k = kvtest::random_kv(300, 2, 64, 1);
  auto q = kvtest::random_kv(300, 4, 64, 2);
  std::vector<float> out(4 * 64);
  std::size_t peak = 0;
  for (std::size_t t = 0; t < 300; ++t) {
    for (int l = 0; l < 2; ++l) {
      c.append(l, k.data() + t * 128, k.data() + t * 128, 1);
      c.attend(l, q.data() + t * 256, 1, out.data());
    }
    const std::size_t n = t + 1;
    std::vector<std::int32_t> expect;
    for (std::size_t p = 0; p < n; ++p)
      if (p < 4 || p + 16 >= n) expect.push_back(static_cast<std::int32_t>(p));
    for (int l = 0; l < 2; ++l)
      for (int h = 0; h < 2; ++h) ASSERT_EQ(live_positions(c, l, h), expect) << "token " << t;
    if (t % 50 == 49)
      kvtest::expect_attention_matches(c, 1, std::vector<float>(q.begin() + t * 256, q.begin() + (t + 1) * 256), 1,
                                       out, 1e-5, 1e-5);
    peak = std::max(peak, c.memory_bytes());
  }
  EXPECT_EQ(c.tokens_seen(0), 300);
  // 20 live + fewer than one block (128) of lazily compacted dead slots, all within the 128-slot
  // capacity: one block per stream (without freeing, 300 tokens would need three).
  EXPECT_LE(peak, 2u * 2u * (2 * 128 * 64 * 2) + 2 * 128 * 6);
}

TEST(StreamingLLM, ChunkLongerThanWindowIsTrimmedAtNextAppend) {
  const CacheShape s{1, 2, 1, 64, 128};
  Cache::Config cfg{};
  cfg.evict.sink_tokens = 4;
  cfg.evict.window_tokens = 16;
  Cache c(s, cfg);
  auto k = kvtest::random_kv(60, 1, 64, 3);
  c.append(0, k.data(), k.data(), 50);
  EXPECT_EQ(c.size(0, 0), 50u);
  c.append(0, k.data() + 50 * 64, k.data() + 50 * 64, 1);
  std::vector<std::int32_t> expect{0, 1, 2, 3};
  for (int p = 35; p <= 50; ++p) expect.push_back(p);
  EXPECT_EQ(live_positions(c, 0, 0), expect);
}

// Spec §15 item 3: a budget that is never reached keeps the cache identical to a dense one.
TEST(StreamingLLM, IdentityWhileUnderBudget) {
  const CacheShape s{1, 4, 2, 64, 2048};
  Cache c(s, Cache::Config{});  // paper default: 4 sinks + 1020 recent
  KVCache<Policy<>> dense(s);
  auto k = kvtest::random_kv(1000, 2, 64, 4);
  c.append(0, k.data(), k.data(), 1000);
  dense.append(0, k.data(), k.data(), 1000);
  EXPECT_TRUE(kvtest::snapshot(c) == kvtest::snapshot(dense));
}

}  // namespace
