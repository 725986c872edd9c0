// SPDX-License-Identifier: Apache-2.0
// Fixed-offset decode eviction (eviction spec §1.10, §5 step 7, §6 step 5): removal point,
// removal counts and the ordinals cleared, against hand-worked cases.

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "kvcompress/policies/evict/common/fixed_offset_eviction.hpp"

namespace {

using namespace kvcompress;
using namespace kvcompress::evict::common;

TEST(FixedOffsetEviction, RemovalPoint) {
  EXPECT_EQ(fixed_offset(40, 25), 15u);
  EXPECT_EQ(fixed_offset(20, 25), 10u);  // 20 − 25 < 1 → half the kept length
  EXPECT_EQ(fixed_offset(1, 25), 0u);
  EXPECT_EQ(fixed_offset(26, 25), 1u);
}

// int(len − r·seen) ≥ 1 after each appended token: worked by hand for r = 0.2.
TEST(FixedOffsetEviction, RemovalCounts) {
  // len 40, seen 200 (exactly on target): +1 → 41 − 40.2 = 0.8 < 1, no removal.
  EXPECT_EQ(fixed_offset_removals(40, 200, 1, 0.2), 0u);
  // len 41, seen 201: +1 → 42 − 40.4 = 1.6 ≥ 1 → remove one.
  EXPECT_EQ(fixed_offset_removals(41, 201, 1, 0.2), 1u);
  // Three tokens from (40, 200): 41−40.2=0.8 keep; 42−40.4=1.6 remove → 41; 42−40.6=1.4 remove.
  EXPECT_EQ(fixed_offset_removals(40, 200, 3, 0.2), 2u);
  // r = 1 never removes.
  EXPECT_EQ(fixed_offset_removals(10, 10, 5, 1.0), 0u);
}

TEST(FixedOffsetEviction, ClearsOrdinalsFromOffsetSkippingDeadSlots) {
  const std::size_t n = 12;
  std::vector<std::int32_t> pos(n);
  std::iota(pos.begin(), pos.end(), 0);
  std::vector<Modality> mod(n, Modality::kText);
  std::vector<std::uint8_t> alive(n, 1);
  alive[4] = 0;  // live ordinals: 0 1 2 3 | 5→4 6→5 7→6 …
  SlotView s{n, n - 1, pos.data(), mod.data(), alive.data(), nullptr, 30, 0};
  s.prefill_tokens = 8;
  s.prefill_slots = 5;  // offset 5 − 1 = 4
  std::vector<std::uint8_t> keep(n, 1);
  fixed_offset_evict(s, 1, 2, 0.1, keep.data());  // 12 − 3.1 ≥ 1 twice → ordinals 4, 5
  std::vector<std::uint8_t> expect(n, 1);
  expect[5] = expect[6] = 0;
  EXPECT_EQ(keep, expect);
  // Never more than the slots from the offset on.
  std::fill(keep.begin(), keep.end(), 1);
  SlotView tiny = s;
  tiny.n = 6;
  tiny.n_alive = 5;
  tiny.tokens_seen = 100;
  fixed_offset_evict(tiny, 1, 5, 0.01, keep.data());
  EXPECT_EQ(keep, (std::vector<std::uint8_t>{1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1}));
}

TEST(FixedOffsetEviction, NothingBeforeEndPrefill) {
  const std::size_t n = 10;
  std::vector<std::int32_t> pos(n);
  std::iota(pos.begin(), pos.end(), 0);
  std::vector<Modality> mod(n, Modality::kText);
  std::vector<std::uint8_t> alive(n, 1), keep(n, 1);
  SlotView s{n, n, pos.data(), mod.data(), alive.data(), nullptr, 50, 0};  // prefill_tokens = −1
  fixed_offset_evict(s, 1, 1, 0.1, keep.data());
  EXPECT_EQ(keep, std::vector<std::uint8_t>(n, 1));
  s.prefill_tokens = 40;
  s.prefill_slots = 4;
  fixed_offset_evict(s, 1, 1, 0.1, keep.data());  // 11 − 5.1 ≥ 1 → ordinal 3
  EXPECT_EQ(keep, (std::vector<std::uint8_t>{1, 1, 1, 0, 1, 1, 1, 1, 1, 1}));
}

}  // namespace
