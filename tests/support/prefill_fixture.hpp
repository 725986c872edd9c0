// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// A hand-built PrefillContext for testing eviction policies without a KVCache: random
/// full-precision K/V per (layer, KV head), slot positions (gaps allowed), liveness, a query
/// window per layer and the keep masks, served through PrefillSources. Also the double-precision
/// helpers the policy oracles share (causal softmax of one query row, top-k by score with ties to
/// the lower position).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/core/query_rows.hpp"
#include "kvcompress/core/slot_view.hpp"

namespace kvtest {

/// All layers share one slot table (positions, liveness); keys/values differ per (layer, head).
struct PrefillFixture {
  kvcompress::CacheShape shape;
  int views_per_layer = 1;
  std::size_t n = 0;
  std::vector<std::int32_t> pos;
  std::vector<kvcompress::Modality> mod;
  std::vector<std::uint8_t> alive;
  std::vector<std::vector<float>> k, v;  // [L·Hkv][n][d]
  std::vector<std::vector<float>> q;     // [L][Hq][rows][d]
  std::vector<std::int32_t> qpos;        // [rows]
  std::size_t rows = 0;
  std::vector<kvcompress::QueryRows> qrows;
  std::vector<kvcompress::SlotView> views;
  std::vector<std::uint8_t> keep;
  float scale = 0.0f;  // 0 = 1/√d

  /// n slots at positions pos_of(j) (default j), all live; the query window is the last `rows`
  /// slots' positions. Gaussian K/V/Q from `seed`.
  PrefillFixture(const kvcompress::CacheShape& s, bool per_head, std::size_t n_slots, std::size_t window_rows,
              std::uint32_t seed, int pos_stride = 1)
      : shape(s), views_per_layer(per_head ? s.num_kv_heads : 1), n(n_slots), rows(window_rows) {
    std::mt19937 g(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    pos.resize(n);
    for (std::size_t j = 0; j < n; ++j) pos[j] = static_cast<std::int32_t>(j) * pos_stride;
    mod.assign(n, kvcompress::Modality::kText);
    alive.assign(n, 1);
    const std::size_t d = static_cast<std::size_t>(s.head_dim);
    k.resize(static_cast<std::size_t>(s.num_layers * s.num_kv_heads));
    v.resize(k.size());
    for (auto& x : k) {
      x.resize(n * d);
      for (auto& e : x) e = nd(g);
    }
    for (auto& x : v) {
      x.resize(n * d);
      for (auto& e : x) e = nd(g);
    }
    q.resize(static_cast<std::size_t>(s.num_layers));
    for (auto& x : q) {
      x.resize(static_cast<std::size_t>(s.num_q_heads) * rows * d);
      for (auto& e : x) e = 2.0f * nd(g);
    }
    qpos.resize(rows);
    for (std::size_t i = 0; i < rows; ++i) qpos[i] = pos[n - rows + i];
  }

  std::size_t d() const { return static_cast<std::size_t>(shape.head_dim); }
  int rep() const { return shape.group_size(); }
  float* key(int l, int h, std::size_t j) { return k[static_cast<std::size_t>(l * shape.num_kv_heads + h)].data() + j * d(); }
  float* value(int l, int h, std::size_t j) { return v[static_cast<std::size_t>(l * shape.num_kv_heads + h)].data() + j * d(); }
  float* query(int l, int g, std::size_t i) { return q[static_cast<std::size_t>(l)].data() + (static_cast<std::size_t>(g) * rows + i) * d(); }
  double logit_scale() const { return scale > 0.0f ? scale : 1.0 / std::sqrt(double(shape.head_dim)); }

  static void read_cb(const void* self, int l, int h, float* ko, float* vo) {
    const auto* p = static_cast<const PrefillFixture*>(self);
    const auto& kk = p->k[static_cast<std::size_t>(l * p->shape.num_kv_heads + h)];
    const auto& vv = p->v[static_cast<std::size_t>(l * p->shape.num_kv_heads + h)];
    std::copy(kk.begin(), kk.end(), ko);
    std::copy(vv.begin(), vv.end(), vo);
  }

  /// Builds views, keep masks (= alive) and the context. Call after editing the data.
  kvcompress::PrefillContext context(bool with_queries = true) {
    const std::size_t nv = static_cast<std::size_t>(shape.num_layers * views_per_layer);
    views.assign(nv, kvcompress::SlotView{});
    keep.assign(nv * n, 0);
    std::size_t n_alive = 0;
    for (auto a : alive) n_alive += a ? 1 : 0;
    for (int l = 0; l < shape.num_layers; ++l)
      for (int vw = 0; vw < views_per_layer; ++vw) {
        auto& s = views[static_cast<std::size_t>(l * views_per_layer + vw)];
        s.n = n;
        s.n_alive = n_alive;
        s.pos = pos.data();
        s.mod = mod.data();
        s.alive = alive.data();
        s.tokens_seen = n ? pos.back() + 1 : 0;
        s.layer = l;
        std::copy(alive.begin(), alive.end(), keep.begin() + static_cast<std::ptrdiff_t>((static_cast<std::size_t>(l * views_per_layer + vw)) * n));
      }
    qrows.clear();
    for (int l = 0; l < shape.num_layers; ++l)
      qrows.push_back(kvcompress::QueryRows{q[static_cast<std::size_t>(l)].data(), qpos.data(), shape.num_q_heads, rows, shape.head_dim});
    kvcompress::PrefillSources src;
    src.queries = with_queries ? qrows.data() : nullptr;
    src.read = &read_cb;
    src.self = this;
    src.scale = scale;
    return kvcompress::PrefillContext(shape, views_per_layer, views.data(), keep.data(), n, src);
  }

  /// Positions the policy kept in view (l, vw): keep[j] && alive[j].
  std::vector<std::int32_t> kept(int l, int vw) const {
    std::vector<std::int32_t> out;
    const std::uint8_t* kp = keep.data() + static_cast<std::size_t>(l * views_per_layer + vw) * n;
    for (std::size_t j = 0; j < n; ++j)
      if (kp[j] && alive[j]) out.push_back(pos[j]);
    return out;
  }

  std::vector<std::size_t> live() const {
    std::vector<std::size_t> out;
    for (std::size_t j = 0; j < n; ++j)
      if (alive[j]) out.push_back(j);
    return out;
  }
};

/// Double-precision causal softmax of query x (d floats) over keys `key(j)` at live slots
/// `slots` with pos ≤ qp; 0 for masked slots. Result indexed like `slots`.
template <class KeyFn>
std::vector<double> softmax_row(const float* x, KeyFn key, const std::vector<std::size_t>& slots,
                                const std::vector<std::int32_t>& pos, std::int32_t qp, std::size_t d, double scale) {
  std::vector<double> z(slots.size(), -HUGE_VAL);
  double m = -HUGE_VAL;
  for (std::size_t t = 0; t < slots.size(); ++t) {
    if (pos[slots[t]] > qp) continue;
    const float* kk = key(slots[t]);
    double dot = 0;
    for (std::size_t c = 0; c < d; ++c) dot += double(x[c]) * kk[c];
    z[t] = dot * scale;
    m = std::max(m, z[t]);
  }
  double sum = 0;
  for (auto& e : z) sum += (e = e == -HUGE_VAL ? 0.0 : std::exp(e - m));
  for (auto& e : z) e /= sum;
  return z;
}

/// Indices (into `score`) of the `take` highest scores among `cand`, ties to the lower index.
inline std::vector<std::size_t> top_indices(const std::vector<double>& score, std::vector<std::size_t> cand,
                                            std::size_t take) {
  std::stable_sort(cand.begin(), cand.end(), [&](std::size_t a, std::size_t b) { return score[a] > score[b]; });
  cand.resize(std::min(take, cand.size()));
  std::sort(cand.begin(), cand.end());
  return cand;
}

/// A prompt in the cache's layouts, per layer: k, v [m][Hkv][d], q [m][Hq][d]. Values are
/// rounded to fp16 so a store that stages the prompt in fp16 reads back exactly these numbers.
struct Prompt {
  std::size_t m = 0;
  std::vector<std::vector<float>> k, v, q;
};

inline Prompt random_prompt(const kvcompress::CacheShape& s, std::size_t m, std::uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto f16 = [](float x) { return kvcompress::to_float(kvcompress::half{kvcompress::f32_to_f16_bits(x)}); };
  const std::size_t d = static_cast<std::size_t>(s.head_dim);
  Prompt p;
  p.m = m;
  for (int l = 0; l < s.num_layers; ++l) {
    std::vector<float> k(m * s.num_kv_heads * d), v(k.size()), q(m * s.num_q_heads * d);
    for (auto& e : k) e = f16(nd(g));
    for (auto& e : v) e = f16(nd(g));
    for (auto& e : q) e = f16(2.0f * nd(g));
    p.k.push_back(k);
    p.v.push_back(v);
    p.q.push_back(q);
  }
  return p;
}

/// Prefill of every layer: append the whole prompt, attend all its queries.
template <class Cache>
void feed_prompt(Cache& c, const Prompt& p) {
  const auto& s = c.shape();
  std::vector<float> out(p.m * s.num_q_heads * s.head_dim);
  for (int l = 0; l < s.num_layers; ++l) {
    c.append(l, p.k[l].data(), p.v[l].data(), p.m);
    c.attend(l, p.q[l].data(), p.m, out.data());
  }
}

/// The oracle's view of a prompt: PrefillFixture with the prompt's K/V and its last `rows` queries.
inline PrefillFixture oracle_view(const kvcompress::CacheShape& s, bool per_head, const Prompt& p, std::size_t rows) {
  PrefillFixture f(s, per_head, p.m, rows, 1);
  const std::size_t d = f.d();
  for (int l = 0; l < s.num_layers; ++l) {
    for (int h = 0; h < s.num_kv_heads; ++h)
      for (std::size_t j = 0; j < p.m; ++j) {
        const std::size_t src = (j * s.num_kv_heads + h) * d;
        std::copy(p.k[l].begin() + src, p.k[l].begin() + src + d, f.key(l, h, j));
        std::copy(p.v[l].begin() + src, p.v[l].begin() + src + d, f.value(l, h, j));
      }
    for (int g = 0; g < s.num_q_heads; ++g)
      for (std::size_t i = 0; i < rows; ++i) {
        const std::size_t src = ((p.m - rows + i) * s.num_q_heads + g) * d;
        std::copy(p.q[l].begin() + src, p.q[l].begin() + src + d, f.query(l, g, i));
      }
  }
  return f;
}

/// Live positions of (layer, kv_head) of a cache.
template <class Cache>
std::vector<std::int32_t> cache_positions(Cache& c, int l, int h) {
  std::vector<std::int32_t> p(c.size(l, h));
  c.positions(l, h, p.data());
  return p;
}

}  // namespace kvtest
