// SPDX-License-Identifier: Apache-2.0
// 1-D score pooling (eviction spec §1.3): kernel 1 is the identity; hand-worked avg/max/sum with
// zero padding counted by avg (PyTorch avg_pool1d, count_include_pad=True), windows wider than
// the input, and argument checks.

#include <gtest/gtest.h>

#include <vector>

#include "kvcompress/policies/evict/common/pooling.hpp"

namespace {

using namespace kvcompress::evict::common;

std::vector<float> pool(const std::vector<float>& x, int kernel, PoolKind kind) {
  std::vector<float> out(x.size());
  pool_scores(x.data(), x.size(), kernel, kind, out.data());
  return out;
}

void expect_near(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t j = 0; j < want.size(); ++j) EXPECT_NEAR(got[j], want[j], 1e-6) << "j=" << j;
}

TEST(Pooling, KernelOneIsIdentity) {
  const std::vector<float> x = {0.3f, -1.0f, 7.5f, 0.0f, 2.25f};
  for (PoolKind k : {PoolKind::kAvg, PoolKind::kMax, PoolKind::kSum}) EXPECT_EQ(pool(x, 1, k), x) << to_string(k);
}

TEST(Pooling, KernelThreeByHand) {
  const std::vector<float> x = {1, 2, 3, 4, 5};
  expect_near(pool(x, 3, PoolKind::kAvg), {1, 2, 3, 4, 3});  // edges: (0+1+2)/3, (4+5+0)/3
  expect_near(pool(x, 3, PoolKind::kMax), {2, 3, 4, 5, 5});
  expect_near(pool(x, 3, PoolKind::kSum), {3, 6, 9, 12, 9});
}

// torch.nn.functional.avg_pool1d(x, 5, stride=1, padding=2) on [1..6]:
// [1.2, 2.0, 3.0, 4.0, 3.6, 3.0].
TEST(Pooling, AvgKernelFiveMatchesPyTorchCountIncludePad) {
  expect_near(pool({1, 2, 3, 4, 5, 6}, 5, PoolKind::kAvg), {1.2f, 2.0f, 3.0f, 4.0f, 3.6f, 3.0f});
}

// max_pool1d pads with −inf: an all-negative input keeps its own values at the edges.
TEST(Pooling, MaxIgnoresPadding) {
  expect_near(pool({-3, -1, -2}, 3, PoolKind::kMax), {-1, -1, -1});
  expect_near(pool({-3, -5, -4, -6}, 3, PoolKind::kMax), {-3, -3, -4, -4});
}

TEST(Pooling, WindowWiderThanInput) {
  expect_near(pool({2, 4}, 7, PoolKind::kAvg), {6.0f / 7, 6.0f / 7});
  expect_near(pool({2, 4}, 7, PoolKind::kSum), {6, 6});
  expect_near(pool({2, 4}, 7, PoolKind::kMax), {4, 4});
}

TEST(Pooling, RejectsEvenKernelAndAliasing) {
  std::vector<float> x = {1, 2, 3}, out(3);
  try {
    pool_scores(x.data(), 3, 4, PoolKind::kAvg, out.data());
    FAIL() << "expected InvalidArgument";
  } catch (const kvcompress::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("kernel"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("odd"), std::string::npos) << e.what();
  }
  EXPECT_THROW(pool_scores(x.data(), 3, 0, PoolKind::kAvg, out.data()), kvcompress::InvalidArgument);
  EXPECT_THROW(pool_scores(x.data(), 3, 3, PoolKind::kSum, x.data()), kvcompress::InvalidArgument);
}

}  // namespace
