// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The quantizers kvc_quant_quality compares — the one place to add a method: append one line to
/// quant_methods(). Each line is `quant_method<Policy>(label[, config factory][, key domain])`:
///  * the config factory receives the data (its RoPE parameters: pre-RoPE stores such as KVQuant
///    and CQ rotate keys at attention time; its activations: in-sample calibration rows);
///  * KeyDomain::kPreRope makes the tool append the pre-RoPE keys; materialize() of every store
///    returns post-RoPE keys (core/policy_traits.hpp), so errors are measured in one key space.
/// The dense fp32 cache is not listed: it is the reference every row is measured against.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "kvcompress/policies/quant/common/rope.hpp"

namespace kvquality {

/// Query/key/value activations of L layers (one cache layer each), every token at position t.
/// Layouts per layer: q [n][Hq][d] post-RoPE; k_pre, k [n][Hkv][d] (before / after RoPE); v same.
struct KvqData {
  std::string name;
  int num_q_heads = 0, num_kv_heads = 0, head_dim = 0;
  std::size_t n_tokens = 0;
  kvcompress::quant::common::RopeParams rope;
  struct Layer {
    std::vector<float> q, k_pre, k, v;
  };
  std::vector<Layer> layers;
};

/// Which keys a method's store takes.
enum class KeyDomain { kPostRope, kPreRope };

/// What one cache produced on the data: the footprint after appending all n tokens, attention
/// outputs of the last n_eval query rows of every layer ([L][n_eval][Hq][d]), and the decoded
/// keys and values ([L][Hkv][n][d], keys post-RoPE).
struct QuantRun {
  std::size_t memory_bytes = 0;
  std::vector<float> out, keys, values;
};

struct QuantMethod {
  std::string label;
  std::function<QuantRun(const KvqData&, std::size_t n_eval)> run;
};

namespace detail {

/// Appends every layer's tokens in one chunk, ends the prefill, then attends the last n_eval
/// queries of each layer (the cache's fused kernels) and decodes the stored K/V (materialize).
template <class P>
QuantRun run_quant(const KvqData& data, std::size_t n_eval, const typename P::Config& config, KeyDomain domain) {
  namespace kvc = kvcompress;
  kvc::CacheShape shape;
  shape.num_layers = static_cast<int>(data.layers.size());
  shape.num_q_heads = data.num_q_heads;
  shape.num_kv_heads = data.num_kv_heads;
  shape.head_dim = data.head_dim;
  shape.capacity = data.n_tokens;
  kvc::KVCache<P> cache(shape, config);
  const std::size_t n = data.n_tokens, d = static_cast<std::size_t>(data.head_dim);
  const std::size_t hq = static_cast<std::size_t>(data.num_q_heads), hkv = static_cast<std::size_t>(data.num_kv_heads);
  // A multimodal prompt: 64 text tokens, an image span, 64 text tokens (label-agnostic stores
  // are unaffected; CalibQuant quantizes the image span to 1 bit, VidKV/AKVQ-VL use the labels).
  std::vector<kvc::Modality> mod(n);
  for (std::size_t t = 0; t < n; ++t)
    mod[t] = (t < 64 || t + 64 >= n) ? kvc::Modality::kText : kvc::Modality::kImage;
  // The last token arrives as a decode step: stores that encode the prompt once it is complete
  // (CalibQuant's visual spans) have done so before the measured queries attend.
  for (int l = 0; l < shape.num_layers; ++l) {
    const auto& L = data.layers[static_cast<std::size_t>(l)];
    const float* k = (domain == KeyDomain::kPreRope ? L.k_pre : L.k).data();
    cache.append(l, k, L.v.data(), n - 1, mod.data());
    cache.append(l, k + (n - 1) * hkv * d, L.v.data() + (n - 1) * hkv * d, 1, mod.data() + n - 1);
  }
  cache.end_prefill();
  QuantRun r;
  r.memory_bytes = cache.memory_bytes();
  r.out.resize(data.layers.size() * n_eval * hq * d);
  r.keys.resize(data.layers.size() * hkv * n * d);
  r.values.resize(r.keys.size());
  for (int l = 0; l < shape.num_layers; ++l) {
    const auto& L = data.layers[static_cast<std::size_t>(l)];
    cache.attend(l, L.q.data() + (n - n_eval) * hq * d, n_eval, r.out.data() + static_cast<std::size_t>(l) * n_eval * hq * d);
    for (int h = 0; h < shape.num_kv_heads; ++h)
      kvc::detail::require(cache.size(l, h) == n, "kvc_quant_quality", "cache.size", cache.size(l, h),
                           "all appended tokens (quantizers evict nothing)");
    float* k = r.keys.data() + static_cast<std::size_t>(l) * hkv * n * d;
    cache.materialize(l, k, r.values.data() + static_cast<std::size_t>(l) * hkv * n * d);  // post-RoPE keys
  }
  return r;
}

}  // namespace detail

/// One table line: the policy P, its label, its config built from the data's RoPE parameters,
/// and the key domain its store takes.
template <class P>
QuantMethod quant_method(
    std::string label,
    std::function<typename P::Config(const KvqData&)> config = [](const KvqData&) { return typename P::Config{}; },
    KeyDomain domain = KeyDomain::kPostRope) {
  return {std::move(label), [config, domain](const KvqData& data, std::size_t n_eval) {
            return detail::run_quant<P>(data, n_eval, config(data), domain);
          }};
}

template <class Quant>
using QuantOnly = kvcompress::Policy<kvcompress::evict::None, kvcompress::merge::None, Quant>;

/// A CQ config whose codebooks are fitted (k-means) on the data's own pre-RoPE keys and values,
/// one set per (layer, KV head): an in-sample upper bound of what calibration can give.
template <class P>
typename P::Config cq_fitted(const KvqData& d, int c, int bits) {
  namespace q = kvcompress::quant;
  const std::size_t dd = static_cast<std::size_t>(d.head_dim), hkv = static_cast<std::size_t>(d.num_kv_heads);
  std::vector<std::vector<float>> ks, vs;
  for (const auto& L : d.layers)
    for (std::size_t h = 0; h < hkv; ++h) {
      ks.emplace_back();
      vs.emplace_back();
      for (std::size_t t = 0; t < d.n_tokens; ++t) {
        const std::size_t o = (t * hkv + h) * dd;
        ks.back().insert(ks.back().end(), L.k_pre.begin() + static_cast<std::ptrdiff_t>(o), L.k_pre.begin() + static_cast<std::ptrdiff_t>(o + dd));
        vs.back().insert(vs.back().end(), L.v.begin() + static_cast<std::ptrdiff_t>(o), L.v.begin() + static_cast<std::ptrdiff_t>(o + dd));
      }
    }
  std::vector<q::CqStreamSamples> samples;
  for (std::size_t i = 0; i < ks.size(); ++i) samples.push_back({ks[i].data(), vs[i].data(), d.n_tokens});
  typename P::Config cfg;
  cfg.quant.codebooks = q::cq_fit_codebooks(static_cast<int>(d.layers.size()), d.num_kv_heads, d.head_dim, c, bits, samples);
  cfg.quant.rope = d.rope;
  return cfg;
}

/// The reference: the dense fp32 cache.
inline QuantMethod reference_method() {
  return quant_method<QuantOnly<kvcompress::quant::DenseF32>>("dense fp32 (reference)");
}

/// Every compared quantizer, one line each.
inline std::vector<QuantMethod> quant_methods() {
  namespace q = kvcompress::quant;
  return {
      quant_method<QuantOnly<q::None>>("dense fp16"),
      quant_method<QuantOnly<q::Kivi4>>("KIVI-4 (G32 R128)"),
      quant_method<QuantOnly<q::Kivi2>>("KIVI-2 (G32 R128)"),
      quant_method<QuantOnly<q::GgmlQ8_0>>("llama.cpp q8_0"),
      quant_method<QuantOnly<q::GgmlQ8_0Had>>("llama.cpp q8_0 + Hadamard K"),
      quant_method<QuantOnly<q::Ggml<q::formats::Q8_0, q::formats::Q4_0>>>("llama.cpp K q8_0 / V q4_0"),
      quant_method<QuantOnly<q::GgmlQ4_1>>("llama.cpp q4_1"),
      quant_method<QuantOnly<q::GgmlQ4_1Had>>("llama.cpp q4_1 + Hadamard K"),
      quant_method<QuantOnly<q::GgmlQ4_0>>("llama.cpp q4_0"),
      quant_method<QuantOnly<q::GgmlQ4_0Had>>("llama.cpp q4_0 + Hadamard K"),
      quant_method<QuantOnly<q::KVQuantNuq3>>(
          "KVQuant nuq3-1% (data-free NF, pre-RoPE)",
          [](const KvqData& d) {
            QuantOnly<q::KVQuantNuq3>::Config c;
            c.quant.rope = d.rope;
            return c;
          },
          KeyDomain::kPreRope),
      quant_method<QuantOnly<q::KVQuantNuq3>>(
          "KVQuant nuq3-1% (calibrated in-sample, pre-RoPE)",
          [](const KvqData& d) {
            std::vector<q::KVQuantLayerActivations> acts;
            for (const auto& L : d.layers) {
              q::KVQuantLayerActivations a;
              a.k = L.k_pre.data();
              a.v = L.v.data();
              a.tokens = d.n_tokens;
              acts.push_back(a);
            }
            QuantOnly<q::KVQuantNuq3>::Config c;
            c.quant.calibration =
                std::make_shared<q::KVQuantCalibration>(q::calibrate_kvquant(d.num_kv_heads, d.head_dim, acts));
            c.quant.rope = d.rope;
            return c;
          },
          KeyDomain::kPreRope),
      quant_method<QuantOnly<q::Cq8c8b>>(
          "CQ-8c8b 1 bit/ch (Gaussian fallback codebook, pre-RoPE)",
          [](const KvqData& d) {
            QuantOnly<q::Cq8c8b>::Config c;
            c.quant.codebooks = q::cq_gaussian_codebooks(d.head_dim, 8, 8);
            c.quant.rope = d.rope;
            return c;
          },
          KeyDomain::kPreRope),
      quant_method<QuantOnly<q::Cq8c8b>>("CQ-8c8b 1 bit/ch (codebooks fitted in-sample, pre-RoPE)",
                                         [](const KvqData& d) { return cq_fitted<QuantOnly<q::Cq8c8b>>(d, 8, 8); },
                                         KeyDomain::kPreRope),
      quant_method<QuantOnly<q::Cq4c8b>>("CQ-4c8b 2 bits/ch (codebooks fitted in-sample, pre-RoPE)",
                                         [](const KvqData& d) { return cq_fitted<QuantOnly<q::Cq4c8b>>(d, 4, 8); },
                                         KeyDomain::kPreRope),
      quant_method<QuantOnly<q::AkvqVl>>("AKVQ-VL (WHT, 2-bit PSA / 4-bit TSA layers)"),
      quant_method<QuantOnly<q::CalibQuant1Bit>>("CalibQuant 1-bit image span"),
      quant_method<QuantOnly<q::VidKV_K15_V158>>("VidKV K1.5 / V1.58"),
      quant_method<QuantOnly<q::Gear2>>("GEAR-2 (G64 n_b 64, rank 4/2, 2 % outliers)"),
      quant_method<QuantOnly<q::Ott2>>("OTT-2 (G128 R32, 3 outlier tokens)"),
      quant_method<QuantOnly<q::SubKV2>>("SubKV-2 (our interpretation)"),
  };
}

}  // namespace kvquality
