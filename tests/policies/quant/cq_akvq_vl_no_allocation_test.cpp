// SPDX-License-Identifier: Apache-2.0
// CQ and AKVQ-VL keep the decode path allocation-free: after construction and prefill, appending
// one token and attending (with window flushes, pivot bookkeeping and decode-time eviction by
// StreamingLLM) never calls operator new. Every operator new of the process is counted.

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "kvcompress/kvcompress.hpp"
#include "kvcompress/policies/quant/akvq_vl.hpp"
#include "kvcompress/policies/quant/cq.hpp"
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
void decode_without_allocation(typename Cache::Config cfg) {
  const CacheShape s{2, 4, 2, 64, 1024};
  Cache c(s, cfg);
  auto k = kvtest::random_kv(300, 2, 64, 1);
  auto q = kvtest::random_kv(300, 4, 64, 2);
  std::vector<float> out(q.size());
  std::vector<Modality> mod(300, Modality::kImage);
  for (int l = 0; l < 2; ++l) {
    c.append(l, k.data(), k.data(), 300, mod.data());
    c.attend(l, q.data(), 300, out.data());
  }
  c.end_prefill();
  const long before = g_allocations.load();
  for (int step = 0; step < 300; ++step)
    for (int l = 0; l < 2; ++l) {
      c.append(l, k.data() + (step % 300) * 128, k.data() + (step % 300) * 128, 1, Modality::kGenerated);
      c.attend(l, q.data() + (step % 300) * 256, 1, out.data());
    }
  EXPECT_EQ(g_allocations.load() - before, 0);
}

TEST(CqAkvqVlNoAllocation, CqPreRopeWindowAndStreamingLlm) {
  using Cache = KVCache<Policy<evict::StreamingLLM, merge::None, quant::Cq4c8b>>;
  Cache::Config cfg;
  cfg.evict.sink_tokens = 4;
  cfg.evict.window_tokens = 200;
  cfg.quant.codebooks = quant::cq_gaussian_codebooks(64, 4, 8);
  cfg.quant.recent_window = 32;
  cfg.quant.rope.head_dim = 64;
  decode_without_allocation<Cache>(cfg);
}

TEST(CqAkvqVlNoAllocation, AkvqVlPsaPivotsAndStreamingLlm) {
  using Cache = KVCache<Policy<evict::StreamingLLM, merge::None, quant::AkvqVl>>;
  Cache::Config cfg;
  cfg.evict.sink_tokens = 4;
  cfg.evict.window_tokens = 200;
  cfg.quant.layer_types.assign(2, quant::AkvqLayerType::kPsa);
  decode_without_allocation<Cache>(cfg);
}

TEST(CqAkvqVlNoAllocation, AkvqVlTsaNoEviction) {
  using Cache = KVCache<Policy<evict::None, merge::None, quant::AkvqVl>>;
  Cache::Config cfg;
  cfg.quant.layer_types.assign(2, quant::AkvqLayerType::kTsa);
  decode_without_allocation<Cache>(cfg);
}

}  // namespace
