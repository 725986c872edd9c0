// SPDX-License-Identifier: Apache-2.0
// The merging methods end to end in KVCache (eviction spec §2, §3, §6; quantization spec BB-16):
// prefill by append + attend, end_prefill, then the kept positions and the merged anchors' K/V
// read back by materialize are checked against a double-precision oracle that recomputes the
// all-row attention column sums, the selection and the merge from the same (fp16-exact) inputs.
// With KIVI-2 the merged rows are quantized like fresh tokens: quantized slots must lie within
// half a quantization step of the oracle merge, window slots within fp16 rounding.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "kvcompress/policies/evict/elastic_cache.hpp"
#include "kvcompress/policies/evict/look_m.hpp"
#include "kvcompress/policies/evict/meda.hpp"
#include "kvcompress/policies/merge/bucket_mean.hpp"
#include "kvcompress/policies/merge/look_m.hpp"
#include "kvcompress/policies/merging_methods.hpp"
#include "support/cache_test_support.hpp"
#include "support/hand_prefill.hpp"

namespace {

using namespace kvcompress;
using merge::common::MergeReducer;

bool visual(Modality m) { return m == Modality::kImage || m == Modality::kVideo; }

// One prompt: fp16-exact K/V (multiples of 1/128 in [-2, 2]), random queries, modalities
// [system × 12][image × 0.6 m][text × rest].
struct Prompt {
  CacheShape shape;
  std::size_t m;
  std::vector<std::vector<float>> k, v, q;  // per layer: [m][Hkv][d], [m][Hkv][d], [m][Hq][d]
  std::vector<Modality> mod;
  Prompt(const CacheShape& s, std::size_t len, std::uint32_t seed) : shape(s), m(len), mod(len) {
    std::mt19937 g(seed);
    std::uniform_int_distribution<int> u(-256, 256);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const std::size_t d = s.head_dim;
    for (int l = 0; l < s.num_layers; ++l) {
      std::vector<float> kk(m * s.num_kv_heads * d), vv(kk.size()), qq(m * s.num_q_heads * d);
      for (auto& x : kk) x = float(u(g)) / 128.0f;
      for (auto& x : vv) x = float(u(g)) / 128.0f;
      for (auto& x : qq) x = 1.5f * nd(g);
      k.push_back(kk), v.push_back(vv), q.push_back(qq);
    }
    for (std::size_t j = 0; j < m; ++j)
      mod[j] = j < 12 ? Modality::kSystem : j < 12 + m * 6 / 10 ? Modality::kImage : Modality::kText;
  }
  template <class Cache>
  void prefill(Cache& c) const {
    std::vector<float> out(m * shape.num_q_heads * shape.head_dim);
    for (int l = 0; l < shape.num_layers; ++l) {
      c.append(l, k[l].data(), v[l].data(), m, mod.data());
      c.attend(l, q[l].data(), m, out.data());
    }
  }
  // Head h's rows of layer l as [m][d] doubles.
  std::vector<double> rows(const std::vector<std::vector<float>>& x, int l, int h) const {
    const std::size_t d = shape.head_dim;
    std::vector<double> r(m * d);
    for (std::size_t j = 0; j < m; ++j)
      for (std::size_t t = 0; t < d; ++t) r[j * d + t] = x[l][(j * shape.num_kv_heads + h) * d + t];
    return r;
  }
  // Σ over all prompt rows of the causal attention on each key, mean over the query heads of
  // KV head h (or over all query heads when h < 0).
  std::vector<double> colsum(int l, int h) const {
    const std::size_t d = shape.head_dim;
    const int rep = shape.num_q_heads / shape.num_kv_heads;
    std::vector<double> s(m, 0.0);
    int heads = 0;
    for (int g = 0; g < shape.num_q_heads; ++g) {
      if (h >= 0 && g / rep != h) continue;
      ++heads;
      const auto K = rows(k, l, g / rep);
      for (std::size_t i = 0; i < m; ++i) {
        std::vector<double> z(i + 1);
        for (std::size_t j = 0; j <= i; ++j) {
          double dot = 0;
          for (std::size_t t = 0; t < d; ++t) dot += double(q[l][(i * shape.num_q_heads + g) * d + t]) * K[j * d + t];
          z[j] = dot / std::sqrt(double(d));
        }
        const double mx = *std::max_element(z.begin(), z.end());
        double den = 0;
        for (double& x : z) den += (x = std::exp(x - mx));
        for (std::size_t j = 0; j <= i; ++j) s[j] += z[j] / den;
      }
    }
    for (double& x : s) x /= heads;
    return s;
  }
};

// LOOK-M selection oracle (paper: soft text prior, top-N + recent M).
std::vector<std::size_t> look_m_keep(const std::vector<double>& a, const std::vector<Modality>& mod, std::size_t N,
                                     std::size_t M) {
  const std::size_t m = a.size();
  const double tp = *std::max_element(a.begin(), a.end());
  std::vector<std::size_t> cand(m - M);
  std::iota(cand.begin(), cand.end(), std::size_t{0});
  auto boosted = [&](std::size_t j) { return a[j] + (visual(mod[j]) ? 0.0 : tp); };
  std::sort(cand.begin(), cand.end(), [&](std::size_t x, std::size_t y) {
    if (boosted(x) != boosted(y)) return boosted(x) > boosted(y);
    if (visual(mod[x]) != visual(mod[y])) return !visual(mod[x]);
    return x < y;
  });
  std::vector<std::size_t> keep(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(N));
  for (std::size_t j = m - M; j < m; ++j) keep.push_back(j);
  std::sort(keep.begin(), keep.end());
  return keep;
}

// Cosine-nearest merge oracle on [m][d] rows; returns the merged rows of `keep` (ascending).
void cosine_merge(std::vector<double>& K, std::vector<double>& V, std::size_t d, const std::vector<std::size_t>& keep,
                  std::size_t m, MergeReducer red) {
  std::vector<char> is_kept(m, 0);
  for (std::size_t j : keep) is_kept[j] = 1;
  std::vector<std::vector<std::pair<std::size_t, double>>> members(m);
  for (std::size_t e = 0; e < m; ++e) {
    if (is_kept[e]) continue;
    std::size_t best = keep[0];
    double bs = -2;
    for (std::size_t a : keep) {
      double dot = 0, na = 0, nb = 0;
      for (std::size_t t = 0; t < d; ++t)
        dot += K[e * d + t] * K[a * d + t], na += K[e * d + t] * K[e * d + t], nb += K[a * d + t] * K[a * d + t];
      const double c = dot / std::max(std::sqrt(na * nb), 1e-6);
      if (c > bs) best = a, bs = c;
    }
    members[best].push_back({e, bs});
  }
  const auto K0 = K, V0 = V;
  for (std::size_t a : keep) {
    const double n = double(members[a].size());
    if (members[a].empty()) continue;
    for (std::size_t t = 0; t < d; ++t)
      for (int which = 0; which < 2; ++which) {
        const auto& src = which ? V0 : K0;
        double sy = 0, swy = 0;
        for (auto [e, w] : members[a]) sy += src[e * d + t], swy += w * src[e * d + t];
        const double x = src[a * d + t];
        const double r = red == MergeReducer::kPivotal ? (x + 0.5 * (sy + n * x)) / (n + 1)
                         : red == MergeReducer::kWeighted ? (x + swy) / (n + 1) : (x + sy) / (n + 1);
        (which ? V : K)[a * d + t] = r;
      }
  }
}

template <class Cache>
void expect_positions(Cache& c, int l, int h, const std::vector<std::size_t>& keep) {
  std::vector<std::int32_t> pos(c.size(l, h));
  c.positions(l, h, pos.data());
  ASSERT_EQ(pos.size(), keep.size()) << "layer " << l << " head " << h;
  for (std::size_t t = 0; t < keep.size(); ++t) ASSERT_EQ(pos[t], std::int32_t(keep[t])) << "layer " << l << " head " << h;
}

// Dense fp16 store: kept positions = oracle; merged K/V = oracle within fp16 rounding.
template <class MergeT, MergeReducer kRed>
void look_m_dense_case() {
  using Cache = KVCache<Policy<evict::LookM, MergeT, quant::None>>;
  const CacheShape s{2, 4, 2, 64, 512};
  const Prompt p(s, 240, 21);
  typename Cache::Config cfg{};
  Cache c(s, cfg);
  p.prefill(c);
  c.end_prefill();
  const std::size_t N = 24, M = 24, d = 64;
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 2; ++h) {
      const auto keep = look_m_keep(p.colsum(l, h), p.mod, N, M);
      expect_positions(c, l, h, keep);
      auto K = p.rows(p.k, l, h), V = p.rows(p.v, l, h);
      cosine_merge(K, V, d, keep, p.m, kRed);
      const auto got = kvtest::live_slots(c, l, h);
      const auto K0 = p.rows(p.k, l, h);
      std::size_t changed = 0;  // the merge is observable: anchors moved away from their own rows
      for (std::size_t t = 0; t < keep.size(); ++t) changed += std::abs(got.k[t * d] - K0[keep[t] * d]) > 1e-2 ? 1 : 0;
      EXPECT_GT(changed, keep.size() / 4);
      for (std::size_t t = 0; t < keep.size(); ++t)
        for (std::size_t u = 0; u < d; ++u) {
          const double ek = K[keep[t] * d + u], ev = V[keep[t] * d + u];
          ASSERT_NEAR(got.k[t * d + u], ek, 1e-3 * std::abs(ek) + 1e-6) << MergeT::kName << " l" << l << " h" << h;
          ASSERT_NEAR(got.v[t * d + u], ev, 1e-3 * std::abs(ev) + 1e-6) << MergeT::kName << " l" << l << " h" << h;
        }
    }
  // Decode tokens are never evicted by LOOK-M and take positions n_seen = m, m+1, … (§15.5).
  const std::size_t before = c.size(0, 0);
  EXPECT_EQ(c.tokens_seen(0), std::int64_t(p.m));
  auto k = kvtest::random_kv(5, 2, 64, 3);
  for (int t = 0; t < 5; ++t) c.append(0, k.data() + t * 128, k.data() + t * 128, 1);
  EXPECT_EQ(c.size(0, 0), before + 5);
  std::vector<std::int32_t> pos(c.size(0, 1));
  c.positions(0, 1, pos.data());
  for (int t = 0; t < 5; ++t) EXPECT_EQ(pos[before + t], std::int32_t(p.m) + t);
}

// §15.8: GQA with identical query heads in each group gives the MHA cache (positions and
// merged rows).
TEST(MergingCache, LookMGqaWithIdenticalQueryHeadsEqualsMha) {
  using Cache = KVCache<Policy<evict::LookM, merge::LookMPivotal, quant::None>>;
  const CacheShape mha{1, 1, 1, 64, 256}, gqa{1, 4, 1, 64, 256};
  const Prompt p(mha, 150, 66);
  std::vector<float> q4(p.m * 4 * 64), out(p.m * 4 * 64);
  for (std::size_t i = 0; i < p.m; ++i)
    for (int g = 0; g < 4; ++g) std::copy_n(p.q[0].begin() + i * 64, 64, q4.begin() + (i * 4 + g) * 64);
  Cache a(mha, Cache::Config{}), b(gqa, Cache::Config{});
  a.append(0, p.k[0].data(), p.v[0].data(), p.m, p.mod.data());
  b.append(0, p.k[0].data(), p.v[0].data(), p.m, p.mod.data());
  a.attend(0, p.q[0].data(), p.m, out.data());
  b.attend(0, q4.data(), p.m, out.data());
  a.end_prefill();
  b.end_prefill();
  const auto sa = kvtest::live_slots(a, 0, 0), sb = kvtest::live_slots(b, 0, 0);
  EXPECT_EQ(sa.pos, sb.pos);
  EXPECT_EQ(sa.k, sb.k);
  EXPECT_EQ(sa.v, sb.v);
  EXPECT_EQ(sa.pos.size(), 30u);
}

TEST(MergingCache, LookMAverageDense) { look_m_dense_case<merge::LookMAverage, MergeReducer::kAverage>(); }
TEST(MergingCache, LookMPivotalDense) { look_m_dense_case<merge::LookMPivotal, MergeReducer::kPivotal>(); }
TEST(MergingCache, LookMWeightedDense) { look_m_dense_case<merge::LookMWeighted, MergeReducer::kWeighted>(); }

// LOOK-M + KIVI-2 (BB-16): selection and merge on the full-precision prompt, then the kept rows
// are quantized. Quantized keys: per channel, groups of 32 slots; values: per slot, groups of 32
// channels; 2-bit min–max ⇒ |error| ≤ (max − min)/3/2 of the group (+ fp16 scale rounding).
TEST(MergingCache, LookMPivotalWithKivi2) {
  using Cache = KVCache<LookMPolicy<quant::Kivi2>>;  // the required composition
  const CacheShape s{1, 4, 2, 64, 1024};
  const Prompt p(s, 600, 33);
  Cache::Config cfg{};
  cfg.evict.recent_ratio = 0.2;
  cfg.evict.important_ratio = 0.2;  // 240 kept: 128 quantized keys, 112 quantized values
  Cache c(s, cfg);
  p.prefill(c);
  c.end_prefill();
  const std::size_t d = 64;
  for (int h = 0; h < 2; ++h) {
    const auto keep = look_m_keep(p.colsum(0, h), p.mod, 120, 120);
    expect_positions(c, 0, h, keep);
    auto K = p.rows(p.k, 0, h), V = p.rows(p.v, 0, h);
    cosine_merge(K, V, d, keep, p.m, MergeReducer::kPivotal);
    const auto got = kvtest::live_slots(c, 0, h);
    const std::size_t qk = c.stream(0, h).quantized_keys(), qv = c.stream(0, h).quantized_values();
    EXPECT_GT(qk, 0u);
    EXPECT_GT(qv, 0u);
    auto ok = [&](std::size_t t, std::size_t u) { return K[keep[t] * d + u]; };
    auto ov = [&](std::size_t t, std::size_t u) { return V[keep[t] * d + u]; };
    for (std::size_t t = 0; t < keep.size(); ++t)
      for (std::size_t u = 0; u < d; ++u) {
        double tol_k = 2e-3 * std::abs(ok(t, u)) + 1e-6, tol_v = 2e-3 * std::abs(ov(t, u)) + 1e-6;
        if (t < qk) {
          const std::size_t g0 = t / 32 * 32;
          double lo = 1e9, hi = -1e9;
          for (std::size_t x = g0; x < g0 + 32; ++x) lo = std::min(lo, ok(x, u)), hi = std::max(hi, ok(x, u));
          tol_k = (hi - lo) / 6.0 * 1.02 + 4e-3 * std::max(std::abs(lo), std::abs(hi));
        }
        if (t < qv) {
          const std::size_t c0 = u / 32 * 32;
          double lo = 1e9, hi = -1e9;
          for (std::size_t x = c0; x < c0 + 32; ++x) lo = std::min(lo, ov(t, x)), hi = std::max(hi, ov(t, x));
          tol_v = (hi - lo) / 6.0 * 1.02 + 4e-3 * std::max(std::abs(lo), std::abs(hi));
        }
        ASSERT_NEAR(got.k[t * d + u], ok(t, u), tol_k) << "h" << h << " slot " << t << " ch " << u;
        ASSERT_NEAR(got.v[t * d + u], ov(t, u), tol_v) << "h" << h << " slot " << t << " ch " << u;
      }
  }
}

// Elastic Cache + bucket mean: layer-shared importance (mean over all query heads), anchors,
// bucket means per head, then fixed-offset decode eviction.
TEST(MergingCache, ElasticCacheBucketMean) {
  using Cache = KVCache<ElasticCachePolicy<>>;
  const CacheShape s{2, 4, 2, 64, 512};
  const Prompt p(s, 200, 44);
  Cache::Config cfg{};
  Cache c(s, cfg);
  p.prefill(c);
  c.end_prefill();
  const std::size_t d = 64, T = 200, budget = T - std::size_t(std::floor(0.8 * T));  // 40
  for (int l = 0; l < 2; ++l) {
    const auto I = p.colsum(l, -1);
    std::vector<std::size_t> cand;
    for (std::size_t j = 4; j + 1 < T; ++j) cand.push_back(j);
    std::stable_sort(cand.begin(), cand.end(), [&](std::size_t a, std::size_t b) { return I[a] > I[b]; });
    std::vector<std::size_t> anchors(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(budget - 5));
    std::sort(anchors.begin(), anchors.end());
    std::vector<std::size_t> keep{0, 1, 2, 3};
    keep.insert(keep.end(), anchors.begin(), anchors.end());
    keep.push_back(T - 1);
    for (int h = 0; h < 2; ++h) {
      expect_positions(c, l, h, keep);
      const auto K = p.rows(p.k, l, h), V = p.rows(p.v, l, h);
      const auto got = kvtest::live_slots(c, l, h);
      // The merge is observable (early keys dominate the all-row column sums, so most anchors
      // are consecutive and only a few buckets, notably the last, hold other slots).
      std::size_t changed = 0;
      for (std::size_t t = 0; t < keep.size(); ++t) changed += std::abs(got.v[t * d] - V[keep[t] * d]) > 1e-2 ? 1 : 0;
      EXPECT_GT(changed, 0u);
      for (std::size_t t = 0; t < keep.size(); ++t) {
        std::vector<std::size_t> bucket{keep[t]};
        if (keep[t] >= 4 && keep[t] + 1 < T)
          for (std::size_t j = 4; j + 1 < T; ++j) {
            if (std::binary_search(keep.begin(), keep.end(), j)) continue;
            std::size_t best = anchors[0];
            for (std::size_t a : anchors)
              if (std::abs(double(a) - double(j)) < std::abs(double(best) - double(j))) best = a;
            if (best == keep[t]) bucket.push_back(j);
          }
        for (std::size_t u = 0; u < d; ++u) {
          double ek = 0, ev = 0;
          for (std::size_t j : bucket) ek += K[j * d + u], ev += V[j * d + u];
          ek /= double(bucket.size()), ev /= double(bucket.size());
          ASSERT_NEAR(got.k[t * d + u], ek, 1e-3 * std::abs(ek) + 1e-6) << "l" << l << " slot " << keep[t];
          ASSERT_NEAR(got.v[t * d + u], ev, 1e-3 * std::abs(ev) + 1e-6) << "l" << l << " slot " << keep[t];
        }
      }
    }
  }
  // Decode: frozen prefix (first 40 − 25 = 15 slots) never changes; len < γ·n_seen + 2.
  std::vector<std::int32_t> frozen(15);
  {
    std::vector<std::int32_t> pos(c.size(0, 0));
    c.positions(0, 0, pos.data());
    std::copy_n(pos.begin(), 15, frozen.begin());
  }
  auto k = kvtest::random_kv(300, 2, 64, 5);
  for (std::size_t t = 0; t < 300; ++t) {
    for (int l = 0; l < 2; ++l) c.append(l, k.data() + t * 128, k.data() + t * 128, 1, Modality::kGenerated);
    std::vector<std::int32_t> pos1(c.size(1, 1));
    c.positions(1, 1, pos1.data());
    ASSERT_GE(pos1.size(), 15u);
    std::vector<std::int32_t> pos0(c.size(0, 0));
    c.positions(0, 0, pos0.data());
    ASSERT_TRUE(std::equal(frozen.begin(), frozen.end(), pos0.begin())) << t;
    ASSERT_LT(double(c.size(0, 0)), 0.2 * double(c.tokens_seen(0)) + 2.0) << t;
  }
}

// MEDA in the cache: the query window reaches the policy, so each layer keeps the M_l + N_l the
// plan computed from the same prompt on a hand-built context (oracle-tested in meda_test).
TEST(MergingCache, MedaKeepsPlannedLayerBudgets) {
  using Cache = KVCache<MedaPolicy<>>;
  const CacheShape s{3, 4, 2, 64, 512};
  const Prompt p(s, 256, 55);
  Cache::Config cfg{};
  cfg.evict.rho = 0.25;
  cfg.evict.query_window = 256;
  Cache c(s, cfg);
  p.prefill(c);
  kvtest::HandPrefill hp(s, 2, p.m);
  hp.mod = p.mod;
  for (int l = 0; l < 3; ++l) {
    for (int h = 0; h < 2; ++h) {
      const auto K = p.rows(p.k, l, h);
      hp.keys(l, h).assign(K.begin(), K.end());
    }
    std::vector<float> q(4 * p.m * 64);  // [m][Hq][d] → [Hq][m][d]
    for (std::size_t i = 0; i < p.m; ++i)
      for (int g = 0; g < 4; ++g) std::copy_n(p.q[l].begin() + (i * 4 + g) * 64, 64, q.begin() + (g * p.m + i) * 64);
    hp.set_all_row_queries(l, q);
  }
  auto ctx = hp.context();
  const auto plan = evict::Meda::plan(cfg.evict, ctx);
  c.end_prefill();
  bool differ = false;
  for (int l = 0; l < 3; ++l) {
    differ |= plan.recent[l] != plan.recent[0];
    for (int h = 0; h < 2; ++h) {
      EXPECT_EQ(c.size(l, h), plan.recent[l] + plan.important[l]) << "layer " << l;
      const auto keep = look_m_keep(p.colsum(l, h), p.mod, plan.important[l], plan.recent[l]);
      expect_positions(c, l, h, keep);
    }
  }
  EXPECT_TRUE(differ);
}

}  // namespace
