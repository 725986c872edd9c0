// SPDX-License-Identifier: Apache-2.0
// Merge assignment (eviction spec §1.7): cosine-nearest anchors against a brute-force double
// argmax (ties to the lower position, ε-guarded zero keys), Elastic Cache positional buckets
// (spec example and a brute-force nearest-by-position oracle, ties left), and §15.6 — every
// evicted slot is assigned to exactly one anchor.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

#include "kvcompress/policies/merge/common/merge_assignment.hpp"

namespace {

using namespace kvcompress;
using namespace kvcompress::merge::common;
using Idx = std::vector<std::size_t>;

TEST(CosineAssignment, HandExampleTiesAndZeroKeys) {
  // Slots: 0 (1,0) anchor, 1 (0,1) anchor, 2 (2,0.1) member, 3 (1,1) tie → lower anchor 0,
  // 4 (0,0) zero key → every cosine 0 → anchor 0, 5 (-1,3) → anchor 1.
  const std::vector<float> k = {1, 0, 0, 1, 2, 0.1f, 1, 1, 0, 0, -1, 3};
  const Idx anchors = {0, 1}, members = {2, 3, 4, 5};
  Idx a(4);
  std::vector<float> sim(4);
  assign_cosine_nearest(k.data(), 6, 2, anchors.data(), 2, members.data(), 4, a.data(), sim.data());
  EXPECT_EQ(a, (Idx{0, 0, 0, 1}));
  EXPECT_NEAR(sim[0], 2.0 / std::sqrt(4.01), 1e-6);
  EXPECT_NEAR(sim[1], 1.0 / std::sqrt(2.0), 1e-6);
  EXPECT_EQ(sim[2], 0.0f);
  EXPECT_NEAR(sim[3], 3.0 / std::sqrt(10.0), 1e-6);
}

TEST(CosineAssignment, MatchesBruteForceDoubleArgmax) {
  std::mt19937 rng(2);
  std::normal_distribution<float> g(0, 1);
  const std::size_t n = 50, d = 16;
  std::vector<float> k(n * d);
  for (auto& x : k) x = g(rng);
  Idx anchors, members;
  for (std::size_t j = 0; j < n; ++j) (j % 3 == 0 ? anchors : members).push_back(j);
  Idx a(members.size());
  assign_cosine_nearest(k.data(), n, d, anchors.data(), anchors.size(), members.data(), members.size(), a.data(),
                        nullptr);
  for (std::size_t e = 0; e < members.size(); ++e) {
    double best = -2;
    std::size_t arg = 0;
    for (std::size_t c = 0; c < anchors.size(); ++c) {
      double dot = 0, na = 0, nb = 0;
      for (std::size_t t = 0; t < d; ++t) {
        const double x = k[members[e] * d + t], y = k[anchors[c] * d + t];
        dot += x * y, na += x * x, nb += y * y;
      }
      const double cs = dot / std::sqrt(na * nb);
      if (cs > best) best = cs, arg = c;
    }
    EXPECT_EQ(a[e], arg) << "member " << members[e];  // exactly one anchor, the nearest
    EXPECT_LT(a[e], anchors.size());
  }
}

TEST(PositionalBuckets, ElasticCacheSpecExample) {
  // T = 10, anchors {2, 5, 9}: buckets {0–3}, {4–7}, {8–9}.
  std::vector<std::int32_t> pos(10);
  for (int j = 0; j < 10; ++j) pos[j] = j;
  const Idx anchors = {2, 5, 9}, members = {0, 1, 3, 4, 6, 7, 8};
  Idx a(members.size());
  assign_positional_buckets(pos.data(), 10, anchors.data(), 3, members.data(), members.size(), a.data());
  EXPECT_EQ(a, (Idx{0, 0, 0, 1, 1, 1, 2}));
}

TEST(PositionalBuckets, NearestByPositionTiesLeft) {
  std::mt19937 rng(4);
  for (int trial = 0; trial < 100; ++trial) {
    const std::size_t n = 2 + rng() % 60;
    std::vector<std::int32_t> pos(n);
    std::int32_t p = std::int32_t(rng() % 3);
    for (auto& x : pos) x = p, p += 1 + std::int32_t(rng() % 4);  // gaps from earlier evictions
    Idx anchors, members;
    for (std::size_t j = 0; j < n; ++j) (rng() % 3 == 0 ? anchors : members).push_back(j);
    if (anchors.empty()) anchors.push_back(members.back()), members.pop_back();
    Idx a(members.size());
    assign_positional_buckets(pos.data(), n, anchors.data(), anchors.size(), members.data(), members.size(),
                              a.data());
    for (std::size_t e = 0; e < members.size(); ++e) {
      std::size_t arg = 0;
      for (std::size_t c = 1; c < anchors.size(); ++c)
        if (std::abs(pos[anchors[c]] - pos[members[e]]) < std::abs(pos[anchors[arg]] - pos[members[e]])) arg = c;
      EXPECT_EQ(a[e], arg) << "trial " << trial << " member pos " << pos[members[e]];
    }
  }
}

TEST(MergeAssignment, RejectsBadSets) {
  const std::vector<float> k(8, 1.0f);
  const std::vector<std::int32_t> pos = {0, 1, 2, 3};
  Idx a(2);
  const Idx unsorted = {2, 1}, overlapping = {1, 2}, members = {0, 1}, far = {7};
  EXPECT_THROW(assign_cosine_nearest(k.data(), 4, 2, unsorted.data(), 2, members.data(), 1, a.data(), nullptr),
               InvalidArgument);
  EXPECT_THROW(assign_positional_buckets(pos.data(), 4, overlapping.data(), 2, members.data(), 2, a.data()),
               InvalidArgument);  // member 1 is an anchor
  EXPECT_THROW(assign_positional_buckets(pos.data(), 4, far.data(), 1, members.data(), 2, a.data()), InvalidArgument);
  EXPECT_THROW(assign_positional_buckets(pos.data(), 4, nullptr, 0, members.data(), 2, a.data()), InvalidArgument);
}

}  // namespace
