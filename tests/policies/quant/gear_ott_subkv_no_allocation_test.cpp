// SPDX-License-Identifier: Apache-2.0
// GEAR, OTT and SubKV decode without heap allocation once the cache is built and prefilled
// (flushes, power iteration, outlier-token tracing included), alone and under eviction.

#include "support/allocation_counter.hpp"

namespace {

using namespace kvcompress;
const CacheShape kShape{2, 8, 2, 128, 1024};

TEST(NoAllocationQuant, GearDecodeFlushesWithThreadPool) {
  ThreadPoolExecutor pool(2);
  kvtest::expect_decode_without_allocation<KVCache<Policy<evict::None, merge::None, quant::Gear2>>>(kShape, {}, &pool);
}
TEST(NoAllocationQuant, GearWithStreamingLLM) {
  using C = KVCache<Policy<evict::StreamingLLM, merge::None, quant::Gear4>>;
  C::Config cfg{};
  cfg.evict.window_tokens = 200;
  kvtest::expect_decode_without_allocation<C>(kShape, cfg);
}
TEST(NoAllocationQuant, OttDecodeTracing) {
  using C = KVCache<Policy<evict::None, merge::None, quant::Ott2>>;
  C::Config cfg{};
  cfg.quant.group = 32;
  cfg.quant.plain_layers = 0;
  kvtest::expect_decode_without_allocation<C>(kShape, cfg);
}
TEST(NoAllocationQuant, OttWithH2O) {
  using C = KVCache<Policy<evict::H2O, merge::None, quant::Ott2>>;
  C::Config cfg{};
  cfg.evict.heavy_budget = 100;
  cfg.evict.recent_budget = 100;
  cfg.quant.group = 32;
  cfg.quant.plain_layers = 0;
  kvtest::expect_decode_without_allocation<C>(kShape, cfg);
}
TEST(NoAllocationQuant, SubKVDecode) {
  ThreadPoolExecutor pool(2);
  kvtest::expect_decode_without_allocation<KVCache<Policy<evict::None, merge::None, quant::SubKV2>>>(kShape, {}, &pool);
}

}  // namespace
