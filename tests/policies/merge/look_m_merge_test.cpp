// SPDX-License-Identifier: Apache-2.0
// LOOK-M / MEDA merging (eviction spec §2 step 5, §3 step 6, §1.7) on hand-made rows against an
// independent double-precision oracle: cosine-nearest kept key (ties → lower position), then the
// average / pivotal / weighted reducer on K and V with the same assignment and key weights.

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kvcompress/policies/merge/look_m.hpp"
#include "support/expect_invalid.hpp"

namespace {

using namespace kvcompress;
using merge::common::MergeReducer;

struct Rows {
  std::vector<std::int32_t> pos;
  std::vector<Modality> mod;
  std::vector<std::uint8_t> alive;
  SlotView view(std::size_t n) {
    pos.resize(n);
    mod.assign(n, Modality::kImage);
    if (alive.size() != n) alive.assign(n, 1);
    for (std::size_t j = 0; j < n; ++j) pos[j] = static_cast<std::int32_t>(3 * j + 1);
    SlotView s;
    s.n = n;
    s.pos = pos.data();
    s.mod = mod.data();
    s.alive = alive.data();
    for (auto a : alive) s.n_alive += a ? 1 : 0;
    return s;
  }
};

template <class M>
void run(const SlotView& s, const std::vector<std::uint8_t>& keep, std::vector<float>& k, std::vector<float>& v,
         std::size_t d) {
  typename M::Config c;
  M::merge(c, s, keep.data(), k.data(), v.data(), d);
}

// Spec §2 merge oracle: x = (1,0), y1 = (0.8,0.6) (cos 0.8), y2 = (1,0) (cos 1):
// average (0.9333, 0.2000), pivotal (0.9667, 0.1000), weighted (0.8800, 0.1600).
TEST(LookMMerge, SpecWorkedExample) {
  Rows r;
  const SlotView s = r.view(3);
  const std::vector<std::uint8_t> keep{0, 1, 0};  // slot 1 = anchor x
  const std::vector<float> k0{0.8f, 0.6f, 1.0f, 0.0f, 1.0f, 0.0f};
  auto check = [&](auto tag, float ex, float ey) {
    using M = decltype(tag);
    std::vector<float> k = k0, v = k0;
    run<M>(s, keep, k, v, 2);
    EXPECT_NEAR(k[2], ex, 1e-4) << M::kName;
    EXPECT_NEAR(k[3], ey, 1e-4) << M::kName;
    EXPECT_NEAR(v[2], ex, 1e-4) << M::kName;  // values with the same assignment and weights
    EXPECT_NEAR(v[3], ey, 1e-4) << M::kName;
  };
  check(merge::LookMAverage{}, 0.9333f, 0.2000f);
  check(merge::LookMPivotal{}, 0.9667f, 0.1000f);
  check(merge::LookMWeighted{}, 0.8800f, 0.1600f);
}

// Double oracle of one head.
void oracle(const std::vector<std::uint8_t>& alive, const std::vector<std::uint8_t>& keep, std::vector<double>& k,
            std::vector<double>& v, std::size_t d, MergeReducer red) {
  const std::size_t n = keep.size();
  auto cosine = [&](std::size_t a, std::size_t b) {
    double dot = 0, na = 0, nb = 0;
    for (std::size_t t = 0; t < d; ++t) dot += k[a * d + t] * k[b * d + t], na += k[a * d + t] * k[a * d + t],
                                        nb += k[b * d + t] * k[b * d + t];
    return dot / std::max(std::sqrt(na) * std::sqrt(nb), 1e-6);
  };
  std::vector<std::vector<std::pair<std::size_t, double>>> members(n);
  bool any_anchor = false;
  for (std::size_t j = 0; j < n; ++j) any_anchor |= alive[j] && keep[j];
  if (!any_anchor) return;
  for (std::size_t e = 0; e < n; ++e) {
    if (!alive[e] || keep[e]) continue;
    std::size_t best = n;
    double bs = 0;
    for (std::size_t a = 0; a < n; ++a) {
      if (!alive[a] || !keep[a]) continue;
      const double c = cosine(e, a);
      if (best == n || c > bs) best = a, bs = c;
    }
    members[best].push_back({e, bs});
  }
  const std::vector<double> k0 = k, v0 = v;
  for (std::size_t a = 0; a < n; ++a) {
    if (members[a].empty()) continue;
    const double m = double(members[a].size());
    for (auto* data : {&k, &v}) {
      const std::vector<double>& src = data == &k ? k0 : v0;
      for (std::size_t t = 0; t < d; ++t) {
        const double x = src[a * d + t];
        double sy = 0, swy = 0;
        for (auto [e, w] : members[a]) sy += src[e * d + t], swy += w * src[e * d + t];
        double out = 0;
        if (red == MergeReducer::kAverage) out = (x + sy) / (m + 1);
        if (red == MergeReducer::kPivotal) out = (x + 0.5 * (sy + m * x)) / (m + 1);
        if (red == MergeReducer::kWeighted) out = (x + swy) / (m + 1);
        (*data)[a * d + t] = out;
      }
    }
  }
}

template <class M>
void random_case(std::uint32_t seed, std::size_t n, std::size_t d, double p_keep, bool with_dead) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd;
  std::bernoulli_distribution kp(p_keep), dead(0.15);
  Rows r;
  r.alive.assign(n, 1);
  std::vector<std::uint8_t> keep(n);
  for (std::size_t j = 0; j < n; ++j) {
    keep[j] = kp(g) ? 1 : 0;
    if (with_dead && dead(g)) r.alive[j] = 0;
  }
  const SlotView s = r.view(n);
  std::vector<float> k(n * d), v(n * d);
  for (auto& x : k) x = nd(g);
  for (auto& x : v) x = nd(g);
  // A few duplicated keys so that cosine ties occur (tie → lower position).
  for (std::size_t j = 3; j + 3 < n; j += 7) std::copy_n(k.begin() + (j - 3) * d, d, k.begin() + j * d);
  std::vector<double> kd(k.begin(), k.end()), vd(v.begin(), v.end());
  const std::vector<float> k_before = k, v_before = v;
  run<M>(s, keep, k, v, d);
  oracle(r.alive, keep, kd, vd, d, M::kReducer);
  for (std::size_t j = 0; j < n; ++j) {
    if (!r.alive[j] || !keep[j]) continue;
    for (std::size_t t = 0; t < d; ++t) {
      ASSERT_NEAR(k[j * d + t], kd[j * d + t], 1e-5) << M::kName << " slot " << j << " seed " << seed;
      ASSERT_NEAR(v[j * d + t], vd[j * d + t], 1e-5) << M::kName << " slot " << j << " seed " << seed;
    }
  }
}

TEST(LookMMerge, MatchesDoubleOracleOnRandomHeads) {
  for (std::uint32_t seed = 1; seed <= 8; ++seed)
    for (std::size_t d : {2u, 64u, 128u})
      for (double p : {0.1, 0.3, 0.8}) {
        random_case<merge::LookMAverage>(seed, 57, d, p, seed % 2 == 0);
        random_case<merge::LookMPivotal>(seed, 57, d, p, seed % 2 == 0);
        random_case<merge::LookMWeighted>(seed, 57, d, p, seed % 2 == 0);
      }
}

// §15.6 conservation: with one-hot values v_j = e_j, anchor a's merged value is
// (e_a + Σ_members e_y)/(m+1), so its non-zero entries list its bucket: every live evicted slot
// must appear in exactly one anchor, each anchor in its own, dead slots in none, and
// Σ_a (m_a+1)·v_a = Σ_live e_j. Dead rows and the keep mask (kept count) stay untouched.
TEST(LookMMerge, ConservationAndUntouchedRows) {
  std::mt19937 g(5);
  std::normal_distribution<float> nd;
  const std::size_t n = 40, d = 64;
  Rows r;
  r.alive.assign(n, 1);
  r.alive[7] = 0;
  const SlotView s = r.view(n);
  std::vector<std::uint8_t> keep(n, 0);
  const std::vector<std::size_t> anchors{0, 9, 20, 33};
  for (std::size_t j : anchors) keep[j] = 1;
  std::vector<float> k(n * d), v(n * d, 0.0f);
  for (auto& x : k) x = nd(g);
  for (std::size_t j = 0; j < n; ++j) v[j * d + j] = 1.0f;
  const std::vector<float> k0 = k, v0 = v;
  const auto keep0 = keep;
  run<merge::LookMAverage>(s, keep, k, v, d);
  EXPECT_EQ(keep, keep0);
  std::vector<int> owners(n, 0);
  std::vector<double> total(d, 0.0);
  for (std::size_t a : anchors) {
    std::size_t members = 0;
    for (std::size_t t = 0; t < n; ++t) members += v[a * d + t] != 0.0f ? 1 : 0;
    EXPECT_GT(v[a * d + a], 0.0f) << "anchor " << a;
    for (std::size_t t = 0; t < n; ++t)
      if (v[a * d + t] != 0.0f) {
        ++owners[t];
        EXPECT_NEAR(v[a * d + t], 1.0 / double(members), 1e-6);
      }
    for (std::size_t t = 0; t < d; ++t) total[t] += double(members) * v[a * d + t];
  }
  for (std::size_t j = 0; j < n; ++j) {
    EXPECT_EQ(owners[j], r.alive[j] ? 1 : 0) << "slot " << j;
    EXPECT_NEAR(total[j], r.alive[j] ? 1.0 : 0.0, 1e-5) << "slot " << j;
  }
  for (std::size_t t = 0; t < d; ++t) EXPECT_EQ(k[7 * d + t], k0[7 * d + t]);  // dead row untouched

  // Identical vectors: average and pivotal return the same vector; an anchor without members
  // stays bit-identical.
  std::vector<float> kk(n * d), vv(n * d);
  for (std::size_t j = 0; j < n; ++j)
    for (std::size_t t = 0; t < d; ++t) kk[j * d + t] = vv[j * d + t] = j == 20 ? -1.0f - float(t) : 0.25f * float(t + 1);
  std::vector<std::uint8_t> keep2(n, 0);
  keep2[4] = keep2[20] = 1;
  for (int which = 0; which < 2; ++which) {
    auto k2 = kk, v2 = vv;
    if (which == 0) run<merge::LookMAverage>(s, keep2, k2, v2, d);
    else run<merge::LookMPivotal>(s, keep2, k2, v2, d);
    for (std::size_t t = 0; t < d; ++t) {
      EXPECT_NEAR(k2[4 * d + t], 0.25f * float(t + 1), 2e-5f);  // float rounding over 38 members
      EXPECT_NEAR(v2[4 * d + t], 0.25f * float(t + 1), 2e-5f);
      EXPECT_EQ(k2[20 * d + t], kk[20 * d + t]);  // cos −1 to every member: no members
    }
  }
}

// §15.3: nothing evicted → rows bit-identical; nothing kept → rows unchanged; zero-norm keys do
// not produce NaN (ε guard).
TEST(LookMMerge, IdentityNoAnchorAndZeroKeys) {
  Rows r;
  const std::size_t n = 10, d = 64;
  const SlotView s = r.view(n);
  std::vector<float> k(n * d), v(n * d);
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = std::sin(float(i)), v[i] = std::cos(float(i));
  const auto k0 = k, v0 = v;
  run<merge::LookMWeighted>(s, std::vector<std::uint8_t>(n, 1), k, v, d);
  EXPECT_EQ(k, k0);
  EXPECT_EQ(v, v0);
  run<merge::LookMPivotal>(s, std::vector<std::uint8_t>(n, 0), k, v, d);
  EXPECT_EQ(k, k0);
  std::vector<float> z(n * d, 0.0f);
  std::vector<std::uint8_t> keep(n, 0);
  keep[0] = keep[5] = 1;
  auto vz = v;
  run<merge::LookMWeighted>(s, keep, z, vz, d);
  for (float x : vz) EXPECT_TRUE(std::isfinite(x));
}

TEST(LookMMerge, NamesAndConfig) {
  EXPECT_STREQ(merge::LookMAverage::kName, "look_m_average");
  EXPECT_STREQ(merge::LookMPivotal::kName, "look_m_pivotal");
  EXPECT_STREQ(merge::LookMWeighted::kName, "look_m_weighted");
  merge::LookMPivotal::Config c;
  c.eps = 0.0f;
  kvtest::expect_invalid_argument([&] { c.validate(CacheShape{1, 1, 1, 64, 8}); }, "eps");
}

}  // namespace
