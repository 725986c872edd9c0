// SPDX-License-Identifier: Apache-2.0
// FastCache compress stage (eviction spec §10): grouping by segment, the identity-like MLP
// oracle (stride-c subsample), a random MLP against a double-precision forward pass written
// here, untouched short segments, unchanged logical length, checkpoint round trip through the
// calibration file, composition with KIVI-2, and the missing-weights error.

#include "kvcompress/policies/merge/fastcache_compressor.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "support/cache_test_support.hpp"
#include "support/expect_invalid.hpp"

namespace {

using namespace kvcompress;
using evict::FastCacheSegment;
constexpr int kD = 64;

template <class Quant>
using FastCache = KVCache<Policy<evict::FastCache, merge::FastCacheCompressor, Quant>>;

// The identity-like MLP of the spec's oracle: selects the first sub-vector. A +M bias before the
// ReLUs and −M after keeps negative inputs intact (x + M > 0 for |x| < M).
std::shared_ptr<merge::FastCacheWeights> selecting_weights(int layers, std::size_t c) {
  auto w = std::make_shared<merge::FastCacheWeights>(layers, kD, c);
  const float M = 100.0f;
  for (auto& m : w->mlps)
    for (int i = 0; i < kD; ++i) {
      m.w1[static_cast<std::size_t>(i) * c * kD + static_cast<std::size_t>(i)] = 1.0f;
      m.b1[static_cast<std::size_t>(i)] = M;
      m.w2[static_cast<std::size_t>(i) * kD + static_cast<std::size_t>(i)] = 1.0f;
      m.w3[static_cast<std::size_t>(i) * kD + static_cast<std::size_t>(i)] = 1.0f;
      m.b3[static_cast<std::size_t>(i)] = -M;
    }
  return w;
}

std::shared_ptr<merge::FastCacheWeights> random_weights(int layers, std::size_t c, std::uint32_t seed) {
  auto w = std::make_shared<merge::FastCacheWeights>(layers, kD, c);
  std::mt19937 g(seed);
  std::normal_distribution<float> n(0.0f, 0.1f);
  for (auto& m : w->mlps)
    for (auto* t : {&m.w1, &m.b1, &m.w2, &m.b2, &m.w3, &m.b3})
      for (float& x : *t) x = n(g);
  return w;
}

// Double-precision forward pass of one MLP.
std::vector<double> forward(const merge::FastCacheWeights::Mlp& m, const std::vector<double>& x) {
  auto lin = [](const std::vector<float>& w, const std::vector<float>& b, const std::vector<double>& in, bool relu) {
    std::vector<double> out(b.size());
    for (std::size_t o = 0; o < b.size(); ++o) {
      double a = b[o];
      for (std::size_t i = 0; i < in.size(); ++i) a += static_cast<double>(w[o * in.size() + i]) * in[i];
      out[o] = relu ? std::max(0.0, a) : a;
    }
    return out;
  };
  return lin(m.w3, m.b3, lin(m.w2, m.b2, lin(m.w1, m.b1, x, true), true), false);
}

// Prompt layout: 3 system tokens, 11 image tokens, 6 text tokens.
std::vector<Modality> layout() {
  std::vector<Modality> m(20, Modality::kText);
  for (int t = 0; t < 3; ++t) m[static_cast<std::size_t>(t)] = Modality::kSystem;
  for (int t = 3; t < 14; ++t) m[static_cast<std::size_t>(t)] = Modality::kImage;
  return m;
}

TEST(FastCache, IdentityLikeMlpKeepsTheStrideSubsampleOfEachSegment) {
  const std::size_t c = 3;
  const auto mods = layout();
  const std::size_t n = mods.size();
  typename FastCache<quant::DenseF32>::Config cfg;
  cfg.evict.factor = c;
  cfg.merge.weights = selecting_weights(1, c);
  FastCache<quant::DenseF32> cache(CacheShape{1, 2, 1, kD, 64}, cfg);
  const auto k = kvtest::random_kv(n, 1, kD, 1), v = kvtest::random_kv(n, 1, kD, 2);
  cache.append(0, k.data(), v.data(), n, mods.data());
  cache.end_prefill();
  // Visual segment: positions 3..13 (11 slots) → groups {3,4,5},{6,7,8},{9,10,11}, remainder 12, 13.
  // Text segment: 0,1,2,14..19 (9 slots) → groups {0,1,2},{14,15,16},{17,18,19}.
  const std::vector<std::int32_t> want = {0, 3, 6, 9, 12, 13, 14, 17};
  const auto s = kvtest::live_slots(cache, 0, 0);
  EXPECT_EQ(s.pos, want);
  EXPECT_EQ(s.pos.size(), (11 / c + 11 % c) + (9 / c + 9 % c));  // ⌊n/c⌋ + n mod c per segment
  for (std::size_t i = 0; i < want.size(); ++i)
    for (int x = 0; x < kD; ++x) {
      const std::size_t t = static_cast<std::size_t>(want[i]);
      ASSERT_NEAR(s.k[i * kD + static_cast<std::size_t>(x)], k[t * kD + static_cast<std::size_t>(x)], 1e-4);
      ASSERT_NEAR(s.v[i * kD + static_cast<std::size_t>(x)], v[t * kD + static_cast<std::size_t>(x)], 1e-4);
    }
  EXPECT_EQ(cache.tokens_seen(0), static_cast<std::int64_t>(n));  // logical length unchanged
}

TEST(FastCache, RandomMlpMatchesADoublePrecisionForwardPassPerLayerSegmentAndHead) {
  const std::size_t c = 2;
  const auto mods = layout();
  const std::size_t n = mods.size();
  auto w = random_weights(2, c, 7);
  typename FastCache<quant::DenseF32>::Config cfg;
  cfg.evict.factor = c;
  cfg.merge.weights = w;
  FastCache<quant::DenseF32> cache(CacheShape{2, 4, 2, kD, 64}, cfg);
  const auto k = kvtest::random_kv(n, 2, kD, 3), v = kvtest::random_kv(n, 2, kD, 4);
  for (int l = 0; l < 2; ++l) cache.append(l, k.data(), v.data(), n, mods.data());
  cache.end_prefill();
  // Groups of 2 in position order per segment; the remainder (visual: position 13) stays.
  const std::vector<std::vector<int>> groups = {{0, 1}, {2, 14}, {15, 16}, {17, 18}, {19}, {3, 4}, {5, 6},
                                                {7, 8}, {9, 10}, {11, 12}, {13}};
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 2; ++h) {
      const auto s = kvtest::live_slots(cache, l, h);
      ASSERT_EQ(s.pos.size(), groups.size());
      for (const auto& g : groups) {
        const auto it = std::find(s.pos.begin(), s.pos.end(), g[0]);
        ASSERT_NE(it, s.pos.end());
        const std::size_t i = static_cast<std::size_t>(it - s.pos.begin());
        for (int kv = 0; kv < 2; ++kv) {
          const auto& src = kv == 0 ? k : v;
          const auto& got = kv == 0 ? s.k : s.v;
          std::vector<double> expect(kD);
          if (g.size() == 1) {
            for (int x = 0; x < kD; ++x) expect[static_cast<std::size_t>(x)] = src[(static_cast<std::size_t>(g[0]) * 2 + static_cast<std::size_t>(h)) * kD + static_cast<std::size_t>(x)];
          } else {
            std::vector<double> xin;
            for (int t : g)
              for (int x = 0; x < kD; ++x) xin.push_back(src[(static_cast<std::size_t>(t) * 2 + static_cast<std::size_t>(h)) * kD + static_cast<std::size_t>(x)]);
            const auto seg = mods[static_cast<std::size_t>(g[0])] == Modality::kImage ? FastCacheSegment::kVisual : FastCacheSegment::kText;
            expect = forward(w->at(l, seg, kv), xin);
          }
          for (int x = 0; x < kD; ++x)
            ASSERT_NEAR(got[i * kD + static_cast<std::size_t>(x)], expect[static_cast<std::size_t>(x)], 1e-4)
                << "layer " << l << " head " << h << " pos " << g[0] << " kv " << kv;
        }
      }
    }
}

TEST(FastCache, ShortSegmentsStayUncompressed) {
  const std::size_t c = 4;
  std::vector<Modality> mods(10, Modality::kText);
  for (int t = 2; t < 5; ++t) mods[static_cast<std::size_t>(t)] = Modality::kVideo;  // 3 visual < c
  typename FastCache<quant::DenseF32>::Config cfg;
  cfg.evict.factor = c;
  cfg.merge.weights = selecting_weights(1, c);
  FastCache<quant::DenseF32> cache(CacheShape{1, 1, 1, kD, 16}, cfg);
  const auto k = kvtest::random_kv(10, 1, kD, 5);
  cache.append(0, k.data(), k.data(), 10, mods.data());
  cache.end_prefill();
  std::vector<std::int32_t> pos(cache.size(0, 0));
  cache.positions(0, 0, pos.data());
  // Text: 0,1,5,6,7,8,9 (7 slots) → group {0,1,5,6}, remainder 7,8,9; visual untouched.
  EXPECT_EQ(pos, (std::vector<std::int32_t>{0, 2, 3, 4, 7, 8, 9}));
}

TEST(FastCache, CheckpointRoundTripsThroughTheCalibrationFile) {
  const auto w = random_weights(2, 3, 11);
  const auto bytes = calib::serialize(w->to_calibration());
  const auto set = calib::deserialize(bytes.data(), bytes.size(), "fastcache");
  const auto r = merge::FastCacheWeights::from_calibration(set, 2, kD, 3);
  for (std::size_t i = 0; i < w->mlps.size(); ++i) {
    EXPECT_EQ(r.mlps[i].w1, w->mlps[i].w1);
    EXPECT_EQ(r.mlps[i].b3, w->mlps[i].b3);
  }
  // A checkpoint for another factor or model has misshapen tensors.
  kvtest::expect_invalid_argument([&] { merge::FastCacheWeights::from_calibration(set, 2, kD, 2); }, "l0.visual.k.w1");
}

TEST(FastCache, ComposesWithKiviAndRejectsMissingWeights) {
  const auto mods = layout();
  typename FastCache<quant::Kivi2>::Config cfg;
  cfg.evict.factor = 2;
  kvtest::expect_invalid_argument([&] { FastCache<quant::Kivi2> c(CacheShape{1, 2, 1, kD, 64}, cfg); }, "weights");
  cfg.merge.weights = selecting_weights(2, 2);
  kvtest::expect_invalid_argument([&] { FastCache<quant::Kivi2> c(CacheShape{1, 2, 1, kD, 64}, cfg); },
                                  "weights->num_layers");
  cfg.merge.weights = selecting_weights(1, 2);
  FastCache<quant::Kivi2> cache(CacheShape{1, 2, 1, kD, 64}, cfg);
  const auto k = kvtest::random_kv(20, 1, kD, 6), v = kvtest::random_kv(20, 1, kD, 7);
  cache.append(0, k.data(), v.data(), 20, mods.data());
  cache.end_prefill();
  EXPECT_EQ(cache.size(0, 0), 11u);  // per segment ⌊n/2⌋ + n mod 2: visual 11 → 6, text 9 → 5
  const auto q = kvtest::random_kv(1, 2, kD, 8);
  const auto k1 = kvtest::random_kv(1, 1, kD, 9);
  cache.append(0, k1.data(), k1.data(), 1, Modality::kGenerated);
  std::vector<float> out(q.size());
  cache.attend(0, q.data(), 1, out.data());
  kvtest::expect_attention_matches(cache, 0, q, 1, out, 1e-4, 1e-4);
}

}  // namespace
