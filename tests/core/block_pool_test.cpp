// SPDX-License-Identifier: Apache-2.0
// BlockPool under concurrency: the streams of one cache take blocks from one pool in parallel
// (one append task per KV head), so acquire/release must never hand one block to two streams.
// Found by the append benchmark (AKVQ-VL, 8 KV heads, two workers, 65536 tokens): two streams
// got the same block and one store's metadata was overwritten.

#include "kvcompress/core/block_pool.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "support/cache_test_support.hpp"

namespace {

using namespace kvcompress;

TEST(BlockPool, ConcurrentAcquireAndReleaseNeverShareABlock) {
  constexpr int kThreads = 4;
  constexpr std::size_t kPerThread = 400000;
  BlockPool pool(64, kThreads * kPerThread);
  std::vector<std::vector<std::int32_t>> got(kThreads);
  for (auto& g : got) g.reserve(kPerThread);
  std::atomic<int> ready{0};
  std::vector<std::thread> th;
  for (int t = 0; t < kThreads; ++t)
    th.emplace_back([&, t] {
      auto& mine = got[static_cast<std::size_t>(t)];
      ready.fetch_add(1);
      while (ready.load() < kThreads) {
      }  // start together
      for (std::size_t i = 0; i < kPerThread; ++i) {
        mine.push_back(pool.acquire());
        if (i % 3 == 2) {  // give one back now and then: releases race with acquires too
          pool.release(mine.back());
          mine.pop_back();
        }
      }
    });
  for (auto& x : th) x.join();
  std::vector<std::int32_t> all;
  for (const auto& g : got) all.insert(all.end(), g.begin(), g.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end()) << "a block was handed out twice";
  EXPECT_EQ(pool.num_used(), all.size());
}

// The same through the cache: a thread-pool append over many KV heads stores exactly what a
// serial append stores.
TEST(BlockPool, ThreadPoolAppendMatchesSerialAppend) {
  const CacheShape s{1, 16, 16, 64, 4096};
  using C = KVCache<Policy<evict::None, merge::None, quant::Kivi2>>;
  ThreadPoolExecutor pool(2);
  C par(s, {}, &pool), ser(s);
  const auto k = kvtest::random_kv(4096, 16, 64, 3), v = kvtest::random_kv(4096, 16, 64, 4);
  for (std::size_t t = 0; t < 4096; t += 64) {
    par.append(0, k.data() + t * 16 * 64, v.data() + t * 16 * 64, 64);
    ser.append(0, k.data() + t * 16 * 64, v.data() + t * 16 * 64, 64);
  }
  std::vector<float> kp(4096 * 16 * 64), vp(kp.size()), ks(kp.size()), vs(kp.size());
  par.materialize(0, kp.data(), vp.data());
  ser.materialize(0, ks.data(), vs.data());
  EXPECT_EQ(kp, ks);
  EXPECT_EQ(vp, vs);
}

}  // namespace
