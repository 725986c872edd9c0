// SPDX-License-Identifier: Apache-2.0
// KVQuant's decode path (append one token + attend, calibrated and data-free, with and without
// decode-time eviction) performs no heap allocation after construction: every operator new in
// the process is counted while decoding.

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>

#include "kvcompress/kvcompress.hpp"
#include "kvcompress/policies/quant/kvquant.hpp"
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
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

using namespace kvcompress;
using Q = quant::KVQuant<3>;

template <class Evict>
void decode_without_allocation(typename Evict::Config ecfg, bool calibrated) {
  const CacheShape s{1, 4, 1, 128, 512};
  Q::Config qc;
  qc.rope.head_dim = 128;
  if (calibrated) {
    auto c = std::make_shared<quant::KVQuantCalibration>();
    c->bits = 3;
    c->num_layers = c->num_kv_heads = 1;
    c->head_dim = 128;
    c->lut_k = quant::nf_lut(3);
    c->lut_v = c->lut_k;
    c->t_lo.assign(128, -2.0f);
    c->t_hi.assign(128, 2.5f);
    qc.calibration = c;
  }
  using P = Policy<Evict, merge::None, Q>;
  KVCache<P> cache(s, typename P::Config{ecfg, {}, qc});
  auto k = kvtest::random_kv(300, 1, 128, 1);
  auto q = kvtest::random_kv(300, 4, 128, 2);
  std::vector<float> out(q.size());
  cache.append(0, k.data(), k.data(), 200);
  cache.attend(0, q.data(), 200, out.data());
  cache.end_prefill();
  const long before = g_allocations.load();
  for (int step = 0; step < 300; ++step) {
    cache.append(0, k.data() + (step % 300) * 128, k.data() + ((step + 7) % 300) * 128, 1);
    cache.attend(0, q.data() + (step % 300) * 512, 1, out.data());
  }
  EXPECT_EQ(g_allocations.load() - before, 0) << Evict::kName << " calibrated=" << calibrated;
}

TEST(KVQuantNoAllocation, Decode) {
  decode_without_allocation<evict::None>({}, true);
  decode_without_allocation<evict::None>({}, false);
  evict::H2O::Config h;
  h.heavy_budget = 60;
  h.recent_budget = 60;
  decode_without_allocation<evict::H2O>(h, true);
  evict::StreamingLLM::Config st;
  st.sink_tokens = 4;
  st.window_tokens = 100;
  decode_without_allocation<evict::StreamingLLM>(st, false);
}

}  // namespace
