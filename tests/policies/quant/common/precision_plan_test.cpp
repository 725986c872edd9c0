// SPDX-License-Identifier: Apache-2.0
// BB-12 (quantization.md §0): PrecisionPlan — AKVQ-VL-style token classes with pivots and
// overrides, VidKV-style channel bit maps, argument checks.

#include "support/expect_invalid.hpp"
#include "kvcompress/policies/quant/common/precision_plan.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

namespace {

namespace qc = kvcompress::quant::common;

enum class Codec : qc::CodecId { kFp16, kInt4, kInt2, kInt1 };
constexpr qc::CodecId id(Codec c) { return static_cast<qc::CodecId>(c); }

// AKVQ-VL TSA layer: text 4-bit, visual 2-bit (default), pivots fp16; later assignments win.
TEST(PrecisionPlan, TokenClassesAndOverrides) {
  qc::PrecisionPlan plan(128, id(Codec::kInt2));
  plan.assign_tokens(0, 35, id(Codec::kInt4));     // system + text prompt
  plan.assign_tokens(611, 640, id(Codec::kInt4));  // text after the image
  plan.assign_token(20, id(Codec::kFp16));         // pivots
  plan.assign_token(300, id(Codec::kFp16));
  EXPECT_EQ(plan.token_codec(0), id(Codec::kInt4));
  EXPECT_EQ(plan.token_codec(20), id(Codec::kFp16));
  EXPECT_EQ(plan.token_codec(34), id(Codec::kInt4));
  EXPECT_EQ(plan.token_codec(35), id(Codec::kInt2));
  EXPECT_EQ(plan.token_codec(300), id(Codec::kFp16));
  EXPECT_EQ(plan.token_codec(610), id(Codec::kInt2));
  EXPECT_EQ(plan.token_codec(639), id(Codec::kInt4));
  EXPECT_EQ(plan.token_codec(640), id(Codec::kInt2));
  plan.assign_tokens(10, 30, id(Codec::kInt1));  // overrides the pivot at 20 too
  EXPECT_EQ(plan.token_codec(20), id(Codec::kInt1));
  EXPECT_EQ(plan.token_ranges().size(), 5u);
}

// VidKV keys: the ⌊k·d⌋ highest-range channels 2-bit, the rest 1-bit.
TEST(PrecisionPlan, ChannelMap) {
  qc::PrecisionPlan plan(8, id(Codec::kInt1));
  const std::uint16_t wide[4] = {7, 1, 4, 2};
  plan.assign_channels(wide, 4, id(Codec::kInt2));
  EXPECT_EQ(plan.channels_with(id(Codec::kInt2)), 4u);
  EXPECT_EQ(plan.channels_with(id(Codec::kInt1)), 4u);
  EXPECT_EQ(plan.channel_codec(4), id(Codec::kInt2));
  EXPECT_EQ(plan.channel_codec(5), id(Codec::kInt1));
  EXPECT_EQ(plan.head_dim(), 8u);
}

TEST(PrecisionPlan, RejectsBadArguments) {
  kvtest::expect_invalid_argument([] { qc::PrecisionPlan(0, 0); }, "head_dim");
  qc::PrecisionPlan plan(8, 0);
  kvtest::expect_invalid_argument([&] { plan.assign_tokens(-1, 4, 1); }, "begin");
  kvtest::expect_invalid_argument([&] { plan.assign_tokens(4, 4, 1); }, "end");
  kvtest::expect_invalid_argument([&] { plan.assign_token(-3, 1); }, "pos");
  const std::uint16_t bad[2] = {1, 8};
  kvtest::expect_invalid_argument([&] { plan.assign_channels(bad, 2, 1); }, "channels[1]");
  EXPECT_EQ(plan.channel_codec(1), 0);  // rejected call left the plan unchanged
  kvtest::expect_invalid_argument([&] { plan.channel_codec(8); }, "c");
}

}  // namespace
