// SPDX-License-Identifier: Apache-2.0
// common/prefill_window.hpp: visual labels, live-slot compaction of scores, row gathering, the
// [Hkv][n][d] key read and the missing-window error, on hand-made data.

#include "kvcompress/policies/evict/common/prefill_window.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "../mm_oracles.hpp"
#include "support/expect_invalid.hpp"

namespace {

using namespace kvcompress;
using namespace kvcompress::evict::common;

TEST(PrefillWindow, VisualLabelsAreImageAndVideoOnly) {
  EXPECT_TRUE(is_visual(Modality::kImage));
  EXPECT_TRUE(is_visual(Modality::kVideo));
  for (Modality m : {Modality::kSystem, Modality::kText, Modality::kGenerated, Modality::kSpecial})
    EXPECT_FALSE(is_visual(m)) << to_string(m);
}

TEST(PrefillWindow, LiveScoresDropDeadSlots) {
  const std::uint8_t alive[5] = {1, 0, 1, 1, 0};
  const float score[5] = {0.5f, 9.0f, 0.25f, 0.125f, 7.0f};
  SlotView s;
  s.n = 5;
  s.n_alive = 3;
  s.alive = alive;
  EXPECT_EQ(live_scores(s, score), (std::vector<float>{0.5f, 0.25f, 0.125f}));
}

TEST(PrefillWindow, GatherRowsKeepsHeadsAndPositions) {
  // 2 heads × 3 rows × d = 2: value = 100·head + 10·row + t.
  std::vector<float> src(12);
  for (int h = 0; h < 2; ++h)
    for (int r = 0; r < 3; ++r)
      for (int t = 0; t < 2; ++t) src[(h * 3 + r) * 2 + t] = float(100 * h + 10 * r + t);
  const std::int32_t pos[3] = {4, 7, 9};
  const std::size_t idx[2] = {2, 0};
  const auto g = gather_rows(src.data(), pos, 2, 3, 2, idx, 2);
  EXPECT_EQ(g.pos, (std::vector<std::int32_t>{9, 4}));
  EXPECT_EQ(g.data, (std::vector<float>{20, 21, 0, 1, 120, 121, 100, 101}));
  const QueryRows q = g.queries();
  EXPECT_EQ(q.rows, 2u);
  EXPECT_EQ(q.num_heads, 2);
  const std::size_t bad[1] = {3};
  kvtest::expect_invalid_argument([&] { gather_rows(src.data(), pos, 2, 3, 2, bad, 1); }, "idx[t]");
}

TEST(PrefillWindow, ReadLayerKeysAndMissingWindow) {
  kvtest::HandPrefill h(CacheShape{1, 2, 2, 64, 16}, 1, 6);
  kvtest::fill_random(h, std::vector<Modality>(6, Modality::kText), 0, 3);
  auto ctx = h.context();
  std::vector<float> k;
  read_layer_keys(ctx, 0, 6, k);
  EXPECT_EQ(k, kvtest::layer(h, 0).k);
  kvtest::expect_invalid_argument([&] { require_query_window(ctx, 0, "test"); }, "queries(layer).rows");
}

}  // namespace
