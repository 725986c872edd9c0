// SPDX-License-Identifier: Apache-2.0
// Elastic Cache bucket-mean merge (eviction spec §6 steps 3–4, §1.7) against worked examples and
// an independent double oracle: each unprotected live slot belongs to the nearest kept
// unprotected anchor by position (ties → left), the anchor becomes the bucket mean of K and V;
// protected slots (sinks, last token) never absorb others.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <vector>

#include "kvcompress/policies/merge/bucket_mean.hpp"

namespace {

using namespace kvcompress;

struct Head {
  std::vector<std::int32_t> pos;
  std::vector<Modality> mod;
  std::vector<std::uint8_t> alive;
  SlotView view() {
    SlotView s;
    s.n = pos.size();
    mod.assign(s.n, Modality::kText);
    if (alive.size() != s.n) alive.assign(s.n, 1);
    s.pos = pos.data();
    s.mod = mod.data();
    s.alive = alive.data();
    for (auto a : alive) s.n_alive += a ? 1 : 0;
    return s;
  }
};

merge::BucketMean::Config unprotected() {
  merge::BucketMean::Config c;
  c.sinks = 0;
  c.last_token = false;
  return c;
}

// Spec §6: T = 10, anchors {2, 5, 9} → buckets {0–3}, {4–7}, {8–9}; each anchor becomes the
// arithmetic mean of its bucket. Keys of the first bucket are [1, 2, 3, 6] → 3.
TEST(BucketMean, SpecWorkedExample) {
  Head h;
  for (int j = 0; j < 10; ++j) h.pos.push_back(j);
  const SlotView s = h.view();
  std::vector<std::uint8_t> keep(10, 0);
  keep[2] = keep[5] = keep[9] = 1;
  const std::size_t d = 2;
  std::vector<float> k{1, 0, 2, 0, 3, 0, 6, 0, 10, 1, 20, 2, 30, 3, 40, 4, 7, 0, 9, 0};
  std::vector<float> v(k.size());
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = -2.0f * k[i];
  merge::BucketMean::merge(unprotected(), s, keep.data(), k.data(), v.data(), d);
  EXPECT_FLOAT_EQ(k[2 * d], 3.0f);           // mean of 1, 2, 3, 6
  EXPECT_FLOAT_EQ(k[5 * d], 25.0f);          // mean of 10, 20, 30, 40
  EXPECT_FLOAT_EQ(k[5 * d + 1], 2.5f);
  EXPECT_FLOAT_EQ(k[9 * d], 8.0f);           // mean of 7, 9
  EXPECT_FLOAT_EQ(v[2 * d], -6.0f);
  EXPECT_FLOAT_EQ(v[5 * d], -50.0f);
  EXPECT_FLOAT_EQ(v[9 * d], -16.0f);
}

// Double oracle over random positions with gaps, dead slots and protection.
TEST(BucketMean, MatchesOracleWithProtectionAndGaps) {
  for (std::uint32_t seed = 1; seed <= 20; ++seed) {
    std::mt19937 g(seed);
    std::bernoulli_distribution kp(0.25), dead(0.1), gap(0.3);
    std::normal_distribution<float> nd;
    Head h;
    std::int32_t p = 0;
    const std::size_t n = 30 + seed * 3, d = 64;
    for (std::size_t j = 0; j < n; ++j) h.pos.push_back(p += gap(g) ? 3 : 1);
    h.alive.assign(n, 1);
    for (std::size_t j = 0; j < n; ++j)
      if (dead(g)) h.alive[j] = 0;
    const SlotView s = h.view();
    merge::BucketMean::Config c;  // 4 sinks + last live slot protected
    std::vector<int> prot(n, 0);
    int seen = 0;
    for (std::size_t j = 0; j < n && seen < 4; ++j)
      if (h.alive[j]) prot[j] = 1, ++seen;
    for (std::size_t j = n; j-- > 0;)
      if (h.alive[j]) {
        prot[j] = 1;
        break;
      }
    std::vector<std::uint8_t> keep(n, 0);
    for (std::size_t j = 0; j < n; ++j) keep[j] = (prot[j] || kp(g)) ? 1 : 0;
    std::vector<float> k(n * d), v(n * d);
    for (auto& x : k) x = nd(g);
    for (auto& x : v) x = nd(g);
    std::vector<std::size_t> anchors;
    for (std::size_t j = 0; j < n; ++j)
      if (h.alive[j] && keep[j] && !prot[j]) anchors.push_back(j);
    // Oracle buckets: nearest anchor by |Δpos|, ties → left (lower position).
    std::vector<std::vector<std::size_t>> bucket(n);
    for (std::size_t j = 0; j < n; ++j) {
      if (!h.alive[j] || keep[j] || anchors.empty()) continue;
      std::size_t best = anchors[0];
      for (std::size_t a : anchors)
        if (std::abs(h.pos[a] - h.pos[j]) < std::abs(h.pos[best] - h.pos[j])) best = a;
      bucket[best].push_back(j);
    }
    std::vector<double> ek(k.begin(), k.end()), ev(v.begin(), v.end());
    for (std::size_t a : anchors)
      for (std::size_t t = 0; t < d; ++t) {
        double sk = k[a * d + t], sv = v[a * d + t];
        for (std::size_t e : bucket[a]) sk += k[e * d + t], sv += v[e * d + t];
        ek[a * d + t] = sk / double(bucket[a].size() + 1);
        ev[a * d + t] = sv / double(bucket[a].size() + 1);
      }
    const auto k0 = k;
    merge::BucketMean::merge(c, s, keep.data(), k.data(), v.data(), d);
    for (std::size_t j = 0; j < n; ++j) {
      if (!h.alive[j] || !keep[j]) continue;
      for (std::size_t t = 0; t < d; ++t) {
        if (prot[j]) {
          ASSERT_EQ(k[j * d + t], k0[j * d + t]) << "protected slot " << j;
        }
        ASSERT_NEAR(k[j * d + t], ek[j * d + t], 1e-5) << "seed " << seed << " slot " << j;
        ASSERT_NEAR(v[j * d + t], ev[j * d + t], 1e-5) << "seed " << seed << " slot " << j;
      }
    }
  }
}

// §15.6: identical vectors stay the same vector; §15.3: nothing evicted → bit-identical rows;
// no unprotected anchor → nothing absorbs the evicted slots.
TEST(BucketMean, ConservationIdentityAndNoAnchor) {
  Head h;
  for (int j = 0; j < 12; ++j) h.pos.push_back(2 * j);
  const SlotView s = h.view();
  const std::size_t d = 64;
  std::vector<float> k(12 * d), v(12 * d);
  for (std::size_t j = 0; j < 12; ++j)
    for (std::size_t t = 0; t < d; ++t) k[j * d + t] = v[j * d + t] = 0.1f * float(t) - 1.0f;
  std::vector<std::uint8_t> keep(12, 0);
  keep[3] = keep[8] = 1;
  auto k2 = k, v2 = v;
  merge::BucketMean::merge(unprotected(), s, keep.data(), k2.data(), v2.data(), d);
  for (std::size_t t = 0; t < d; ++t) EXPECT_NEAR(k2[3 * d + t], k[3 * d + t], 1e-6);

  for (std::size_t i = 0; i < k.size(); ++i) k[i] = std::sin(float(i)), v[i] = std::cos(float(i));
  k2 = k, v2 = v;
  merge::BucketMean::merge(merge::BucketMean::Config{}, s, std::vector<std::uint8_t>(12, 1).data(), k2.data(),
                           v2.data(), d);
  EXPECT_EQ(k2, k);
  EXPECT_EQ(v2, v);
  std::vector<std::uint8_t> only_protected(12, 0);
  for (int j : {0, 1, 2, 3, 11}) only_protected[j] = 1;
  merge::BucketMean::merge(merge::BucketMean::Config{}, s, only_protected.data(), k2.data(), v2.data(), d);
  EXPECT_EQ(k2, k);
  EXPECT_EQ(v2, v);
}

}  // namespace
