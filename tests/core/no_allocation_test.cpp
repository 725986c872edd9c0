// SPDX-License-Identifier: Apache-2.0
// After construction, the decode path (append one token + attend) never allocates on the heap:
// every operator new in the process is counted while decoding, for dense, KIVI and evicting
// caches, serially and with a thread pool (support/allocation_counter.hpp).

#include "support/allocation_counter.hpp"

namespace {

using namespace kvcompress;
const CacheShape kShape{2, 8, 2, 128, 1024};

TEST(NoAllocation, DenseDecode) { kvtest::expect_decode_without_allocation<KVCache<Policy<>>>(kShape, {}); }
TEST(NoAllocation, KiviDecodeWithThreadPool) {
  ThreadPoolExecutor pool(2);
  kvtest::expect_decode_without_allocation<KVCache<Policy<evict::None, merge::None, quant::Kivi2>>>(kShape, {}, &pool);
}
TEST(NoAllocation, StreamingLLMEvictingDecode) {
  using C = KVCache<Policy<evict::StreamingLLM, merge::None, quant::Kivi4>>;
  C::Config cfg{};
  cfg.evict.window_tokens = 200;
  kvtest::expect_decode_without_allocation<C>(kShape, cfg);
}
TEST(NoAllocation, H2OEvictingDecode) {
  using C = KVCache<Policy<evict::H2O>>;
  C::Config cfg{};
  cfg.evict.heavy_budget = 100;
  cfg.evict.recent_budget = 100;
  ThreadPoolExecutor pool(2);
  kvtest::expect_decode_without_allocation<C>(kShape, cfg, &pool);
}

}  // namespace
