// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Counts every heap allocation of the process (replaces the global operator new/delete), and
/// checks that a cache's decode path allocates nothing once it is built and prefilled. Include
/// from exactly one translation unit per test executable (the replacements are definitions).

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "support/cache_test_support.hpp"

namespace kvtest {
/// Heap allocations so far (operator new and new[], aligned or not).
inline std::atomic<long>& heap_allocations() {
  static std::atomic<long> n{0};
  return n;
}
}  // namespace kvtest

void* operator new(std::size_t n) {
  kvtest::heap_allocations().fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  kvtest::heap_allocations().fetch_add(1, std::memory_order_relaxed);
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

namespace kvtest {

/// Builds a cache of `shape`, prefills every layer with `prompt` image-labelled tokens (append +
/// attend), calls end_prefill, then runs `steps` decode steps (append one kGenerated token +
/// attend) per layer and expects no heap allocation during them. Values are the keys of a token
/// 7 positions later, so K and V differ.
template <class Cache>
void expect_decode_without_allocation(const kvcompress::CacheShape& shape, const typename Cache::Config& cfg,
                                      kvcompress::Executor* ex = nullptr, std::size_t prompt = 300, int steps = 400) {
  using kvcompress::Modality;
  Cache c(shape, cfg, ex);
  const int d = shape.head_dim, hkv = shape.num_kv_heads, hq = shape.num_q_heads;
  const std::size_t n = prompt + 7;
  const auto k = random_kv(n, hkv, d, 1);
  const auto q = random_kv(n, hq, d, 2);
  const std::size_t kv_row = static_cast<std::size_t>(hkv) * d, q_row = static_cast<std::size_t>(hq) * d;
  std::vector<float> out(q.size());
  const std::vector<Modality> mod(prompt, Modality::kImage);
  for (int l = 0; l < shape.num_layers; ++l) {
    c.append(l, k.data(), k.data() + 7 * kv_row, prompt, mod.data());
    c.attend(l, q.data(), prompt, out.data());
  }
  c.end_prefill();
  const long before = heap_allocations().load();
  for (int step = 0; step < steps; ++step)
    for (int l = 0; l < shape.num_layers; ++l) {
      const std::size_t t = static_cast<std::size_t>(step) % prompt;
      c.append(l, k.data() + t * kv_row, k.data() + (t + 7) * kv_row, 1, Modality::kGenerated);
      c.attend(l, q.data() + t * q_row, 1, out.data());
    }
  EXPECT_EQ(heap_allocations().load() - before, 0);
}

}  // namespace kvtest
