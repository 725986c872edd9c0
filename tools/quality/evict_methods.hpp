// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The eviction (and merging) methods kvc_evict_quality compares — the one place to add a
/// method: append one line to evict_methods(). Each line is
/// `evict_method<Policy>(label, config factory)`; the factory receives the token budget (a
/// fraction of the prompt length) and the workload, and returns the policy's Config. Use
/// quant::DenseF32 storage so the table isolates the eviction error.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "synthetic/multimodal_workload.hpp"

namespace kvquality {

/// What one cache produced on the workload's decode tokens: attention outputs
/// ([decode][L][Hq][d]), the original positions of the live slots after each decode append
/// (index (step·L + layer)·Hkv + kv_head), and the footprint at the end.
struct EvictRun {
  std::vector<float> out;
  std::vector<std::vector<std::int32_t>> kept;
  std::size_t memory_bytes = 0;
};

struct EvictMethod {
  std::string label;
  std::function<EvictRun(const kvsynth::MultimodalWorkload&, std::size_t budget, std::size_t chunk)> run;
};

namespace detail {

/// Prefill in chunks (append with the per-token modality labels, then attend the chunk's
/// queries, so score-based policies see every prompt query), end_prefill(), then one decode step
/// per decode token: append it (kGenerated), attend its query, record the live positions.
template <class P>
EvictRun run_evict(const kvsynth::MultimodalWorkload& w, const typename P::Config& config, std::size_t chunk) {
  namespace kvc = kvcompress;
  const auto& c = w.config;
  kvc::CacheShape shape;
  shape.num_layers = c.num_layers;
  shape.num_q_heads = c.num_q_heads;
  shape.num_kv_heads = c.num_kv_heads;
  shape.head_dim = c.head_dim;
  shape.capacity = w.n_total;
  kvc::KVCache<P> cache(shape, config);
  const std::size_t d = static_cast<std::size_t>(c.head_dim), hq = static_cast<std::size_t>(c.num_q_heads);
  const std::size_t hkv = static_cast<std::size_t>(c.num_kv_heads), L = static_cast<std::size_t>(c.num_layers);
  std::vector<float> scratch(chunk * hq * d);
  for (std::size_t j0 = 0; j0 < w.n_prompt; j0 += chunk) {
    const std::size_t n = std::min(chunk, w.n_prompt - j0);
    for (std::size_t l = 0; l < L; ++l) {
      const auto& X = w.layers[l];
      const int li = static_cast<int>(l);
      cache.append(li, X.k.data() + j0 * hkv * d, X.v.data() + j0 * hkv * d, n, w.modality.data() + j0);
      cache.attend(li, X.q.data() + j0 * hq * d, n, scratch.data());
    }
  }
  cache.end_prefill();
  EvictRun r;
  const std::size_t steps = w.n_total - w.n_prompt;
  r.out.resize(steps * L * hq * d);
  r.kept.resize(steps * L * hkv);
  for (std::size_t s = 0; s < steps; ++s) {
    const std::size_t t = w.n_prompt + s;
    for (std::size_t l = 0; l < L; ++l) {
      const auto& X = w.layers[l];
      const int li = static_cast<int>(l);
      cache.append(li, X.k.data() + t * hkv * d, X.v.data() + t * hkv * d, 1, w.modality.data() + t);
      cache.attend(li, X.q.data() + t * hq * d, 1, r.out.data() + (s * L + l) * hq * d);
      for (std::size_t h = 0; h < hkv; ++h) {
        auto& k = r.kept[(s * L + l) * hkv + h];
        k.resize(cache.size(li, static_cast<int>(h)));
        cache.positions(li, static_cast<int>(h), k.data());
      }
    }
  }
  r.memory_bytes = cache.memory_bytes();
  return r;
}

}  // namespace detail

/// One table line: the policy P, its label, and its Config for a budget of `budget` tokens.
template <class P>
EvictMethod evict_method(std::string label,
                         std::function<typename P::Config(std::size_t budget, const kvsynth::MultimodalWorkload&)> config) {
  return {std::move(label), [config](const kvsynth::MultimodalWorkload& w, std::size_t budget, std::size_t chunk) {
            return detail::run_evict<P>(w, config(budget, w), chunk);
          }};
}

template <class Evict, class Merge = kvcompress::merge::None>
using EvictF32 = kvcompress::Policy<Evict, Merge, kvcompress::quant::DenseF32>;

/// The full cache (no eviction): the sanity row (recall 1, output error ~fp32 rounding).
inline EvictMethod full_cache_method() {
  using P = EvictF32<kvcompress::evict::None>;
  return evict_method<P>("full cache", [](std::size_t, const kvsynth::MultimodalWorkload&) { return P::Config{}; });
}

/// Every compared method, one line each.
inline std::vector<EvictMethod> evict_methods() {
  namespace ev = kvcompress::evict;
  using Workload = kvsynth::MultimodalWorkload;
  return {
      evict_method<EvictF32<ev::StreamingLLM>>("StreamingLLM (4 sinks + recent)",
          [](std::size_t b, const Workload&) {
            EvictF32<ev::StreamingLLM>::Config c;
            c.evict.sink_tokens = 4;
            c.evict.window_tokens = b - 4;
            return c;
          }),
      evict_method<EvictF32<ev::H2O>>("H2O (½ heavy + ½ recent)",
          [](std::size_t b, const Workload&) {
            EvictF32<ev::H2O>::Config c;
            c.evict.heavy_budget = b / 2;
            c.evict.recent_budget = b - b / 2;
            return c;
          }),
      evict_method<EvictF32<ev::InfMLLM>>("Inf-MLLM (¼ recent, kernel 5, β 0.1)",
          [](std::size_t b, const Workload&) {
            EvictF32<ev::InfMLLM>::Config c;
            c.evict.cache_size = b;
            c.evict.recent = std::max<std::size_t>(1, b / 4);
            c.evict.bias = 0.1f;
            return c;
          }),
      evict_method<kvcompress::LookMPolicy<kvcompress::quant::DenseF32>>("LOOK-M (P-Merge)",
          [](std::size_t b, const Workload& w) {
            kvcompress::LookMPolicy<kvcompress::quant::DenseF32>::Config c;
            c.evict.recent_ratio = 0.5 * double(b) / double(w.n_prompt);
            c.evict.important_ratio = c.evict.recent_ratio;
            return c;
          }),
      evict_method<kvcompress::MedaPolicy<kvcompress::quant::DenseF32>>("MEDA (entropy budgets, A-Merge)",
          [](std::size_t b, const Workload& w) {
            kvcompress::MedaPolicy<kvcompress::quant::DenseF32>::Config c;
            c.evict.rho = double(b) / double(w.n_prompt);
            return c;
          }),
      evict_method<EvictF32<ev::SnapKV>>("SnapKV (W 32, avg pool 5)",
          [](std::size_t b, const Workload&) {
            EvictF32<ev::SnapKV>::Config c;
            c.evict.budget = {1.0, b};
            c.evict.on_protected_overflow = ev::common::ProtectedOverflow::kTruncate;
            return c;
          }),
      evict_method<EvictF32<ev::PyramidKV>>("PyramidKV (W 32, beta 20)",
          [](std::size_t b, const Workload& w) {
            EvictF32<ev::PyramidKV>::Config c;
            c.evict.budget = {double(b) / double(w.n_prompt), 0};
            c.evict.window = 32;
            c.evict.on_protected_overflow = ev::common::ProtectedOverflow::kTruncate;
            return c;
          }),
      evict_method<EvictF32<ev::TOVA>>("TOVA", [](std::size_t b, const Workload&) {
            EvictF32<ev::TOVA>::Config c;
            c.evict.cache_size = b;
            return c;
          }),
      evict_method<EvictF32<ev::KNorm>>("KNorm", [](std::size_t b, const Workload&) {
            EvictF32<ev::KNorm>::Config c;
            c.evict.budget = {1.0, b};
            return c;
          }),
      evict_method<EvictF32<ev::ExpectedAttention>>("Expected Attention", [](std::size_t b, const Workload& w) {
            EvictF32<ev::ExpectedAttention>::Config c;
            c.evict.budget = {1.0, b};
            c.evict.on_protected_overflow = ev::common::ProtectedOverflow::kTruncate;
            c.evict.rope.head_dim = static_cast<std::size_t>(w.config.head_dim);
            return c;
          }),
      evict_method<EvictF32<ev::PrefixKV>>("PrefixKV (CDF threshold)", [](std::size_t b, const Workload& w) {
            EvictF32<ev::PrefixKV>::Config c;
            c.evict.ratio = double(b) / double(w.n_prompt);
            return c;
          }),
      evict_method<EvictF32<ev::VLCache>>("VL-Cache (density budgets)", [](std::size_t b, const Workload& w) {
            EvictF32<ev::VLCache>::Config c;
            c.evict.alpha = double(b) / double(w.n_prompt);
            return c;
          }),
      evict_method<EvictF32<ev::CrossSelfPruning>>("Cross-Self Pruning", [](std::size_t b, const Workload& w) {
            EvictF32<ev::CrossSelfPruning>::Config c;
            c.evict.hh_ratio = c.evict.recent_ratio = 0.5 * double(b) / double(w.n_prompt);
            return c;
          }),
      evict_method<EvictF32<ev::AirCache>>("AirCache (visual slots only)", [](std::size_t b, const Workload& w) {
            EvictF32<ev::AirCache>::Config c;
            c.evict.ratio = double(b) / double(w.n_prompt);
            return c;
          }),
      evict_method<EvictF32<ev::ZipVL>>("ZipVL (tau 0.975, eviction form)", [](std::size_t, const Workload&) {
            return EvictF32<ev::ZipVL>::Config{};
          }),
      // The paper's form keeps every slot (U at 2 bits, T at 4): its error is quantization error.
      evict_method<kvcompress::ZipVLPolicy<>>("ZipVL (tau 0.975, T 4-bit / U 2-bit)", [](std::size_t, const Workload&) {
            return kvcompress::ZipVLPolicy<>::Config{};
          }),
      evict_method<kvcompress::ElasticCachePolicy<kvcompress::quant::DenseF32>>("Elastic Cache (bucket mean)",
          [](std::size_t b, const Workload& w) {
            kvcompress::ElasticCachePolicy<kvcompress::quant::DenseF32>::Config c;
            c.evict.ratio = double(b) / double(w.n_prompt);
            return c;
          }),
  };
}

}  // namespace kvquality
