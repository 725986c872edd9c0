// SPDX-License-Identifier: Apache-2.0
// KeepBudget (eviction spec §1.5/§1.6 uniform): floor(r·n) at least 1, or min(tokens, n);
// bad ratios name the field.

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kvcompress/policies/evict/common/keep_budget.hpp"
#include "support/expect_invalid.hpp"

namespace {

using kvcompress::evict::common::KeepBudget;

TEST(KeepBudget, RatioIsFloorOfLiveSlotsAtLeastOne) {
  EXPECT_EQ((KeepBudget{0.5, 0}).resolve(101), 50u);
  EXPECT_EQ((KeepBudget{0.35, 0}).resolve(90), 31u);
  EXPECT_EQ((KeepBudget{1.0, 0}).resolve(77), 77u);
  EXPECT_EQ((KeepBudget{0.01, 0}).resolve(20), 1u);
  EXPECT_EQ((KeepBudget{0.5, 0}).resolve(0), 0u);
  EXPECT_STREQ((KeepBudget{0.5, 0}).field(), "budget.ratio");
}

TEST(KeepBudget, TokensAreAbsoluteAndCappedByTheLiveSlots) {
  EXPECT_EQ((KeepBudget{0.1, 40}).resolve(100), 40u);
  EXPECT_EQ((KeepBudget{0.1, 400}).resolve(100), 100u);
  EXPECT_STREQ((KeepBudget{0.1, 40}).field(), "budget.tokens");
}

TEST(KeepBudget, ValidateRejectsRatiosOutsideZeroOne) {
  for (double r : {0.0, -0.1, 1.0001, std::nan(""), std::numeric_limits<double>::infinity()})
    kvtest::expect_invalid_argument([&] { (KeepBudget{r, 0}).validate("test"); }, "budget.ratio");
  EXPECT_NO_THROW((KeepBudget{1.0, 0}).validate("test"));
  EXPECT_NO_THROW((KeepBudget{0.0, 12}).validate("test"));  // the ratio is unused with tokens
}

}  // namespace
