// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The cache policies the real-model evaluation compares — the one place to add a method: append
/// one line to evaluation_policies(). Dense fp32 comes first: it is the reference every other
/// row's KL divergence and top-1 agreement are measured against.
///
/// AnyCache erases the policy type so that one lockstep Session (model.hpp) can drive caches of
/// different policies; its virtual calls happen once per (layer, cache) and cost nothing next to
/// the attention itself.

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kvcompress/kvcompress.hpp"

namespace kvllama {

/// The KVCache members the engine and the evaluation use, behind a virtual interface.
class AnyCache {
 public:
  virtual ~AnyCache() = default;
  virtual void append(int layer, const float* k, const float* v, std::size_t n, kvcompress::Modality m) = 0;
  virtual void attend(int layer, const float* q, std::size_t n_q, float* out) = 0;
  virtual void end_prefill() = 0;
  virtual std::size_t memory_bytes() const = 0;
};

/// AnyCache over a KVCache<P>.
template <class P>
class PolicyCache final : public AnyCache {
 public:
  PolicyCache(const kvcompress::CacheShape& shape, const typename P::Config& config) : cache_(shape, config) {}
  void append(int layer, const float* k, const float* v, std::size_t n, kvcompress::Modality m) override {
    cache_.append(layer, k, v, n, m);
  }
  void attend(int layer, const float* q, std::size_t n_q, float* out) override { cache_.attend(layer, q, n_q, out); }
  void end_prefill() override { cache_.end_prefill(); }
  std::size_t memory_bytes() const override { return cache_.memory_bytes(); }

 private:
  kvcompress::KVCache<P> cache_;
};

/// One evaluated method: a label and a factory taking the cache shape and the evaluated context
/// length (eviction budgets are fractions of it).
struct PolicyEntry {
  std::string label;
  std::function<std::unique_ptr<AnyCache>(const kvcompress::CacheShape&, std::size_t context)> make;
};

namespace policy_table_detail {
namespace kvc = kvcompress;
template <class P>
std::unique_ptr<AnyCache> make(const kvc::CacheShape& s, const typename P::Config& c = {}) {
  return std::make_unique<PolicyCache<P>>(s, c);
}
template <class Quant>
using QuantOnly = kvc::Policy<kvc::evict::None, kvc::merge::None, Quant>;
using DenseF32 = QuantOnly<kvc::quant::DenseF32>;
using DenseF16 = kvc::Policy<>;
template <int B>
using Kivi = QuantOnly<kvc::quant::Kivi<B, B, 32, 128>>;
using Q8K_Q4V = QuantOnly<kvc::quant::Ggml<kvc::quant::formats::Q8_0, kvc::quant::formats::Q4_0>>;
using StreamingLLM = kvc::Policy<kvc::evict::StreamingLLM>;
using H2O = kvc::Policy<kvc::evict::H2O>;
using LookM = kvc::LookMPolicy<>;
using ElasticCache = kvc::ElasticCachePolicy<>;
using SnapKV = kvc::Policy<kvc::evict::SnapKV>;
using PyramidKV = kvc::Policy<kvc::evict::PyramidKV>;
using TOVA = kvc::Policy<kvc::evict::TOVA>;
using KNorm = kvc::Policy<kvc::evict::KNorm>;
using PrefixKV = kvc::Policy<kvc::evict::PrefixKV>;
using VLCache = kvc::Policy<kvc::evict::VLCache>;
using CSP = kvc::Policy<kvc::evict::CrossSelfPruning>;
using ZipVLMixed = kvc::ZipVLPolicy<>;
}  // namespace policy_table_detail

/// Every method the evaluation runs, reference first. Eviction methods keep a budget of 25 % of
/// the context (fp16 storage).
inline std::vector<PolicyEntry> evaluation_policies() {
  using namespace policy_table_detail;
  using Shape = kvc::CacheShape;
  return {
      {"dense fp32 (reference)", [](const Shape& s, std::size_t) { return make<DenseF32>(s); }},
      {"dense fp16", [](const Shape& s, std::size_t) { return make<DenseF16>(s); }},
      {"KIVI-4 (G32 R128)", [](const Shape& s, std::size_t) { return make<Kivi<4>>(s); }},
      {"KIVI-2 (G32 R128)", [](const Shape& s, std::size_t) { return make<Kivi<2>>(s); }},
      {"GEAR-2 (G64 n_b 64, rank 4/2, 2% outliers)", [](const Shape& s, std::size_t) { return make<QuantOnly<kvc::quant::Gear2>>(s); }},
      {"OTT-2 (G128 R32, 3 outlier tokens)", [](const Shape& s, std::size_t) { return make<QuantOnly<kvc::quant::Ott2>>(s); }},
      {"SubKV-2 (our interpretation)", [](const Shape& s, std::size_t) { return make<QuantOnly<kvc::quant::SubKV2>>(s); }},
      {"VidKV K1.5 / V1.58", [](const Shape& s, std::size_t) { return make<QuantOnly<kvc::quant::VidKV_K15_V158>>(s); }},
      {"AKVQ-VL (2-bit PSA, first 2 layers 4-bit TSA)", [](const Shape& s, std::size_t) { return make<QuantOnly<kvc::quant::AkvqVl>>(s); }},
      {"llama.cpp q8_0", [](const Shape& s, std::size_t) { return make<QuantOnly<kvc::quant::GgmlQ8_0>>(s); }},
      {"llama.cpp K q8_0 / V q4_0", [](const Shape& s, std::size_t) { return make<Q8K_Q4V>(s); }},
      {"llama.cpp q4_0", [](const Shape& s, std::size_t) { return make<QuantOnly<kvc::quant::GgmlQ4_0>>(s); }},
      {"llama.cpp q4_0 + Hadamard K", [](const Shape& s, std::size_t) { return make<QuantOnly<kvc::quant::GgmlQ4_0Had>>(s); }},
      {"StreamingLLM 25% (4 sinks)", [](const Shape& s, std::size_t n) {
         StreamingLLM::Config c;
         c.evict.sink_tokens = 4;
         c.evict.window_tokens = n / 4 - 4;
         return make<StreamingLLM>(s, c);
       }},
      {"H2O 25% (12.5% heavy + 12.5% recent)", [](const Shape& s, std::size_t n) {
         H2O::Config c;
         c.evict.heavy_budget = n / 8;
         c.evict.recent_budget = n / 8;
         return make<H2O>(s, c);
       }},
      {"LOOK-M P-Merge, prompt kept 25%", [](const Shape& s, std::size_t) {
         LookM::Config c;
         c.evict.recent_ratio = 0.125;
         c.evict.important_ratio = 0.125;
         return make<LookM>(s, c);
       }},
      {"Elastic Cache 25% (bucket mean)", [](const Shape& s, std::size_t) {
         ElasticCache::Config c;
         c.evict.ratio = 0.25;
         return make<ElasticCache>(s, c);
       }},
      {"SnapKV prompt kept 25% (W 32, avg pool 5)", [](const Shape& s, std::size_t) {
         SnapKV::Config c;
         c.evict.budget = {0.25, 0};
         return make<SnapKV>(s, c);
       }},
      {"PyramidKV prompt kept 25% (W 16, beta 20)", [](const Shape& s, std::size_t) {
         PyramidKV::Config c;
         c.evict.budget = {0.25, 0};
         c.evict.window = 16;
         return make<PyramidKV>(s, c);
       }},
      {"TOVA 25%", [](const Shape& s, std::size_t n) {
         TOVA::Config c;
         c.evict.cache_size = n / 4;
         return make<TOVA>(s, c);
       }},
      {"KNorm prompt kept 25%", [](const Shape& s, std::size_t) {
         KNorm::Config c;
         c.evict.budget = {0.25, 0};
         return make<KNorm>(s, c);
       }},
      {"PrefixKV 25% (CDF threshold)", [](const Shape& s, std::size_t) {
         PrefixKV::Config c;
         c.evict.ratio = 0.25;
         return make<PrefixKV>(s, c);
       }},
      {"VL-Cache prompt kept 25%", [](const Shape& s, std::size_t) {
         VLCache::Config c;
         c.evict.alpha = 0.25;
         return make<VLCache>(s, c);
       }},
      {"CSP prompt kept 25%", [](const Shape& s, std::size_t) {
         CSP::Config c;
         c.evict.hh_ratio = 0.125;
         c.evict.recent_ratio = 0.125;
         return make<CSP>(s, c);
       }},
      {"ZipVL tau 0.975, T 4-bit / U 2-bit", [](const Shape& s, std::size_t) { return make<ZipVLMixed>(s); }},
  };
}

}  // namespace kvllama
