// SPDX-License-Identifier: Apache-2.0
// GEAR, OTT and SubKV decode (append one token + attend) never allocate on the heap after
// construction — GEAR flushes (outlier selection, power iteration) and OTT tracing included —
// alone and composed with eviction. Same counting operator new as tests/core/no_allocation_test.cpp.

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "kvcompress/kvcompress.hpp"
#include "kvcompress/policies/quant/gear.hpp"
#include "kvcompress/policies/quant/ott.hpp"
#include "kvcompress/policies/quant/subkv.hpp"
#include "support/cache_test_support.hpp"

namespace {
std::atomic<long> g_allocations{0};
}

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  const std::size_t al = static_cast<std::size_t>(a);
  if (void* p = std::aligned_alloc(al, (n + al - 1) / al * al)) return p;
  throw std::bad_alloc();
}
// operator delete pairs with the malloc-based operator new above; g++ cannot see that.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

using namespace kvcompress;

template <class Cache>
void decode_without_allocation(typename Cache::Config cfg, Executor* ex) {
  const CacheShape s{2, 8, 2, 128, 1024};
  Cache c(s, cfg, ex);
  auto k = kvtest::random_kv(300, 2, 128, 1);
  auto q = kvtest::random_kv(300, 8, 128, 2);
  std::vector<float> out(q.size());
  for (int l = 0; l < 2; ++l) {
    c.append(l, k.data(), k.data(), 300);
    c.attend(l, q.data(), 300, out.data());
  }
  c.end_prefill();
  const long before = g_allocations.load();
  for (int step = 0; step < 400; ++step)
    for (int l = 0; l < 2; ++l) {
      c.append(l, k.data() + (step % 300) * 256, k.data() + (step % 300) * 256, 1);
      c.attend(l, q.data() + (step % 300) * 1024, 1, out.data());
    }
  EXPECT_EQ(g_allocations.load() - before, 0);
}

TEST(NoAllocationQuant, GearDecodeFlushesWithThreadPool) {
  ThreadPoolExecutor pool(2);
  decode_without_allocation<KVCache<Policy<evict::None, merge::None, quant::Gear2>>>({}, &pool);
}
TEST(NoAllocationQuant, GearWithStreamingLLM) {
  using C = KVCache<Policy<evict::StreamingLLM, merge::None, quant::Gear4>>;
  C::Config cfg{};
  cfg.evict.window_tokens = 200;
  decode_without_allocation<C>(cfg, nullptr);
}
TEST(NoAllocationQuant, OttDecodeTracing) {
  using C = KVCache<Policy<evict::None, merge::None, quant::Ott2>>;
  C::Config cfg{};
  cfg.quant.group = 32;
  decode_without_allocation<C>(cfg, nullptr);
}
TEST(NoAllocationQuant, OttWithH2O) {
  using C = KVCache<Policy<evict::H2O, merge::None, quant::Ott2>>;
  C::Config cfg{};
  cfg.evict.heavy_budget = 100;
  cfg.evict.recent_budget = 100;
  cfg.quant.group = 32;
  decode_without_allocation<C>(cfg, nullptr);
}
TEST(NoAllocationQuant, SubKVDecode) {
  ThreadPoolExecutor pool(2);
  decode_without_allocation<KVCache<Policy<evict::None, merge::None, quant::SubKV2>>>({}, &pool);
}

}  // namespace
