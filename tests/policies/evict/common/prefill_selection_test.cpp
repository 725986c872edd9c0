// SPDX-License-Identifier: Apache-2.0
// prefill_selection (eviction spec §1.5, §1.8): live rows of a stream read through a
// PrefillContext, and keep_top_k over one score per live slot with protection, checked on hand
// examples; an infeasible budget names the caller's field; dead slots are never revived.

#include <gtest/gtest.h>

#include <vector>

#include "kvcompress/policies/evict/common/prefill_selection.hpp"
#include "support/expect_invalid.hpp"
#include "support/prefill_fixture.hpp"

namespace {

using namespace kvcompress;
using namespace kvcompress::evict::common;

TEST(PrefillSelection, ReadLiveRowsDropsDeadSlots) {
  kvtest::PrefillFixture f({2, 4, 2, 64, 64}, true, 10, 1, 91, 5);
  f.alive[2] = f.alive[7] = 0;
  auto ctx = f.context(false);
  const LiveRows r = read_live_rows(ctx, 1, 1, 1);
  EXPECT_EQ(r.index, (std::vector<std::size_t>{0, 1, 3, 4, 5, 6, 8, 9}));
  EXPECT_EQ(r.pos, (std::vector<std::int32_t>{0, 5, 15, 20, 25, 30, 40, 45}));
  for (std::size_t t = 0; t < r.size(); ++t)
    for (std::size_t c = 0; c < 64; ++c) {
      EXPECT_EQ(r.k[t * 64 + c], f.key(1, 1, r.index[t])[c]);
      EXPECT_EQ(r.v[t * 64 + c], f.value(1, 1, r.index[t])[c]);
    }
}

struct View {
  std::vector<std::int32_t> pos{0, 1, 2, 3, 4, 5, 6, 7};
  std::vector<std::uint8_t> alive{1, 1, 0, 1, 1, 1, 1, 1};
  std::vector<std::uint8_t> keep = alive;
  SlotView s() const {
    SlotView v;
    v.n = pos.size();
    v.n_alive = 7;
    v.pos = pos.data();
    v.alive = alive.data();
    return v;
  }
};

TEST(PrefillSelection, KeepTopKWithSinksAndMandatoryWindow) {
  View v;
  // Live slots: positions 0 1 3 4 5 6 7 → live indices 0..6.
  const std::vector<float> score{0.0f, 0.9f, 0.2f, 0.8f, 0.8f, 0.0f, 0.0f};
  ProtectionConfig pc;
  pc.sinks = 1;
  pc.mandatory_begin = 5;  // live 5, 6 = positions 6, 7
  pc.mandatory_end = 7;
  const Selection r = keep_top_k(v.s(), score.data(), pc, 5, ProtectedOverflow::kError, v.keep.data(), "t", "f");
  EXPECT_EQ(r.count, 5u);
  EXPECT_EQ(r.protected_count, 3u);
  // Sink 0, window 6 7, then the best two of {1: 0.9, 3: 0.2, 4: 0.8, 5: 0.8} → 1 and 4 (tie → lower).
  EXPECT_EQ(v.keep, (std::vector<std::uint8_t>{1, 1, 0, 0, 1, 0, 1, 1}));
}

TEST(PrefillSelection, BudgetCoveringEveryLiveSlotChangesNothing) {
  View v;
  const std::vector<float> score(7, 0.0f);
  keep_top_k(v.s(), score.data(), ProtectionConfig{}, 7, ProtectedOverflow::kError, v.keep.data(), "t", "f");
  EXPECT_EQ(v.keep, v.alive);
}

TEST(PrefillSelection, OverflowErrorNamesTheBudgetFieldAndKeepAllExceeds) {
  View v;
  const std::vector<float> score(7, 0.0f);
  ProtectionConfig pc;
  pc.recent = 4;
  kvtest::expect_invalid_argument(
      [&] { keep_top_k(v.s(), score.data(), pc, 3, ProtectedOverflow::kError, v.keep.data(), "t", "budget.x"); },
      "budget.x");
  EXPECT_EQ(v.keep, v.alive);  // unchanged by the rejected call
  const Selection r = keep_top_k(v.s(), score.data(), pc, 3, ProtectedOverflow::kKeepAll, v.keep.data(), "t", "f");
  EXPECT_TRUE(r.over_budget);
  EXPECT_EQ(v.keep, (std::vector<std::uint8_t>{0, 0, 0, 0, 1, 1, 1, 1}));
}

}  // namespace
