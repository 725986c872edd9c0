// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Test oracle for attention over a KV cache: causal softmax attention computed in double
/// precision from dense K/V, and ReferenceCache, a plain fp32 cache with the KVCache member
/// functions the engine uses, whose attend is that oracle. Both are deliberately simple (no SIMD,
/// no blocking) so they can check the library and the engine.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/modality.hpp"

namespace kvtest {

/// out[i][h][:] = Σ_j softmax_j(q[i][h]·K[g][j] / √d) V[g][j] with g = h / group_size, over the
/// slots j ≤ size − n_q + i (query i is the i-th of the last n_q tokens). K, V are
/// [num_kv_heads][size][head_dim]; q, out are [n_q][num_q_heads][head_dim]. All sums in double.
inline void reference_attention(const kvcompress::CacheShape& s, const float* K, const float* V,
                                std::size_t size, const float* q, int n_q, double* out) {
  const int d = s.head_dim;
  std::vector<double> w(size);
  for (int i = 0; i < n_q; ++i) {
    const std::size_t visible = size - static_cast<std::size_t>(n_q) + static_cast<std::size_t>(i) + 1;
    for (int h = 0; h < s.num_q_heads; ++h) {
      const int g = h / s.group_size();
      const float* qi = q + (static_cast<std::size_t>(i) * s.num_q_heads + h) * d;
      const float* Kg = K + static_cast<std::size_t>(g) * size * d;
      const float* Vg = V + static_cast<std::size_t>(g) * size * d;
      double mx = -INFINITY;
      for (std::size_t j = 0; j < visible; ++j) {
        double dot = 0;
        for (int c = 0; c < d; ++c) dot += static_cast<double>(qi[c]) * Kg[j * d + c];
        w[j] = dot / std::sqrt(static_cast<double>(d));
        mx = std::max(mx, w[j]);
      }
      double sum = 0;
      for (std::size_t j = 0; j < visible; ++j) sum += (w[j] = std::exp(w[j] - mx));
      double* o = out + (static_cast<std::size_t>(i) * s.num_q_heads + h) * d;
      std::fill(o, o + d, 0.0);
      for (std::size_t j = 0; j < visible; ++j)
        for (int c = 0; c < d; ++c) o[c] += w[j] / sum * Vg[j * d + c];
    }
  }
}

/// Dense fp32 cache with double-precision attention: the oracle cache for engine tests (only the
/// members the engine calls).
class ReferenceCache {
 public:
  explicit ReferenceCache(const kvcompress::CacheShape& s)
      : s_(s), k_(static_cast<std::size_t>(s.num_layers)), v_(k_.size()), n_(k_.size(), 0) {
    s_.validate("ReferenceCache");
    const std::size_t per_layer = static_cast<std::size_t>(s.num_kv_heads) * s.capacity * s.head_dim;
    for (std::size_t l = 0; l < k_.size(); ++l) {
      k_[l].resize(per_layer);
      v_[l].resize(per_layer);
    }
  }

  /// k, v: [n][num_kv_heads][head_dim].
  void append(int layer, const float* k, const float* v, int n, kvcompress::Modality) {
    std::size_t& size = n_.at(static_cast<std::size_t>(layer));
    if (size + static_cast<std::size_t>(n) > s_.capacity) throw std::length_error("ReferenceCache: capacity exceeded");
    const int d = s_.head_dim;
    for (int t = 0; t < n; ++t)
      for (int g = 0; g < s_.num_kv_heads; ++g) {
        const std::size_t src = (static_cast<std::size_t>(t) * s_.num_kv_heads + g) * d;
        const std::size_t dst = (static_cast<std::size_t>(g) * s_.capacity + size + t) * d;
        std::memcpy(&k_[layer][dst], k + src, sizeof(float) * d);
        std::memcpy(&v_[layer][dst], v + src, sizeof(float) * d);
      }
    size += static_cast<std::size_t>(n);
  }

  void attend(int layer, const float* q, int n_q, float* out) const {
    std::vector<float> K, V;
    materialize(layer, K, V);
    std::vector<double> o(static_cast<std::size_t>(n_q) * s_.num_q_heads * s_.head_dim);
    reference_attention(s_, K.data(), V.data(), n_[static_cast<std::size_t>(layer)], q, n_q, o.data());
    for (std::size_t i = 0; i < o.size(); ++i) out[i] = static_cast<float>(o[i]);
  }

  void end_prefill() {}

  /// Dense copies [num_kv_heads][size][head_dim].
  void materialize(int layer, std::vector<float>& K, std::vector<float>& V) const {
    const std::size_t size = n_.at(static_cast<std::size_t>(layer)), d = static_cast<std::size_t>(s_.head_dim);
    K.resize(static_cast<std::size_t>(s_.num_kv_heads) * size * d);
    V.resize(K.size());
    for (int g = 0; g < s_.num_kv_heads; ++g) {
      const std::size_t src = static_cast<std::size_t>(g) * s_.capacity * d, dst = static_cast<std::size_t>(g) * size * d;
      std::copy_n(&k_[static_cast<std::size_t>(layer)][src], size * d, &K[dst]);
      std::copy_n(&v_[static_cast<std::size_t>(layer)][src], size * d, &V[dst]);
    }
  }


 private:
  kvcompress::CacheShape s_;
  std::vector<std::vector<float>> k_, v_;
  std::vector<std::size_t> n_;
};

}  // namespace kvtest
