// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Double-precision oracles shared by the multimodal window-scorer tests (VL-Cache, CSP, AirCache,
/// ZipVL, PrefixKV) on top of the hand-built PrefillContext of tests/support/hand_prefill.hpp:
/// random filling with modality labels, a per-layer snapshot in the [Hkv][n][d] key layout, the
/// causal (n-)softmax of a window row, top-k with the tie rule, kept positions, and the bridge to
/// end-to-end runs (a random prompt in the cache's layouts, `feed`, the same prompt as a
/// HandPrefill).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/modality.hpp"
#include "support/hand_prefill.hpp"

namespace kvtest {

using kvcompress::CacheShape;
using kvcompress::Modality;

/// One layer of a HandPrefill, copied: k, v [Hkv][n][d]; q [Hq][rows][d].
struct PrefillLayer {
  std::vector<std::int32_t> pos;
  std::vector<Modality> mod;
  std::vector<std::uint8_t> alive;
  std::vector<float> k, v, q;
  std::vector<std::int32_t> qpos;
};

inline PrefillLayer layer(const HandPrefill& h, int l) {
  PrefillLayer L{h.pos, h.mod, h.alive, {}, {}, h.q[static_cast<std::size_t>(l)], h.qpos[static_cast<std::size_t>(l)]};
  for (int kh = 0; kh < h.shape.num_kv_heads; ++kh) {
    const auto& kk = h.k[static_cast<std::size_t>(l * h.shape.num_kv_heads + kh)];
    const auto& vv = h.v[static_cast<std::size_t>(l * h.shape.num_kv_heads + kh)];
    L.k.insert(L.k.end(), kk.begin(), kk.end());
    L.v.insert(L.v.end(), vv.begin(), vv.end());
  }
  return L;
}

/// Labels `mod` (h.n of them), Gaussian keys/values, and the last `rows` positions of every layer
/// as its query window with Gaussian queries × q_scale.
inline void fill_random(HandPrefill& h, const std::vector<Modality>& mod, std::size_t rows, std::uint32_t seed,
                        float q_scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  const std::size_t n = h.n, d = h.shape.head_dim;
  h.mod = mod;
  for (auto& kk : h.k)
    for (auto& x : kk) x = g(rng);
  for (auto& vv : h.v)
    for (auto& x : vv) x = g(rng);
  for (int l = 0; l < h.shape.num_layers; ++l) {
    auto& q = h.q[static_cast<std::size_t>(l)];
    q.resize(h.shape.num_q_heads * rows * d);
    for (auto& x : q) x = q_scale * g(rng);
    auto& qp = h.qpos[static_cast<std::size_t>(l)];
    qp.resize(rows);
    for (std::size_t i = 0; i < rows; ++i) qp[i] = static_cast<std::int32_t>(n - rows + i);
  }
}

/// Positions kept in (layer, view) after the policy ran on h.context().
inline std::vector<std::int32_t> kept_positions(HandPrefill& h, int l, int view = 0) {
  std::vector<std::int32_t> out;
  const std::uint8_t* keep = h.keep_of(l, view);
  for (std::size_t j = 0; j < h.n; ++j)
    if (h.alive[j] && keep[j]) out.push_back(h.pos[j]);
  return out;
}

/// Double-precision causal softmax of query row i, head g of layer L over all its keys (scale
/// 1/√d); entries for keys after the row are 0. Returns [n].
inline std::vector<double> ref_softmax_row(const PrefillLayer& L, const CacheShape& s, int g, std::size_t i,
                                           double n_extra = 0.0) {
  const std::size_t n = L.pos.size(), d = s.head_dim, rows = L.qpos.size();
  const int h = g / s.group_size();
  const double scale = 1.0 / std::sqrt(double(d));
  std::vector<double> logit(n, -std::numeric_limits<double>::infinity());
  double m = -std::numeric_limits<double>::infinity();
  for (std::size_t j = 0; j < n; ++j) {
    if (L.pos[j] > L.qpos[i]) continue;
    double dot = 0.0;
    for (std::size_t t = 0; t < d; ++t) dot += double(L.q[(g * rows + i) * d + t]) * L.k[(h * n + j) * d + t];
    logit[j] = dot * scale;
    m = std::max(m, logit[j]);
  }
  std::vector<double> p(n, 0.0);
  double sum = n_extra * std::exp(-m);
  for (std::size_t j = 0; j < n; ++j)
    if (L.pos[j] <= L.qpos[i]) sum += std::exp(logit[j] - m);
  for (std::size_t j = 0; j < n; ++j)
    if (L.pos[j] <= L.qpos[i]) p[j] = std::exp(logit[j] - m) / sum;
  return p;
}

/// Indices of the k largest values (ties → lower index), ascending.
inline std::vector<std::size_t> ref_top_k(const std::vector<double>& score, const std::vector<std::size_t>& cand,
                                          std::size_t k) {
  std::vector<std::size_t> c = cand;
  std::stable_sort(c.begin(), c.end(), [&](std::size_t a, std::size_t b) { return score[a] > score[b]; });
  c.resize(std::min(k, c.size()));
  std::sort(c.begin(), c.end());
  return c;
}

/// A prompt for end-to-end runs through KVCache: per layer k, v [m][Hkv][d] and q [m][Hq][d] in
/// the cache's layouts, one modality label per token.
struct Prompt {
  CacheShape shape;
  std::vector<Modality> mod;
  std::vector<std::vector<float>> k, v, q;  // [L]
  std::size_t m() const { return mod.size(); }
};

inline Prompt random_prompt(const CacheShape& s, const std::vector<Modality>& mod, std::uint32_t seed,
                            float q_scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  Prompt p{s, mod, {}, {}, {}};
  const std::size_t m = mod.size(), d = s.head_dim;
  for (int l = 0; l < s.num_layers; ++l) {
    p.k.emplace_back(m * s.num_kv_heads * d);
    p.v.emplace_back(m * s.num_kv_heads * d);
    p.q.emplace_back(m * s.num_q_heads * d);
    for (auto& x : p.k.back()) x = g(rng);
    for (auto& x : p.v.back()) x = g(rng);
    for (auto& x : p.q.back()) x = q_scale * (0.7f + 0.5f * l) * g(rng);
  }
  return p;
}

/// Appends the prompt to every layer and attends all its rows (the cache keeps its query window
/// and, when the policy asks, accumulates scores).
template <class Cache>
void feed(Cache& c, const Prompt& p) {
  std::vector<float> out(p.m() * p.shape.num_q_heads * p.shape.head_dim);
  for (int l = 0; l < p.shape.num_layers; ++l) {
    c.append(l, p.k[l].data(), p.v[l].data(), p.m(), p.mod.data());
    c.attend(l, p.q[l].data(), p.m(), out.data());
  }
}

/// The same prompt as a HandPrefill (keys per KV head, the last `rows` query rows as window).
inline HandPrefill to_hand(const Prompt& p, int views, std::size_t rows) {
  HandPrefill h(p.shape, views, p.m());
  const std::size_t m = p.m(), d = p.shape.head_dim, hkv = p.shape.num_kv_heads, hq = p.shape.num_q_heads;
  h.mod = p.mod;
  for (int l = 0; l < p.shape.num_layers; ++l) {
    for (std::size_t kh = 0; kh < hkv; ++kh) {
      auto& kk = h.k[l * hkv + kh];
      auto& vv = h.v[l * hkv + kh];
      for (std::size_t j = 0; j < m; ++j)
        for (std::size_t t = 0; t < d; ++t) {
          kk[j * d + t] = p.k[l][(j * hkv + kh) * d + t];
          vv[j * d + t] = p.v[l][(j * hkv + kh) * d + t];
        }
    }
    auto& q = h.q[l];
    auto& qp = h.qpos[l];
    q.resize(hq * rows * d);
    qp.resize(rows);
    for (std::size_t i = 0; i < rows; ++i) {
      const std::size_t src = m - rows + i;
      qp[i] = static_cast<std::int32_t>(src);
      for (std::size_t g = 0; g < hq; ++g)
        for (std::size_t t = 0; t < d; ++t) q[(g * rows + i) * d + t] = p.q[l][(src * hq + g) * d + t];
    }
  }
  return h;
}

/// Live positions of (layer, kv_head) in a cache.
template <class Cache>
std::vector<std::int32_t> cache_positions(const Cache& c, int l, int h) {
  std::vector<std::int32_t> p(c.size(l, h));
  c.positions(l, h, p.data());
  return p;
}

inline bool is_visual(Modality m) { return m == Modality::kImage || m == Modality::kVideo; }

}  // namespace kvtest
