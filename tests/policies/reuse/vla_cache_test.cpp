// SPDX-License-Identifier: Apache-2.0
// VLA-Cache reuse planner (eviction spec §12 test oracles): identical frames, changed patches
// against a double cosine computed here, task relevance from hand-made attention, Rset
// algebra, the entropy schedule's worked examples, positions from the engine's span start.

#include "kvcompress/policies/reuse/vla_cache.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "support/expect_invalid.hpp"

namespace {

using namespace kvcompress;

std::vector<float> random_frame(std::uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> px(224 * 224 * 3);
  for (float& x : px) x = u(g);
  return px;
}

reuse::Frame frame(const std::vector<float>& px) { return reuse::Frame{px.data(), 224, 224, 3}; }

TEST(VlaCache, IdenticalFramesMakeEveryPatchStaticAndKeepTheLowestIds) {
  const auto a = random_frame(1);
  reuse::VlaCacheConfig c;
  const auto ids = reuse::static_patches(c, frame(a), frame(a));
  ASSERT_EQ(ids.size(), c.static_top_k);  // 256 pass, the first k_s kept
  for (std::size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], static_cast<int>(i));
}

TEST(VlaCache, ChangedPatchesAreNotStaticAndOrderFollowsSimilarity) {
  const auto a = random_frame(2);
  auto b = a;
  // Patch 17 (row 1, col 1) replaced; patch 40 (row 2, col 8) slightly perturbed.
  std::mt19937 g(3);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  auto at = [](int y, int x, int ch) { return (static_cast<std::size_t>(y) * 224 + static_cast<std::size_t>(x)) * 3 + static_cast<std::size_t>(ch); };
  for (int y = 14; y < 28; ++y)
    for (int x = 14; x < 28; ++x)
      for (int ch = 0; ch < 3; ++ch) b[at(y, x, ch)] = u(g);
  for (int y = 28; y < 42; ++y)
    for (int x = 112; x < 126; ++x) b[at(y, x, 0)] *= 1.02f;
  // Independent cosine of patch 40.
  double dot = 0, na = 0, nb = 0;
  for (int y = 28; y < 42; ++y)
    for (int x = 112; x < 126; ++x)
      for (int ch = 0; ch < 3; ++ch) {
        dot += double(a[at(y, x, ch)]) * b[at(y, x, ch)];
        na += double(a[at(y, x, ch)]) * a[at(y, x, ch)];
        nb += double(b[at(y, x, ch)]) * b[at(y, x, ch)];
      }
  const double sim40 = dot / std::sqrt(na * nb);
  ASSERT_GT(sim40, 0.996);
  ASSERT_LT(sim40, 1.0);
  reuse::VlaCacheConfig c;
  c.static_top_k = 256;
  const auto ids = reuse::static_patches(c, frame(a), frame(b));
  ASSERT_EQ(ids.size(), 255u);  // all but the replaced patch
  EXPECT_EQ(std::find(ids.begin(), ids.end(), 17), ids.end());
  EXPECT_EQ(ids.back(), 40);  // least similar among the static ones comes last
  c.similarity_threshold = 0.5 * (sim40 + 1.0);
  const auto strict = reuse::static_patches(c, frame(a), frame(b));
  EXPECT_EQ(strict.size(), 254u);
}

TEST(VlaCache, RelevanceReusableSetAndLayerPlan) {
  // 2 heads × 2 rows × 6 patches; mean attention per patch: p3 > p1 > p0 = p5 > ...
  const std::vector<float> attn = {0.1f, 0.3f, 0.0f, 0.5f, 0.0f, 0.1f,  0.1f, 0.3f, 0.0f, 0.5f, 0.0f, 0.1f,
                                   0.1f, 0.2f, 0.1f, 0.4f, 0.1f, 0.1f,  0.1f, 0.2f, 0.1f, 0.4f, 0.1f, 0.1f};
  const auto rel = reuse::task_relevant_patches(attn.data(), 2, 2, 6, 3);
  EXPECT_EQ(rel, (std::vector<int>{0, 1, 3}));  // 0.1 ties between 0 and 5: lower id wins
  const auto r = reuse::reusable_patches({5, 3, 4, 2, 1}, rel);
  EXPECT_EQ(r, (std::vector<int>{2, 4, 5}));
  for (int p : r) EXPECT_EQ(std::find(rel.begin(), rel.end(), p), rel.end());

  reuse::VlaCacheConfig c;
  std::vector<int> ten(10);
  for (int i = 0; i < 10; ++i) ten[static_cast<std::size_t>(i)] = 2 * i;
  // Entropies [3, 2, 1]: ρ = [0, 0.275, 0.67375] → counts max(1, ⌊ρ·10⌋) = 1, 2, 6.
  const auto plan = reuse::plan_reuse(c, ten, 100, {3.0, 2.0, 1.0});
  ASSERT_EQ(plan.size(), 3u);
  EXPECT_EQ(plan[0], (std::vector<std::int32_t>{100}));
  EXPECT_EQ(plan[1], (std::vector<std::int32_t>{100, 102}));
  EXPECT_EQ(plan[2], (std::vector<std::int32_t>{100, 102, 104, 106, 108, 110}));
  // Entropies [1, 2, 3]: ρ = [1, 0.5, 0] → counts 10, 5, 1, but the set never shrinks with depth.
  const auto grow = reuse::plan_reuse(c, ten, 0, {1.0, 2.0, 3.0});
  for (const auto& l : grow) EXPECT_EQ(l.size(), 10u);
  EXPECT_TRUE(reuse::plan_reuse(c, {}, 0, {1.0, 2.0})[1].empty());
}

TEST(VlaCache, BadInputsAreRejected) {
  const auto a = random_frame(4);
  reuse::VlaCacheConfig c;
  kvtest::expect_invalid_argument([&] { reuse::static_patches(c, frame(a), reuse::Frame{a.data(), 224, 112, 3}); }, "cur");
  c.patch = 15;
  kvtest::expect_invalid_argument([&] { reuse::static_patches(c, frame(a), frame(a)); }, "frame size");
  c.patch = 14;
  c.growth = 2.0;
  kvtest::expect_invalid_argument([&] { reuse::plan_reuse(c, {1}, 0, {1.0, 2.0}); }, "growth");
}

}  // namespace
