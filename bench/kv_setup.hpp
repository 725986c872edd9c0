// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// What the decode and append benchmarks share: the model geometry (one layer, 32 query heads,
/// 8 KV heads, head_dim 128), the caches under test (for_each_cache), the executors (t1 = SerialExecutor,
/// t2 = ThreadPoolExecutor(2)) and deterministic fp32 K/V inputs.

#include <cstddef>
#include <memory>
#include <random>
#include <type_traits>
#include <vector>

#include "kvcompress/kvcompress.hpp"

namespace kvcompress_bench {

namespace kvc = kvcompress;

inline constexpr int kQHeads = 32;
inline constexpr int kKvHeads = 8;
inline constexpr int kHeadDim = 128;
inline constexpr std::size_t kChunk = 512;  ///< tokens per append call
inline constexpr int kContexts[] = {1024, 4096, 16384, 65536};
inline constexpr int kThreadCounts[] = {1, 2};

using DenseF16 = kvc::KVCache<kvc::Policy<>>;
using DenseF32 = kvc::KVCache<kvc::Policy<kvc::evict::None, kvc::merge::None, kvc::quant::DenseF32>>;
using Kivi2 = kvc::KVCache<kvc::Policy<kvc::evict::None, kvc::merge::None, kvc::quant::Kivi<2, 2, 32, 128>>>;
using Kivi4 = kvc::KVCache<kvc::Policy<kvc::evict::None, kvc::merge::None, kvc::quant::Kivi<4, 4, 32, 128>>>;
using Q8_0 = kvc::KVCache<kvc::Policy<kvc::evict::None, kvc::merge::None, kvc::quant::GgmlQ8_0>>;
using Q4_0 = kvc::KVCache<kvc::Policy<kvc::evict::None, kvc::merge::None, kvc::quant::GgmlQ4_0>>;
template <class Quant>
using QuantCache = kvc::KVCache<kvc::Policy<kvc::evict::None, kvc::merge::None, Quant>>;
using KVQuant3 = QuantCache<kvc::quant::KVQuantNuq3>;
using Cq8c8b = QuantCache<kvc::quant::Cq8c8b>;
using AkvqVl = QuantCache<kvc::quant::AkvqVl>;
using CalibQuant = QuantCache<kvc::quant::CalibQuant1Bit>;
using VidKV = QuantCache<kvc::quant::VidKV_K15_V158>;
using Gear2 = QuantCache<kvc::quant::Gear2>;
using Ott2 = QuantCache<kvc::quant::Ott2>;
using SubKV2 = QuantCache<kvc::quant::SubKV2>;

/// Names a cache type for for_each_cache's callback.
template <class C>
struct CacheTag {
  using type = C;
};

/// Every cache the decode and append benchmarks run — the one place to add a method:
/// f(CacheTag<Cache>{}, name, nominal bits per value). The bits only size iteration counts
/// before anything is measured; reported figures come from memory_bytes().
template <class F>
void for_each_cache(F&& f) {
  f(CacheTag<DenseF16>{}, "dense_f16", 16.0);  // first: the speedup reference of the others
  f(CacheTag<DenseF32>{}, "dense_f32", 32.0);
  f(CacheTag<Kivi2>{}, "kivi2", 3.0);
  f(CacheTag<Kivi4>{}, "kivi4", 5.0);
  f(CacheTag<Q8_0>{}, "q8_0", 8.5);
  f(CacheTag<Q4_0>{}, "q4_0", 4.5);
  f(CacheTag<KVQuant3>{}, "kvquant_nuq3", 4.2);
  f(CacheTag<Cq8c8b>{}, "cq8c8b", 1.1);  // pre-RoPE keys: per-slot rotation
  f(CacheTag<AkvqVl>{}, "akvq_vl", 2.7);
  f(CacheTag<CalibQuant>{}, "calibquant", 1.1);  // the visual span of the prompt is 1-bit
  f(CacheTag<VidKV>{}, "vidkv_k15_v158", 2.4);
  f(CacheTag<Gear2>{}, "gear2", 4.8);
  f(CacheTag<Ott2>{}, "ott2", 2.5);
  f(CacheTag<SubKV2>{}, "subkv2", 3.1);
}

/// The Config a benchmark builds `Cache` with: the policy's defaults, except CQ, which needs
/// codebooks (its documented data-free fallback here; calibrated ones have the same cost).
template <class Cache>
typename Cache::Config bench_config() {
  typename Cache::Config c{};
  if constexpr (std::is_same_v<Cache, Cq8c8b>) c.quant.codebooks = kvc::quant::cq_gaussian_codebooks(kHeadDim, 8, 8);
  return c;
}

/// One layer of the benchmark model, `capacity` slots per KV head (the cache reserves all of it
/// up front, so capacity = the context under test keeps the footprint to what is measured).
inline kvc::CacheShape bench_shape(std::size_t capacity) {
  return kvc::CacheShape{/*num_layers*/ 1, /*num_q_heads*/ kQHeads, /*num_kv_heads*/ kKvHeads,
                         /*head_dim*/ kHeadDim, /*capacity*/ capacity};
}

inline std::unique_ptr<kvc::Executor> make_executor(int threads) {
  if (threads <= 1) return std::make_unique<kvc::SerialExecutor>();
  return std::make_unique<kvc::ThreadPoolExecutor>(threads);
}

/// Deterministic N(0, 1) fp32 keys and values for kInputChunks chunks of kChunk tokens,
/// [token][kv_head][head_dim]; longer inputs cycle through them (built once per process).
struct Inputs {
  static constexpr std::size_t kInputChunks = 4;
  static constexpr std::size_t kTokenFloats = static_cast<std::size_t>(kKvHeads) * kHeadDim;
  std::vector<float> k, v;

  Inputs() : k(kInputChunks * kChunk * kTokenFloats), v(k.size()) {
    std::mt19937 rng(20240611);
    std::normal_distribution<float> n01(0.0f, 1.0f);
    for (float& x : k) x = n01(rng);
    for (float& x : v) x = n01(rng);
  }
  /// K and V of the chunk starting at token t (t a multiple of kChunk).
  const float* k_chunk(std::size_t t) const { return k.data() + (t / kChunk % kInputChunks) * kChunk * kTokenFloats; }
  const float* v_chunk(std::size_t t) const { return v.data() + (t / kChunk % kInputChunks) * kChunk * kTokenFloats; }

  /// Appends tokens [0, n) to layer 0 in chunks of kChunk, labelled like a multimodal prompt:
  /// 64 text tokens, an image span, 64 text tokens (only modality-aware stores care).
  template <class Cache>
  void append_to(Cache& cache, std::size_t n) const {
    std::vector<kvc::Modality> mod(kChunk);
    for (std::size_t t = 0; t < n; t += kChunk) {
      const std::size_t m = n - t < kChunk ? n - t : kChunk;
      for (std::size_t i = 0; i < m; ++i)
        mod[i] = (t + i < 64 || t + i + 64 >= n) ? kvc::Modality::kText : kvc::Modality::kImage;
      cache.append(0, k_chunk(t), v_chunk(t), m, mod.data());
    }
  }
};

inline const Inputs& inputs() {
  static const Inputs in;
  return in;
}

/// fp32 bytes of K plus V for `tokens` tokens (the append benchmark's input volume).
inline double f32_kv_bytes(std::size_t tokens) {
  return static_cast<double>(tokens) * Inputs::kTokenFloats * 2 * sizeof(float);
}

}  // namespace kvcompress_bench
