// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// A hand-built end-of-prefill state for testing eviction policies without a KVCache: every layer
/// holds the same n prompt slots (positions, modality labels, liveness), with per-view scores,
/// per-(layer, KV head) keys/values and per-layer query windows chosen by the test. `context()`
/// returns the PrefillContext a policy's on_prefill_end receives; keep masks start as `alive`.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/modality.hpp"
#include "kvcompress/core/prefill_context.hpp"
#include "kvcompress/core/query_rows.hpp"
#include "kvcompress/core/slot_view.hpp"

namespace kvtest {

struct HandPrefill {
  kvcompress::CacheShape shape;
  int views = 1;  ///< views per layer: num_kv_heads for per-head policies, 1 otherwise
  std::size_t n = 0;
  std::vector<std::int32_t> pos;
  std::vector<kvcompress::Modality> mod;
  std::vector<std::uint8_t> alive;
  std::vector<std::vector<float>> score;        ///< [L*views][n]
  std::vector<std::vector<float>> k, v;         ///< [L*Hkv][n*d]
  std::vector<std::vector<float>> q;            ///< [L][Hq*rows*d]
  std::vector<std::vector<std::int32_t>> qpos;  ///< [L][rows]
  std::vector<std::uint8_t> keep;               ///< [L*views][n]
  /// [L*views][n] precision tiers handed to the policy when `with_tiers` (a tiered store's cache).
  std::vector<kvcompress::PrecisionTier> tier;
  bool with_tiers = false;
  float scale = 0.0f;

  HandPrefill(const kvcompress::CacheShape& s, int views_per_layer, std::size_t slots)
      : shape(s), views(views_per_layer), n(slots), pos(slots), mod(slots, kvcompress::Modality::kText),
        alive(slots, 1), score(static_cast<std::size_t>(s.num_layers * views_per_layer), std::vector<float>(slots, 0.0f)),
        k(static_cast<std::size_t>(s.num_layers * s.num_kv_heads), std::vector<float>(slots * s.head_dim, 0.0f)),
        v(k), q(static_cast<std::size_t>(s.num_layers)), qpos(static_cast<std::size_t>(s.num_layers)) {
    for (std::size_t j = 0; j < n; ++j) pos[j] = static_cast<std::int32_t>(j);
  }

  std::vector<float>& scores(int layer, int view) { return score[static_cast<std::size_t>(layer * views + view)]; }
  std::vector<float>& keys(int layer, int h) { return k[static_cast<std::size_t>(layer * shape.num_kv_heads + h)]; }
  std::vector<float>& values(int layer, int h) { return v[static_cast<std::size_t>(layer * shape.num_kv_heads + h)]; }
  std::uint8_t* keep_of(int layer, int view) { return keep.data() + static_cast<std::size_t>(layer * views + view) * n; }
  std::vector<std::uint8_t> kept(int layer, int view) {
    return std::vector<std::uint8_t>(keep_of(layer, view), keep_of(layer, view) + n);
  }
  /// Sets the query window of `layer` to all n prompt rows ([Hq][n][d]) at positions pos[].
  void set_all_row_queries(int layer, const std::vector<float>& rows) {
    q[static_cast<std::size_t>(layer)] = rows;
    qpos[static_cast<std::size_t>(layer)] = pos;
  }

  /// Builds the views and the context; call again after changing the data.
  kvcompress::PrefillContext context() {
    views_.clear();
    for (int l = 0; l < shape.num_layers; ++l)
      for (int w = 0; w < views; ++w) {
        kvcompress::SlotView s;
        s.n = n;
        s.n_alive = 0;
        for (auto a : alive) s.n_alive += a ? 1 : 0;
        s.pos = pos.data();
        s.mod = mod.data();
        s.alive = alive.data();
        s.score = scores(l, w).data();
        s.tokens_seen = n == 0 ? 0 : pos.back() + 1;
        s.layer = l;
        views_.push_back(s);
      }
    keep.clear();
    for (std::size_t t = 0; t < views_.size(); ++t) keep.insert(keep.end(), alive.begin(), alive.end());
    qrows_.clear();
    for (int l = 0; l < shape.num_layers; ++l) {
      const auto ul = static_cast<std::size_t>(l);
      kvcompress::QueryRows r;
      r.q = q[ul].empty() ? nullptr : q[ul].data();
      r.pos = qpos[ul].empty() ? nullptr : qpos[ul].data();
      r.num_heads = shape.num_q_heads;
      r.rows = qpos[ul].size();
      r.head_dim = shape.head_dim;
      qrows_.push_back(r);
    }
    kvcompress::PrefillSources src;
    src.queries = qrows_.data();
    src.read = &HandPrefill::read_fn;
    src.self = this;
    src.scale = scale;
    tier.assign(views_.size() * n, kvcompress::PrecisionTier::kPending);
    return kvcompress::PrefillContext(shape, views, views_.data(), keep.data(), n, src,
                                      with_tiers ? tier.data() : nullptr);
  }

 private:
  static void read_fn(const void* self, int layer, int h, float* ko, float* vo) {
    auto* me = static_cast<const HandPrefill*>(self);
    const auto& kk = me->k[static_cast<std::size_t>(layer * me->shape.num_kv_heads + h)];
    const auto& vv = me->v[static_cast<std::size_t>(layer * me->shape.num_kv_heads + h)];
    std::copy(kk.begin(), kk.end(), ko);
    std::copy(vv.begin(), vv.end(), vo);
  }
  std::vector<kvcompress::SlotView> views_;
  std::vector<kvcompress::QueryRows> qrows_;
};

/// Uniform random floats in [lo, hi).
inline std::vector<float> uniform(std::size_t count, std::uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> out(count);
  for (auto& x : out) x = d(g);
  return out;
}

}  // namespace kvtest
