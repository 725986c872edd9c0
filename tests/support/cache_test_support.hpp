// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Helpers shared by cache tests: random K/V/Q with LLM-like structure, reading a cache's live
/// contents back (materialize + positions) into the oracle's HeadSlots, comparing outputs, and a
/// snapshot of observable state for "a rejected call changes nothing" checks.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "reference/attention_reference.hpp"

namespace kvtest {

/// Gaussian data with a few large-magnitude key channels (the structure KIVI exploits).
inline std::vector<float> random_kv(std::size_t tokens, int heads, int d, std::uint32_t seed,
                                    bool outlier_channels = true) {
  std::mt19937 g(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> x(tokens * static_cast<std::size_t>(heads) * d);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const int c = static_cast<int>(i % static_cast<std::size_t>(d));
    x[i] = n(g) * ((outlier_channels && c % 17 == 3) ? 8.0f : 1.0f);
  }
  return x;
}

/// The live slots of (layer, kv_head) as the oracle's input (fp32, from materialize).
template <class Cache>
kvref::HeadSlots live_slots(Cache& c, int layer, int h) {
  const int d = c.shape().head_dim;
  std::vector<std::size_t> sizes;
  std::size_t before = 0;
  for (int x = 0; x < h; ++x) before += c.size(layer, x);
  std::size_t total = before;
  for (int x = h; x < c.shape().num_kv_heads; ++x) total += c.size(layer, x);
  std::vector<float> k(total * d), v(total * d);
  c.materialize(layer, k.data(), v.data());
  kvref::HeadSlots s;
  const std::size_t n = c.size(layer, h);
  s.k.assign(k.begin() + before * d, k.begin() + (before + n) * d);
  s.v.assign(v.begin() + before * d, v.begin() + (before + n) * d);
  s.pos.resize(n);
  c.positions(layer, h, s.pos.data());
  return s;
}

/// Checks cache attention of the last n_q tokens of `layer` against the oracle over the cache's
/// own live contents; max |error| ≤ atol + rtol·max|ref| per head.
template <class Cache>
void expect_attention_matches(Cache& c, int layer, const std::vector<float>& q, std::size_t n_q,
                              const std::vector<float>& out, double atol, double rtol) {
  const auto& s = c.shape();
  const int d = s.head_dim, rep = s.group_size();
  const std::int64_t seen = c.tokens_seen(layer);
  for (int h = 0; h < s.num_kv_heads; ++h) {
    const kvref::HeadSlots slots = live_slots(c, layer, h);
    for (std::size_t i = 0; i < n_q; ++i) {
      std::vector<float> qh(static_cast<std::size_t>(rep) * d);
      std::vector<std::int64_t> qpos(static_cast<std::size_t>(rep), seen - static_cast<std::int64_t>(n_q) +
                                                                       static_cast<std::int64_t>(i));
      for (int g = 0; g < rep; ++g)
        for (int x = 0; x < d; ++x)
          qh[static_cast<std::size_t>(g) * d + x] = q[(i * s.num_q_heads + h * rep + g) * d + x];
      const auto ref = kvref::attention(slots, d, qh.data(), rep, qpos.data(), 1.0 / std::sqrt(double(d)));
      double max_ref = 0, max_err = 0;
      for (int g = 0; g < rep; ++g)
        for (int x = 0; x < d; ++x) {
          const double r = ref[static_cast<std::size_t>(g) * d + x];
          const double o = out[(i * s.num_q_heads + h * rep + g) * d + x];
          max_ref = std::fmax(max_ref, std::fabs(r));
          max_err = std::fmax(max_err, std::fabs(o - r));
        }
      EXPECT_LE(max_err, atol + rtol * max_ref) << "layer " << layer << " kv_head " << h << " query " << i;
    }
  }
}

/// Everything observable about a cache, for before/after comparisons.
struct Snapshot {
  std::size_t memory = 0;
  std::vector<std::int64_t> seen;
  std::vector<std::size_t> sizes;
  std::vector<float> k, v;
  std::vector<std::int32_t> pos;
  bool operator==(const Snapshot& o) const {
    return memory == o.memory && seen == o.seen && sizes == o.sizes && k == o.k && v == o.v && pos == o.pos;
  }
};

template <class Cache>
Snapshot snapshot(Cache& c) {
  Snapshot s;
  s.memory = c.memory_bytes();
  const auto& sh = c.shape();
  for (int l = 0; l < sh.num_layers; ++l) {
    s.seen.push_back(c.tokens_seen(l));
    std::size_t total = 0;
    for (int h = 0; h < sh.num_kv_heads; ++h) {
      s.sizes.push_back(c.size(l, h));
      total += c.size(l, h);
      std::vector<std::int32_t> p(c.size(l, h));
      c.positions(l, h, p.data());
      s.pos.insert(s.pos.end(), p.begin(), p.end());
    }
    std::vector<float> k(total * sh.head_dim + 1), v(total * sh.head_dim + 1);
    c.materialize(l, k.data(), v.data());
    s.k.insert(s.k.end(), k.begin(), k.end());
    s.v.insert(s.v.end(), v.begin(), v.end());
  }
  return s;
}

}  // namespace kvtest
